"""The ``get_dataset`` cache of our datasets (issue 12, items 1, 3 and 11): keyed by what it was built from,
verified on every read, written atomically under a lock.

The benchmarks are real MKG-Y copies in ``tmp_path`` (a build takes about a second); the processes of the
concurrency tests share this session's ``PYKEEN_HOME``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from pykeen.constants import PYKEEN_DATASETS
from pykeen.datasets import dataset_resolver, get_dataset
from pykeen.datasets.base import EagerDataset

from pykeen_momok.datasets.base import MultiModalDataset
from pykeen_momok.datasets.benchmarks import MKGY
from pykeen_momok.datasets.cache import MANIFEST_NAME, DatasetCache
from pykeen_momok.datasets.download import ChecksumError
from tests.test_download import serve

from conftest import SHARED_DATA, shared_dataset_dir


def _summary(dataset) -> dict:
    """Everything a dataset holds, as hashes: triples, ids, inverse flag and feature tables per factory."""

    def digest(tensor) -> str:
        return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()

    summary = {}
    for key, factory in sorted(dataset.factory_dict.items()):
        modalities = getattr(factory, "modalities", {}) or {}
        summary[key] = {
            "triples": digest(factory.mapped_triples),
            "num_triples": int(factory.num_triples),
            "num_relations": int(factory.num_relations),
            "create_inverse_triples": bool(factory.create_inverse_triples),
            "entities": hashlib.sha256(repr(sorted(factory.entity_to_id.items())).encode()).hexdigest(),
            "modalities": {
                name: [digest(m.features.float()), digest(m.present.to(torch.uint8))] for name, m in modalities.items()
            },
        }
    return summary


def _mkgy_copy(tmp_path: pathlib.Path, name: str = "MKG-Y") -> pathlib.Path:
    folder = tmp_path / name
    shutil.copytree(shared_dataset_dir("MKG-Y"), folder)
    return folder


def _kwargs(folder: pathlib.Path, tmp_path: pathlib.Path, **extra) -> dict:
    # create_inverse_triples given, so that DatasetCache(...) here names the folder get_dataset uses
    return dict(
        directory=str(folder),
        cache_root=str(tmp_path / "downloads"),
        progress=False,
        create_inverse_triples=True,
        **extra,
    )


def _cache_of(kwargs: dict) -> DatasetCache:
    return DatasetCache(MKGY, kwargs, MKGY(**kwargs))


def _cut(path: pathlib.Path, lines: int) -> None:
    path.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]), encoding="utf-8")


def _authors_features(folder: pathlib.Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Write matrices of the authors' published MKG-Y shapes in the archive layout under ``folder``."""
    embeddings = folder / "embeddings" / "MKG-Y"
    embeddings.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    image, text = torch.rand(15000, 383, generator=generator), torch.rand(15000, 384, generator=generator)
    torch.save(image, embeddings / "img_features.pth")
    torch.save(text, embeddings / "text_features.pth")
    return image, text


# item 1: a cache keyed by what it was built from ---------------------------------------------------------


def test_a_cut_then_deleted_training_file_is_seen(tmp_path):
    folder = _mkgy_copy(tmp_path)
    kwargs = _kwargs(folder, tmp_path, verify="none")  # a copy changed on purpose
    assert get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs).training.num_triples == 21310
    assert isinstance(get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs), EagerDataset)  # a cache hit
    _cut(folder / "train.txt", 5000)
    assert get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs).training.num_triples == 5000
    assert get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs).training.num_triples == 5000
    (folder / "train.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train.txt is missing"):
        get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)


def test_feature_files_added_to_directory_later_are_used(tmp_path):
    folder = _mkgy_copy(tmp_path)
    kwargs = _kwargs(folder, tmp_path)
    first = get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    assert list(first.training.modalities) == ["text"]  # "auto": the MiniLM features of the folder
    assert first.training.metadata["feature_origin"]["text"].startswith("minilm:")
    image, text = _authors_features(folder)
    second = get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    assert list(second.training.modalities) == ["image", "text"]
    torch.testing.assert_close(second.training.modalities["image"].features, image)
    torch.testing.assert_close(second.training.modalities["text"].features, text)
    assert second.training.metadata["feature_origin"]["text"].startswith("authors:")
    third = get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    assert isinstance(third, EagerDataset) and _summary(third) == _summary(second)


def test_without_directory_the_download_cache_is_followed_too(tmp_path):
    """Downloaded files (the pystow cache, here cache_root): checked on use, and features added later are used."""
    shared_dataset_dir("MKG-Y")
    downloads = tmp_path / "downloads"
    with serve(SHARED_DATA) as (url, _):
        kwargs = dict(base_url=url, cache_root=str(downloads), progress=False, text_features=None)
        assert list(get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs).training.modalities) == []
    # the authors' features, put where the error message of image_features="authors" says
    image, _ = _authors_features(downloads / "momok_embeddings")
    with_image = get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    torch.testing.assert_close(with_image.training.modalities["image"].features, image)
    _cut(downloads / "mkgy" / "train.txt", 5000)
    with pytest.raises(ChecksumError, match="train.txt"):
        get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)


