"""Readers for the published MMKGC feature formats.

Two families of published files exist for the MoMoK benchmarks:

1. **The authors' feature archive** (Google Drive file ``1dKJdJunb11kDtFr5NLfPlFknS7cRdm9W``): per
   dataset ``embeddings/<dataset>/img_features.pth`` and ``text_features.pth``, each a ``torch.save``\\ d
   ``(num_entities, dim)`` float matrix (a tensor, or a NumPy array) whose rows follow the dataset's
   ``entity2id.txt``. The reference code (``models/RelMoE.py``) reshapes them with fixed pooling
   layouts; :data:`PUBLISHED_SHAPES` lists the known shapes and :func:`reference_pooling` the layout
   name for a (modality, width): a key of :data:`pykeen_momok.nn.adapters.POOLING_LAYOUTS`, the one registry
   of the layouts (datasets sit below ``nn`` and only name them).
2. **MMKB VGG16 image features** (``<dataset>_ImageData.h5``): one HDF5 dataset per image id
   (``DBIMG00039``, ``FBIMG00001``, ...), each ``(1, 4096)`` or ``(4096,)``, plus
   ``<dataset>_ImageIndex.txt`` mapping an entity label to its image id (``label<TAB>image id``).
   Entities missing from the index (or whose image id is missing from the file) have no image:
   :func:`read_mmkb_image_features` marks them absent.

The files are read by :func:`pykeen_momok.features.read_feature_file` and
:func:`~pykeen_momok.features.read_label_values`, the package's one reader per format; filling absent rows and
building the modality mask is the job of :mod:`pykeen_momok.features` / :mod:`pykeen_momok.triples`.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from ..features import FeatureMatrix, read_feature_file, read_label_values

__all__ = [
    "PUBLISHED_SHAPES",
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

def reference_pooling(modality: str, width: int) -> str:
    """Return the reference code's pooling layout for features of this modality and width.

    The reference (``RelMoE.__init__``) picks the layout by dataset, but each branch only fits one
    width: 4096-d images are 64x64-pooled (DB15K), 768-d matrices are 12x64-pooled (DB15K text,
    FB15K-237 and Kuai16K image and text), 384-d text is 12x32-pooled (MKG-W/Y), anything else
    (e.g. the 383-d MKG images) is used as is.

    :return: a key of :data:`pykeen_momok.nn.adapters.POOLING_LAYOUTS` (``tests/test_archives.py`` checks that each
        name exists there with this input width)
    """
    if width == 4096:
        return "db15k-image"
    if width == 768:
        return "text-12x64"
    if width == 384 and modality == "text":
        return "mkg-text"
    return "identity"


def load_pth_matrix(
    path: str | os.PathLike,
    *,
    expected_shape: tuple[int | None, int | None] | None = None,
    allow_pickle: bool = False,
) -> FeatureMatrix:
    """Read a ``torch.save``\\ d feature matrix (the authors' ``img_features.pth`` / ``text_features.pth``).

    Read by :func:`~pykeen_momok.features.read_feature_file` (``weights_only=True``: tensors, and NumPy arrays
    through an allow-list of NumPy's reconstruction functions, so a crafted file cannot run code), which accepts a
    2-d tensor or array, a one-entry dict holding one, a ``{label: vector}`` dict, or a list of vectors.

    :param expected_shape: ``(rows, width)``; a ``None`` entry is not checked
    :param allow_pickle: load with ``weights_only=False`` (only for files you trust)
    :raises ValueError: wrong shape or content
    """
    matrix = read_feature_file(path, allow_pickle=allow_pickle)
    _check_shape(path, matrix.features, expected_shape)
    return matrix


def _check_shape(path, features: np.ndarray, expected_shape) -> None:
    if expected_shape is None:
        return
    rows, width = expected_shape
    if rows is not None and features.shape[0] != rows:
        raise ValueError(f"{path}: expected {rows} rows (one per entity), got {features.shape[0]} (shape {features.shape})")
    if width is not None and features.shape[1] != width:
        raise ValueError(f"{path}: expected width {width}, got {features.shape[1]} (shape {features.shape})")


def read_image_index(path: str | os.PathLike) -> dict[str, str]:
    """Read an MMKB ``*_ImageIndex.txt`` (``entity label<TAB>image id`` per line) into label -> image id.

    DB15K's published index lists 4 labels twice, with two image ids each: the later line is used.
    """
    return read_label_values(path, what="image id", repeated="last")


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
