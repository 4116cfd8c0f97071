"""Read and validate per-entity feature files and align their rows to entity ids.

A feature file holds one row per entity. Which row belongs to which entity is given either by a
label list (one label per line, in row order; anything after a tab is ignored) or by an
``entity2id``-style file (``label id`` per line: row ``i`` belongs to the label with id ``i``), or,
when neither is given, rows already follow the entity ids of the graph. Whitespace around labels is
dropped everywhere (:func:`strip_label`), so that label files and triple files agree.

>>> from pykeen_momok.features import FeatureSource
>>> source = FeatureSource("text.npy", labels="text_entities.txt", fill="mean")  # doctest: +SKIP
>>> text = source.load(training.entity_to_id)  # doctest: +SKIP
>>> text.features.shape, int(text.present.sum())  # doctest: +SKIP
(torch.Size([15000, 384]), 15000)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pathlib
import re
import secrets
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch

from .triples import FILLS, Fill, ModalityFeatures

__all__ = [
    "FEATURE_SUFFIXES",
    "LABEL_WHITESPACE",
    "DataFormatError",
    "FeatureMatrix",
    "FeatureSource",
    "Unknown",
    "align_features",
    "atomic_write",
    "labels_in_id_order",
    "load_feature_matrix",
    "read_feature_file",
    "read_id_map",
    "read_label_list",
    "read_label_values",
    "read_lines",
    "split_fields",
    "strip_label",
]

logger = logging.getLogger(__name__)

#: What to do with rows of a feature file whose label is not an entity of the graph.
Unknown = Literal["error", "ignore"]
UNKNOWN_POLICIES: tuple[str, ...] = get_args(Unknown)

#: The file suffixes :func:`load_feature_matrix` reads.
FEATURE_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".pt", ".pth", ".h5", ".hdf5")

PathLike = str | pathlib.Path


class DataFormatError(ValueError):
    """A data file does not have the expected format; the message names the file (and line, where known)."""


def _head(items: Sequence[Any], n: int = 5) -> str:
    """Format the first ``n`` items for an error message."""
    text = ", ".join(repr(x) for x in list(items[:n]))
    if len(items) > n:
        text += f", ... ({len(items) - n} more)"
    return f"[{text}]"


def _where(path: PathLike, line: int | None = None) -> str:
    """Format a location ``'file':line`` for messages."""
    return f"{str(path)!r}" if line is None else f"{str(path)!r}, line {line}"


# text files ----------------------------------------------------------------------------------------


#: The characters stripped around labels and that separate the fields of ``head relation tail .`` lines.
#: ASCII only, on purpose: Unicode separators (U+0085, U+00A0, U+2028, ...) occur inside real labels and
#: are kept as they are (``str.split()``/``str.strip()`` would split or strip them).
LABEL_WHITESPACE = " \t\r\f\v"
_FIELD_SEPARATOR = re.compile(f"[{re.escape(LABEL_WHITESPACE)}]+")


def strip_label(label: str) -> str:
    """Remove the ASCII whitespace (:data:`LABEL_WHITESPACE`) around a label.

    A stray space (``'e1 '`` beside ``'e1'``) would otherwise make a second, phantom entity.
    """
    return label.strip(LABEL_WHITESPACE)


def split_fields(line: str) -> list[str]:
    """Split a line at runs of ASCII whitespace (:data:`LABEL_WHITESPACE`), ignoring it at both ends."""
    stripped = strip_label(line)
    return _FIELD_SEPARATOR.split(stripped) if stripped else []


def read_lines(path: PathLike) -> list[str]:
    """Read a UTF-8 text file (an optional byte order mark is dropped) as a list of lines without line ends.

    Lines end at ``"\n"``, ``"\r\n"`` or ``"\r"`` only: :meth:`str.splitlines` would also split at U+0085,
    U+2028 and other separators that occur inside labels, and so cut one line of a file into two.

    :raises FileNotFoundError: if the file does not exist
    :raises DataFormatError: if the file is not valid UTF-8
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist or is not a file")
    try:
        # text mode turns "\r\n" and "\r" into "\n" (and nothing else)
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{str(path)!r} is not valid UTF-8 text: {error}") from error
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()  # after the line end of the last line (or an empty file)
    return lines


