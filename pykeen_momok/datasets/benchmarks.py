"""The MMKGC benchmarks of MoMoK as PyKEEN datasets: DB15K, MKG-W, MKG-Y, FB15K-237-IMG and KVC16K.

Every class downloads its triple and id files on first use into PyKEEN's pystow cache (``PYKEEN_HOME``,
sub-folder named after the class, e.g. ``~/.data/pykeen/datasets/mkgy``), verifies them against
the checksums below, and reuses them afterwards without network access. With ``directory=`` the
files are read from a local folder laid out like the shared benchmark folder (``train.txt``,
``valid.txt``, ``test.txt``, ``entity2id.txt``, ``relation2id.txt``, ...) and nothing is downloaded;
those files are checked against the same checksums (hashed on every use by default, ``verify="full"``),
so that a cut or edited copy is not mistaken for the benchmark. For a copy changed on purpose pass
``verify="none"``.

.. code-block:: python

    from pykeen.datasets import get_dataset

    dataset = get_dataset(dataset="MKG-Y", dataset_kwargs=dict(directory="../shared/data/MKG-Y"))
    dataset.training.modalities["text"]          # ModalityFeatures, rows in entity-id order
    dataset.training.metadata["pooling"]         # {"text": "mkg-text"}: the reference pooling layout

Features (``image_features=`` / ``text_features=``): ``"auto"``, ``"authors"``, ``"mmkb"``, ``"minilm"``,
``"encode"``, a path, a :class:`~pykeen_momok.features.FeatureSource` or ``None``; see
:mod:`pykeen_momok.datasets.archives`, where they are resolved.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from docdata import parse_docdata

from ..features import FeatureSource, atomic_write
from .archives import AUTHORS_ARCHIVE, BenchmarkFeatures
from .base import MultiModalDataset, read_triples_file
from .download import VERIFY_ENV, ChecksumError, Downloader, RemoteFile, checksum_table, verify_local_file
from .validation import VALIDATION_CHOICES, honest_splits

__all__ = [
    "MMKGBenchmark",
    "DB15K",
    "MKGW",
    "MKGY",
    "FB15k237IMG",
    "KVC16K",
    "CHECKSUMS",
    "AUTHORS_ARCHIVE",
]

logger = logging.getLogger(__name__)

PathLike = str | pathlib.Path

#: git blob id, sha256 and size of every file, as in the shared benchmark folder's CHECKSUMS.txt.
#: (FB15K-237-IMG: the LF versions; the public kg-bert copies have CRLF line ends, see below.) KVC16K (the
#: reference repository's ``datasets/Kuai16K/``) is not in the shared folder: its sha256 is not known (``-``);
#: its files are verified by their git blob ids and sizes.
CHECKSUMS = checksum_table(
    """
