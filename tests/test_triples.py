"""Tests for ModalityFeatures and MultiModalTriplesFactory (copies, binary cache, PyKEEN's get_dataset)."""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import pytest
import torch
from pykeen.datasets import dataset_resolver, get_dataset
from pykeen.datasets.base import EagerDataset, LazyDataset
from pykeen.triples import TriplesFactory

from pykeen_momok.triples import ModalityFeatures, MultiModalTriplesFactory

NUM_ENTITIES = 20


def _labeled_triples(num_triples: int = 150, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    heads = rng.integers(NUM_ENTITIES, size=num_triples)
    tails = (heads + 1 + rng.integers(NUM_ENTITIES - 1, size=num_triples)) % NUM_ENTITIES
    relations = rng.integers(3, size=num_triples)
    # a chain through every entity, so that all entities occur
    heads = np.concatenate([heads, np.arange(NUM_ENTITIES)])
    tails = np.concatenate([tails, (np.arange(NUM_ENTITIES) + 1) % NUM_ENTITIES])
    relations = np.concatenate([relations, np.zeros(NUM_ENTITIES, dtype=int)])
    triples = np.stack([[f"e{h:02d}" for h in heads], [f"r{r}" for r in relations], [f"e{t:02d}" for t in tails]], 1)
    return np.unique(triples, axis=0)


def _modality(dim: int, seed: int, fill: str = "mean", num_entities: int = NUM_ENTITIES) -> ModalityFeatures:
    generator = torch.Generator().manual_seed(seed)
    present = torch.rand(num_entities, generator=generator) > 0.3
    return ModalityFeatures(features=torch.randn(num_entities, dim, generator=generator), present=present, fill=fill)


def _factory(create_inverse_triples: bool = False) -> MultiModalTriplesFactory:
    return MultiModalTriplesFactory.from_labeled_triples(
        _labeled_triples(),
        create_inverse_triples=create_inverse_triples,
        modalities={"text": _modality(3, seed=1), "image": _modality(5, seed=2, fill="zeros")},
    )


def _assert_same_modalities(a: MultiModalTriplesFactory, b: MultiModalTriplesFactory) -> None:
    assert list(a.modalities) == list(b.modalities)
    for name, modality in a.modalities.items():
        other = b.modalities[name]
        assert modality.fill == other.fill
        assert torch.equal(modality.features, other.features)
        assert torch.equal(modality.present, other.present)


# ModalityFeatures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "present", "fill", "error", "pattern"),
    [
        (torch.ones(3), torch.ones(3, dtype=torch.bool), "mean", ValueError, r"must be 2-D.*got shape \(3,\)"),
        (torch.ones(3, 2, dtype=torch.long), torch.ones(3, dtype=torch.bool), "mean", TypeError, "floating dtype"),
        (torch.ones(3, 2), torch.ones(3), "mean", TypeError, "bool mask, got dtype torch.float32"),
        (torch.ones(3, 2), torch.ones(4, dtype=torch.bool), "mean", ValueError, r"shape \(3,\).*got \(4,\)"),
        (torch.ones(3, 2), torch.ones(3, dtype=torch.bool), "median", ValueError, "fill must be one of"),
        ([[1.0]], torch.ones(1, dtype=torch.bool), "mean", TypeError, "must be a torch.Tensor, got list"),
    ],
)
def test_modality_features_validation(features, present, fill, error, pattern) -> None:
    with pytest.raises(error, match=pattern):
        ModalityFeatures(features=features, present=present, fill=fill)


def test_modality_features_non_finite_rows_are_named() -> None:
    features = torch.zeros(5, 2)
    features[1, 0] = float("nan")
    features[3, 1] = float("inf")
    with pytest.raises(ValueError, match=r"features of 2 entities are not finite.*entity ids: \[1, 3\]"):
        ModalityFeatures(features=features, present=torch.ones(5, dtype=torch.bool))


def test_modality_features_properties() -> None:
    modality = ModalityFeatures(features=np.ones((4, 3)), present=np.array([True, False, True, True]))
    assert modality.features.dtype == torch.float32  # converted from float64 numpy
    assert (modality.num_entities, modality.dim, modality.num_present) == (4, 3, 3)
    assert repr(modality) == "ModalityFeatures((4, 3), present=3/4, fill='mean')"
    assert modality == ModalityFeatures(features=torch.ones(4, 3), present=modality.present.clone())
    assert modality != ModalityFeatures(features=torch.ones(4, 3), present=modality.present, fill="zeros")
    with pytest.raises(TypeError):
        hash(modality)
    with pytest.raises(AttributeError):
        modality.fill = "zeros"  # type: ignore[misc]
    selected = modality.select(torch.tensor([1, 0]))
    assert selected.present.tolist() == [False, True]


