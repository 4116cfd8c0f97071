"""The benchmarks' feature sources: the published MMKGC feature formats, and which of them a benchmark uses.

Features (``image_features=`` / ``text_features=``), each one of

- ``"auto"`` (default): the first of these found *locally* (in ``directory`` or the caches; no network):
  the authors' matrices (``embeddings/<dataset>/img_features.pth`` / ``text_features.pth``), the MMKB
  VGG16 file ``<prefix>_ImageData.h5`` (images), the shared MiniLM text features
  (``text_minilm.npy`` + ``text_minilm_entities.txt``), and, for text, local encoding when
  ``text_encoder=`` is given; otherwise the modality is left out (with a log message saying how to get it);
- ``"authors"``: the authors' published matrix; it cannot be downloaded by a script (Google Drive),
  so a missing file raises an error saying where to download it from and where to put it;
- ``"mmkb"`` (images): the MMKB VGG16 ``.h5``, downloaded from its public link if missing;
- ``"minilm"`` (text): the 384-d MiniLM name embeddings of the shared benchmark folder;
- ``"encode"`` (text): entity names (or ``entity2text.txt`` names) encoded locally with the
  sentence-transformers model ``text_encoder`` (see :mod:`pykeen_momok.text_features`);
- a path: a ``.pth``/``.pt`` matrix whose rows follow ``entity2id.txt``, an MMKB ``.h5`` (rows looked
  up through the dataset's ImageIndex), or any file :class:`~pykeen_momok.features.FeatureSource` reads;
- a :class:`~pykeen_momok.features.FeatureSource`; or ``None`` (no such modality).

Entities without an image in the MMKB ImageIndex are marked absent in the image mask (their rows are
filled, see ``fill``). The factories' ``metadata["pooling"]`` maps each modality to the reference
pooling layout for its width (``"db15k-image"``, ``"text-12x64"``, ``"mkg-text"`` or ``"identity"``;
see :func:`pykeen_momok.datasets.archives.reference_pooling`); user-given files get ``"identity"``
unless ``pooling=`` says otherwise.

:class:`BenchmarkFeatures` resolves these choices; the readers below read the two families of published files
that exist for the MoMoK benchmarks:

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
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..features import (
    FeatureMatrix,
    FeatureSource,
    align_features,
    labels_in_id_order,
    read_feature_file,
    read_label_values,
)
from ..triples import ModalityFeatures
from .download import ManualDownloadRequired, RemoteFile, dataset_cache_folder, safe_extract

__all__ = [
    "AUTHORS_ARCHIVE",
    "AUTHORS_CACHE_KEY",
    "BenchmarkFeatures",
    "FEATURE_KINDS",
    "FEATURE_KEYWORDS",
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

#: The authors' embedding archive (Google Drive); one copy serves all datasets. Not downloadable by a script.
AUTHORS_ARCHIVE = RemoteFile(
    name="momok-embeddings.zip",
    url=AUTHORS_ARCHIVE_URL,
    manual=True,
    description=f"the MoMoK authors' feature archive (Google Drive, {AUTHORS_ARCHIVE_VIEW_URL})",
)
#: The cache folder (beside the datasets' own) of the authors' archive and the matrices extracted from it.
AUTHORS_CACHE_KEY = "momok_embeddings"

#: The feature keywords each modality accepts besides ``"auto"``, in the order ``"auto"`` tries them.
FEATURE_KINDS: Mapping[str, tuple[str, ...]] = {"image": ("authors", "mmkb"), "text": ("authors", "minilm", "encode")}
#: Every keyword ``image_features=`` / ``text_features=`` accept (anything else is a path).
FEATURE_KEYWORDS = frozenset({"auto", *FEATURE_KINDS["image"], *FEATURE_KINDS["text"]})

#: Known shapes (rows, width) of the published matrices in the authors' archive, by its folder, float32.
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
        raise ValueError(
            f"{path}: expected {rows} rows (one per entity), got {features.shape[0]} (shape {features.shape})"
        )
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


class BenchmarkFeatures:
    """Resolves a benchmark's ``image_features=`` / ``text_features=`` (module doc) to aligned features.

    Mixed into :class:`~pykeen_momok.datasets.benchmarks.MMKGBenchmark`: a benchmark class sets the class
    variables below (its feature layout); the benchmark provides ``directory``, ``cache_folder``, ``downloader``,
    ``fill``, ``text_encoder``, ``image_features``, ``text_features`` and :meth:`_optional_file`.
    """

    #: the folder name inside the authors' archive (``embeddings/<name>/``, a key of :data:`PUBLISHED_SHAPES`)
    authors_folder: ClassVar[str | None] = None
    #: the MMKB image index (label -> image id) and the MMKB VGG16 file
    image_index_file: ClassVar[str | None] = None
    mmkb_h5: ClassVar[RemoteFile | None] = None
    #: ``label<TAB>name`` file for text encoding
    entity_text_file: ClassVar[str | None] = None
    #: the shared MiniLM text features and their row labels
    minilm_files: ClassVar[tuple[str, str]] = ("text_minilm.npy", "text_minilm_entities.txt")

    directory: pathlib.Path | None
    cache_folder: pathlib.Path
    downloader: Any  # the benchmark's Downloader
    fill: str
    text_encoder: str | os.PathLike | None
    image_features: Any
    text_features: Any
    pooling: dict[str, str]
    feature_origin: dict[str, str]

    def _optional_file(self, name: str, *, download: bool) -> pathlib.Path | None:
        """A file of the dataset: from ``directory=`` or the cache, or downloaded (when allowed)."""
        raise NotImplementedError

    def load_modalities(self, entity_to_id: Mapping[str, int]) -> dict[str, ModalityFeatures]:
        """Resolve ``image_features`` and ``text_features`` and align them to the entity ids."""
        modalities: dict[str, ModalityFeatures] = {}
        for modality, choice in (("image", self.image_features), ("text", self.text_features)):
            result = self._resolve(modality, choice, entity_to_id)
            if result is None:
                continue
            features, origin, pooling = result
            modalities[modality] = features
            self.feature_origin[modality] = origin
            self.pooling[modality] = pooling
        return modalities

    def _resolve(
        self, modality: str, choice: Any, entity_to_id: Mapping[str, int]
    ) -> tuple[ModalityFeatures, str, str] | None:
        if choice is None:
            return None
        if isinstance(choice, FeatureSource):
            features = choice.load(entity_to_id)
            return features, f"file:{choice.path}", "identity"
        if isinstance(choice, pathlib.Path) or (isinstance(choice, str) and choice not in FEATURE_KEYWORDS):
            return self._from_path(modality, pathlib.Path(choice), entity_to_id)
        if choice == "auto":
            for kind in FEATURE_KINDS[modality]:
                if kind == "encode" and self.text_encoder is None:
                    continue
                result = self._from_kind(modality, kind, entity_to_id, download=False)
                if result is not None:
                    return result
            hint = (
                ", 'mmkb'"
                if modality == "image" and self.mmkb_h5
                else ", 'encode' with text_encoder=..."
                if modality == "text"
                else ""
            )
            # a warning, not a log line: a model trained without a modality it was meant to have is a silent change
            warnings.warn(
                f"{self.__class__.__name__}: no {modality} features found locally; the modality is left out. Pass "
                f"{modality}_features='authors' (manual download from {AUTHORS_ARCHIVE_VIEW_URL}){hint}, or a file; "
                f"{modality}_features=None leaves it out without this warning.",
                UserWarning,
                stacklevel=4,
            )
            return None
        if choice not in FEATURE_KINDS[modality]:
            raise ValueError(
                f"{modality}_features={choice!r} is not one of {sorted({'auto', *FEATURE_KINDS[modality]})}, a path or "
                f"a FeatureSource"
            )
        result = self._from_kind(modality, choice, entity_to_id, download=True)
        if result is None:  # pragma: no cover -- _from_kind raises with instructions when downloading
            raise FileNotFoundError(f"{self.__class__.__name__}: no {choice} {modality} features")
        return result

    def _from_kind(
        self, modality: str, kind: str, entity_to_id: Mapping[str, int], *, download: bool
    ) -> tuple[ModalityFeatures, str, str] | None:
        if kind == "authors":
            path = self._authors_file(modality, download=download)
            if path is None:
                return None
            features = self._authors_matrix(modality, path, entity_to_id, published=True)
            return features, f"authors:{path}", reference_pooling(modality, features.dim)
        if kind == "mmkb":
            if self.mmkb_h5 is None or self.image_index_file is None:
                if download:
                    raise ValueError(f"{self.__class__.__name__} has no MMKB VGG16 image features")
                return None
            h5 = self._optional_file(self.mmkb_h5.name, download=download)
            if h5 is None:
                if download and self.directory is not None:
                    raise FileNotFoundError(
                        f"{self.__class__.__name__}: {self.mmkb_h5.name} is not in directory={str(self.directory)!r}; "
                        f"download it from {self.mmkb_h5.url} and put it there"
                    )
                return None
            features = self._mmkb_matrix(h5, entity_to_id, download=download)
            return features, f"mmkb:{h5}", reference_pooling(modality, features.dim)
        if kind == "minilm":
            names = [self._optional_file(name, download=download) for name in self.minilm_files]
            if any(path is None for path in names):
                present = [path for path in names if path is not None]
                if present:
                    warnings.warn(
                        f"{self.__class__.__name__}: {present[0]} is there but "
                        f"{[n for n, p in zip(self.minilm_files, names) if p is None]} is missing: the MiniLM text "
                        "features cannot be aligned to the entities and are not used",
                        UserWarning,
                        stacklevel=4,
                    )
                if download:
                    raise FileNotFoundError(
                        f"{self.__class__.__name__}: the MiniLM text features "
                        f"{list(self.minilm_files)} are only in the "
                        f"shared benchmark folder; pass directory= (or base_url= of a mirror) holding them, or use "
                        f"text_features='encode' with text_encoder=..."
                    )
                return None
            source = FeatureSource(path=names[0], labels=names[1], fill=self.fill, unknown="ignore")  # type: ignore[arg-type]
            features = source.load(entity_to_id)
            return features, f"minilm:{names[0]}", reference_pooling(modality, features.dim)
        if kind == "encode":
            from ..text_features import encode_entities

            texts = self._entity_texts(download=download)
            features = encode_entities(
                entity_to_id,
                model=self.text_encoder or "default",
                texts=texts,
                fill=self.fill,
                progress=self.downloader.progress,
                cache_dir=(
                    pathlib.Path(self.downloader.cache_root) / "momok_text_features"
                    if self.downloader.cache_root is not None
                    else None
                ),
            )
            return features, f"encoded:{self.text_encoder or 'default'}", reference_pooling(modality, features.dim)
        raise ValueError(f"unknown feature kind {kind!r}")  # pragma: no cover

    def _from_path(
        self, modality: str, path: pathlib.Path, entity_to_id: Mapping[str, int]
    ) -> tuple[ModalityFeatures, str, str]:
        if not path.is_file():
            raise FileNotFoundError(f"{self.__class__.__name__}: {modality}_features file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix in {".h5", ".hdf5"} and modality == "image" and self.image_index_file is not None:
            features = self._mmkb_matrix(path, entity_to_id, download=True)
        elif suffix in {".pth", ".pt"}:
            features = self._authors_matrix(modality, path, entity_to_id, published=False)
        else:
            features = FeatureSource(path=path, fill=self.fill).load(entity_to_id)
        return features, f"file:{path}", "identity"

    # the published formats -------------------------------------------------------------------------

    def _authors_file(self, modality: str, *, download: bool) -> pathlib.Path | None:
        assert self.authors_folder is not None
        shared = dataset_cache_folder(AUTHORS_CACHE_KEY, self.downloader.cache_root)
        for folder in (self.directory, shared, None if self.directory is not None else self.cache_folder):
            if folder is None:
                continue
            path = find_authors_feature_file(folder, self.authors_folder, modality)
            if path is not None:
                return path
        member = authors_feature_member(self.authors_folder, modality)
        # an archive put where the error message said: extract the member we need
        for folder in (self.directory, shared):
            archive = folder / AUTHORS_ARCHIVE.name if folder is not None else None
            if archive is not None and archive.is_file():
                safe_extract(archive, shared, members=[member])
                path = shared / member
                if path.is_file():
                    return path
                raise FileNotFoundError(f"{archive} holds no {member}")
        if not download:
            return None
        raise ManualDownloadRequired(
            f"{self.__class__.__name__}: the authors' {modality} features ({member}) cannot be "
            "downloaded automatically "
            f"(Google Drive). Download the archive from {AUTHORS_ARCHIVE_VIEW_URL} and either put it at "
            f"{shared / AUTHORS_ARCHIVE.name}, or unpack it and put {member} at {shared / member}"
            + (f" or at {self.directory / member}" if self.directory is not None else "")
            + f"; or pass {modality}_features=<path to the .pth file>."
        )

    def _expected_shape(self, modality: str, num_entities: int) -> tuple[int | None, int | None]:
        shape = PUBLISHED_SHAPES.get(self.authors_folder or "", {}).get(modality)
        return (num_entities, shape[1] if shape else None)

    def _authors_matrix(
        self, modality: str, path: pathlib.Path, entity_to_id: Mapping[str, int], *, published: bool
    ) -> ModalityFeatures:
        """Rows follow entity2id; image-less entities (not in the ImageIndex) are marked absent.

        :param published: check the width against the published shape (the authors' archive)
        """
        rows_width = self._expected_shape(modality, len(entity_to_id))
        matrix = load_pth_matrix(path, expected_shape=rows_width if published else (rows_width[0], None))
        if matrix.labels is not None:
            return align_features(
                matrix.features, matrix.labels, entity_to_id, fill=self.fill, unknown="ignore", source=path
            )  # type: ignore[arg-type]
        if modality == "image" and self.image_index_file is not None:
            index_path = self._optional_file(self.image_index_file, download=True)
            if index_path is not None:
                index = read_image_index(index_path)
                present = np.asarray([label in index for label in labels_in_id_order(entity_to_id)])
                return self._present_rows(matrix.features, present, entity_to_id, source=path)
        return align_features(matrix.features, None, entity_to_id, fill=self.fill, source=path)  # type: ignore[arg-type]

    def _mmkb_matrix(self, h5: pathlib.Path, entity_to_id: Mapping[str, int], *, download: bool) -> ModalityFeatures:
        assert self.image_index_file is not None
        index_path = self._optional_file(self.image_index_file, download=download)
        if index_path is None:
            raise FileNotFoundError(
                f"{self.__class__.__name__}: reading {h5.name} needs {self.image_index_file} (in "
                "directory= or the cache)"
            )
        matrix = read_mmkb_image_features(h5, index_path, labels_in_id_order(entity_to_id))
        assert matrix.present is not None
        if not matrix.present.any():
            raise ValueError(f"{h5}: no entity of {self.__class__.__name__} has an image feature")
        return self._present_rows(matrix.features, matrix.present, entity_to_id, source=h5)

    def _present_rows(
        self, features: np.ndarray, present: np.ndarray, entity_to_id: Mapping[str, int], *, source: pathlib.Path
    ) -> ModalityFeatures:
        """Align the ``present`` rows of a matrix in entity-id order; the others are marked absent and filled.

        :param features: shape: (num_entities, dim), rows in entity-id order
        :param present: shape: (num_entities,), bool
        """
        labels = labels_in_id_order(entity_to_id)
        kept = [label for label, keep in zip(labels, present) if keep]
        return align_features(features[present], kept, entity_to_id, fill=self.fill, source=source)  # type: ignore[arg-type]

    def _entity_texts(self, *, download: bool) -> Mapping[str, str] | None:
        path = self._optional_file(self.entity_text_file, download=download) if self.entity_text_file else None
        return read_label_values(path, what="name") if path is not None else None
