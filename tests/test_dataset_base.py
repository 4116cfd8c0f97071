"""Tests for MultiModalDataset and the triple/id file parsers."""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import pytest
import torch
from pykeen.datasets import dataset_resolver, get_dataset
from pykeen.datasets.base import EagerDataset

from pykeen_momok.datasets.base import MultiModalDataset, detect_triples_format, map_triples, read_triples_file
from pykeen_momok.features import DataFormatError, FeatureSource
from pykeen_momok.triples import MultiModalTriplesFactory

from conftest import shared_dataset_dir

TRAIN = [("a", "likes", "b"), ("b", "likes", "c"), ("c", "knows", "a"), ("a", "knows", "d")]
VALID = [("b", "knows", "d")]
TEST = [("d", "likes", "e")]  # "e" occurs only in the test split
#: a deliberately non-alphabetical id order
ENTITY2ID = {"e": 0, "d": 1, "c": 2, "b": 3, "a": 4}
RELATION2ID = {"likes": 1, "knows": 0}


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text, encoding="utf-8")
    return path


def _dot(triples) -> str:
    return "".join(f"{h} {r} {t} .\n" for h, r, t in triples)


def _tsv(triples) -> str:
    return "".join(f"{h}\t{r}\t{t}\n" for h, r, t in triples)


def _ids(mapping) -> str:
    return "".join(f"{label} {i}\n" for label, i in mapping.items())