# the factory -----------------------------------------------------------------------------------------


def test_factory_validates_modalities() -> None:
    triples = _labeled_triples()
    with pytest.raises(ValueError, match=r"modality 'image' has 7 rows but the triples factory has 20 entities"):
        MultiModalTriplesFactory.from_labeled_triples(triples, modalities={"image": _modality(2, 0, num_entities=7)})
    with pytest.raises(TypeError, match=r"modality 'text' must be a ModalityFeatures, got Tensor"):
        MultiModalTriplesFactory.from_labeled_triples(triples, modalities={"text": torch.ones(20, 2)})


def test_factory_repr_shows_shapes_not_values() -> None:
    factory = _factory()
    text, image = factory.modalities["text"], factory.modalities["image"]
    assert f"modalities={{text: (20, 3) present={text.num_present}, image: (20, 5) present={image.num_present}}}" in (
        repr(factory)
    )
    assert list(factory.modalities) == ["text", "image"]  # insertion order


@pytest.mark.parametrize("create_inverse_triples", [False, True])
def test_binary_round_trip(tmp_path: pathlib.Path, create_inverse_triples: bool) -> None:
    factory = _factory(create_inverse_triples=create_inverse_triples)
    factory.to_path_binary(tmp_path / "tf")
    loaded = MultiModalTriplesFactory.from_path_binary(tmp_path / "tf")
    assert isinstance(loaded, MultiModalTriplesFactory)
    assert loaded == factory
    assert loaded.create_inverse_triples is create_inverse_triples
    assert loaded.num_relations == factory.num_relations == 3 * (2 if create_inverse_triples else 1)
    assert loaded.entity_to_id == factory.entity_to_id
    _assert_same_modalities(loaded, factory)
    # the file is loadable with weights_only=True
    torch.load(tmp_path / "tf" / MultiModalTriplesFactory.file_name_modalities, weights_only=True)


def test_binary_stores_views_compactly(tmp_path: pathlib.Path) -> None:
    big = torch.randn(NUM_ENTITIES, 10_000)
    view = ModalityFeatures(features=big[:, :2], present=torch.ones(NUM_ENTITIES, dtype=torch.bool))
    factory = MultiModalTriplesFactory.from_labeled_triples(_labeled_triples(), modalities={"v": view})
    factory.to_path_binary(tmp_path / "tf")
    assert (tmp_path / "tf" / MultiModalTriplesFactory.file_name_modalities).stat().st_size < 10_000
    _assert_same_modalities(MultiModalTriplesFactory.from_path_binary(tmp_path / "tf"), factory)