def read_label_list(path: PathLike) -> list[str]:
    """Read an entity label list: one label per line, in row order; anything after the first tab is ignored.

    Whitespace around a label is dropped (see :func:`strip_label`). Trailing empty lines are ignored; an
    empty line inside the file, or a label listed twice, is an error.

    :param path: the label file
    :return: the labels, one per row of the matching feature file
    :raises DataFormatError: on empty or duplicate labels, naming the file and the lines
    """
    lines = read_lines(path)
    while lines and not strip_label(lines[-1]):
        lines.pop()
    labels = [strip_label(line.split("\t", 1)[0]) for line in lines]
    for number, label in enumerate(labels, start=1):
        if not label:
            raise DataFormatError(f"{_where(path, number)}: empty label (line: {lines[number - 1]!r})")
    _raise_on_duplicates(labels, path=path, what="label")
    return labels


def _raise_on_duplicates(
    labels: Sequence[str], *, path: PathLike, what: str, line_numbers: Sequence[int] | None = None
) -> None:
    """Raise naming the lines of the first duplicate label.

    :param line_numbers: the 1-based line number of each label; default: one label per line
    """
    duplicated = pd.Index(labels).duplicated(keep=False)
    if not duplicated.any():
        return
    positions = np.flatnonzero(duplicated)
    first = labels[positions[0]]
    lines = [int(i) + 1 if line_numbers is None else line_numbers[i] for i in positions if labels[i] == first]
    n_labels = len({labels[i] for i in positions})
    raise DataFormatError(
        f"{str(path)!r}: {what} {first!r} occurs more than once (lines {lines}); "
        f"{n_labels} {what}s are duplicated in total"
    )


def read_label_values(
    path: PathLike, *, what: str = "value", repeated: Literal["error", "last"] = "error"
) -> dict[str, str]:
    """Read a ``label<TAB>value`` file (an MMKB ``*_ImageIndex.txt``, an ``entity2text.txt``) into label -> value.

    Each line is split at its first tab; whitespace around label and value is dropped (see :func:`strip_label`).
    Empty lines are skipped.

    :param path: the file
    :param what: what the values are, for messages (e.g. ``"image id"``)
    :param repeated: a label on several lines: ``"error"`` raises, ``"last"`` keeps its last line (logged)
    :return: the mapping, in file order
    :raises DataFormatError: naming the file and line, for a line without a tab or with an empty label, and, with
        ``repeated="error"``, for a label listed twice
    """
    numbered = [(number, line) for number, line in enumerate(read_lines(path), start=1) if strip_label(line)]
    pairs = []
    for number, line in numbered:
        label, tab, value = line.partition("\t")
        if not tab or not strip_label(label):
            raise DataFormatError(f"{_where(path, number)}: expected 'label<TAB>{what}', got {line!r}")
        pairs.append((strip_label(label), strip_label(value)))
    values = dict(pairs)
    if len(values) < len(pairs):
        if repeated == "error":
            labels = [label for label, _ in pairs]
            _raise_on_duplicates(labels, path=path, what="label", line_numbers=[number for number, _ in numbered])
        logger.info(f"{_where(path)}: {len(pairs) - len(values)} labels are listed again; their last line is used")
    return values