class RelativePathMMKG(MultiModalDataset):
    """A user's dataset from explicit paths, registered by the tests that use it."""


@pytest.fixture
def relative_path_mmkg(monkeypatch):
    key = dataset_resolver.normalize_cls(RelativePathMMKG)
    monkeypatch.setitem(dataset_resolver.lookup_dict, key, RelativePathMMKG)
    return key


def _small_kg(folder: pathlib.Path, num_triples: int) -> None:
    folder.mkdir(parents=True)
    entities = [f"e{i}" for i in range(num_triples + 1)]
    (folder / "train.txt").write_text("".join(f"e{i}\tr\te{i + 1}\n" for i in range(num_triples)), encoding="utf-8")
    (folder / "test.txt").write_text("e0\tr\te1\n", encoding="utf-8")
    np.save(folder / "image.npy", np.arange(len(entities) * 2, dtype=np.float32).reshape(-1, 2))
    (folder / "image_entities.txt").write_text("".join(f"{e}\n" for e in entities), encoding="utf-8")


def test_relative_paths_mean_the_files_of_the_working_folder(tmp_path, monkeypatch, relative_path_mmkg):
    from pykeen_momok.features import FeatureSource

    for name, size in (("a", 3), ("b", 7)):
        _small_kg(tmp_path / name / "kg", size)
    kwargs = dict(
        training_path="kg/train.txt",
        testing_path="kg/test.txt",
        modalities={"image": FeatureSource("kg/image.npy", labels="kg/image_entities.txt")},
    )
    monkeypatch.chdir(tmp_path / "a")
    assert get_dataset(dataset=RelativePathMMKG, dataset_kwargs=kwargs).training.num_triples == 3
    monkeypatch.chdir(tmp_path / "b")
    in_b = get_dataset(dataset=RelativePathMMKG, dataset_kwargs=kwargs)
    assert in_b.training.num_triples == 7 and in_b.training.modalities["image"].features.shape == (8, 2)
    monkeypatch.chdir(tmp_path / "a")
    assert get_dataset(dataset=RelativePathMMKG, dataset_kwargs=kwargs).training.num_triples == 3
    # a feature file rewritten in place (same size): its times tell
    np.save(tmp_path / "a" / "kg" / "image.npy", -np.arange(8, dtype=np.float32).reshape(-1, 2))
    assert (
        float(get_dataset(dataset=RelativePathMMKG, dataset_kwargs=kwargs).training.modalities["image"].features.sum())
        < 0
    )


def test_the_package_version_is_part_of_the_key(tmp_path, monkeypatch):
    folder = _mkgy_copy(tmp_path)
    kwargs = _kwargs(folder, tmp_path, text_features=None)
    get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    assert isinstance(get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs), EagerDataset)
    import pykeen_momok.version

    monkeypatch.setattr(pykeen_momok.version, "__version__", "999.0")
    assert isinstance(get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs), MKGY)  # rebuilt
    assert isinstance(get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs), EagerDataset)


# item 3: a damaged or partial cache is rebuilt with a warning, never used --------------------------------


def _damage_modalities(path: pathlib.Path) -> None:
    (path / "testing" / "modalities.pt").unlink()


def _damage_validation(path: pathlib.Path) -> None:
    shutil.rmtree(path / "validation")


def _damage_byte(path: pathlib.Path) -> None:
    target = path / "training" / "modalities.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))


def _damage_manifest(path: pathlib.Path) -> None:
    (path / MANIFEST_NAME).unlink()


def _damage_extra(path: pathlib.Path) -> None:
    shutil.copytree(path / "testing", path / "validation2")


@pytest.mark.parametrize(
    "damage",
    [_damage_modalities, _damage_validation, _damage_byte, _damage_manifest, _damage_extra],
    ids=["no-modalities", "no-validation", "changed-byte", "no-manifest", "extra-folder"],
)
def test_a_damaged_cache_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    folder = _mkgy_copy(tmp_path)
    kwargs = _kwargs(folder, tmp_path)
    fresh = _summary(get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs))
    assert fresh["testing"]["modalities"] and "validation" in fresh
    cache = _cache_of(kwargs)
    damage(cache.path)
    with caplog.at_level(logging.WARNING, logger="pykeen_momok.datasets.cache"):
        rebuilt = get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    assert isinstance(rebuilt, MKGY)  # built afresh, not read from the damaged copy
    assert _summary(rebuilt) == fresh
    assert any(
        "is damaged" in record.getMessage() and str(cache.path) in record.getMessage() for record in caplog.records
    )
    again = get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    assert isinstance(again, EagerDataset) and _summary(again) == fresh