def test_binary_without_modality_file(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    TriplesFactory.from_labeled_triples(_labeled_triples()).to_path_binary(tmp_path / "plain")
    with caplog.at_level(logging.WARNING):
        loaded = MultiModalTriplesFactory.from_path_binary(tmp_path / "plain")
    assert loaded.modalities == {}
    assert "modalities.pt does not exist" in caplog.text


def test_clone_split_restrict_merge_keep_modalities() -> None:
    factory = _factory(create_inverse_triples=True)
    clone = factory.clone_and_exchange_triples(factory.mapped_triples[:10])
    assert isinstance(clone, MultiModalTriplesFactory)
    assert clone.num_triples == 10
    assert clone.modalities["text"] is factory.modalities["text"]

    training, testing, validation = factory.split([0.8, 0.1, 0.1], random_state=0)
    for part in (training, testing, validation):
        assert isinstance(part, MultiModalTriplesFactory)
        assert part.modalities["image"] is factory.modalities["image"]
        assert part.entity_to_id == factory.entity_to_id
    assert training.create_inverse_triples and not testing.create_inverse_triples

    restricted = factory.new_with_restriction(relations=["r1"])
    assert isinstance(restricted, MultiModalTriplesFactory)
    assert restricted.num_triples < factory.num_triples
    _assert_same_modalities(restricted, factory)

    as_training = validation.clone_and_exchange_triples(validation.mapped_triples, create_inverse_triples=True)
    merged = training.merge(as_training)
    assert isinstance(merged, MultiModalTriplesFactory)
    _assert_same_modalities(merged, factory)


def test_inverse_triples() -> None:
    factory = _factory(create_inverse_triples=True)
    assert factory.create_inverse_triples
    assert (factory.num_relations, factory.real_num_relations) == (6, 3)
    assert factory.get_inverse_relation_id(0) == 1
    copy = factory.with_modalities({})
    assert copy.create_inverse_triples and copy.num_relations == 6


def test_with_labels_keeps_modalities() -> None:
    factory = _factory()
    entity_to_id = {label.upper(): i for label, i in factory.entity_to_id.items()}
    relabeled = factory.with_labels(entity_to_id=entity_to_id, relation_to_id=factory.relation_to_id)
    assert isinstance(relabeled, MultiModalTriplesFactory)
    assert relabeled.entity_to_id == entity_to_id
    _assert_same_modalities(relabeled, factory)


def test_condense_selects_feature_rows() -> None:
    triples = np.array([["a", "r", "b"], ["b", "r", "d"]])
    entity_to_id = {"a": 0, "b": 1, "c": 2, "d": 3}  # "c" occurs in no triple
    features = torch.arange(8, dtype=torch.float32).view(4, 2)
    modality = ModalityFeatures(features=features, present=torch.tensor([True, True, False, True]))
    factory = MultiModalTriplesFactory.from_labeled_triples(
        triples, entity_to_id=entity_to_id, modalities={"x": modality}
    )
    condensed = factory.condense()
    assert condensed.num_entities == 3
    assert condensed.entity_to_id == {"a": 0, "b": 1, "d": 2}
    assert condensed.modalities["x"].features.tolist() == [[0.0, 1.0], [2.0, 3.0], [6.0, 7.0]]
    assert condensed.modalities["x"].present.tolist() == [True, True, True]
    assert factory.condense(entities=False) is factory


def test_constructors_and_with_modalities(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "triples.tsv"
    path.write_text("\n".join("\t".join(row) for row in _labeled_triples()) + "\n")
    text = _modality(3, seed=1)
    from_path = MultiModalTriplesFactory.from_path(path, modalities={"text": text}, create_inverse_triples=True)
    assert from_path.modalities["text"] is text and from_path.create_inverse_triples

    plain = TriplesFactory.from_path(path, create_inverse_triples=True)
    converted = MultiModalTriplesFactory.from_triples_factory(plain, modalities={"text": text})
    assert converted == from_path
    assert converted.mapped_triples is plain.mapped_triples

    image = _modality(2, seed=3)
    extended = converted.with_modalities({**converted.modalities, "image": image})
    assert list(extended.modalities) == ["text", "image"]
    assert list(converted.modalities) == ["text"]  # unchanged
    assert extended != converted
    assert converted.with_modalities({}) == plain  # structure only: equal to the plain factory
    assert plain == converted.with_modalities({})


# PyKEEN's get_dataset cache --------------------------------------------------------------------------


class TinyMultiModalGraph(LazyDataset):
    """A generated dataset whose factories carry modalities; for the cache test."""

    triples_factory_cls = MultiModalTriplesFactory

    def __init__(self, tag: str, create_inverse_triples: bool = False) -> None:
        """Initialize; ``tag`` only makes the cache key unique."""
        self.tag = tag
        self._create_inverse_triples = create_inverse_triples

    def _load(self) -> None:
        self._training, self._testing, self._validation = _factory(self._create_inverse_triples).split(
            [0.8, 0.1, 0.1], random_state=0
        )

    def _load_validation(self) -> None:
        pass


def test_get_dataset_cache_round_trip(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pykeen.constants import PYKEEN_DATASETS

    key = dataset_resolver.normalize_cls(TinyMultiModalGraph)
    monkeypatch.setitem(dataset_resolver.lookup_dict, key, TinyMultiModalGraph)
    kwargs = dict(tag=str(tmp_path), create_inverse_triples=True)
    expected = _factory(create_inverse_triples=True)

    fresh = get_dataset(dataset=TinyMultiModalGraph, dataset_kwargs=kwargs)
    assert isinstance(fresh, TinyMultiModalGraph)
    assert any(PYKEEN_DATASETS.joinpath(key, "cache").iterdir())

    cached = get_dataset(dataset=TinyMultiModalGraph, dataset_kwargs=kwargs)
    assert isinstance(cached, EagerDataset)
    for dataset in (fresh, cached):
        assert dataset.training.create_inverse_triples
        assert dataset.training.num_relations == 6
        for factory in dataset.factory_dict.values():
            assert isinstance(factory, MultiModalTriplesFactory)
            _assert_same_modalities(factory, expected)
        assert not dataset.testing.create_inverse_triples
    assert cached == fresh