def read_id_map(path: PathLike) -> dict[str, int]:
    """Read an ``entity2id``/``relation2id`` file: ``label id`` or ``label<TAB>id`` per line.

    Labels may contain spaces: each line is split at its *last* run of (ASCII) whitespace, and whitespace
    around the label is dropped (see :func:`strip_label`). The ids must be a permutation of ``0 .. n-1``.
    An OpenKE-style first line holding only the number of entries is accepted (and checked). Empty lines
    are skipped; a file without entries is an error.

    :param path: the id file
    :return: the mapping from labels to ids, in file order
    :raises DataFormatError: naming the file and line number, and showing the line, for a line without an
        id, a non-integer id, an id out of range, a repeated id or a repeated label; naming the file if it
        holds no entries
    """
    lines = read_lines(path)
    numbered = [(number, line) for number, line in enumerate(lines, start=1) if strip_label(line)]
    if not numbered:
        raise DataFormatError(f"{_where(path)} holds no entries; expected one 'label id' (or 'label<TAB>id') per line")
    declared: tuple[int, int] | None = None
    number, line = numbered[0]
    head = split_fields(line)
    if len(head) == 1 and head[0].isdigit() and len(numbered) > 1:
        declared = (number, int(head[0]))
        numbered = numbered[1:]
    labels: list[str] = []
    ids = np.empty(len(numbered), dtype=np.int64)
    for i, (number, line) in enumerate(numbered):
        parts = split_fields(line)
        if len(parts) < 2:
            raise DataFormatError(f"{_where(path, number)}: expected 'label id', got {line!r}")
        # the label is everything before the last field, with its own inner spacing kept
        id_text = parts[-1]
        label = strip_label(strip_label(line)[: -len(id_text)])
        try:
            ids[i] = int(id_text)
        except ValueError:
            raise DataFormatError(
                f"{_where(path, number)}: the id {id_text!r} is not an integer (line: {line!r})"
            ) from None
        labels.append(label)
    n = len(labels)
    if declared is not None and declared[1] != n:
        raise DataFormatError(f"{_where(path, declared[0])}: declares {declared[1]} entries, the file has {n}")
    out_of_range = np.flatnonzero((ids < 0) | (ids >= n))
    if out_of_range.size:
        number, line = numbered[out_of_range[0]]
        raise DataFormatError(
            f"{_where(path, number)}: id {ids[out_of_range[0]]} is out of range; the ids of the {n} entries "
            f"must be a permutation of 0..{n - 1} (line: {line!r})"
        )
    for values, what in ((ids.tolist(), "id"), (labels, "label")):
        duplicated = pd.Index(values).duplicated()
        if duplicated.any():
            second = int(np.flatnonzero(duplicated)[0])
            first = values.index(values[second])
            raise DataFormatError(
                f"{_where(path, numbered[second][0])}: {what} {values[second]!r} was already given on line "
                f"{numbered[first][0]}; the ids must be a permutation of 0..{n - 1} (line: {numbered[second][1]!r})"
            )
    return dict(zip(labels, ids.tolist(), strict=True))


def labels_in_id_order(entity_to_id: Mapping[str, int]) -> list[str]:
    """Return the labels of a permutation-valued id map ordered by id."""
    labels = np.empty(len(entity_to_id), dtype=object)
    labels[np.fromiter(entity_to_id.values(), dtype=np.int64, count=len(entity_to_id))] = list(entity_to_id)
    return labels.tolist()