74bacef4ddff6f53b061bd390319baa1f8cd5519  fcd2f034111388af8ae3fc58e15822d85b02d9d043b5191b4b0ffa0a622bd29b  749759  DB15K/DB15K_ImageIndex.txt
97febd7818b6a073df877b38c3682715513bb3f5  e1e257f5850d0a3440a7020dc5c8af77664a60b69fa1869c45c2f20b8024020e  674485  DB15K/entity2id.txt
0687d74bb57284ce73c3cddaf2e8a0c464064f72  bb002b2069d740a545dfa526c31bcd487aff0a5203db786f278e363c714f24ea  12587  DB15K/relation2id.txt
6299f99eb1efc4899c2b9249e5f4797842e4ea96  6c437beaaa65de21f910b447d0c02a5b3aac75ba91de9017eb72cf8495a2260f  1335480  DB15K/test.txt
baa66ff3031b82a5fb4b15133cd9e28f17ea2a07  3748e0d7e60c056d4dc448c1465c51776139f7a95e401e6e0b6550653ffd84d4  9862784  DB15K/text_minilm.npy
f4e0197ee4b99929ebbd53d5e20468fb574d260d  55080fb3bafd745aea62cc7d125367f3f8aa922c48e8a6d5f188dc374c96e006  608543  DB15K/text_minilm_entities.txt
a8371f0ce44783bd597a8d4171b278381f37601f  0a9e724d71372f23432e5370e62bd8f94f6d37882be955deca460014d3f6e23c  10684015  DB15K/train.txt
1e66cb24ca1041f7e8b0edce5b290617e8e9102d  73e936ee24e11bd0fd31630a573ea3801da930c7fb6a7397ce0fed47f6f7f133  1355449  DB15K/valid.txt
80f43f4b953101bc05ffbc22ca4089cd78e83d5c  3e7e2be4f8f801d0cfc57ab7fcbb537ffe3d26212f17383c4091c19686f76940  279298  FB15K-237-IMG/FB15K_ImageIndex.txt
0114f9a7e45f741f1fee7cf9954fe1884b9e5e3a  16beedcfad3d32696e8b0b98cfa0f5eeb144f5142225f227a64fd9ce37447da5  392383  FB15K-237-IMG/entity2text.txt
4e7bb71d14f6238053e9233b498fb57c2a6ba323  e2e35e8e6113de220140b6f44dc71a5207b0fc6872d575e874aefe13259b655b  1499033  FB15K-237-IMG/test.tsv
03dfc5b7bdcb34aca2ab7eb65e9d6f594720b7f3  2e534d1f49595ab2fc852a8dcceb2337f4aad1dd1032277fd28243c0a2c0103f  11482496  FB15K-237-IMG/text_minilm.npy
05482f2b29493eb236b3a383845d3c1431595b03  974c46c71782b5a57c0975d5eae9eb0be3490d33616ae8d389c2d4259f379ace  146413  FB15K-237-IMG/text_minilm_entities.txt
bf5b69e4e34bdc72d1a15e102fd7bc66c5683c39  61099230e4439f90885ca9767739e31e8e32f54736fa1c35952b27997bc7c08a  21005177  FB15K-237-IMG/train.tsv
49f3b02859a2157b1ac75798694829639cbf3778  749cbe9d923bac7b9354da5614ecfed2e0220256d442c3e04a6b303db1f273d9  1285566  FB15K-237-IMG/valid.tsv
a986368a235b34b9e42358156d1f4664c59b8d72  805e2e9a9a8fff032e2caa17233d8ceaaf2356221c66d6ad3c17d31292d360f5  672258  MKG-W/entity2id.txt
aa182a58c2cbfbcf4696424183f22bdcd5f90245  7035491ec0b2865e1220ec9491aafbcf3ff3d6c797816a0129735e0be9f2ea29  6652  MKG-W/relation2id.txt
6508caf4e51b0c8d7dc695bae6f609b266234230  f0cfb7b5091d8601d0298889533e4f128237a700207b5739d27c0d81152f8245  494417  MKG-W/test.txt
c02ba4b17fee3189eb2e7aff5e7dbf5b46253f39  66187e7d882a654915d8048897916ca8c5798e9c7df3a5b8ba8fab5d231cafcd  3956175  MKG-W/train.txt
035f1d1daff8fbf897f16f2021239abbcdc28c7d  6840322036c394af6ab33be5c4f988edafbd48d61fdc9e3b9b485c42e6f5a2da  494720  MKG-W/valid.txt
6a581c7f93b1913e9e48c683026fd04b9f95e6f3  ca7c45833c5454545e4ffbeb1e7dde6c5ff2548d6688c91ad44effc9d1095d06  348201  MKG-Y/entity2id.txt
de97378efb25cdcb01686be57f936a9426a62e89  584d45c33a0d1003a28d08ee17507e8da21f3809491f1d511549a0287bdf8dcb  388  MKG-Y/relation2id.txt
341fa605f4d900344730e63c863a07952e3dc6fc  618b1a1ba2a1880e9cf0f56ae920b589df59a859442d4f1ff32a4e632c25bc4b  125073  MKG-Y/test.txt
33c4534d104634a905efc985c59a5378588b1872  21498e6679787ae8dda3f19865d8c0fde277e839760524a38b4ad428466a9239  11520128  MKG-Y/text_minilm.npy
cfe896d327aadc35b5632018fe98f59e05a70279  5c58e2bf71d78eee310ace515add7e0acada665995f2550f9a16fd7ad74af18c  269311  MKG-Y/text_minilm_entities.txt
c0be6fbb15f8a91b967d9ee8eaed95247a523995  3be3e886268cade513b35429d7aa5e145f51692c2f2bedbd7ff7d60a7a6c263e  1003671  MKG-Y/train.txt
70cad85f1d32602717001da83488d78ccab38123  bcc01dbedd4c25f87481ca47b00724a1de1808ec098d80e27fec595c13c8bae4  125067  MKG-Y/valid.txt
0ab5f68af7e6429bdf8be546d9acc86ddf5f4ff2  -  247079  KVC16K/entity2id.txt
39cbb7ff93876917e6891d91a0c276974667d32d  -  16  KVC16K/relation2id.txt
33ba3a045d8600a0fb1d6650aa007f501cfb60af  -  4074788  KVC16K/train.txt
fd12001091a9104683383208b7efcf151007c26a  -  509117  KVC16K/valid.txt
32d065f5d066db05f6687189c3cb615267c0bb8b  -  509198  KVC16K/test.txt
"""  # noqa: E501 -- one file per line, as CHECKSUMS.txt has them
)

_MOMOK_RAW = "https://raw.githubusercontent.com/zjukg/MoMoK/master/datasets"
_MMKB_RAW = "https://raw.githubusercontent.com/mniepert/mmkb/master"
#: FB15K-237-IMG triples and names: the standard FB15k-237 split as published by kg-bert (used by
#: MKGformer for FB15K-237-IMG). Those files have CRLF line ends; they are converted to LF after download
#: and then verified against the LF checksums of the shared copy (identical content otherwise).
_KG_BERT_RAW = "https://raw.githubusercontent.com/yao8839836/kg-bert/master/data/FB15k-237"
#: MMKB VGG16 image features: the Dropbox links of the MMKB README; no checksum is published.
_MMKB_DROPBOX = "https://www.dropbox.com/s"


def _shared_spec(folder: str, name: str, url: str | None, **kwargs: Any) -> RemoteFile:
    blob, sha256, size = CHECKSUMS[f"{folder}/{name}"]
    return RemoteFile(
        name=name,
        url=url,
        sha256=sha256,
        size=size,
        git_blob=None if kwargs.get("normalize_newlines") else blob,
        **kwargs,
    )


def _momok_specs(folder: str, remote_folder: str | None = None) -> tuple[RemoteFile, ...]:
    remote_folder = remote_folder or folder
    return tuple(
        _shared_spec(folder, name, f"{_MOMOK_RAW}/{remote_folder}/{name}")
        for name in ("train.txt", "valid.txt", "test.txt", "entity2id.txt", "relation2id.txt")
    )


def _minilm_specs(folder: str) -> tuple[RemoteFile, ...]:
    # made for the shared benchmark folder; only reachable through a mirror (base_url) or directory=
    return tuple(_shared_spec(folder, name, None) for name in ("text_minilm.npy", "text_minilm_entities.txt"))


class MMKGBenchmark(BenchmarkFeatures, MultiModalDataset):
    """Base class of the MMKGC benchmarks: files from the cache (downloaded, verified) or ``directory=``.

    A subclass is the whole spec of its dataset: it sets the class variables describing its files (their
    public URLs; their checksums come from :data:`CHECKSUMS`) and its feature layout (those of
    :class:`~pykeen_momok.datasets.archives.BenchmarkFeatures`), and its docstring holds PyKEEN's docdata.
    Registering it by name takes an entry point in ``setup.cfg`` and a line in ``pykeen_momok/__init__.py``
    (``tests/test_benchmarks.py`` checks both).
    """

    #: the dataset's folder name in the shared layout / a mirror, e.g. ``"MKG-Y"``
    folder_name: ClassVar[str]
    #: the files that must be present: triples (and ids)
    required_files: ClassVar[tuple[RemoteFile, ...]] = ()
    #: files used when present / needed (ImageIndex, names, MiniLM features)
    optional_files: ClassVar[tuple[RemoteFile, ...]] = ()
    #: file names of the splits
    split_files: ClassVar[Mapping[str, str]] = {
        "training": "train.txt",
        "validation": "valid.txt",
        "testing": "test.txt",
    }
    #: ``"dot"`` (``h r t .``) or ``"tsv"``
    triples_format_name: ClassVar[str] = "dot"
    #: id files; ``None``: generated from all splits (sorted labels), so no evaluation triple is dropped
    entity2id_file: ClassVar[str | None] = "entity2id.txt"
    relation2id_file: ClassVar[str | None] = "relation2id.txt"
    #: the default of ``validation=``: what model selection looks at (see :mod:`pykeen_momok.datasets.validation`)
    default_validation: ClassVar[str] = "published"
    #: the default of ``heldout_size=``, for ``validation="heldout"``
    default_heldout_size: ClassVar[int] = 2000

    def __init__(
        self,
        *,
        directory: PathLike | None = None,
        image_features: str | PathLike | FeatureSource | None = "auto",
        text_features: str | PathLike | FeatureSource | None = "auto",
        text_encoder: str | PathLike | None = None,
        fill: str = "mean",
        pooling: Mapping[str, str] | None = None,
        create_inverse_triples: bool = True,
        base_url: str | None = None,
        cache_root: PathLike | None = None,
        verify: str | None = None,
        progress: bool = True,
        eager: bool = False,
        validation: str | None = None,
        heldout_size: int | None = None,
        heldout_seed: int = 0,
    ) -> None:
        """Locate (or download) the files; the triples and features are read on first access.

        :param directory: a local folder with the dataset's files in the shared layout; then nothing is
            downloaded. Default: the pystow cache, filled from the public repositories on first use.
        :param image_features: ``"auto"``, ``"authors"``, ``"mmkb"``, a path, a FeatureSource or None (see module doc)
        :param text_features: ``"auto"``, ``"authors"``, ``"minilm"``, ``"encode"``, a path, a FeatureSource or None
        :param text_encoder: a sentence-transformers model name or local model directory, used by
            ``text_features="encode"`` (and by ``"auto"`` when no text feature file is found)
        :param fill: how rows of entities without a feature are filled: ``"mean"``, ``"zeros"`` or ``"normal"``
        :param pooling: override the pooling layout hint per modality (stored in ``metadata["pooling"]``)
        :param create_inverse_triples: whether the training factory creates inverse triples (MoMoK needs them)
        :param base_url: root URL of a mirror in the shared layout (``<base_url>/<folder>/<file>``); default:
            the environment variable ``PYKEEN_MOMOK_BASE_URL``, else the public repositories
        :param cache_root: a folder to use instead of PyKEEN's pystow cache
        :param verify: how the known files (in ``directory=`` or the download cache) are checked on use against
            their published checksums: ``"full"`` (sha256 / git blob id, the default), ``"size"`` or ``"none"``
            (for a copy changed on purpose); default: the environment variable ``PYKEEN_MOMOK_VERIFY``
        :param progress: show download progress bars
        :param eager: read everything now
        :param validation: what the validation split is: ``"published"`` (the file), ``"disjoint"`` (its triples
            that are neither training nor test triples) or ``"heldout"`` (``heldout_size`` training triples,
            removed from training). Default: the class's :attr:`default_validation` (``"heldout"`` for DB15K,
            whose published validation triples are mostly training and test triples; ``"published"`` elsewhere)
        :param heldout_size: held-out training triples for ``validation="heldout"`` (default 2,000)
        :param heldout_seed: the seed of that draw
        """
        self.validation_choice = self.default_validation if validation is None else validation
        if self.validation_choice not in VALIDATION_CHOICES:
            raise ValueError(
                f"{self.__class__.__name__}: validation must be one of {VALIDATION_CHOICES}, got {validation!r}"
            )
        self.heldout_size = self.default_heldout_size if heldout_size is None else int(heldout_size)
        if self.heldout_size < 1:
            raise ValueError(f"{self.__class__.__name__}: heldout_size must be at least 1, got {heldout_size}")
        self.heldout_seed = int(heldout_seed)
        self.directory = pathlib.Path(directory).expanduser() if directory is not None else None
        if self.directory is not None and not self.directory.is_dir():
            raise NotADirectoryError(f"{self.__class__.__name__}: directory {str(self.directory)!r} is not a folder")
        # hashing the known files takes milliseconds (the largest is 21 MB): a copy edited in directory= or
        # in the download cache is never mistaken for the benchmark
        self.verify = verify or os.environ.get(VERIFY_ENV) or "full"
        self.downloader = Downloader(
            self._cache_key(),
            self.required_files + self.optional_files + ((self.mmkb_h5,) if self.mmkb_h5 else ()),
            base_url=base_url,
            mirror_folder=self.folder_name,
            cache_root=cache_root,
            verify=self.verify,
            progress=progress,
        )
        self.image_features = image_features
        self.text_features = text_features
        self.text_encoder = text_encoder
        self.fill = fill
        self.pooling_override = dict(pooling or {})
        self.pooling: dict[str, str] = {}
        self.feature_origin: dict[str, str] = {}

        paths = {spec.name: self._required_path(spec) for spec in self.required_files}
        entity2id = paths[self.entity2id_file] if self.entity2id_file else None
        relation2id = paths[self.relation2id_file] if self.relation2id_file else None
        if entity2id is None or relation2id is None:
            generated_entities, generated_relations = self._generate_id_files(
                [paths[self.split_files[key]] for key in ("training", "validation", "testing")]
            )
            entity2id = entity2id or generated_entities
            relation2id = relation2id or generated_relations
        super().__init__(
            training_path=paths[self.split_files["training"]],
            testing_path=paths[self.split_files["testing"]],
            validation_path=paths[self.split_files["validation"]],
            entity2id_path=entity2id,
            relation2id_path=relation2id,
            modalities=None,
            triples_format=self.triples_format_name,  # type: ignore[arg-type]
            create_inverse_triples=create_inverse_triples,
            eager=eager,
        )

    # files -----------------------------------------------------------------------------------------

    @classmethod
    def _cache_key(cls) -> str:
        return cls.__name__.lower()

    @property
    def cache_folder(self) -> pathlib.Path:
        """The dataset's folder in the download cache."""
        return self.downloader.folder

    def _required_path(self, spec: RemoteFile) -> pathlib.Path:
        if self.directory is not None:
            # a missing file is reported before a wrong one: it is the likelier mistake (a wrong folder)
            for required in self.required_files:
                if not (self.directory / required.name).is_file():
                    raise FileNotFoundError(
                        f"{self.__class__.__name__}: {required.name} is missing from "
                        f"directory={str(self.directory)!r}; "
                        f"the folder must hold {[s.name for s in self.required_files]} (the layout of the shared "
                        f"benchmark folder). Get it from {required.url or 'the shared benchmark folder'} (expected "
                        f"{required.expected_str()})"
                    )
            path = self.directory / spec.name
            self._check_local_copy(spec, path)
            return path
        return self.downloader.ensure(spec)

    def _check_local_copy(self, spec: RemoteFile, path: pathlib.Path) -> None:
        """Check a ``directory=`` file against the benchmark's published checksums (unless ``verify="none"``)."""
        if self.verify == "none" or not (spec.has_checksum or spec.size is not None):
            return
        try:
            verify_local_file(path, spec, full=self.verify == "full")
        except ChecksumError as error:
            raise ChecksumError(
                f"{self.__class__.__name__}: {path} is not the published {self.folder_name}/{spec.name}: {error}. "
                f"If the copy is changed on purpose, pass verify='none' (or set {VERIFY_ENV}=none) to use it "
                f"unchecked; a knowledge graph of your own is read by MultiModalDataset.from_directory"
            ) from None

    def _local_file(self, name: str) -> pathlib.Path | None:
        """A file from ``directory`` or the cache, without downloading; checked when its checksums are known."""
        for folder in (self.directory, None if self.directory is not None else self.cache_folder):
            if folder is not None and (folder / name).is_file():
                spec = self.downloader.files.get(name)
                if spec is None:
                    return folder / name
                if folder == self.directory:
                    self._check_local_copy(spec, folder / name)
                    return folder / name
                return self.downloader.ensure(spec)  # in the cache: checked as the cache's files are
        return None

    def _optional_file(self, name: str, *, download: bool) -> pathlib.Path | None:
        """A file from ``directory`` / the cache, or downloaded (when allowed and not in ``directory`` mode)."""
        path = self._local_file(name)
        if path is not None or not download or self.directory is not None:
            return path
        spec = self.downloader.spec(name)
        if spec.url is None and not self.downloader.base_url:
            return None
        return self.downloader.ensure(spec)

    def _generate_id_files(self, split_paths: Sequence[pathlib.Path]) -> tuple[pathlib.Path, pathlib.Path]:
        """Write entity2id / relation2id over all splits (sorted labels) into the cache folder."""
        entities: set[str] = set()
        relations: set[str] = set()
        for path in split_paths:
            triples = read_triples_file(path, self.triples_format_name)  # type: ignore[arg-type]
            entities.update(triples[:, 0].tolist())
            entities.update(triples[:, 2].tolist())
            relations.update(triples[:, 1].tolist())
        out = []
        for stem, labels in (("entity2id", entities), ("relation2id", relations)):
            text = "".join(f"{label}\t{i}\n" for i, label in enumerate(sorted(labels)))
            # named by their content: two folders of this dataset (e.g. the published one and a slice of it) used
            # at the same time never overwrite each other's ids between writing and reading them
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
            path = self.cache_folder / f"{stem}.generated.{digest}.txt"
            if not path.is_file() or path.read_text(encoding="utf-8") != text:  # unchanged: the cache stays valid
                with atomic_write(path) as tmp:
                    tmp.write_text(text, encoding="utf-8")
            out.append(path)
        return out[0], out[1]

    # loading -----------------------------------------------------------------------------------------

    def _load(self) -> None:
        super()._load()
        self._training, self._validation, validation_note = honest_splits(
            self._training,
            self._validation,
            self._testing,
            self.validation_choice,
            self.heldout_size,
            self.heldout_seed,
        )
        if self.validation_choice != "published":
            logger.info("%s: validation split: %s", self.__class__.__name__, validation_note)
        pooling = {**self.pooling, **self.pooling_override}
        for factory in (self._training, self._testing, self._validation):
            if factory is not None:
                factory.metadata = {
                    **(factory.metadata or {}),
                    "name": self.folder_name,
                    "pooling": dict(pooling),
                    "feature_origin": dict(self.feature_origin),
                    "validation": validation_note,
                }


