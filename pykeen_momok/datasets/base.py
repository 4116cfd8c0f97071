"""A user's own multi-modal knowledge graph, read from triple, id and feature files.

The parsing functions here (:func:`read_triples_file`, :func:`detect_triples_format`,
:func:`map_triples`, and :func:`~pykeen_momok.features.read_id_map` re-exported from
:mod:`pykeen_momok.features`) are reused by the benchmark datasets.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import warnings
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from pykeen.datasets.base import Dataset, EagerDataset, LazyDataset
from pykeen.triples.triples_factory import create_entity_mapping, create_relation_mapping

from ..features import (
    FEATURE_SUFFIXES,
    DataFormatError,
    FeatureSource,
    Unknown,
    labels_in_id_order,
    read_id_map,
    read_lines,
    split_fields,
    strip_label,
)
from ..triples import Fill, ModalityFeatures, MultiModalTriplesFactory

__all__ = [
    "HEADER_LINES",
    "CommentPolicy",
    "HeaderPolicy",
    "MultiModalDataset",
    "TriplesFormat",
    "detect_triples_format",
    "map_triples",
    "read_id_map",
    "read_triples_file",
]

logger = logging.getLogger(__name__)

#: ``"tsv"``: ``head<TAB>relation<TAB>tail``; ``"dot"``: ``head relation tail .`` (whitespace separated, as in
#: the MMKGC benchmarks); ``"auto"``: decided per file from its first triple line.
TriplesFormat = Literal["auto", "tsv", "dot"]
_FORMATS = ("auto", "tsv", "dot")
#: What :func:`map_triples` does with a triple naming a label that has no id.
UnknownLabels = Literal["error", "drop"]
#: What the triple parsers do with a comment line (its first non-blank character is ``#``): ``"error"`` refuses
#: it (read as a triple it would add entities such as ``'#'``), ``"skip"`` skips it, ``"keep"`` reads it as a
#: triple (for labels that start with ``#``).
CommentPolicy = Literal["error", "skip", "keep"]
#: What the triple parsers do with the first triple line: ``"error"`` refuses it if it is a column header (one
#: of :data:`HEADER_LINES`), ``"skip"`` skips it whatever it holds, ``"keep"`` reads it as a triple.
HeaderPolicy = Literal["error", "skip", "keep"]
_POLICIES = ("error", "skip", "keep")
#: The column headers (compared in lower case, an optional final ``.`` ignored) refused on a first line.
HEADER_LINES: frozenset[tuple[str, ...]] = frozenset(
    {
        ("head", "relation", "tail"),
        ("head", "rel", "tail"),
        ("h", "r", "t"),
        ("subject", "predicate", "object"),
        ("s", "p", "o"),
        ("source", "relation", "target"),
    }
)
_EXPECTED = {
    "tsv": "'head<TAB>relation<TAB>tail' with non-empty labels",
    "dot": "'head relation tail .' (whitespace separated labels without spaces, then ' .')",
}

PathLike = str | pathlib.Path


# parsing ---------------------------------------------------------------------------------------------


def _check_policy(name: str, value: str) -> None:
    if value not in _POLICIES:
        raise ValueError(f"{name} must be one of {_POLICIES}, got {value!r}")


def _is_header(line: str) -> bool:
    fields = [field.lower() for field in split_fields(line)]
    if fields and fields[-1] == ".":
        fields.pop()
    return tuple(fields) in HEADER_LINES


def _triple_lines(
    path: PathLike, lines: Sequence[str], *, header: HeaderPolicy = "error", comments: CommentPolicy = "error"
) -> list[tuple[int, str]]:
    """Return the lines that hold triples, with their 1-based numbers: without empty, comment and header lines.

    :raises DataFormatError: naming the file and line, for a comment line (``comments="error"``) or a first line
        that is a column header (``header="error"``), saying how to skip it
    """
    _check_policy("comments", comments)
    _check_policy("header", header)
    content: list[tuple[int, str]] = []
    first = True
    for number, line in enumerate(lines, start=1):
        stripped = strip_label(line)
        if not stripped:
            continue
        if comments != "keep" and stripped.startswith("#"):
            if comments == "skip":
                continue
            raise DataFormatError(
                f"{str(path)!r}, line {number}: a comment line (it starts with '#'), not a triple: {line!r}; pass "
                f"comments='skip' to skip such lines (MultiModalDataset(..., triples_comments='skip')), or "
                f"comments='keep' if labels start with '#'"
            )
        if first:
            first = False
            if header == "skip":
                continue
            if header == "error" and _is_header(line):
                raise DataFormatError(
                    f"{str(path)!r}, line {number}: a column header, not a triple: {line!r}; pass header='skip' to "
                    f"skip the first line (MultiModalDataset(..., triples_header='skip')), or header='keep' to read "
                    f"it as a triple"
                )
        content.append((number, line))
    return content


def _line_format(line: str) -> Literal["tsv", "dot"] | None:
    """The format a single line is written in, or None if it reads as neither."""
    # 'h r t .' first: such a line may hold a tab ('a<TAB>r b .'), and as TSV its tail would be 'b .'
    fields = split_fields(line)
    if len(fields) == 4 and fields[3] == ".":
        return "dot"
    if "\t" in line:
        return "tsv"
    return None


def _split_triple(line: str, fmt: Literal["tsv", "dot"]) -> list[str] | None:
    """The three labels of a line (whitespace around them dropped), or None if the line is malformed."""
    if fmt == "tsv":
        fields = [strip_label(field) for field in line.split("\t")]
        # tolerate a trailing '.' column (N-Triples style)
        if len(fields) == 4 and fields[3] == ".":
            fields = fields[:3]
        return fields if len(fields) == 3 and all(fields) else None
    fields = split_fields(line)
    return fields[:3] if len(fields) == 4 and fields[3] == "." else None


def _detect_format(path: PathLike, content: Sequence[tuple[int, str]]) -> Literal["tsv", "dot"]:
    if not content:
        return "tsv"  # no triples: either will do
    number, line = content[0]
    fmt = _line_format(line)
    if fmt is None:
        raise DataFormatError(
            f"{str(path)!r}, line {number}: cannot tell the triples format: expected 'head<TAB>relation<TAB>tail' or "
            f"'head relation tail .', got {line!r}; pass triples_format='tsv' or 'dot'"
        )
    return fmt


def detect_triples_format(
    path: PathLike,
    lines: Sequence[str] | None = None,
    *,
    header: HeaderPolicy = "error",
    comments: CommentPolicy = "error",
) -> Literal["tsv", "dot"]:
    """Decide the format of a triples file from its first triple line (empty, comment and header lines aside).

    A line of four whitespace-separated fields of which the last is ``.`` is ``"dot"`` (even with tabs); else a
    line with a tab is ``"tsv"``.

    :raises DataFormatError: naming the file and line if neither applies (and see :func:`read_triples_file`)
    """
    if lines is None:
        lines = read_lines(path)
    return _detect_format(path, _triple_lines(path, lines, header=header, comments=comments))


def _parse_triples(
    path: PathLike,
    fmt: TriplesFormat = "auto",
    *,
    header: HeaderPolicy = "error",
    comments: CommentPolicy = "error",
) -> tuple[np.ndarray, np.ndarray]:
    """Parse a triples file; return the labels, shape (n, 3), and the 1-based line number of each triple, shape (n,)."""
    if fmt not in _FORMATS:
        raise ValueError(f"triples format must be one of {_FORMATS}, got {fmt!r}")
    content = _triple_lines(path, read_lines(path), header=header, comments=comments)
    detected = fmt == "auto"
    if detected:
        fmt = _detect_format(path, content)
    fields = [_split_triple(line, fmt) for _, line in content]  # type: ignore[arg-type]
    bad = [i for i, f in enumerate(fields) if f is None]
    if bad:
        number, line = content[bad[0]]
        other = "dot" if fmt == "tsv" else "tsv"
        hint = ""
        if _split_triple(line, other) is not None:
            hint = f"; the line reads as {_EXPECTED[other]}: pass triples_format={other!r}" + (
                f" (the format {fmt!r} was decided from line {content[0][0]})" if detected else ""
            )
        raise DataFormatError(
            f"{str(path)!r}, line {number}: malformed triple, expected {_EXPECTED[fmt]}, got {line!r}"
            + (f" ({len(bad)} malformed lines in total)" if len(bad) > 1 else "")
            + hint
        )
    numbers = np.fromiter((number for number, _ in content), dtype=np.int64, count=len(content))
    return np.array(fields, dtype=object).reshape(-1, 3), numbers


def read_triples_file(
    path: PathLike,
    fmt: TriplesFormat = "auto",
    *,
    header: HeaderPolicy = "error",
    comments: CommentPolicy = "error",
) -> np.ndarray:
    """Read label triples from a TSV file or a benchmark ``head relation tail .`` file.

    Whitespace around labels is dropped (:func:`~pykeen_momok.features.strip_label`), so ``'e1 '`` is ``'e1'``.

    :param path: the file; empty lines are skipped
    :param fmt: ``"tsv"``, ``"dot"``, or ``"auto"`` to decide from the first triple line
    :param header: the first triple line: ``"error"`` refuses a column header such as ``head relation tail``
        (:data:`HEADER_LINES`), ``"skip"`` skips the first line, ``"keep"`` reads it as a triple
    :param comments: lines starting with ``#``: ``"error"`` refuses them, ``"skip"`` skips them, ``"keep"`` reads
        them as triples
    :return: shape: (n, 3), dtype object (str); head, relation and tail labels
    :raises DataFormatError: naming the file, line number and content of the first malformed line (with a hint
        when it reads in the other format), comment line or header line
    """
    return _parse_triples(path, fmt, header=header, comments=comments)[0]


def map_triples(
    triples: np.ndarray,
    entity_to_id: Mapping[str, int],
    relation_to_id: Mapping[str, int],
    *,
    source: PathLike = "triples",
    line_numbers: np.ndarray | None = None,
    unknown_entities: UnknownLabels = "error",
    unknown_relations: UnknownLabels = "error",
    id_sources: tuple[PathLike | None, PathLike | None] = (None, None),
) -> torch.Tensor:
    """Map label triples to ids (vectorised).

    :param triples: shape: (n, 3); label triples
    :param entity_to_id: the entity ids
    :param relation_to_id: the relation ids
    :param source: the triples file, for messages
    :param line_numbers: shape: (n,); the line of each triple in ``source``, for messages; default: 1..n
    :param unknown_entities: triples with an entity missing from ``entity_to_id``: ``"error"`` raises, ``"drop"``
        drops them with a warning (but raises if that would drop every triple)
    :param unknown_relations: the same for relations missing from ``relation_to_id``
    :param id_sources: the entity and relation id files (None: the ids came from the training triples), for messages
    :return: shape: (m, 3), long; the mapped triples
    :raises DataFormatError: naming the file, line, label and triple of the first unknown label whose policy is
        ``"error"``; or naming the file, the number of triples and why, if every triple would be dropped
    """
    if line_numbers is None:
        line_numbers = np.arange(1, triples.shape[0] + 1)
    ids = np.empty(triples.shape, dtype=np.int64)
    for column, mapping in ((0, entity_to_id), (1, relation_to_id), (2, entity_to_id)):
        index = pd.Index(list(mapping.keys()), dtype=object)
        values = np.fromiter(mapping.values(), dtype=np.int64, count=len(mapping))
        positions = index.get_indexer(triples[:, column])
        # values[positions] would fail on an empty mapping (even for the -1 of unknown labels)
        ids[:, column] = np.where(positions >= 0, values[positions], -1) if len(mapping) else -1
    unknown = ids < 0
    bad_entity = unknown[:, 0] | unknown[:, 2]
    bad_relation = unknown[:, 1]

    def describe(rows: np.ndarray, kind: str) -> str:
        first = int(rows[0])
        column = 1 if kind == "relation" else int(np.flatnonzero(unknown[first, ::2])[0]) * 2
        id_source = id_sources[1 if kind == "relation" else 0]
        known_from = repr(str(id_source)) if id_source is not None else "the training triples"
        return (
            f"{str(source)!r}, line {line_numbers[first]}: {kind} {triples[first, column]!r} is not in {known_from} "
            f"(triple: {' '.join(map(str, triples[first]))!r}); "
            f"unknown {kind} labels in {rows.size} of {len(triples)} triples"
        )

    for mask, kind, policy, name in (
        (bad_entity, "entity", unknown_entities, "unknown_entities"),
        (bad_relation, "relation", unknown_relations, "unknown_relations"),
    ):
        if policy not in ("error", "drop"):
            raise ValueError(f"{name} must be 'error' or 'drop', got {policy!r}")
        rows = np.flatnonzero(mask)
        if rows.size and policy == "error":
            raise DataFormatError(describe(rows, kind))
    reasons = []
    for mask, kind in ((bad_entity, "entity"), (bad_relation, "relation")):
        rows = np.flatnonzero(mask)
        if rows.size:
            reasons.append(describe(rows, kind))
    keep = ~(bad_entity | bad_relation)
    if len(triples) and not keep.any():
        raise DataFormatError(
            f"{str(source)!r}: all {len(triples)} triples would be dropped, none is left: "
            + "; ".join(reasons)
            + ". Check that the files use the same labels (spelling, case), or give id files (entity2id, "
            "relation2id) that list every entity and relation"
        )
    for reason in reasons:
        logger.warning(f"{reason}; dropping them")
    return torch.from_numpy(ids if keep.all() else ids[keep])


# the dataset -----------------------------------------------------------------------------------------


def _as_source(name: str, value: FeatureSource | PathLike) -> FeatureSource:
    if isinstance(value, FeatureSource):
        return value
    if isinstance(value, str | pathlib.Path):
        return FeatureSource(path=value)
    raise TypeError(f"modality {name!r}: expected a FeatureSource or a path, got {type(value).__name__}")


class MultiModalDataset(LazyDataset):
    """A multi-modal knowledge graph from triple files, optional id files and per-entity feature files.

    All three factories are :class:`~pykeen_momok.triples.MultiModalTriplesFactory` objects that share the
    entity and relation ids and carry the same :class:`~pykeen_momok.triples.ModalityFeatures`.

    Ids: if ``entity2id_path`` (``relation2id_path``) is given, it fixes the entity (relation) ids, so that
    published feature matrices whose rows follow it line up; every entity (relation) of every split must be
    listed in it, and entities that occur only in the evaluation splits have ids too. Otherwise the training
    triples define the ids (sorted labels, as in PyKEEN), and evaluation triples with labels unseen in
    training are dropped with a warning.

    Modalities: a :class:`~pykeen_momok.features.FeatureSource` each, or a bare path whose rows follow the
    entity ids (that is, the order of ``entity2id_path``, which is then required).

    Example, with explicit files:

    .. code-block:: python

        from pykeen.pipeline import pipeline
        from pykeen_momok.datasets.base import MultiModalDataset
        from pykeen_momok.features import FeatureSource

        dataset = MultiModalDataset(
            training_path="my_kg/train.txt",
            testing_path="my_kg/test.txt",
            validation_path="my_kg/valid.txt",
            entity2id_path="my_kg/entity2id.txt",
            relation2id_path="my_kg/relation2id.txt",
            modalities={
                "image": "my_kg/image.npy",  # rows in entity2id order
                "text": FeatureSource("my_kg/text.npy", labels="my_kg/text_entities.txt", fill="zeros"),
            },
        )
        dataset.training.modalities["text"].features.shape  # (num_entities, dim)
        result = pipeline(dataset=dataset, model="MoMoK")

    or from a folder with the conventional names (see :meth:`from_directory`):

    .. code-block:: python

        dataset = MultiModalDataset.from_directory("my_kg")

    .. note::

        Registered subclasses built through :func:`pykeen.datasets.get_dataset` are cached by
        :mod:`pykeen_momok.datasets.cache`, not by PyKEEN's keyword-argument cache: the cache is keyed by the
        files it was built from (and keeps ``create_inverse_triples=True`` when not given).
    """

    triples_factory_cls: ClassVar[type[MultiModalTriplesFactory]] = MultiModalTriplesFactory

    #: metadata key listing the factories whose modalities :meth:`to_directory_binary` stored with training's
    _SHARED_MODALITIES_KEY: ClassVar[str] = "momok_modalities_stored_with_training"

    _training: MultiModalTriplesFactory | None
    _testing: MultiModalTriplesFactory | None
    _validation: MultiModalTriplesFactory | None

    def __init__(
        self,
        training_path: PathLike,
        testing_path: PathLike,
        validation_path: PathLike | None = None,
        *,
        entity2id_path: PathLike | None = None,
        relation2id_path: PathLike | None = None,
        modalities: Mapping[str, FeatureSource | PathLike] | None = None,
        triples_format: TriplesFormat = "auto",
        triples_header: HeaderPolicy = "error",
        triples_comments: CommentPolicy = "error",
        create_inverse_triples: bool = True,
        eager: bool = False,
    ) -> None:
        """Initialize the dataset; files are read on first access (or at once with ``eager=True``).

        :param training_path: the training triples
        :param testing_path: the testing triples
        :param validation_path: the validation triples, if any
        :param entity2id_path: ``label id`` per line; fixes the entity ids
        :param relation2id_path: ``label id`` per line; fixes the relation ids
        :param modalities: per modality name, a feature source or a feature file whose rows follow the entity ids
        :param triples_format: ``"tsv"``, ``"dot"`` or ``"auto"`` (decided per file)
        :param triples_header: the first line of each triples file: ``"error"`` refuses a column header such as
            ``head relation tail``, ``"skip"`` skips the first line, ``"keep"`` reads it as a triple
        :param triples_comments: lines starting with ``#`` in the triples files: ``"error"`` refuses them,
            ``"skip"`` skips them, ``"keep"`` reads them as triples
        :param create_inverse_triples: whether the training factory creates inverse triples
        :param eager: read all files now
        :raises FileNotFoundError: if a given file does not exist
        :raises ValueError: for a bare feature path (or a source without labels) when no ``entity2id_path`` is given
        """
        if triples_format not in _FORMATS:
            raise ValueError(f"triples_format must be one of {_FORMATS}, got {triples_format!r}")
        _check_policy("triples_header", triples_header)
        _check_policy("triples_comments", triples_comments)
        self.training_path = pathlib.Path(training_path)
        self.testing_path = pathlib.Path(testing_path)
        self.validation_path = pathlib.Path(validation_path) if validation_path is not None else None
        self.entity2id_path = pathlib.Path(entity2id_path) if entity2id_path is not None else None
        self.relation2id_path = pathlib.Path(relation2id_path) if relation2id_path is not None else None
        self.modality_sources: dict[str, FeatureSource] = {
            name: _as_source(name, value) for name, value in (modalities or {}).items()
        }
        self.triples_format = triples_format
        self.triples_header = triples_header
        self.triples_comments = triples_comments
        self._create_inverse_triples = create_inverse_triples
        self._training = self._testing = self._validation = None

        for what, path in (
            ("training triples", self.training_path),
            ("testing triples", self.testing_path),
            ("validation triples", self.validation_path),
            ("entity2id", self.entity2id_path),
            ("relation2id", self.relation2id_path),
        ):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
        for name, source in self.modality_sources.items():
            for path in (source.path, source.labels, source.entity2id):
                if path is not None and not pathlib.Path(path).is_file():
                    raise FileNotFoundError(f"modality {name!r}: {str(path)!r} does not exist")
            if source.follows_entity_ids and self.entity2id_path is None:
                raise ValueError(
                    f"modality {name!r}: the rows of {str(source.path)!r} can only follow the entity ids when "
                    f"entity2id_path is given; otherwise give FeatureSource(..., labels=...) or entity2id=..."
                )
        if eager:
            self._load()

    # loading ---------------------------------------------------------------------------------------

    def _load(self) -> None:
        splits: dict[str, tuple[pathlib.Path, np.ndarray, np.ndarray]] = {}
        for key, path in (
            ("training", self.training_path),
            ("testing", self.testing_path),
            ("validation", self.validation_path),
        ):
            if path is not None:
                triples, numbers = _parse_triples(
                    path,
                    self.triples_format,
                    header=self.triples_header,
                    comments=self.triples_comments,
                )
                if triples.shape[0] == 0:
                    # an empty evaluation split would only fail after training, in the evaluator
                    raise DataFormatError(
                        f"{str(path)!r} ({key} triples) holds no triples"
                        + ("; pass validation_path=None to go without validation" if key == "validation" else "")
                    )
                splits[key] = (path, triples, numbers)

        training_triples = splits["training"][1]
        if self.entity2id_path is not None:
            entity_to_id = read_id_map(self.entity2id_path)
        else:
            entity_to_id = create_entity_mapping(training_triples)
        if self.relation2id_path is not None:
            relation_to_id = read_id_map(self.relation2id_path)
        else:
            relation_to_id = create_relation_mapping(set(training_triples[:, 1].tolist()))
        modalities = self.load_modalities(entity_to_id)

        factories: dict[str, MultiModalTriplesFactory] = {}
        for key, (path, triples, numbers) in splits.items():
            # without an id file, evaluation triples with labels unseen in training are dropped (as in PyKEEN)
            mapped = map_triples(
                triples,
                entity_to_id,
                relation_to_id,
                source=path,
                line_numbers=numbers,
                unknown_entities="drop" if key != "training" and self.entity2id_path is None else "error",
                unknown_relations="drop" if key != "training" and self.relation2id_path is None else "error",
                id_sources=(self.entity2id_path, self.relation2id_path),
            )
            factories[key] = self.triples_factory_cls(
                mapped_triples=mapped,
                entity_to_id=entity_to_id,
                relation_to_id=relation_to_id,
                # evaluation factories never create inverse triples; the evaluator handles that
                create_inverse_triples=self._create_inverse_triples and key == "training",
                metadata={"path": path},
                modalities=modalities,
            )
        self._training = factories["training"]
        self._testing = factories["testing"]
        self._validation = factories.get("validation")

    def _load_validation(self) -> None:
        # everything is read in _load; there is nothing left to read when there is no validation file
        pass

    def load_modalities(self, entity_to_id: Mapping[str, int]) -> dict[str, ModalityFeatures]:
        """Read and align every modality for the given entity ids (sources without labels follow ``entity2id``)."""
        return {name: source.load(entity_to_id) for name, source in self.modality_sources.items()}

    # repr ------------------------------------------------------------------------------------------

    def __repr__(self) -> str:  # noqa: D105
        # does not load the files
        return (
            f'{self.__class__.__name__}(training_path="{self.training_path}", testing_path="{self.testing_path}", '
            f'validation_path="{self.validation_path}", modalities={list(self.modality_sources)})'
        )

    # PyKEEN's dataset cache --------------------------------------------------------------------------

    def to_directory_binary(self, path: PathLike) -> None:
        """Store the dataset; modalities shared by all factories are written once, with the training factory."""
        path = pathlib.Path(path)
        training = self.training
        shared: list[str] = []
        for key, factory in self.factory_dict.items():
            include = True
            if key != "training" and isinstance(factory, MultiModalTriplesFactory) and factory.modalities:
                include = not _same_modalities(factory.modalities, getattr(training, "modalities", {}))
                if not include:
                    shared.append(key)
            if isinstance(factory, MultiModalTriplesFactory):
                factory.to_path_binary(path.joinpath(key), include_modalities=include)
            else:
                factory.to_path_binary(path.joinpath(key))
            logger.info(f"Stored {key} factory to {path.joinpath(key).as_uri()}")
        metadata = dict(self.metadata or {})
        metadata.setdefault("name", self.get_normalized_name())
        metadata[self._SHARED_MODALITIES_KEY] = shared
        torch.save(metadata, path.joinpath(self.metadata_file_name))

    @classmethod
    def from_directory_binary(cls, path: PathLike) -> Dataset:
        """Load a dataset stored by :meth:`to_directory_binary`, sharing training's modalities where they were."""
        dataset = super().from_directory_binary(path)
        assert isinstance(dataset, EagerDataset)
        metadata = dict(dataset.metadata or {})
        shared = metadata.pop(cls._SHARED_MODALITIES_KEY, [])
        dataset.metadata = metadata
        training = dataset.training
        for key in shared:
            factory = getattr(dataset, key, None)
            if isinstance(factory, MultiModalTriplesFactory) and isinstance(training, MultiModalTriplesFactory):
                setattr(dataset, key, factory.with_modalities(training.modalities))
        return dataset

    # docstr-coverage: inherited
    def restrict(  # noqa: D102
        self,
        entities: None | Collection[int] | Collection[str] = None,
        relations: None | Collection[int] | Collection[str] = None,
        invert_entity_selection: bool = False,
        invert_relation_selection: bool = False,
    ) -> Dataset:
        # PyKEEN renumbers the kept entities and builds plain TriplesFactory objects: select the feature rows of
        # the kept entities, in their new order, and attach them again
        restricted = super().restrict(
            entities=entities,
            relations=relations,
            invert_entity_selection=invert_entity_selection,
            invert_relation_selection=invert_relation_selection,
        )
        training = self.training
        if restricted is self or not isinstance(training, MultiModalTriplesFactory):
            return restricted
        new_labels = labels_in_id_order(restricted.training.entity_to_id)
        old_ids = np.fromiter(training.entity_to_id.values(), dtype=np.int64, count=len(training.entity_to_id))[
            pd.Index(list(training.entity_to_id), dtype=object).get_indexer(new_labels)
        ]
        kept = torch.from_numpy(old_ids)
        modalities = {name: modality.select(kept) for name, modality in training.modalities.items()}
        factories = {
            key: self.triples_factory_cls.from_triples_factory(factory, modalities=modalities)
            for key, factory in restricted.factory_dict.items()
        }
        return EagerDataset(**factories, metadata=restricted.metadata)

    # a folder with conventional names ----------------------------------------------------------------

    #: accepted file names per split, in the folder layout of :meth:`from_directory`
    split_file_names: ClassVar[Mapping[str, Sequence[str]]] = {
        "training": ("train.txt", "train.tsv", "training.txt", "training.tsv"),
        "validation": ("valid.txt", "valid.tsv", "validation.txt", "validation.tsv", "dev.txt", "dev.tsv"),
        "testing": ("test.txt", "test.tsv", "testing.txt", "testing.tsv"),
    }

    @classmethod
    def from_directory(
        cls,
        directory: PathLike,
        *,
        modalities: Sequence[str] | Mapping[str, FeatureSource | PathLike] | None = None,
        fill: Fill = "mean",
        unknown: Unknown = "error",
        **kwargs: Any,
    ) -> MultiModalDataset:
        """Build a dataset from a folder with conventional file names.

        The folder holds ``train.txt`` (or ``.tsv``), ``test.*``, optionally ``valid.*`` (see
        :attr:`split_file_names`), optionally ``entity2id.txt`` and ``relation2id.txt``, and one feature file
        ``<modality>.npy|.npz|.pt|.pth|.h5`` per modality with an optional ``<modality>_entities.txt`` label
        list (without it the rows follow ``entity2id.txt``).

        :param directory: the folder
        :param modalities: None to use every feature file in the folder; a list of modality names to use only
            those; or a mapping as in :class:`MultiModalDataset` (relative paths are taken relative to the folder)
        :param fill: the fill of the detected modalities (see :func:`~pykeen_momok.features.align_features`)
        :param unknown: the unknown-label policy of the detected modalities
        :param kwargs: passed to :class:`MultiModalDataset` (e.g. ``triples_format``, ``create_inverse_triples``)
        :return: the dataset
        :raises FileNotFoundError: if the folder, its training or testing file, or a requested modality is missing
        :raises ValueError: if a split or modality matches more than one file

        With ``modalities=None`` a :class:`UserWarning` says when the folder holds no feature file at all, or a
        ``<modality>_entities.txt`` without its feature file.
        """
        directory = pathlib.Path(directory)
        if not directory.is_dir():
            raise NotADirectoryError(f"{str(directory)!r} is not a folder")
        paths: dict[str, pathlib.Path | None] = {}
        for key, names in cls.split_file_names.items():
            found = [directory / name for name in names if (directory / name).is_file()]
            if len(found) > 1:
                raise ValueError(f"{str(directory)!r}: several {key} files: {[p.name for p in found]}")
            if not found and key != "validation":
                raise FileNotFoundError(f"{str(directory)!r} has no {key} file (looked for {list(names)})")
            paths[key] = found[0] if found else None
        entity2id = directory / "entity2id.txt"
        relation2id = directory / "relation2id.txt"

        detected = _detect_feature_files(directory)
        if modalities is None:
            _warn_missing_feature_files(directory, detected)
        sources: dict[str, FeatureSource | PathLike]
        if modalities is None or (isinstance(modalities, Sequence) and not isinstance(modalities, str)):
            names = list(detected) if modalities is None else list(modalities)
            sources = {}
            for name in names:
                if name not in detected:
                    raise FileNotFoundError(
                        f"{str(directory)!r} has no feature file for modality {name!r} "
                        f"(looked for {name}{{{','.join(FEATURE_SUFFIXES)}}}); found: {sorted(detected)}"
                    )
                labels = directory / f"{name}_entities.txt"
                sources[name] = FeatureSource(
                    path=detected[name],
                    labels=labels if labels.is_file() else None,
                    fill=fill,
                    unknown=unknown,
                )
        elif isinstance(modalities, Mapping):
            sources = {name: _relative_source(directory, _as_source(name, value)) for name, value in modalities.items()}
        else:
            raise TypeError(f"modalities must be None, a list of names or a mapping, got {type(modalities).__name__}")

        return cls(
            training_path=paths["training"],  # type: ignore[arg-type]
            testing_path=paths["testing"],  # type: ignore[arg-type]
            validation_path=paths["validation"],
            entity2id_path=entity2id if entity2id.is_file() else None,
            relation2id_path=relation2id if relation2id.is_file() else None,
            modalities=sources,
            **kwargs,
        )