@pytest.fixture
def kg(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder with the conventional names: dot triples, id files, an image matrix in entity2id order and a
    text matrix with its own label list (covering 3 of the 5 entities)."""
    _write(tmp_path / "train.txt", _dot(TRAIN))
    _write(tmp_path / "valid.txt", _dot(VALID))
    _write(tmp_path / "test.txt", _dot(TEST))
    _write(tmp_path / "entity2id.txt", _ids(ENTITY2ID))
    _write(tmp_path / "relation2id.txt", _ids(RELATION2ID))
    np.save(tmp_path / "image.npy", np.arange(10, dtype=np.float32).reshape(5, 2))  # row i = entity id i
    np.save(tmp_path / "text.npy", np.array([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0], [2.0, 2.0, 2.0]]))
    _write(tmp_path / "text_entities.txt", "a\nc\tsome name\nb\n")
    return tmp_path


# parsers ---------------------------------------------------------------------------------------------


def test_read_triples_formats(tmp_path: pathlib.Path) -> None:
    tsv = _write(tmp_path / "t.tsv", "New York\tlocated in\tUSA\r\n\nb\tr\tc\t.\n")
    dot = _write(tmp_path / "t.txt", "<http://x/a> <http://x/r> <http://x/b> .\n\n  a\tr  b  .\n")
    assert detect_triples_format(tsv) == "tsv" and detect_triples_format(dot) == "dot"
    assert read_triples_file(tsv).tolist() == [["New York", "located in", "USA"], ["b", "r", "c"]]
    assert read_triples_file(dot).tolist() == [["<http://x/a>", "<http://x/r>", "<http://x/b>"], ["a", "r", "b"]]
    assert read_triples_file(dot, "dot").dtype == object
    assert read_triples_file(_write(tmp_path / "empty.txt", "")).shape == (0, 3)


@pytest.mark.parametrize(
    ("text", "fmt", "pattern"),
    [
        ("a\tr\tb\na\tr\n", "auto", r"line 2: malformed triple, expected 'head<TAB>relation<TAB>tail'.*got 'a\\tr'"),
        ("a\tr\tb\n\na\t\tb\n", "tsv", r"line 3: malformed triple.*non-empty labels, got 'a\\t\\tb'"),
        ("a r b .\n\n\na r b\n", "auto", r"line 4: malformed triple, expected 'head relation tail \.'.*got 'a r b'"),
        ("a r b .\nNew York r b .\nx y\n", "dot", r"line 2: malformed triple.*got 'New York r b \.' \(2 malformed"),
        ("a r b\n", "auto", r"line 1: cannot tell the triples format.*got 'a r b'"),
        ("a\tr\tb\n", "dot", r"line 1: malformed triple, expected 'head relation tail \.'"),
    ],
)
def test_read_triples_errors(tmp_path: pathlib.Path, text: str, fmt: str, pattern: str) -> None:
    path = _write(tmp_path / "train.txt", text)
    with pytest.raises(DataFormatError, match=r"train\.txt', " + pattern):
        read_triples_file(path, fmt)  # type: ignore[arg-type]


def test_map_triples_errors_and_drops(caplog: pytest.LogCaptureFixture) -> None:
    triples = np.array([["a", "r", "b"], ["a", "r", "x"], ["a", "s", "b"]], dtype=object)
    entity_to_id, relation_to_id = {"a": 0, "b": 1}, {"r": 0}
    with pytest.raises(
        DataFormatError,
        match=r"'f\.txt', line 12: entity 'x' is not in 'e2id\.txt' \(triple: 'a r x'\); "
        r"unknown entity labels in 1 of 3",
    ):
        map_triples(
            triples,
            entity_to_id,
            relation_to_id,
            source="f.txt",
            line_numbers=np.array([10, 12, 13]),
            id_sources=("e2id.txt", None),
        )
    with caplog.at_level(logging.WARNING):
        mapped = map_triples(
            triples, entity_to_id, relation_to_id, source="f.txt", unknown_entities="drop", unknown_relations="drop"
        )
    assert mapped.tolist() == [[0, 0, 1]]
    assert "line 2: entity 'x' is not in the training triples" in caplog.text
    assert "line 3: relation 's' is not in the training triples" in caplog.text
    with pytest.raises(DataFormatError, match=r"line 3: relation 's' is not in the training triples"):
        map_triples(triples, entity_to_id, relation_to_id, source="f.txt", unknown_entities="drop")


# the dataset -----------------------------------------------------------------------------------------


def test_dataset_uses_entity2id_order_and_shares_everything(kg: pathlib.Path) -> None:
    dataset = MultiModalDataset(
        kg / "train.txt",
        kg / "test.txt",
        kg / "valid.txt",
        entity2id_path=kg / "entity2id.txt",
        relation2id_path=kg / "relation2id.txt",
        modalities={
            "image": kg / "image.npy",
            "text": FeatureSource(kg / "text.npy", labels=kg / "text_entities.txt", fill="zeros"),
        },
    )
    training, testing, validation = dataset.training, dataset.testing, dataset.validation
    assert training.entity_to_id == ENTITY2ID and training.relation_to_id == RELATION2ID
    assert dataset.num_entities == 5  # "e" occurs only in testing and still has an id
    assert testing.mapped_triples.tolist() == [[ENTITY2ID["d"], RELATION2ID["likes"], ENTITY2ID["e"]]]
    assert (training.num_triples, validation.num_triples, testing.num_triples) == (4, 1, 1)
    assert training.create_inverse_triples and training.num_relations == 4
    assert not testing.create_inverse_triples and not validation.create_inverse_triples
    for factory in (training, testing, validation):
        assert isinstance(factory, MultiModalTriplesFactory)
        assert factory.entity_to_id == training.entity_to_id and factory.relation_to_id == training.relation_to_id
        assert list(factory.modalities) == ["image", "text"]
        assert factory.modalities["image"] is training.modalities["image"]
    image, text = training.modalities["image"], training.modalities["text"]
    assert image.features[ENTITY2ID["c"]].tolist() == [4.0, 5.0] and image.present.all()
    assert text.features[ENTITY2ID["c"]].tolist() == [3.0, 3.0, 3.0]
    assert text.features[ENTITY2ID["e"]].tolist() == [0.0, 0.0, 0.0]
    assert text.present.tolist() == [False, False, True, True, True]  # ids of e, d, c, b, a


def test_dataset_without_id_files(kg: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(kg / "train.tsv", _tsv(TRAIN))
    _write(kg / "test.txt", _dot(TEST + [("a", "likes", "c")]))
    dataset = MultiModalDataset(
        kg / "train.tsv",  # TSV training, dot evaluation: detected per file
        kg / "test.txt",
        kg / "valid.txt",
        modalities={"text": FeatureSource(kg / "text.npy", labels=kg / "text_entities.txt")},
        create_inverse_triples=False,
    )
    with caplog.at_level(logging.WARNING):
        training = dataset.training
    # the training triples define the ids: sorted labels, as in PyKEEN
    assert training.entity_to_id == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert training.relation_to_id == {"knows": 0, "likes": 1}
    assert not training.create_inverse_triples
    assert dataset.testing.num_triples == 1  # its first triple names "e", unseen in training: dropped
    assert "test.txt', line 1: entity 'e' is not in the training triples" in caplog.text
    assert dataset.validation.num_triples == 1
    assert training.modalities["text"].present.tolist() == [True, True, True, False]


def test_dataset_entity_missing_from_entity2id(kg: pathlib.Path) -> None:
    _write(kg / "valid.txt", "b knows d .\n\nb knows zed .\n")
    dataset = MultiModalDataset(
        kg / "train.txt", kg / "test.txt", kg / "valid.txt", entity2id_path=kg / "entity2id.txt"
    )
    with pytest.raises(DataFormatError, match=r"valid\.txt', line 3: entity 'zed' is not in '.*entity2id\.txt'"):
        dataset.training


def test_dataset_relation_missing_from_relation2id(kg: pathlib.Path) -> None:
    _write(kg / "relation2id.txt", "likes 0\n")
    with pytest.raises(DataFormatError, match=r"train\.txt', line 3: relation 'knows' is not in '.*relation2id\.txt'"):
        MultiModalDataset(kg / "train.txt", kg / "test.txt", relation2id_path=kg / "relation2id.txt", eager=True)


def test_dataset_malformed_triples_and_bad_entity2id(kg: pathlib.Path) -> None:
    _write(kg / "test.txt", "d likes e .\nd likes\n")
    with pytest.raises(DataFormatError, match=r"test\.txt', line 2: malformed triple.*got 'd likes'"):
        MultiModalDataset(kg / "train.txt", kg / "test.txt", eager=True)
    _write(kg / "bad2id.txt", "e 0\nd 1\nc 1\n")
    with pytest.raises(DataFormatError, match=r"bad2id\.txt', line 3: id 1 was already given on line 2"):
        MultiModalDataset(kg / "train.txt", kg / "valid.txt", entity2id_path=kg / "bad2id.txt", eager=True)


def test_dataset_argument_errors(kg: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"modality 'image': the rows of .*image\.npy' can only follow the entity ids"):
        MultiModalDataset(kg / "train.txt", kg / "test.txt", modalities={"image": kg / "image.npy"})
    with pytest.raises(FileNotFoundError, match=r"validation triples file .*nope\.txt' does not exist"):
        MultiModalDataset(kg / "train.txt", kg / "test.txt", kg / "nope.txt")
    with pytest.raises(FileNotFoundError, match=r"modality 'text': .*missing\.txt' does not exist"):
        MultiModalDataset(
            kg / "train.txt",
            kg / "test.txt",
            modalities={"text": FeatureSource(kg / "text.npy", labels=kg / "missing.txt")},
        )
    with pytest.raises(ValueError, match="triples_format must be one of"):
        MultiModalDataset(kg / "train.txt", kg / "test.txt", triples_format="csv")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"modality 'x': expected a FeatureSource or a path, got int"):
        MultiModalDataset(kg / "train.txt", kg / "test.txt", modalities={"x": 3})  # type: ignore[dict-item]


def test_dataset_modality_row_count_error(kg: pathlib.Path) -> None:
    np.save(kg / "image.npy", np.ones((4, 2)))
    dataset = MultiModalDataset.from_directory(kg, modalities=["image"])
    with pytest.raises(DataFormatError, match=r"image\.npy' has 4 rows but the graph has 5 entities"):
        dataset.training


def test_dataset_is_lazy_and_repr_does_not_load(kg: pathlib.Path) -> None:
    dataset = MultiModalDataset.from_directory(kg)
    assert "modalities=['image', 'text']" in repr(dataset)
    assert dataset._training is None
    assert MultiModalDataset.from_directory(kg, eager=True)._training is not None
    no_validation = MultiModalDataset(kg / "train.txt", kg / "test.txt", entity2id_path=kg / "entity2id.txt")
    assert no_validation.validation is None
    assert set(no_validation.factory_dict) == {"training", "testing"}


def test_from_directory(kg: pathlib.Path) -> None:
    dataset = MultiModalDataset.from_directory(kg)
    assert dataset.entity2id_path == kg / "entity2id.txt"
    assert dataset.modality_sources["text"].labels == kg / "text_entities.txt"
    assert dataset.modality_sources["image"].follows_entity_ids
    assert dataset.training.entity_to_id == ENTITY2ID
    assert dataset.validation.num_triples == 1

    only_text = MultiModalDataset.from_directory(kg, modalities=["text"], fill="normal", create_inverse_triples=False)
    assert list(only_text.training.modalities) == ["text"]
    assert only_text.training.modalities["text"].fill == "normal"
    assert not only_text.training.create_inverse_triples

    mapping = MultiModalDataset.from_directory(kg, modalities={"pixels": "image.npy"})
    assert mapping.modality_sources["pixels"].path == kg / "image.npy"

    with pytest.raises(FileNotFoundError, match=r"no feature file for modality 'audio'.*found: \['image', 'text'\]"):
        MultiModalDataset.from_directory(kg, modalities=["audio"])
    torch.save(torch.ones(5, 2), kg / "image.pt")
    with pytest.raises(ValueError, match=r"several feature files for the same modality.*'image.npy', 'image.pt'"):
        MultiModalDataset.from_directory(kg)
    _write(kg / "train.tsv", _tsv(TRAIN))
    with pytest.raises(ValueError, match=r"several training files: \['train.txt', 'train.tsv'\]"):
        MultiModalDataset.from_directory(kg)
    (kg / "train.tsv").unlink()
    (kg / "train.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no training file"):
        MultiModalDataset.from_directory(kg)


def test_restrict_selects_feature_rows(kg: pathlib.Path) -> None:
    # PyKEEN 1.11.1's Dataset.restrict fails unless each evaluation split names the largest kept entity and
    # relation ids
    _write(kg / "valid.txt", "a knows c .\nb likes a .\n")
    _write(kg / "test.txt", "a likes b .\nc knows a .\nd likes e .\n")
    dataset = MultiModalDataset.from_directory(kg)
    restricted = dataset.restrict(entities=["a", "b", "c", "d"])
    training = restricted.training
    assert isinstance(training, MultiModalTriplesFactory)
    assert set(training.entity_to_id) == {"a", "b", "c", "d"}
    assert training.entity_to_id != {label: dataset.training.entity_to_id[label] for label in training.entity_to_id}
    assert training.create_inverse_triples
    image = dataset.training.modalities["image"]
    for label, new_id in training.entity_to_id.items():
        old_id = dataset.training.entity_to_id[label]
        assert torch.equal(training.modalities["image"].features[new_id], image.features[old_id])
    for factory in restricted.factory_dict.values():
        assert isinstance(factory, MultiModalTriplesFactory)
        assert factory.modalities is training.modalities or factory.modalities == training.modalities
    assert dataset.restrict() is dataset


def test_get_dataset_cache_round_trip(kg: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class LocalMMKG(MultiModalDataset):
        """A user's dataset, registered for this test only."""

    key = dataset_resolver.normalize_cls(LocalMMKG)
    monkeypatch.setitem(dataset_resolver.lookup_dict, key, LocalMMKG)
    kwargs = dict(
        training_path=str(kg / "train.txt"),
        testing_path=str(kg / "test.txt"),
        validation_path=str(kg / "valid.txt"),
        entity2id_path=str(kg / "entity2id.txt"),
        modalities={"text": FeatureSource(kg / "text.npy", labels=kg / "text_entities.txt"), "image": kg / "image.npy"},
        create_inverse_triples=True,
    )
    fresh = get_dataset(dataset=LocalMMKG, dataset_kwargs=kwargs)
    assert isinstance(fresh, LocalMMKG)
    cached = get_dataset(dataset=LocalMMKG, dataset_kwargs=kwargs)
    assert isinstance(cached, EagerDataset)
    assert cached == fresh
    for dataset in (fresh, cached):
        assert dataset.training.create_inverse_triples and dataset.training.num_relations == 4
        for factory in dataset.factory_dict.values():
            assert isinstance(factory, MultiModalTriplesFactory)
            assert list(factory.modalities) == ["text", "image"]
            assert factory.modalities == fresh.training.modalities
            assert factory.modalities["text"] is dataset.training.modalities["text"]  # one copy in memory
    # stored once, with the training factory
    from pykeen.constants import PYKEEN_DATASETS

    (cache,) = PYKEEN_DATASETS.joinpath(key, "cache").iterdir()
    stored = torch.load(cache / "testing" / MultiModalTriplesFactory.file_name_modalities, weights_only=True)
    assert stored["modalities"] == []
    assert "momok_modalities_stored_with_training" not in (cached.metadata or {})


def test_real_mkg_y() -> None:
    root = shared_dataset_dir("MKG-Y")
    dataset = MultiModalDataset(
        root / "train.txt",
        root / "test.txt",
        root / "valid.txt",
        entity2id_path=root / "entity2id.txt",
        relation2id_path=root / "relation2id.txt",
        modalities={"text": FeatureSource(root / "text_minilm.npy", labels=root / "text_minilm_entities.txt")},
    )
    training = dataset.training
    assert training.num_entities == 15_000
    assert training.real_num_relations == 28 and training.num_relations == 56
    assert (training.num_triples, dataset.validation.num_triples, dataset.testing.num_triples) == (21_310, 2_665, 2_663)
    text = training.modalities["text"]
    assert text.features.shape == (15_000, 384) and text.features.dtype == torch.float32
    assert bool(text.present.all())

    raw = np.load(root / "text_minilm.npy")
    labels = (root / "text_minilm_entities.txt").read_text(encoding="utf-8").splitlines()
    entity2id = dict(line.rsplit(None, 1) for line in (root / "entity2id.txt").read_text(encoding="utf-8").splitlines())
    for row in (0, 7_321, 14_999):
        label = labels[row]
        entity_id = training.entity_to_id[label]
        assert entity_id == int(entity2id[label])
        np.testing.assert_array_equal(text.features[entity_id].numpy(), raw[row].astype(np.float32))