@parse_docdata
class DB15K(MMKGBenchmark):
    """DB15K: a DBpedia subgraph with MMKB images, in the MoMoK split.

    Triples ``<IRI> <IRI> <IRI> .`` from ``zjukg/MoMoK`` ``datasets/DB15K``; ids follow ``entity2id.txt``.
    Image features: the authors' 4096-d VGG matrix or MMKB's ``DB15K_ImageData.h5``; 12,837 of the
    12,842 entities have an image in ``DB15K_ImageIndex.txt``. Text: the authors' 768-d matrix, or
    MiniLM / locally encoded names.

    ---
    name: DB15K
    statistics:
        entities: 12842
        relations: 279
        training: 79222
        testing: 9902
        validation: 9904
        triples: 99028
    citation:
        author: Liu
        year: 2019
        link: https://arxiv.org/abs/1903.05485
        github: mniepert/mmkb
    """

    folder_name = "DB15K"
    authors_folder = "DB15K"
    # 6,584 of its 7,481 unique validation triples are training triples and 824 test triples (73 its own)
    default_validation = "heldout"
    required_files = _momok_specs("DB15K")
    optional_files = (
        _shared_spec("DB15K", "DB15K_ImageIndex.txt", f"{_MMKB_RAW}/DB15K/DB15K_ImageIndex.txt"),
        *_minilm_specs("DB15K"),
    )
    image_index_file = "DB15K_ImageIndex.txt"
    mmkb_h5 = RemoteFile(
        name="DB15K_ImageData.h5",
        url=f"{_MMKB_DROPBOX}/rfl27sqpet7wyb3/DB15K_ImageData.h5?dl=1",
        description="MMKB's DB15K VGG16 image features",
    )