def _detect_feature_files(directory: pathlib.Path) -> dict[str, pathlib.Path]:
    """Find ``<modality>.<suffix>`` feature files in a folder, by modality name (sorted)."""
    found: dict[str, list[pathlib.Path]] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in FEATURE_SUFFIXES:
            found.setdefault(path.stem, []).append(path)
    duplicates = {name: [p.name for p in paths] for name, paths in found.items() if len(paths) > 1}
    if duplicates:
        raise ValueError(f"{str(directory)!r}: several feature files for the same modality: {duplicates}")
    return {name: paths[0] for name, paths in found.items()}


def _warn_missing_feature_files(directory: pathlib.Path, detected: Mapping[str, pathlib.Path]) -> None:
    """Warn about modalities a user would expect from the folder but will not get.

    That is: a ``<modality>_entities.txt`` label list without its feature file, and a folder without any feature
    file (MoMoK then uses the structure alone).
    """
    orphans = sorted(
        path.name
        for path in directory.glob("*_entities.txt")
        if path.is_file() and path.name[: -len("_entities.txt")] not in detected
    )
    if orphans:
        warnings.warn(
            f"{str(directory)!r}: {orphans} have no feature file <modality>{{{','.join(FEATURE_SUFFIXES)}}} next to "
            f"them; those modalities are left out",
            UserWarning,
            stacklevel=3,
        )
    if not detected:
        warnings.warn(
            f"{str(directory)!r} holds no feature file (<modality>{{{','.join(FEATURE_SUFFIXES)}}}): the dataset "
            f"has no modalities, and MoMoK will use the graph structure alone. Pass modalities=[] if that is what "
            f"you want",
            UserWarning,
            stacklevel=3,
        )


def _relative_source(directory: pathlib.Path, source: FeatureSource) -> FeatureSource:
    """Resolve the relative paths of a source against ``directory``."""

    def resolve(path: PathLike | None) -> pathlib.Path | None:
        if path is None:
            return None
        path = pathlib.Path(path)
        return path if path.is_absolute() else directory / path

    return dataclasses.replace(
        source, path=resolve(source.path), labels=resolve(source.labels), entity2id=resolve(source.entity2id)
    )


def _same_modalities(a: Mapping[str, ModalityFeatures], b: Mapping[str, ModalityFeatures]) -> bool:
    """Whether two modality mappings hold the same features (identity first, values otherwise)."""
    return list(a) == list(b) and all(a[name] is b[name] or a[name] == b[name] for name in a)
