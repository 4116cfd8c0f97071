"""Readers for the published MMKGC feature formats.

Two families of published files exist for the MoMoK benchmarks:

1. **The authors' feature archive** (Google Drive file ``1dKJdJunb11kDtFr5NLfPlFknS7cRdm9W``): per
   dataset ``embeddings/<dataset>/img_features.pth`` and ``text_features.pth``, each a ``torch.save``\\ d
   ``(num_entities, dim)`` float matrix (a tensor, or a NumPy array) whose rows follow the dataset's
   ``entity2id.txt``. The reference code (``models/RelMoE.py``) reshapes them with fixed pooling
   layouts; :data:`PUBLISHED_SHAPES` lists the known shapes and :func:`reference_pooling` the layout
   name for a (dataset, modality, width).
2. **MMKB VGG16 image features** (``<dataset>_ImageData.h5``): one HDF5 dataset per image id
   (``DBIMG00039``, ``FBIMG00001``, ...), each ``(1, 4096)`` or ``(4096,)``, plus
   ``<dataset>_ImageIndex.txt`` mapping an entity label to its image id (``label<TAB>image id``).
   Entities missing from the index (or whose image id is missing from the file) have no image:
   :func:`read_mmkb_image_features` marks them absent.

All readers return NumPy arrays; filling absent rows and building the modality mask is the job of
:mod:`pykeen_momok.features` / :mod:`pykeen_momok.triples`.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PUBLISHED_SHAPES",
    "POOLING_LAYOUTS",
    "AUTHORS_ARCHIVE_DRIVE_ID",
    "AUTHORS_ARCHIVE_URL",
    "AUTHORS_ARCHIVE_VIEW_URL",
    "FeatureMatrix",
    "load_pth_matrix",
    "read_image_index",
    "read_mmkb_image_features",
    "reference_pooling",
    "find_authors_feature_file",
    "authors_feature_member",
]

logger = logging.getLogger(__name__)

#: Google Drive id of the authors' embedding archive (see the issue / shared README).
AUTHORS_ARCHIVE_DRIVE_ID = "1dKJdJunb11kDtFr5NLfPlFknS7cRdm9W"
#: The direct-download form of that Drive link (large files answer with a confirmation page instead).
AUTHORS_ARCHIVE_URL = f"https://drive.google.com/uc?export=download&id={AUTHORS_ARCHIVE_DRIVE_ID}"
#: The page a person opens in a browser to download it.
AUTHORS_ARCHIVE_VIEW_URL = f"https://drive.google.com/file/d/{AUTHORS_ARCHIVE_DRIVE_ID}/view"

#: Known shapes (rows, width) of the published matrices, float32.
PUBLISHED_SHAPES: Mapping[str, Mapping[str, tuple[int, int]]] = {
    "DB15K": {"image": (12842, 4096), "text": (12842, 768)},
    "MKG-W": {"image": (15000, 383), "text": (15000, 384)},
    "MKG-Y": {"image": (15000, 383), "text": (15000, 384)},
}

#: The pooling layouts the model understands (see ``pykeen_momok/nn/adapters.py``):
#: ``db15k-image``: 4096 -> view 64x64 -> AvgPool2d(4, 4) -> 256;
#: ``text-12x64``: 768 -> view 12x64 -> AdaptiveAvgPool2d((4, 64)) -> 256;
#: ``mkg-text``: 384 -> view 12x32 -> AdaptiveAvgPool2d((4, 64)) -> 256;
#: ``identity``: the features as they are.
POOLING_LAYOUTS: Mapping[str, int | None] = {
    "db15k-image": 4096,
    "text-12x64": 768,
    "mkg-text": 384,
    "identity": None,
}


def reference_pooling(modality: str, width: int) -> str:
    """Return the reference code's pooling layout for features of this modality and width.

    The reference (``RelMoE.__init__``) picks the layout by dataset, but each branch only fits one
    width: 4096-d images are 64x64-pooled (DB15K), 768-d matrices are 12x64-pooled (DB15K text,
    FB15K-237 and Kuai16K image and text), 384-d text is 12x32-pooled (MKG-W/Y), anything else
    (e.g. the 383-d MKG images) is used as is.
    """
    if width == 4096:
        return "db15k-image"
    if width == 768:
        return "text-12x64"
    if width == 384 and modality == "text":
        return "mkg-text"
    return "identity"


@dataclass(frozen=True)
class FeatureMatrix:
    """Rows of features read from a published file.

    :param features: ``(n, dim)`` float32
    :param labels: the entity label of each row, or ``None`` when rows follow the dataset's entity ids
    :param present: ``(n,)`` bool, False where the file has no real feature for the row, or ``None`` (all present)
    """

    features: np.ndarray
    labels: Sequence[str] | None = None
    present: np.ndarray | None = None


def _numpy_safe_globals() -> list:
    """Globals needed to unpickle plain NumPy arrays with ``torch.load(weights_only=True)``."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    reconstruct = multiarray._reconstruct
    scalar = getattr(multiarray, "scalar", None)
    out: list = [
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
    ]
    if scalar is not None:
        out += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