@parse_docdata
class MKGW(MMKGBenchmark):
    """MKG-W: a Wikidata subgraph (MMKG benchmark of Xu et al., 2022) as used by MoMoK.

    Labels are Wikidata IRIs (no names, hence no MiniLM features in the shared folder). Published
    features: image 383-d, text 384-d (the authors' archive).

    ---
    name: MKG-W
    statistics:
        entities: 15000
        relations: 169
        training: 34196
        testing: 4274
        validation: 4276
        triples: 42746
    citation:
        author: Xu
        year: 2022
        link: https://arxiv.org/abs/2210.08821
    """

    folder_name = "MKG-W"
    authors_folder = "MKG-W"
    required_files = _momok_specs("MKG-W")


@parse_docdata
class MKGY(MMKGBenchmark):
    """MKG-Y: a YAGO subgraph (MMKG benchmark of Xu et al., 2022) as used by MoMoK.

    Published features: image 383-d, text 384-d (the authors' archive); the shared folder also has
    384-d MiniLM name embeddings.

    ---
    name: MKG-Y
    statistics:
        entities: 15000
        relations: 28
        training: 21310
        testing: 2663
        validation: 2665
        triples: 26638
    citation:
        author: Xu
        year: 2022
        link: https://arxiv.org/abs/2210.08821
    """

    folder_name = "MKG-Y"
    authors_folder = "MKG-Y"
    required_files = _momok_specs("MKG-Y")
    optional_files = _minilm_specs("MKG-Y")


