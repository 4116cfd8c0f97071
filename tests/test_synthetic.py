"""The built-in SyntheticMMKG: deterministic, documented statistics, planted signal, cold entities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from docdata import get_docdata

from pykeen_momok.datasets.synthetic import SyntheticMMKG, generate_synthetic_mmkg


def test_statistics_match_docdata():
    dataset = SyntheticMMKG()
    statistics = get_docdata(SyntheticMMKG)["statistics"]
    assert dataset.training.num_entities == statistics["entities"]
    assert dataset.training.real_num_relations == statistics["relations"]
    assert dataset.training.num_triples == statistics["training"]
    assert dataset.validation.num_triples == statistics["validation"]
    assert dataset.testing.num_triples == statistics["testing"]
    assert dataset.training.create_inverse_triples


def test_deterministic_and_seed_dependent():
    first, features = generate_synthetic_mmkg(seed=1)
    second, features_again = generate_synthetic_mmkg(seed=1)
    other, _ = generate_synthetic_mmkg(seed=2)
    for key in first:
        assert np.array_equal(first[key], second[key])
    assert torch.equal(features["image"].features, features_again["image"].features)
    assert not np.array_equal(first["training"], other["training"])


def test_missing_modalities_and_cold_entities():
    dataset = SyntheticMMKG()
    for name in ("image", "text"):
        present = dataset.training.modalities[name].present
        assert 0.8 < present.float().mean() < 0.95
    train = dataset.training.mapped_triples
    degree = torch.bincount(torch.cat([train[:, 0], train[:, 2]]), minlength=dataset.training.num_entities)
    test = dataset.testing.mapped_triples
    cold_side = (degree[test[:, 0]] <= 1) | (degree[test[:, 2]] <= 1)
    assert cold_side.float().mean() > 0.5  # most test triples need the modalities


def test_features_encode_the_planted_attributes():
    # image rows of entities with the same colour are far more alike than rows of different colours
    splits, modalities = generate_synthetic_mmkg(num_colours=5, num_shapes=6, num_relations=2, triples_per_entity=2)
    image = modalities["image"]
    rows = torch.nn.functional.normalize(image.features[image.present], dim=1)
    similarity = rows @ rows.T
    assert similarity.max() > 0.6 and similarity.min() < 0.3


def test_get_dataset_generates_afresh_without_pykeen_cache():
    """``get_dataset("SyntheticMMKG")`` writes no cache: a cached copy would outlive a change of the generator."""
    from pykeen.constants import PYKEEN_DATASETS
    from pykeen.datasets import get_dataset

    cache = PYKEEN_DATASETS.joinpath("syntheticmmkg", "cache")

    def cached() -> set[str]:  # compared before and after: a developer's PYKEEN_HOME may hold an old cache
        return {p.name for p in cache.iterdir()} if cache.is_dir() else set()

    before = cached()
    first = get_dataset(dataset="SyntheticMMKG", dataset_kwargs=dict(seed=5))
    second = get_dataset(dataset="SyntheticMMKG", dataset_kwargs=dict(seed=5))
    assert isinstance(first, SyntheticMMKG) and isinstance(second, SyntheticMMKG)
    assert first.training.create_inverse_triples and second.training.create_inverse_triples
    assert torch.equal(first.training.mapped_triples, second.training.mapped_triples)
    assert cached() == before


def test_relation_attributes_default_is_the_original_graph():
    default, features = generate_synthetic_mmkg(seed=4)
    explicit, explicit_features = generate_synthetic_mmkg(seed=4, relation_attributes="both")
    assert all(np.array_equal(default[key], explicit[key]) for key in default)
    assert all(features[name] == explicit_features[name] for name in features)
    assert SyntheticMMKG().training.metadata["relation_attributes"] == {f"r{i:02d}": "both" for i in range(6)}


def _attribute_maps(relation_attributes) -> dict[str, tuple[bool, bool]]:
    """Per relation: whether the tail's colour is a function of the head's colour, and its shape of the head's shape.

    Without noise and missing rows, two entities share a colour iff their image rows are equal (shape: text rows).
    """
    splits, modalities = generate_synthetic_mmkg(
        num_colours=4,
        num_shapes=5,
        num_relations=4,
        triples_per_entity=4,
        noise=0.0,
        missing_fraction=0.0,
        relation_attributes=relation_attributes,
        seed=1,
    )
    code = {
        name: {f"e{i:05d}": tuple(row) for i, row in enumerate(modalities[name].features.tolist())}
        for name in ("image", "text")
    }
    triples = np.concatenate(list(splits.values()))
    result = {}
    for relation in sorted(set(triples[:, 1])):
        rows = triples[triples[:, 1] == relation]
        functional = []
        for name in ("image", "text"):
            images: dict[tuple, set] = {}
            for head, _, tail in rows:
                images.setdefault(code[name][head], set()).add(code[name][tail])
            functional.append(all(len(tails) == 1 for tails in images.values()))
        result[str(relation)] = tuple(functional)
    return result


def test_relation_attributes_plant_colour_only_and_shape_only_relations():
    # colour relations: the tail's colour follows the head's, its shape does not (and the other way round)
    assert _attribute_maps("alternate") == {
        "r00": (True, False),
        "r01": (False, True),
        "r02": (True, False),
        "r03": (False, True),
    }
    assert _attribute_maps(["both", "colour", "shape", "both"]) == {
        "r00": (True, True),
        "r01": (True, False),
        "r02": (False, True),
        "r03": (True, True),
    }
    dataset = SyntheticMMKG(relation_attributes="alternate", num_relations=4, triples_per_entity=4)
    assert dataset.training.metadata["relation_attributes"] == {
        "r00": "colour",
        "r01": "shape",
        "r02": "colour",
        "r03": "shape",
    }


def test_relation_attributes_errors():
    with pytest.raises(ValueError, match="names 2 relations, the graph has num_relations=6"):
        generate_synthetic_mmkg(relation_attributes=["colour", "shape"])
    with pytest.raises(ValueError, match=r"unknown \['size'\]"):
        generate_synthetic_mmkg(relation_attributes="size")