@contextlib.contextmanager
def atomic_write(path: PathLike, *, suffix: str = ".tmp") -> Iterator[pathlib.Path]:
    """Yield a temporary file beside ``path``; rename it to ``path`` when the block ends, delete it if it raises.

    The rename (:func:`os.replace`) is atomic on one file system: readers see the old file or the whole new one,
    never a part. Whatever the block checks (a checksum, say) is checked before the file is in place. A process
    killed inside the block leaves ``.<name>.<random><suffix>`` behind, never a part of ``path``.

    >>> with atomic_write("cache/vectors.npy") as tmp:  # doctest: +SKIP
    ...     with tmp.open("wb") as handle:
    ...         np.save(handle, vectors)
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkstemp: it creates the file readable by its owner only, and the published file would keep that
    # mode; created with 0o666 the umask applies, as for a file opened with open()
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# feature matrices ----------------------------------------------------------------------------------


def _pick(path: PathLike, available: Sequence[str], key: str | None, what: str) -> str:
    """Choose the array ``key`` among ``available`` names, or the single one."""
    if key is not None:
        if key not in available:
            raise DataFormatError(f"{str(path)!r} has no {what} {key!r}; available: {_head(sorted(available), 20)}")
        return key
    if len(available) != 1:
        raise DataFormatError(
            f"{str(path)!r} holds {len(available)} {what}s {_head(sorted(available), 20)}; pass key=... to choose one"
        )
    return available[0]


def _tensor_to_numpy(x: torch.Tensor) -> np.ndarray:
    x = x.detach().cpu()
    if x.is_floating_point() and x.dtype not in (torch.float16, torch.float32, torch.float64):
        x = x.to(torch.float32)  # e.g. bfloat16, which numpy does not know
    return x.numpy()


def _rows_to_numpy(path: pathlib.Path, rows: Sequence[Any]) -> np.ndarray:
    """Stack a list of rows (lists of numbers or 1-D tensors), as the reference's ``torch.Tensor(rows)`` accepts.

    :return: shape: (len(rows), dim)
    :raises DataFormatError: for rows of different lengths, or rows that are not numbers
    """
    converted = [_tensor_to_numpy(row) if isinstance(row, torch.Tensor) else row for row in rows]
    lengths = {len(row) if isinstance(row, list | tuple | np.ndarray) else None for row in converted}
    if None in lengths:
        raise DataFormatError(f"{str(path)!r}: expected a list of rows (lists of numbers or 1-D tensors)")
    if len(lengths) > 1:
        raise DataFormatError(f"{str(path)!r}: the rows have different lengths {sorted(lengths)[:10]}")
    try:
        return np.asarray(converted, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DataFormatError(f"{str(path)!r}: the rows are not lists of numbers: {error}") from error


def _numpy_safe_globals() -> list[Any]:
    """What ``torch.load(weights_only=True)`` must allow to rebuild plain NumPy arrays (the authors' archive has them).

    Only NumPy's array reconstruction, ``ndarray``, ``dtype`` and the dtype classes: no function that runs code.
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    reconstruct = multiarray._reconstruct
    allowed: list[Any] = [
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
    ]
    scalar = getattr(multiarray, "scalar", None)
    if scalar is not None:
        allowed += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return allowed


def _load_torch(path: pathlib.Path, *, allow_pickle: bool = False) -> Any:
    """``torch.load`` a ``.pt``/``.pth`` file: tensors and NumPy arrays only, unless ``allow_pickle``."""
    if allow_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)  # noqa: S614  # unsafe-ok: only with allow_pickle=True, for files the user trusts
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError and whatever else a foreign or damaged file raises
        raise DataFormatError(
            f"{str(path)!r} could not be read safely (torch.load with weights_only=True, which loads tensors and NumPy "
            f"arrays only): {error}. Convert it to .npy, or load it with load_pth_matrix(..., allow_pickle=True) if "
            f"you trust it"
        ) from error


def _is_vector(value: Any) -> bool:
    return (isinstance(value, torch.Tensor | np.ndarray) and value.ndim == 1) or (
        isinstance(value, list | tuple) and all(isinstance(x, int | float) for x in value)
    )


@dataclasses.dataclass(frozen=True)
class FeatureMatrix:
    """The rows of a feature file, before they are aligned to entity ids.

    :param features: shape: (rows, dim)
    :param labels: the entity label of each row (a ``{label: vector}`` ``.pth`` file), or None when the file gives none
    :param present: shape: (rows,); False where the file has no real feature for the row, or None (all present)
    """

    features: np.ndarray
    labels: Sequence[str] | None = None
    present: np.ndarray | None = None