@parse_docdata
class FB15k237IMG(MMKGBenchmark):
    """FB15K-237-IMG: the standard FB15k-237 split with MMKB images (as in MKGformer).

    Triples ``mid<TAB>relation<TAB>mid``; there is no ``entity2id.txt``, so entity and relation ids are
    the sorted labels of all three splits (14,541 entities; unlike PyKEEN's ``FB15k237``, no evaluation
    triple is dropped). Images: MMKB ``FB15K_ImageData.h5`` via ``FB15K_ImageIndex.txt`` (13,240 of the
    14,541 entities have one); text: names from ``entity2text.txt`` (MiniLM or local encoding).

    The public source (kg-bert's ``data/FB15k-237``, where the validation split is ``dev.tsv``) has CRLF
    line ends; downloads are converted to LF and then verified against the LF checksums.

    ---
    name: FB15K-237-IMG
    statistics:
        entities: 14541
        relations: 237
        training: 272115
        testing: 20466
        validation: 17535
        triples: 310116
    citation:
        author: Chen
        year: 2022
        link: https://arxiv.org/abs/2205.02357
        github: zjunlp/MKGformer
    """

    folder_name = "FB15K-237-IMG"
    authors_folder = "FB15K-237"
    required_files = (
        _shared_spec("FB15K-237-IMG", "train.tsv", f"{_KG_BERT_RAW}/train.tsv", normalize_newlines=True),
        _shared_spec("FB15K-237-IMG", "valid.tsv", f"{_KG_BERT_RAW}/dev.tsv", normalize_newlines=True),
        _shared_spec("FB15K-237-IMG", "test.tsv", f"{_KG_BERT_RAW}/test.tsv", normalize_newlines=True),
    )
    optional_files = (
        _shared_spec("FB15K-237-IMG", "entity2text.txt", f"{_KG_BERT_RAW}/entity2text.txt", normalize_newlines=True),
        _shared_spec("FB15K-237-IMG", "FB15K_ImageIndex.txt", f"{_MMKB_RAW}/FB15K/FB15K_ImageIndex.txt"),
        *_minilm_specs("FB15K-237-IMG"),
    )
    split_files = {"training": "train.tsv", "validation": "valid.tsv", "testing": "test.tsv"}
    triples_format_name = "tsv"
    entity2id_file = None
    relation2id_file = None
    image_index_file = "FB15K_ImageIndex.txt"
    mmkb_h5 = RemoteFile(
        name="FB15K_ImageData.h5",
        url=f"{_MMKB_DROPBOX}/acsaog6qxy1kgpu/FB15K_ImageData.h5?dl=1",
        description="MMKB's FB15K VGG16 image features",
    )
    entity_text_file = "entity2text.txt"


@parse_docdata
class KVC16K(MMKGBenchmark):
    """KVC16K: the Kuaishou short-video knowledge graph (the reference repository's ``Kuai16K``).

    Same ``h r t .`` format with UTF-8 Chinese labels; files verified by their git blob ids. Not in the
    shared folder, so only the download path (or ``directory=``) provides it. Training and validation
    counts match the headers of NativE's ``train2id.txt``/``valid2id.txt``; the testing count is the
    paper's (not checked here).

    ---
    name: KVC16K
    statistics:
        entities: 16015
        relations: 4
        training: 180190
        testing: 22525
        validation: 22523
        triples: 225238
    citation:
        author: Zhang
        year: 2024
        link: https://arxiv.org/abs/2406.17605
        github: zjukg/NATIVE
    """

    folder_name = "KVC16K"
    authors_folder = "Kuai16K"
    required_files = _momok_specs("KVC16K", "Kuai16K")


# keep the checksum table honest about what it covers: a benchmark added without checksums fails on import
assert all(spec.has_checksum for cls in MMKGBenchmark.__subclasses__() for spec in cls.required_files)
