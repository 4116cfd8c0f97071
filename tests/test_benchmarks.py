"""The benchmark datasets, loaded from the shared benchmark folder (``directory=``) and through the download path.

Each large dataset is loaded once per module (module-scoped fixtures) to keep the run short.
"""

from __future__ import annotations

import pathlib
import warnings
import zipfile

import h5py
import numpy as np
import pytest
import torch
from pykeen.datasets import get_dataset

from pykeen_momok.datasets.archives import read_image_index
from pykeen_momok.datasets.benchmarks import DB15K, KVC16K, MKGW, MKGY, FB15k237IMG, MMKGBenchmark
from pykeen_momok.datasets.download import ChecksumError, ManualDownloadRequired
from pykeen_momok.features import read_id_map
from tests.test_download import serve

from conftest import SHARED_DATA, shared_dataset_dir

#: the shared README table: entities, relations, train, valid, test
TABLE = {
    "DB15K": (12842, 279, 79222, 9904, 9902),
    "MKG-W": (15000, 169, 34196, 4276, 4274),
    "MKG-Y": (15000, 28, 21310, 2665, 2663),
    "FB15K-237-IMG": (14541, 237, 272115, 17535, 20466),
}
CLASSES = {"DB15K": DB15K, "MKG-W": MKGW, "MKG-Y": MKGY, "FB15K-237-IMG": FB15k237IMG}


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("benchmark-cache")


@pytest.fixture(scope="module", params=list(TABLE))
def loaded(request, cache_root):
    name = request.param
    folder = shared_dataset_dir(name)
    # the published splits, as the files hold them (DB15K's default validation is a held-out slice)
    dataset = CLASSES[name](directory=folder, cache_root=cache_root, progress=False, validation="published")
    dataset.training  # noqa: B018 -- load now
    return name, folder, dataset