def _to_numpy(obj, path: pathlib.Path) -> FeatureMatrix:
    import torch

    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().float().numpy()
    if isinstance(obj, np.ndarray):
        if obj.ndim < 2:
            _bad(path, obj)
        return FeatureMatrix(np.asarray(obj, dtype=np.float32).reshape(obj.shape[0], -1))
    if isinstance(obj, Mapping):
        if len(obj) == 1:  # {"features": matrix}
            (value,) = obj.values()
            if isinstance(value, (torch.Tensor, np.ndarray)) and getattr(value, "ndim", 0) >= 2:
                return _to_numpy(value, path)
        # {label: vector}
        labels = [str(k) for k in obj]
        rows = [np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float32).ravel() for v in obj.values()]
        if not rows:
            raise ValueError(f"{path}: empty feature mapping")
        widths = {r.shape[0] for r in rows}
        if len(widths) != 1:
            raise ValueError(f"{path}: feature vectors of different widths {sorted(widths)}")
        return FeatureMatrix(np.stack(rows), labels=labels)
    # a list of rows: 1-D tensors or arrays, or lists of numbers (the reference code reads those with torch.Tensor(...))
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(v, (torch.Tensor, np.ndarray, list, tuple)) for v in obj):
        try:
            rows = [np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v, dtype=np.float32).ravel() for v in obj]
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: the rows are not lists of numbers: {error}") from error
        widths = {r.shape[0] for r in rows}
        if len(widths) != 1:
            raise ValueError(f"{path}: feature vectors of different widths {sorted(widths)[:10]}")
        return FeatureMatrix(np.stack(rows))
    raise ValueError(f"{path}: expected a (num_entities, dim) tensor or array, got {type(obj).__name__}")


def _bad(path: pathlib.Path, arr) -> np.ndarray:
    raise ValueError(f"{path}: expected a (num_entities, dim) matrix, got shape {tuple(arr.shape)}")


def load_pth_matrix(
    path: str | os.PathLike,
    *,
    expected_shape: tuple[int | None, int | None] | None = None,
    allow_pickle: bool = False,
) -> FeatureMatrix:
    """Read a ``torch.save``\\ d feature matrix (the authors' ``img_features.pth`` / ``text_features.pth``).

    Loads with ``weights_only=True`` (tensors, and NumPy arrays through an allow-list of NumPy's
    reconstruction functions), so a crafted file cannot run code. Accepts a 2-d tensor or array, a
    one-entry dict holding one, a ``{label: vector}`` dict, or a list of vectors (1-D tensors, arrays or lists
    of numbers).

    :param expected_shape: ``(rows, width)``; a ``None`` entry is not checked
    :param allow_pickle: load with ``weights_only=False`` (only for files you trust)
    :raises ValueError: wrong shape or content
    """
    import torch

    path = pathlib.Path(path)
    if allow_pickle:
        obj = torch.load(path, map_location="cpu", weights_only=False)  # noqa: S614  # unsafe-ok: only with allow_pickle=True, for files the user trusts
    else:
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # UnpicklingError and friends
            raise ValueError(
                f"{path}: could not be read safely (torch.load with weights_only=True): {error}. If you trust the "
                "file, load it with allow_pickle=True, or convert it to .npy"
            ) from error
    matrix = _to_numpy(obj, path)
    _check_shape(path, matrix.features, expected_shape)
    return matrix