def _read_raw(path: pathlib.Path, key: str | None, allow_pickle: bool) -> tuple[Any, list[str] | None]:
    """The array stored in a feature file, unvalidated, and its row labels (a ``{label: vector}`` ``.pth`` file)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            return archive[_pick(path, archive.files, key, "array")], None
    if suffix in {".h5", ".hdf5"}:
        try:
            import h5py
        except ImportError as error:
            raise ImportError(f"reading {str(path)!r} needs h5py: pip install h5py (or pykeen-momok[h5])") from error
        with h5py.File(path, "r") as file:
            names: list[str] = []
            file.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            return file[_pick(path, names, key, "dataset")][()], None
    if suffix not in {".pt", ".pth"}:
        raise DataFormatError(
            f"{str(path)!r}: unsupported feature file suffix {suffix!r}; use one of {FEATURE_SUFFIXES}"
        )
    obj = _load_torch(path, allow_pickle=allow_pickle)
    labels = None
    if isinstance(obj, Mapping):
        names = [str(name) for name in obj]
        if key is None and obj and all(_is_vector(value) for value in obj.values()):
            labels, obj = names, list(obj.values())  # {label: vector}
        else:
            obj = list(obj.values())[names.index(_pick(path, names, key, "key"))]  # {name: matrix}
    elif key is not None:
        raise DataFormatError(f"{str(path)!r} holds a {type(obj).__name__}, not a dict; it has no key {key!r}")
    if isinstance(obj, torch.Tensor):
        return _tensor_to_numpy(obj), labels
    if isinstance(obj, np.ndarray):
        return obj, labels
    if isinstance(obj, list | tuple):
        return _rows_to_numpy(path, obj), labels
    raise DataFormatError(
        f"{str(path)!r}: expected a tensor, a list of rows, or a dict of those, got {type(obj).__name__}"
    )


def _validate_matrix(matrix: Any, *, source: str) -> np.ndarray:
    """Check that ``matrix`` is a 2-D, numeric, finite array; return it as float32.

    :param matrix: the array-like
    :param source: how to name the matrix in messages
    :raises DataFormatError: naming ``source`` and, for non-finite values, the first bad row (0-based)
    """
    if isinstance(matrix, torch.Tensor):
        matrix = _tensor_to_numpy(matrix)
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise DataFormatError(
            f"{source}: expected a 2-D matrix (rows = entities, columns = features), got shape {matrix.shape}"
        )
    dtype = matrix.dtype
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise DataFormatError(f"{source}: expected real numbers, got dtype {matrix.dtype}")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise DataFormatError(f"{source}: the matrix is empty, shape {matrix.shape}")
    finite_before = np.isfinite(matrix).all(axis=1)
    with np.errstate(over="ignore"):
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        problem = "holds NaN or inf" if not finite_before[bad[0]] else "holds values too large for float32"
        raise DataFormatError(
            f"{source}: row {bad[0]} (0-based) {problem}; {bad.size} rows are not finite: {_head(bad.tolist())}"
        )
    return matrix


def read_feature_file(path: PathLike, *, key: str | None = None, allow_pickle: bool = False) -> FeatureMatrix:
    """Read a feature matrix from ``.npy``, ``.npz``, ``.pt``/``.pth`` or ``.h5``/``.hdf5`` (the one reader of these).

    ``.pt`` files are read with ``torch.load(..., weights_only=True)`` (tensors and plain NumPy arrays, nothing that
    runs code) and may hold a tensor or array, a list of rows (lists of numbers or 1-D tensors, as the reference
    code's ``torch.Tensor(...)`` accepts), a dict of matrices, or a ``{label: vector}`` dict (whose keys become
    :attr:`FeatureMatrix.labels`). ``.npz``, ``.h5`` files and dicts may hold several arrays: ``key`` chooses one;
    without it the file must hold exactly one.

    :param path: the feature file
    :param key: the array (``.npz``), dict entry (``.pt``) or dataset (``.h5``) to read
    :param allow_pickle: read a ``.pt`` file with ``weights_only=False`` (only for files you trust)
    :return: shape: (rows, dim), float32, finite; with the row labels of a ``{label: vector}`` file
    :raises FileNotFoundError: if the file does not exist
    :raises DataFormatError: naming the file, for an unsupported suffix, a missing or ambiguous key, an array
        that is not 2-D or not real-valued, or a row with NaN/inf (naming the first such row)
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file {str(path)!r} does not exist or is not a file")
    try:
        raw, labels = _read_raw(path, key, allow_pickle)
    except (DataFormatError, ImportError):
        raise
    except Exception as error:  # numpy and h5py raise many types for unreadable files
        raise DataFormatError(f"{str(path)!r} could not be read as a {path.suffix} feature file: {error}") from error
    return FeatureMatrix(_validate_matrix(raw, source=repr(str(path))), labels=labels)