def test_the_cache_lives_where_pykeen_keeps_its_caches(tmp_path):
    folder = _mkgy_copy(tmp_path)
    kwargs = _kwargs(folder, tmp_path, text_features=None)
    get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    cache = _cache_of(kwargs)
    assert cache.path.parent == PYKEEN_DATASETS / "mkgy" / "cache" and cache.path.name.startswith("momok-")
    manifest = json.loads((cache.path / MANIFEST_NAME).read_text(encoding="utf-8"))
    inputs = {entry[0] for entry in manifest["built_from"]["inputs"]}
    assert str(folder / "train.txt") in inputs and str(folder / "text_minilm.npy") in inputs
    assert set(manifest["files"]) >= {"training/base.pth", "training/modalities.pt", "metadata.pth"}


# item 11: concurrent processes and kills --------------------------------------------------------------

_PROCESS = (
    textwrap.dedent(inspect.getsource(_summary))
    + """
import hashlib, json, os, signal, sys, time
import torch
import pykeen_momok  # noqa: F401 -- registers the datasets
from pykeen.datasets import get_dataset
from pykeen_momok.triples import MultiModalTriplesFactory

directory, downloads, out, mode = sys.argv[1:]
original = MultiModalTriplesFactory.to_path_binary


def to_path_binary(self, path, **kwargs):
    result = original(self, path, **kwargs)
    if mode == "slow":
        time.sleep(1.0)  # a long write: another process starts meanwhile
    elif mode == "kill" and str(path).endswith("training"):
        os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of writing the cache
    return result


MultiModalTriplesFactory.to_path_binary = to_path_binary
kwargs = dict(directory=directory, cache_root=downloads, progress=False, create_inverse_triples=True)
dataset = get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
with open(out, "w") as file:
    json.dump({"type": type(dataset).__name__, "summary": _summary(dataset)}, file)
"""
)


def _start(folder: pathlib.Path, tmp_path: pathlib.Path, name: str, mode: str) -> tuple[subprocess.Popen, pathlib.Path]:
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the same PYKEEN_HOME as this process
    process = subprocess.Popen(
        [sys.executable, "-c", _PROCESS, str(folder), str(tmp_path / "downloads"), str(out), mode],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, out


def _finish(process: subprocess.Popen, out: pathlib.Path) -> dict:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(out.read_text())


def _cached_training_files() -> set[pathlib.Path]:
    """The stored training factories of MKG-Y, wherever a cache writes them (the old code wrote in place)."""
    return set(PYKEEN_DATASETS.joinpath("mkgy").rglob("training/base.pth"))


def _writing_since(before: set[pathlib.Path]) -> bool:
    """Whether a training factory was stored since ``before`` was taken (each test's folder has its own cache)."""
    return bool(_cached_training_files() - before)


def test_a_second_process_starting_while_the_first_writes_waits_for_it(tmp_path):
    """Before: the second read the half-written cache (FileNotFoundError .../training/base.pth, gzip EOFError)."""
    folder = _mkgy_copy(tmp_path)
    kwargs = _kwargs(folder, tmp_path)
    before = _cached_training_files()
    first, first_out = _start(folder, tmp_path, "first", "slow")
    second = None
    try:
        deadline = time.monotonic() + 120
        while not _writing_since(before):  # the first is writing (and sleeps after each factory)
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first process never started writing"
            time.sleep(0.05)
        second, second_out = _start(folder, tmp_path, "second", "slow")
        results = [_finish(first, first_out), _finish(second, second_out)]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
    expected = _summary(MKGY(**kwargs))
    assert [result["summary"] for result in results] == [expected, expected]
    assert [result["type"] for result in results] == ["MKGY", "EagerDataset"]  # one built, one read
    assert _summary(get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)) == expected
    cache = _cache_of(kwargs)
    assert not list(cache.work.glob(f"{cache.key}.*.tmp"))


def test_a_process_killed_while_writing_leaves_no_cache_behind(tmp_path):
    """Before: the half-written cache was used for ever after (no testing factory: an error on every load)."""
    folder = _mkgy_copy(tmp_path)
    kwargs = _kwargs(folder, tmp_path)
    before = _cached_training_files()
    killed, _ = _start(folder, tmp_path, "killed", "kill")
    killed.communicate(timeout=300)
    assert killed.returncode == -9 and _writing_since(before)  # killed after writing the training factory
    expected = _summary(MKGY(**kwargs))
    after = get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    assert _summary(after) == expected
    again = get_dataset(dataset="MKG-Y", dataset_kwargs=kwargs)
    assert isinstance(again, EagerDataset) and _summary(again) == expected
    # the killed writer's temporary folder was never in place, and the next build removed it
    assert isinstance(after, MKGY)
    cache = _cache_of(kwargs)
    assert cache.path.is_dir() and not list(cache.work.glob(f"{cache.key}.*.tmp"))
