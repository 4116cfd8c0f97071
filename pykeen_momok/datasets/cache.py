"""The :func:`pykeen.datasets.get_dataset` cache for this package's datasets, keyed by what they are built from.

PyKEEN 1.11.1 stores a dataset built by ``get_dataset(dataset=name, dataset_kwargs=...)`` under
``PYKEEN_HOME/datasets/<name>/cache/<digest of the keyword arguments>`` and returns that copy whenever the
same keyword arguments come again. What our datasets hold depends on files, though: a truncated or deleted
``train.txt``, a feature file added to ``directory=`` later, a relative path that means other files in
another working folder all went unseen; and a half-written copy (a process killed while writing, a second
process reading while the first writes) was used as it was.

For the datasets of this package and subclasses of :class:`~pykeen_momok.datasets.base.MultiModalDataset`,
:mod:`pykeen_momok.registration` sends ``get_dataset`` here (:func:`get_dataset_cached`); every other dataset
stays with PyKEEN's own cache, untouched. Here:

- a cache folder, ``cache/momok-<digest>``, is named by the class, the keyword arguments and the absolute
  paths of the dataset's input files and of the folders it looks for feature files in;
- its manifest (:data:`MANIFEST_NAME`, written last) records what the cache was built from: the cache format,
  this package's and PyKEEN's versions, the keyword arguments, and size, modification and change time of every
  input file and of every file in those folders; and the size and sha256 of every file of the cache;
- on every read the manifest and the files are checked. A cache built from other inputs is rebuilt (logged);
  one that fails the check (no manifest, a missing, extra, cut or changed file, an unreadable one) is rebuilt
  with a warning. A cache is never used unverified;
- a cache is written into a temporary folder and renamed into place, under a file lock that readers take too:
  concurrent processes wait for each other, and a killed one leaves a temporary folder only, which the next
  build removes. The operating system releases a killed process's lock.

Generated datasets (``cache_in_pykeen_home = False``, e.g. :class:`~pykeen_momok.datasets.synthetic.SyntheticMMKG`)
are built afresh on every call: a cached copy would outlive a change of the generator.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import pathlib
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from typing import Any

from pykeen.datasets.base import Dataset

from .download import dataset_cache_folder, file_digests, file_lock

__all__ = ["MANIFEST_NAME", "CACHE_FORMAT", "DatasetCache", "get_dataset_cached", "input_paths"]

logger = logging.getLogger(__name__)

#: the manifest of a cache folder, written last
MANIFEST_NAME = "momok_cache.json"
#: version of the cache layout and manifest; a change rebuilds every cache
CACHE_FORMAT = 1
#: how deep the folders a dataset looks for feature files in are scanned (``embeddings/<dataset>/<file>``)
_SCAN_DEPTH = 3


def get_dataset_cached(cls: type[Dataset], dataset_kwargs: Mapping[str, Any] | None, *, force: bool = False) -> Dataset:
    """Build ``cls(**dataset_kwargs)``, or load the verified cache built from the same inputs.

    :param cls: a dataset class of this package (or a subclass of ``MultiModalDataset``)
    :param dataset_kwargs: its keyword arguments; ``force=True`` among them rebuilds the cache, as in PyKEEN
    :param force: rebuild the cache
    :return: the freshly built dataset (an instance of ``cls``), or the cached one (an ``EagerDataset``)
    """
    kwargs = dict(dataset_kwargs or {})
    force = bool(force or kwargs.pop("force", False))
    if "create_inverse_triples" not in kwargs:
        # PyKEEN rebuilds a cached dataset with create_inverse_triples=False unless told: take the class's default
        default = _inverse_triples_default(cls)
        if default is not None:
            kwargs["create_inverse_triples"] = default
    if not getattr(cls, "cache_in_pykeen_home", True):
        return cls(**kwargs)
    dataset = cls(**kwargs)  # locates (downloads, verifies) the files; reads them on first access only
    return DatasetCache(cls, kwargs, dataset).get(dataset, force=force)


def _inverse_triples_default(cls: type) -> bool | None:
    parameter = inspect.signature(cls.__init__).parameters.get("create_inverse_triples")
    if parameter is None or not isinstance(parameter.default, bool):
        return None
    return parameter.default


# what a dataset is built from --------------------------------------------------------------------------


def input_paths(dataset: Dataset) -> tuple[list[pathlib.Path], list[pathlib.Path]]:
    """The files a dataset reads, and the folders it looks for (feature) files in.

    For a ``MultiModalDataset``: its triple and id files and its modality sources. A benchmark also looks
    in ``directory=`` (or its download cache folder) and in the shared folder of the authors' features for
    whatever ``"auto"`` finds, and reads the files or the model folder its feature arguments name.
    """
    from ..features import FeatureSource
    from .archives import AUTHORS_CACHE_KEY, FEATURE_KEYWORDS
    from .benchmarks import MMKGBenchmark

    files: list[Any] = [
        getattr(dataset, name, None)
        for name in ("training_path", "testing_path", "validation_path", "entity2id_path", "relation2id_path")
    ]
    for source in getattr(dataset, "modality_sources", {}).values():
        files.extend((source.path, source.labels, source.entity2id))
    folders: list[Any] = []
    if isinstance(dataset, MMKGBenchmark):
        folders.append(dataset.directory if dataset.directory is not None else dataset.cache_folder)
        folders.append(dataset_cache_folder(AUTHORS_CACHE_KEY, dataset.downloader.cache_root))
        for choice in (dataset.image_features, dataset.text_features):
            if isinstance(choice, FeatureSource):
                files.extend((choice.path, choice.labels, choice.entity2id))
            elif isinstance(choice, pathlib.Path) or (isinstance(choice, str) and choice not in FEATURE_KEYWORDS):
                files.append(choice)
        if dataset.text_encoder is not None and pathlib.Path(dataset.text_encoder).expanduser().is_dir():
            folders.append(dataset.text_encoder)  # a local sentence-transformers model
    return (
        [_absolute(path) for path in files if path is not None],
        [_absolute(path) for path in folders if path is not None],
    )


def _absolute(path: Any) -> pathlib.Path:
    # absolute, not resolved: a symbolic link pointed elsewhere changes the inputs, not the cache's name
    return pathlib.Path(os.path.abspath(pathlib.Path(path).expanduser()))


def _file_entry(path: pathlib.Path) -> list[Any]:
    """``[path, target, size, mtime_ns, ctime_ns]``, or ``[path, None]`` for a missing file.

    The change time also moves when a file is replaced by one with a restored modification time.
    """
    try:
        stat = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return [str(path), None]
    return [str(path), os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _scan(folder: pathlib.Path, depth: int = _SCAN_DEPTH) -> list[list[Any]]:
    """The file entries of a folder, ``depth`` levels deep; dot files (locks, partial downloads) are left out."""
    if not folder.is_dir():
        return [[str(folder), None]]
    entries = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            if depth > 1:
                entries.extend(_scan(child, depth - 1))
        elif child.is_file():
            entries.append(_file_entry(child))
    return entries


def _inputs(files: list[pathlib.Path], folders: list[pathlib.Path]) -> list[list[Any]]:
    entries = {str(path): _file_entry(path) for path in files}
    for folder in folders:
        for entry in _scan(folder):
            entries.setdefault(entry[0], entry)
    return [entries[key] for key in sorted(entries)]


def _settled_inputs(before: list[list[Any]], after: list[list[Any]]) -> list[list[Any]]:
    """The inputs to record for a build: ``after`` if the build only added files, else ``before``.

    Building may add files to the scanned folders itself (an optional file downloaded, a member extracted from
    the authors' archive): recording ``before`` would rebuild once more for nothing. A file that changed or
    vanished during the build, though, may or may not be in the cache: record ``before``, so the next call
    rebuilds.
    """
    after_by_path = {entry[0]: entry for entry in after}
    for entry in before:
        if entry[1] is not None and after_by_path.get(entry[0]) != entry:
            return before
    return after


def _describe_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """Say what differs between two ``built_from`` records, for the log."""
    for key in new:
        if key != "inputs" and old.get(key) != new[key]:
            return f"{key} was {old.get(key)!r}, now {new[key]!r}"
    old_inputs = {entry[0]: entry for entry in old.get("inputs", [])}
    new_inputs = {entry[0]: entry for entry in new["inputs"]}
    for path in sorted(set(old_inputs) | set(new_inputs)):
        before, after = old_inputs.get(path, [path, None]), new_inputs.get(path, [path, None])
        if before == after:
            continue
        if before[1] is None:
            return f"{path} was added"
        if after[1] is None:
            return f"{path} was removed"
        if before[2] != after[2]:
            return f"{path} changed ({before[2]} -> {after[2]} bytes)"
        if before[1] != after[1]:
            return f"{path} now links to {after[1]}"
        return f"{path} was modified or replaced"
    return "its record differs"


# the cache ---------------------------------------------------------------------------------------------


class DatasetCache:
    """One cache folder of one dataset class, keyword arguments and input paths.

    :param cls: the dataset class
    :param kwargs: the keyword arguments the dataset was built with (normalised by :func:`get_dataset_cached`)
    :param dataset: the dataset built from them (not loaded yet), to learn its input paths
    :param root: PyKEEN's dataset folder (``PYKEEN_HOME/datasets``); default: :data:`pykeen.constants.PYKEEN_DATASETS`
    """

    def __init__(
        self, cls: type[Dataset], kwargs: Mapping[str, Any], dataset: Dataset, *, root: pathlib.Path | None = None
    ) -> None:
        from pykeen.constants import PYKEEN_DATASETS
        from pykeen.datasets import dataset_resolver

        self.cls = cls
        self.files, self.folders = input_paths(dataset)
        identity = {
            "format": CACHE_FORMAT,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "kwargs": _canonical(kwargs),
            "files": [str(path) for path in self.files],
            "folders": [str(path) for path in self.folders],
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()[:32]
        self.key = f"momok-{digest}"
        base = pathlib.Path(root if root is not None else PYKEEN_DATASETS) / dataset_resolver.normalize_cls(cls)
        #: the cache folder, where PyKEEN keeps its caches of the dataset
        self.path = base / "cache" / self.key
        #: temporary and replaced folders and the lock, beside (not in) PyKEEN's cache folder
        self.work = base / ".momok-work"
        self.built_from = {
            "format": CACHE_FORMAT,
            "versions": _versions(),
            "class": identity["class"],
            "kwargs": identity["kwargs"],
            "inputs": _inputs(self.files, self.folders),
        }

    @property
    def lock_path(self) -> pathlib.Path:
        """The lock file that writers and readers of this cache hold."""
        return self.work / f"{self.key}.lock"

    def get(self, dataset: Dataset, *, force: bool = False) -> Dataset:
        """Return the verified cached dataset, or build ``dataset``, store it and return it."""
        with file_lock(self.lock_path, f"using the dataset cache {self.path}"):
            if not force:
                cached, reason, damaged = self.read()
                if cached is not None:
                    logger.info(f"Loading cached preprocessed dataset from {self.path.as_uri()}")
                    return cached
                if damaged:
                    logger.warning(f"pykeen_momok: the dataset cache {self.path} is damaged ({reason}); rebuilding it")
                elif reason is not None:
                    logger.info(f"pykeen_momok: rebuilding the dataset cache {self.path}: {reason}")
            self.write(dataset)
        return dataset

    def read(self) -> tuple[Dataset | None, str | None, bool]:
        """Load the cache if it is complete, intact and built from the current inputs (the caller holds the lock).

        :return: ``(dataset, None, False)``; or ``(None, why not, whether the cache is damaged)``, where ``why not``
            is None if there is no cache
        """
        if not self.path.is_dir():
            return None, None, False
        manifest_path = self.path / MANIFEST_NAME
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None, f"no {MANIFEST_NAME}: written by another program, or not to the end", True
        except (OSError, ValueError) as error:
            return None, f"{MANIFEST_NAME} is unreadable: {error}", True
        if not isinstance(manifest, dict) or not isinstance(manifest.get("built_from"), dict):
            return None, f"{MANIFEST_NAME} is not a manifest", True
        if manifest["built_from"] != self.built_from:
            return None, _describe_change(manifest["built_from"], self.built_from), False
        try:
            problem = _check_files(self.path, manifest.get("files"))
        except (OSError, TypeError, ValueError) as error:  # a malformed manifest, a file that cannot be read
            problem = f"checking its files failed: {type(error).__name__}: {error}"
        if problem is not None:
            return None, problem, True
        try:
            dataset = self.cls.from_directory_binary(self.path)
        except Exception as error:  # noqa: BLE001 -- whatever a damaged file raises, the cache is not used
            return None, f"reading it failed: {type(error).__name__}: {error}", True
        described = _describe_factories(dataset)
        if described != manifest.get("factories"):
            return None, f"it holds {described}, the manifest says {manifest.get('factories')}", True
        return dataset, None, False

    def write(self, dataset: Dataset) -> None:
        """Store ``dataset`` (loading it) into a temporary folder, then rename it into place.

        The caller holds the lock.
        """
        self.work.mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        tmp = pathlib.Path(tempfile.mkdtemp(dir=self.work, prefix=f"{self.key}.", suffix=".tmp"))
        try:
            dataset.to_directory_binary(tmp)
            built_from = dict(
                self.built_from, inputs=_settled_inputs(self.built_from["inputs"], _inputs(self.files, self.folders))
            )
            manifest = {
                "built_from": built_from,
                "files": _digest_files(tmp),
                "factories": _describe_factories(dataset),
            }
            (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
            self._publish(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.built_from = built_from
        logger.info(f"Cached preprocessed dataset to {self.path.as_uri()}")

    def _publish(self, tmp: pathlib.Path) -> None:
        """Rename ``tmp`` to the cache folder; an older cache there is moved aside first, then removed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = None
        if self.path.exists():
            old = self.work / f"{self.key}.{uuid.uuid4().hex}.old"
            os.replace(self.path, old)
        os.replace(tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _remove_leftovers(self) -> None:
        """Remove the temporary and replaced folders of killed writers (no live writer exists: we hold the lock)."""
        for pattern in (f"{self.key}.*.tmp", f"{self.key}.*.old"):
            for leftover in self.work.glob(pattern):
                logger.info(f"pykeen_momok: removing {leftover}, left by an interrupted cache write")
                shutil.rmtree(leftover, ignore_errors=True)


def _canonical(kwargs: Mapping[str, Any]) -> dict[str, str]:
    # as PyKEEN's digest: the text of each value (a FeatureSource's fields, paths as given)
    return {key: repr(kwargs[key]) for key in sorted(kwargs)}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from ..triples import _BINARY_FORMAT
    from ..version import __version__

    try:
        pykeen_version = version("pykeen")
    except PackageNotFoundError:  # pragma: no cover -- PyKEEN runs this
        pykeen_version = "unknown"
    return {"pykeen_momok": __version__, "pykeen": pykeen_version, "modality_file_format": str(_BINARY_FORMAT)}


def _digest_files(folder: pathlib.Path) -> dict[str, list[Any]]:
    """``{relative path: [size, sha256]}`` of every file under ``folder``."""
    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digests[path.relative_to(folder).as_posix()] = [path.stat().st_size, _sha256(path)]
    return digests


def _sha256(path: pathlib.Path) -> str:
    return str(file_digests(path)["sha256"])


def _check_files(folder: pathlib.Path, expected: Any) -> str | None:
    """Say what is wrong with the files of a cache folder, or None when they are exactly those of the manifest."""
    if not isinstance(expected, dict) or not expected:
        return f"{MANIFEST_NAME} lists no files"
    present = {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name != MANIFEST_NAME
    }
    missing = sorted(set(expected) - present)
    if missing:
        return f"{missing[0]} is missing" + (f" ({len(missing)} files in all)" if len(missing) > 1 else "")
    extra = sorted(present - set(expected))
    if extra:
        return f"{extra[0]} is not in {MANIFEST_NAME}"
    for name, (size, sha256) in expected.items():
        path = folder / name
        actual = path.stat().st_size
        if actual != size:
            return f"{name} has {actual} bytes, not {size}"
        if _sha256(path) != sha256:
            return f"{name} has changed (sha256 mismatch)"
    return None


def _describe_factories(dataset: Dataset) -> dict[str, dict[str, Any]]:
    """What the manifest records of each factory, checked again after loading."""
    described = {}
    for key, factory in dataset.factory_dict.items():
        modalities = getattr(factory, "modalities", None) or {}
        described[key] = {
            "num_triples": int(factory.num_triples),
            "create_inverse_triples": bool(factory.create_inverse_triples),
            "modalities": {name: list(modality.features.shape) for name, modality in modalities.items()},
        }
    return described