def load_feature_matrix(path: PathLike, *, key: str | None = None) -> np.ndarray:
    """The matrix of a feature file whose rows carry no labels (see :func:`read_feature_file`).

    :return: shape: (rows, dim), float32, finite
    :raises DataFormatError: as :func:`read_feature_file`; and for a ``{label: vector}`` file, whose labels would
        be lost (read it with :func:`read_feature_file` or :class:`FeatureSource`)
    """
    matrix = read_feature_file(path, key=key)
    if matrix.labels is not None:
        raise DataFormatError(
            f"{str(path)!r} holds a {{label: vector}} dict: its rows belong to its labels, not to the entity ids; "
            f"read it with read_feature_file() or FeatureSource"
        )
    return matrix.features


# alignment -------------------------------------------------------------------------------------------


def _num_ids(entity_to_id: Mapping[str, int]) -> int:
    return max(entity_to_id.values()) + 1 if entity_to_id else 0


def align_features(
    matrix: np.ndarray | torch.Tensor,
    row_labels: Sequence[str] | None,
    entity_to_id: Mapping[str, int],
    *,
    fill: Fill = "mean",
    unknown: Unknown = "error",
    expected_dim: int | None = None,
    generator: torch.Generator | None = None,
    seed: int = 0,
    source: PathLike | None = None,
    labels_source: PathLike | None = None,
) -> ModalityFeatures:
    """Put the rows of a feature matrix in entity-id order, filling entities that have no row.

    :param matrix: shape: (rows, dim); the features, one row per label
    :param row_labels: shape: (rows,); the entity label of each row; None if the rows already follow the
        entity ids (then ``rows`` must equal the number of entities)
    :param entity_to_id: the graph's entity labels and ids
    :param fill: the value of absent rows: ``"mean"`` (the mean of the present rows), ``"zeros"``, or
        ``"normal"`` (draws from a normal distribution with the per-column mean and standard deviation of
        the present rows)
    :param unknown: rows whose label is not an entity of the graph: ``"error"`` raises, ``"ignore"`` drops them
    :param expected_dim: if given, the number of columns the matrix must have
    :param generator: the random generator of the ``"normal"`` fill; if None, one seeded with ``seed``
    :param seed: the seed of the ``"normal"`` fill when no generator is given
    :param source: the feature file, to name it in messages
    :param labels_source: the file the labels came from, to name it in messages
    :return: the aligned features, shape: (num_entities, dim), with the presence mask
    :raises DataFormatError: naming the files, for a row count that differs from the label count (or the number
        of entities), duplicate labels, unknown labels (with ``unknown="error"``), a wrong dimension, non-finite
        rows, no row matching any entity, or rows that are all zeros (some all-zero rows only warn)
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    if unknown not in UNKNOWN_POLICIES:
        raise ValueError(f"unknown must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
    name = repr(str(source)) if source is not None else "the feature matrix"
    labels_name = repr(str(labels_source)) if labels_source is not None else "the row labels"
    matrix = _validate_matrix(matrix, source=name)
    num_rows, dim = matrix.shape
    if expected_dim is not None and dim != expected_dim:
        raise DataFormatError(f"{name}: expected {expected_dim} feature columns, got {dim} (shape {matrix.shape})")
    num_entities = _num_ids(entity_to_id)

    if row_labels is None:
        if num_rows != num_entities:
            raise DataFormatError(
                f"{name} has {num_rows} rows but the graph has {num_entities} entities; rows can only follow the "
                f"entity ids if there is one per entity; otherwise give the row labels (a labels or entity2id file)"
            )
        rows = np.arange(num_rows)
        ids = rows
    else:
        labels = np.asarray(list(row_labels), dtype=object)
        if labels.shape[0] != num_rows:
            raise DataFormatError(
                f"{name} has {num_rows} rows but {labels_name} lists {labels.shape[0]} labels; "
                f"there must be one label per row"
            )
        duplicated = pd.Index(labels).duplicated(keep=False)
        if duplicated.any():
            positions = np.flatnonzero(duplicated)
            first = labels[positions[0]]
            raise DataFormatError(
                f"{labels_name} (labels of {name}) lists {first!r} more than once "
                f"(rows {np.flatnonzero(labels == first).tolist()}, 0-based)"
            )
        index = pd.Index(list(entity_to_id.keys()), dtype=object)
        id_values = np.fromiter(entity_to_id.values(), dtype=np.int64, count=len(entity_to_id))
        positions = index.get_indexer(labels)
        known = positions >= 0
        if not known.all():
            unknown_labels = labels[~known].tolist()
            message = (
                f"{len(unknown_labels)} of the {num_rows} rows of {name} (labels from {labels_name}) "
                f"name entities that are not in the graph: {_head(unknown_labels)}"
            )
            if unknown == "error":
                raise DataFormatError(f"{message}; pass unknown='ignore' to drop these rows")
            logger.info(f"{message}; dropping them")
        rows = np.flatnonzero(known)
        ids = id_values[positions[known]]
    if rows.size == 0:
        raise DataFormatError(f"no row of {name} matches an entity of the graph (labels from {labels_name})")

    values = torch.from_numpy(matrix if rows.size == num_rows else matrix[rows])
    ids_t = torch.as_tensor(ids, dtype=torch.long)
    _check_zero_rows(values, ids_t, entity_to_id, name=name)
    features = torch.empty(num_entities, dim, dtype=torch.float32)
    present = torch.zeros(num_entities, dtype=torch.bool)
    features[ids_t] = values
    present[ids_t] = True
    absent = ~present
    num_absent = int(absent.sum())
    if num_absent:
        if fill == "zeros":
            features[absent] = 0.0
        else:
            values64 = values.to(torch.float64)
            mean = values64.mean(dim=0)
            if fill == "mean":
                features[absent] = mean.to(torch.float32)
            else:  # normal
                std = values64.std(dim=0, unbiased=False)
                if generator is None:
                    generator = torch.Generator().manual_seed(seed)
                noise = torch.randn(num_absent, dim, generator=generator, dtype=torch.float64)
                features[absent] = (mean + noise * std).to(torch.float32)
        logger.info(
            f"{name}: {num_entities - num_absent}/{num_entities} entities have features; "
            f"{num_absent} filled with {fill}"
        )
    return ModalityFeatures(features=features, present=present, fill=fill)


def _check_zero_rows(values: torch.Tensor, ids: torch.Tensor, entity_to_id: Mapping[str, int], *, name: str) -> None:
    """Refuse features whose every row is zero; warn, with counts, about all-zero rows of present entities.

    An all-zero row says nothing about its entity (it is often a placeholder for a missing image), yet it
    counts as present, and L2 normalisation leaves it zero.

    :param values: shape: (n, dim); the rows that belong to entities
    :param ids: shape: (n,); the entity id of each row
    :param entity_to_id: the graph's entity labels and ids, to name entities in the warning
    :param name: the feature file, for messages
    :raises DataFormatError: if all ``n`` rows are zero
    """
    zero = ~(values != 0).any(dim=1)
    num_zero = int(zero.sum())
    if not num_zero:
        return
    if num_zero == values.shape[0]:
        raise DataFormatError(
            f"{name}: all {num_zero} rows that belong to entities are all zeros; such features carry no information "
            f"(expected at least one row with a non-zero value)"
        )
    label_of = {i: label for label, i in entity_to_id.items()}
    labels = [label_of.get(i, i) for i in ids[zero].tolist()]
    warnings.warn(
        f"{name}: {num_zero} of the {values.shape[0]} entities with a feature row have an all-zero row "
        f"{_head(labels)}; such a row says nothing about its entity but counts as present. "
        f"Leave these entities out of the file (give a labels file) to have their rows filled instead",
        UserWarning,
        stacklevel=3,
    )


@dataclasses.dataclass(frozen=True)
class FeatureSource:
    """Where a modality's features are, how their rows map to entities, and how to fill the gaps.

    Give at most one of ``labels`` (a label list in row order) and ``entity2id`` (an id file whose ids
    are the row numbers). With neither, the rows follow the entity ids of the graph the source is
    loaded for.

    >>> FeatureSource("image.npy", labels="image_entities.txt", fill="zeros", dim=4096)  # doctest: +SKIP
    """

    #: the feature file (see :func:`load_feature_matrix`)
    path: PathLike
    #: a label list, one label per line, in row order
    labels: PathLike | None = None
    #: an ``entity2id``-style file; row ``i`` of the matrix belongs to the label with id ``i``
    entity2id: PathLike | None = None
    #: the array inside a ``.npz``/``.pt``/``.h5`` file holding several
    key: str | None = None
    #: how to fill the rows of entities without a feature, see :func:`align_features`
    fill: Fill = "mean"
    #: what to do with rows of labels that are no entity of the graph
    unknown: Unknown = "error"
    #: the expected feature dimension, checked when given
    dim: int | None = None
    #: the seed of the ``"normal"`` fill
    seed: int = 0

    def __post_init__(self) -> None:
        """Normalize paths and check the options."""
        object.__setattr__(self, "path", pathlib.Path(self.path))
        for name in ("labels", "entity2id"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, pathlib.Path(value))
        if self.labels is not None and self.entity2id is not None:
            raise ValueError(f"FeatureSource({str(self.path)!r}): give labels or entity2id, not both")
        if self.fill not in FILLS:
            raise ValueError(f"FeatureSource({str(self.path)!r}): fill must be one of {FILLS}, got {self.fill!r}")
        if self.unknown not in UNKNOWN_POLICIES:
            raise ValueError(
                f"FeatureSource({str(self.path)!r}): unknown must be one of {UNKNOWN_POLICIES}, got {self.unknown!r}"
            )
        if self.dim is not None and self.dim <= 0:
            raise ValueError(f"FeatureSource({str(self.path)!r}): dim must be positive, got {self.dim}")

    @property
    def follows_entity_ids(self) -> bool:
        """Whether the rows follow the entity ids of the graph (no labels, no entity2id)."""
        return self.labels is None and self.entity2id is None

    def read_row_labels(self) -> list[str] | None:
        """Read the label of each row; None if the rows follow the entity ids."""
        if self.labels is not None:
            return read_label_list(self.labels)
        if self.entity2id is not None:
            return labels_in_id_order(read_id_map(self.entity2id))
        return None

    def load(self, entity_to_id: Mapping[str, int], *, generator: torch.Generator | None = None) -> ModalityFeatures:
        """Read the file and align its rows to the given entity ids.

        :param entity_to_id: the graph's entity labels and ids
        :param generator: the random generator of the ``"normal"`` fill; if None, one seeded with :attr:`seed`
        :return: shape: (num_entities, dim); the aligned features with their presence mask
        """
        matrix = read_feature_file(self.path, key=self.key)
        labels = self.read_row_labels()
        if matrix.labels is not None and labels is not None:
            raise DataFormatError(
                f"{str(self.path)!r} holds a {{label: vector}} dict, which names its rows; give no labels= or "
                f"entity2id= file for it"
            )
        return align_features(
            matrix.features,
            matrix.labels if labels is None else labels,
            entity_to_id,
            fill=self.fill,
            unknown=self.unknown,
            expected_dim=self.dim,
            generator=generator,
            seed=self.seed,
            source=self.path,
            # the labels of a {label: vector} file come from the file itself
            labels_source=self.labels or self.entity2id or (self.path if matrix.labels is not None else None),
        )