def _check_shape(path, features: np.ndarray, expected_shape) -> None:
    if features.ndim != 2:
        raise ValueError(f"{path}: expected a 2-d matrix, got shape {features.shape}")
    if expected_shape is None:
        return
    rows, width = expected_shape
    if rows is not None and features.shape[0] != rows:
        raise ValueError(f"{path}: expected {rows} rows (one per entity), got {features.shape[0]} (shape {features.shape})")
    if width is not None and features.shape[1] != width:
        raise ValueError(f"{path}: expected width {width}, got {features.shape[1]} (shape {features.shape})")


def read_image_index(path: str | os.PathLike) -> dict[str, str]:
    """Read an MMKB ``*_ImageIndex.txt`` (``entity label<TAB>image id`` per line) into label -> image id."""
    index: dict[str, str] = {}
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            try:
                label, image_id = line.rsplit("\t", 1)
            except ValueError:
                raise ValueError(f"{path}:{number}: expected 'label<TAB>image id', got {line!r}") from None
            index[label] = image_id.strip()
    return index


def read_mmkb_image_features(
    h5_path: str | os.PathLike,
    index: str | os.PathLike | Mapping[str, str],
    labels: Sequence[str],
) -> FeatureMatrix:
    """Read MMKB VGG16 features for ``labels`` (in that order) from ``<dataset>_ImageData.h5``.

    :param h5_path: the HDF5 file, one dataset per image id
    :param index: the ``*_ImageIndex.txt`` path or an already read label -> image id mapping
    :param labels: entity labels, one per output row (e.g. in entity-id order)
    :returns: rows for ``labels``; ``present`` is False (and the row zero) for entities without an image
    """
    try:
        import h5py
    except ImportError as error:  # pragma: no cover -- h5py is an extra
        raise ImportError("reading MMKB .h5 image features needs h5py: pip install 'pykeen-momok[h5]'") from error

    if not isinstance(index, Mapping):
        index = read_image_index(index)
    with h5py.File(h5_path, "r") as file:
        width = None
        for key in file:
            width = int(np.prod(file[key].shape))
            break
        if width is None:
            raise ValueError(f"{h5_path}: no image features in the file")
        features = np.zeros((len(labels), width), dtype=np.float32)
        present = np.zeros(len(labels), dtype=bool)
        missing_in_file = 0
        for row, label in enumerate(labels):
            image_id = index.get(label)
            if image_id is None:
                continue
            if image_id not in file:
                missing_in_file += 1
                continue
            vector = np.asarray(file[image_id], dtype=np.float32).ravel()
            if vector.shape[0] != width:
                raise ValueError(f"{h5_path}: {image_id} has width {vector.shape[0]}, expected {width}")
            features[row] = vector
            present[row] = True
    if missing_in_file:
        logger.warning("%s: %d indexed image ids are missing from the file; marked absent", h5_path, missing_in_file)
    return FeatureMatrix(features, present=present)


def authors_feature_member(dataset_folder: str, modality: str) -> str:
    """The path of a matrix inside the authors' archive, e.g. ``embeddings/DB15K/img_features.pth``."""
    file_name = {"image": "img_features.pth", "text": "text_features.pth"}[modality]
    return f"embeddings/{dataset_folder}/{file_name}"


def find_authors_feature_file(folder: str | os.PathLike, dataset_folder: str, modality: str) -> pathlib.Path | None:
    """Find the authors' matrix for a modality in a folder, in the archive's or the reference code's layout.

    Looks for ``embeddings/<dataset>/<file>``, ``<dataset>/<file>`` and ``<file>``.
    """
    folder = pathlib.Path(folder)
    member = authors_feature_member(dataset_folder, modality)
    file_name = member.rsplit("/", 1)[1]
    for candidate in (folder / member, folder / dataset_folder / file_name, folder / file_name):
        if candidate.is_file():
            return candidate
    return None