def _split_lines(path: pathlib.Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_docdata_statistics_match_the_shared_table():
    for name, cls in CLASSES.items():
        entities, relations, train, valid, test = TABLE[name]
        stats = cls.docdata("statistics")
        assert (stats["entities"], stats["relations"]) == (entities, relations)
        assert (stats["training"], stats["validation"], stats["testing"]) == (train, valid, test)
        assert stats["triples"] == train + valid + test
        assert cls.docdata("name") == name
    assert KVC16K.docdata("statistics", "entities") == 16015


def test_counts_ids_and_no_dropped_triples(loaded):
    name, folder, dataset = loaded
    entities, relations, train, valid, test = TABLE[name]
    assert dataset.num_entities == entities
    assert dataset.training.real_num_relations == relations
    assert dataset.create_inverse_triples  # on by default
    assert dataset.training.num_relations == 2 * relations
    assert (dataset.training.num_triples, dataset.validation.num_triples, dataset.testing.num_triples) == (
        train,
        valid,
        test,
    )
    for factory, key in (
        (dataset.training, "training"),
        (dataset.validation, "validation"),
        (dataset.testing, "testing"),
    ):
        path = folder / dataset.split_files[key]
        lines = _split_lines(path)
        assert factory.num_triples == len(lines)  # no triple dropped
        # the labels of every triple survive the mapping (spot check of the first and last lines)
        for line in (lines[0], lines[-1]):
            parts = line.split("\t") if "\t" in line else line.split()[:3]
            h, r, t = (factory.entity_to_id[parts[0]], factory.relation_to_id[parts[1]], factory.entity_to_id[parts[2]])
            assert bool(((factory.mapped_triples == torch.tensor([h, r, t])).all(dim=1)).any())
    if (folder / "entity2id.txt").is_file():
        assert dataset.entity_to_id == read_id_map(folder / "entity2id.txt")
        assert dataset.relation_to_id == read_id_map(folder / "relation2id.txt")


def test_minilm_rows_line_up_with_labels(loaded):
    name, folder, dataset = loaded
    if not (folder / "text_minilm.npy").is_file():
        assert "text" not in dataset.training.modalities  # MKG-W: no names, no text features found
        return
    text = dataset.training.modalities["text"]
    assert text.features.shape == (dataset.num_entities, 384)
    assert bool(text.present.all())
    assert dataset.training.metadata["pooling"]["text"] == "mkg-text"
    assert dataset.testing.modalities["text"] is text  # the evaluation factories share the features
    shared = np.load(folder / "text_minilm.npy")
    labels = _split_lines(folder / "text_minilm_entities.txt")
    rng = np.random.default_rng(0)
    for row in rng.choice(len(labels), size=20, replace=False).tolist() + [0, len(labels) - 1]:
        label = labels[row]
        if label not in dataset.entity_to_id:  # FB15K-237-IMG: the file covers all of FB15K
            continue
        np.testing.assert_array_equal(
            text.features[dataset.entity_to_id[label]].numpy(), shared[row].astype(np.float32)
        )


@pytest.fixture(scope="module")
def db15k_image_h5(tmp_path_factory):
    """A stand-in for MMKB's DB15K_ImageData.h5 (one tiny vector per image id of the real index)."""
    folder = shared_dataset_dir("DB15K")
    index = read_image_index(folder / "DB15K_ImageIndex.txt")
    path = tmp_path_factory.mktemp("mmkb") / "DB15K_ImageData.h5"
    with h5py.File(path, "w") as file:
        for image_id in index.values():
            number = float(image_id.removeprefix("DBIMG"))
            file.create_dataset(image_id, data=np.full((1, 4), number, dtype=np.float32))
    return path, index


def test_image_less_entities_are_absent_mmkb_h5(db15k_image_h5, cache_root):
    path, index = db15k_image_h5
    folder = shared_dataset_dir("DB15K")
    dataset = DB15K(directory=folder, image_features=path, text_features=None, cache_root=cache_root, progress=False)
    image = dataset.training.modalities["image"]
    assert list(dataset.training.modalities) == ["image"]
    assert image.num_present == 12837  # the shared README: 12,837 of 12,842 entities have images
    for label, entity_id in list(dataset.entity_to_id.items())[:200]:
        if label in index:
            assert bool(image.present[entity_id])
            assert float(image.features[entity_id, 0]) == float(index[label].removeprefix("DBIMG"))
        else:
            assert not bool(image.present[entity_id])
    assert dataset.training.metadata["pooling"] == {"image": "identity"}  # a user file


def test_authors_archive_layout_and_pooling_hints(tmp_path):
    """MKG-Y with the authors' matrices (published shapes 383 / 384) in the archive layout."""
    folder = shared_dataset_dir("MKG-Y")
    embeddings = tmp_path / "momok_embeddings" / "embeddings" / "MKG-Y"
    embeddings.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(15000, 383, generator=generator)
    text = torch.rand(15000, 384, generator=generator)
    torch.save(image, embeddings / "img_features.pth")
    torch.save(text.numpy(), embeddings / "text_features.pth")  # the archive also has NumPy pickles
    dataset = MKGY(
        directory=folder, image_features="authors", text_features="auto", cache_root=tmp_path, progress=False
    )
    training = dataset.training
    assert list(training.modalities) == ["image", "text"]
    torch.testing.assert_close(training.modalities["image"].features, image)
    torch.testing.assert_close(training.modalities["text"].features, text)
    assert training.metadata["pooling"] == {"image": "identity", "text": "mkg-text"}
    assert training.metadata["feature_origin"]["text"].startswith("authors:")


def test_authors_archive_zip_is_extracted_from_the_cache(tmp_path):
    folder = shared_dataset_dir("MKG-Y")
    text = torch.rand(15000, 384)
    pth = tmp_path / "text_features.pth"
    torch.save(text, pth)
    archive_folder = tmp_path / "momok_embeddings"
    archive_folder.mkdir()
    with zipfile.ZipFile(archive_folder / "momok-embeddings.zip", "w") as zf:
        zf.write(pth, "embeddings/MKG-Y/text_features.pth")
    dataset = MKGY(directory=folder, image_features=None, text_features="authors", cache_root=tmp_path, progress=False)
    torch.testing.assert_close(dataset.training.modalities["text"].features, text)


def test_missing_authors_features_say_where_to_get_them(tmp_path):
    folder = shared_dataset_dir("MKG-W")
    dataset = MKGW(directory=folder, image_features="authors", cache_root=tmp_path, progress=False)
    with pytest.raises(ManualDownloadRequired) as info:
        dataset.training  # noqa: B018
    message = str(info.value)
    assert "https://drive.google.com/file/d/1dKJdJunb11kDtFr5NLfPlFknS7cRdm9W/view" in message
    assert str(tmp_path / "momok_embeddings" / "embeddings" / "MKG-W" / "img_features.pth") in message


def test_wrong_published_shape_is_rejected(tmp_path):
    folder = shared_dataset_dir("MKG-Y")
    embeddings = tmp_path / "momok_embeddings" / "embeddings" / "MKG-Y"
    embeddings.mkdir(parents=True)
    torch.save(torch.rand(15000, 100), embeddings / "img_features.pth")
    dataset = MKGY(directory=folder, image_features="authors", text_features=None, cache_root=tmp_path, progress=False)
    with pytest.raises(ValueError, match="expected width 383"):
        dataset.training  # noqa: B018


def test_directory_missing_a_file_is_explained(tmp_path):
    (tmp_path / "train.txt").write_text("a r b .\n")
    with pytest.raises(FileNotFoundError, match=r"valid.txt is missing from directory="):
        MKGY(directory=tmp_path, progress=False)
    with pytest.raises(FileNotFoundError, match=r"entity2id.txt|valid.txt"):
        KVC16K(directory=tmp_path, progress=False)


def test_kvc16k_files_are_verified_by_git_blob_ids():
    for spec in KVC16K.required_files:
        assert (
            spec.git_blob
            and spec.size
            and spec.url.startswith("https://raw.githubusercontent.com/zjukg/MoMoK/master/datasets/Kuai16K/")
        )


def test_every_benchmark_is_registered_by_name():
    """Adding a benchmark: its class (the spec) and checksums, then an entry point and a lazy export; checked here."""
    import configparser

    from pykeen.datasets import dataset_resolver

    import pykeen_momok

    setup = configparser.ConfigParser()
    setup.read(pathlib.Path(__file__).resolve().parents[1] / "setup.cfg")
    entry_points = setup["options.entry_points"]["pykeen.datasets"].split()
    benchmarks = MMKGBenchmark.__subclasses__()
    assert set(benchmarks) >= {DB15K, MKGW, MKGY, FB15k237IMG, KVC16K}
    for cls in benchmarks:
        assert f"pykeen_momok.datasets.benchmarks:{cls.__name__}" in entry_points, cls
        assert getattr(pykeen_momok, cls.__name__) is cls
        assert dataset_resolver.lookup(cls.docdata("name")) is cls


def test_public_urls():
    urls = {spec.name: spec.url for spec in MKGY.required_files}
    assert urls["train.txt"] == "https://raw.githubusercontent.com/zjukg/MoMoK/master/datasets/MKG-Y/train.txt"
    fb = {spec.name: spec for spec in FB15k237IMG.required_files}
    assert fb["valid.tsv"].url.endswith("/data/FB15k-237/dev.tsv") and fb["valid.tsv"].normalize_newlines


# -- directory= copies are checked against the published checksums (issue 12, item 2) ------------


def _mkgy_copy(tmp_path: pathlib.Path, **changed: bytes) -> pathlib.Path:
    """A folder with MKG-Y's files: links to the shared ones, and the ``changed`` files written anew."""
    source = shared_dataset_dir("MKG-Y")
    folder = tmp_path / "MKG-Y"
    folder.mkdir()
    for path in source.iterdir():
        name = path.name
        if name in changed:
            (folder / name).write_bytes(changed[name])
        else:
            (folder / name).symlink_to(path)
    return folder


def test_directory_with_a_cut_training_file_is_refused(tmp_path):
    lines = (shared_dataset_dir("MKG-Y") / "train.txt").read_bytes().splitlines(keepends=True)
    folder = _mkgy_copy(tmp_path, **{"train.txt": b"".join(lines[:5000])})
    with pytest.raises(ChecksumError) as info:
        MKGY(directory=folder, cache_root=tmp_path, progress=False)
    message = str(info.value)
    assert str(folder / "train.txt") in message and "is not the published MKG-Y/train.txt" in message
    assert "expected 1003671 bytes" in message and "verify='none'" in message
    # a copy cut on purpose: verify="none" loads it as it is
    cut = MKGY(directory=folder, cache_root=tmp_path, progress=False, verify="none")
    assert cut.training.num_triples == 5000


def test_directory_with_two_ids_swapped_is_refused(tmp_path):
    lines = (shared_dataset_dir("MKG-Y") / "entity2id.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (label_a, id_a), (label_b, id_b) = (lines[0].rsplit(None, 1), lines[1].rsplit(None, 1))
    assert len(id_a) == len(id_b)  # the swap keeps the size: only a hash tells
    lines[0], lines[1] = f"{label_a} {id_b}\n", f"{label_b} {id_a}\n"
    folder = _mkgy_copy(tmp_path, **{"entity2id.txt": "".join(lines).encode("utf-8")})
    assert (folder / "entity2id.txt").stat().st_size == (SHARED_DATA / "MKG-Y" / "entity2id.txt").stat().st_size
    with pytest.raises(ChecksumError, match=r"entity2id.txt.*sha256 mismatch"):
        MKGY(directory=folder, cache_root=tmp_path, progress=False)
    with pytest.raises(ChecksumError, match=r"entity2id.txt"):
        get_dataset(dataset="MKG-Y", dataset_kwargs=dict(directory=folder, cache_root=tmp_path, progress=False))
    swapped = MKGY(directory=folder, cache_root=tmp_path, progress=False, verify="none", text_features=None)
    assert swapped.training.entity_to_id[label_a.strip()] == int(id_b)


def test_directory_with_changed_optional_features_is_refused(tmp_path):
    data = bytearray((shared_dataset_dir("MKG-Y") / "text_minilm.npy").read_bytes())
    data[-1] ^= 0xFF
    folder = _mkgy_copy(tmp_path, **{"text_minilm.npy": bytes(data)})
    dataset = MKGY(directory=folder, cache_root=tmp_path, progress=False)  # "auto" finds the file
    with pytest.raises(ChecksumError, match=r"text_minilm.npy.*sha256 mismatch"):
        dataset.training  # noqa: B018


def test_verify_from_the_environment(tmp_path, monkeypatch):
    lines = (shared_dataset_dir("MKG-Y") / "train.txt").read_bytes().splitlines(keepends=True)
    folder = _mkgy_copy(tmp_path, **{"train.txt": b"".join(lines[:100])})
    monkeypatch.setenv("PYKEEN_MOMOK_VERIFY", "none")
    assert MKGY(directory=folder, cache_root=tmp_path, progress=False).training.num_triples == 100


# -- the download path, for real, against 127.0.0.1 ----------------------------------------------


def test_download_verify_then_cache(tmp_path):
    shared_dataset_dir("MKG-Y")
    with serve(SHARED_DATA) as (url, requests):
        first = MKGY(base_url=url, cache_root=tmp_path, text_features=None, progress=False)
        assert sorted(requests) == sorted(
            f"/MKG-Y/{name}" for name in ("train.txt", "valid.txt", "test.txt", "entity2id.txt", "relation2id.txt")
        )
        assert first.training.num_triples == 21310
        # the text features are optional files of the mirror: fetched when asked for
        with_text = MKGY(base_url=url, cache_root=tmp_path, text_features="minilm", progress=False, verify="full")
        assert with_text.training.modalities["text"].num_present == 15000
        count = len(requests)
        assert count == 7
        # second use: everything comes from the cache, the server sees nothing
        again = MKGY(base_url=url, cache_root=tmp_path, text_features="minilm", progress=False, verify="full")
        assert again.training.num_triples == 21310
        assert len(requests) == count
    for name in ("train.txt", "entity2id.txt", "text_minilm.npy"):
        assert (tmp_path / "mkgy" / name).read_bytes() == (SHARED_DATA / "MKG-Y" / name).read_bytes()


def test_corrupted_mirror_file_is_rejected_and_not_cached(tmp_path):
    source = shared_dataset_dir("MKG-Y")
    mirror = tmp_path / "mirror" / "MKG-Y"
    mirror.mkdir(parents=True)
    for name in ("train.txt", "valid.txt", "test.txt", "entity2id.txt", "relation2id.txt"):
        (mirror / name).symlink_to(source / name)
    (mirror / "test.txt").unlink()
    (mirror / "test.txt").write_bytes((source / "test.txt").read_bytes()[:-100])  # truncated
    cache = tmp_path / "cache"
    with serve(tmp_path / "mirror") as (url, _), pytest.raises(ChecksumError) as info:
        MKGY(base_url=url, cache_root=cache, progress=False)
    message = str(info.value)
    assert f"{url}/MKG-Y/test.txt" in message and "expected 125073 bytes" in message
    assert not (cache / "mkgy" / "test.txt").exists()
    assert not [p for p in (cache / "mkgy").iterdir() if p.name.startswith(".")]


def test_get_dataset_by_name_and_pykeen_cache(tmp_path):
    folder = shared_dataset_dir("MKG-Y")
    kwargs = dict(directory=str(folder), cache_root=str(tmp_path), create_inverse_triples=True, progress=False)
    first = get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    assert isinstance(first, MMKGBenchmark)
    second = get_dataset(dataset="mkgy", dataset_kwargs=kwargs)  # from PyKEEN's binary dataset cache
    assert second.training.modalities["text"] == first.training.modalities["text"]
    assert second.training.metadata["pooling"] == {"text": "mkg-text"}
    assert second.create_inverse_triples


def test_auto_features_that_are_absent_warn(tmp_path):
    """A benchmark folder without feature files gives a structure-only dataset, with a warning (issue 12, item 7)."""
    folder = shared_dataset_dir("MKG-W")
    with pytest.warns(UserWarning, match="no text features found locally") as caught:
        dataset = MKGW(directory=folder, cache_root=tmp_path, progress=False)
        dataset.training  # noqa: B018 -- load now
    assert any("no image features found locally" in str(w.message) for w in caught)
    assert dataset.training.modalities == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MKGW(
            directory=folder, cache_root=tmp_path / "b", progress=False, image_features=None, text_features=None
        ).training  # noqa: B018


def test_minilm_matrix_without_its_labels_file_warns(tmp_path):
    folder = shared_dataset_dir("MKG-Y")
    copy = tmp_path / "MKG-Y"
    copy.mkdir()
    for path in folder.iterdir():
        if path.name != "text_minilm_entities.txt":
            (copy / path.name).symlink_to(path)
    with pytest.warns(UserWarning, match="text_minilm_entities.txt'] is missing"):
        dataset = MKGY(directory=copy, cache_root=tmp_path / "c", progress=False, image_features=None)
        dataset.training  # noqa: B018 -- load now
    assert "text" not in dataset.training.modalities


def test_generated_id_files_of_two_folders_do_not_collide(tmp_path: pathlib.Path) -> None:
    """Two FB15K-237-IMG folders built before either is loaded each keep their own generated ids.

    Regression: the ids were written to one fixed name in the shared cache folder, so the second folder's ids
    replaced the first's before the first (lazily) read them.
    """

    def folder(name: str, labels: str) -> pathlib.Path:
        path = tmp_path / name
        path.mkdir()
        rows = "".join(f"/m/{a}\t/r/x\t/m/{b}\n" for a, b in zip(labels, labels[1:]))
        for split in ("train.tsv", "valid.tsv", "test.tsv"):
            (path / split).write_text(rows)
        return path

    kwargs = dict(verify="none", image_features=None, text_features=None)
    first = FB15k237IMG(directory=folder("first", "abcd"), **kwargs)
    second = FB15k237IMG(directory=folder("second", "vwxyz"), **kwargs)
    assert set(first.training.entity_to_id) == {"/m/a", "/m/b", "/m/c", "/m/d"}
    assert set(second.training.entity_to_id) == {f"/m/{x}" for x in "vwxyz"}
    assert first.training.num_triples == 3 and second.training.num_triples == 4
