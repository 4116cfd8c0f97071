"""Per-entity modality features and a triples factory that carries them.

:class:`ModalityFeatures` holds one dense feature matrix per modality, with rows in entity-id
order, and a presence mask that records which rows came from data and which were filled.
:class:`MultiModalTriplesFactory` is a :class:`pykeen.triples.TriplesFactory` with an
insertion-ordered mapping ``modalities: dict[str, ModalityFeatures]`` that survives PyKEEN's dataset
cache (:meth:`~MultiModalTriplesFactory.to_path_binary` /
:meth:`~MultiModalTriplesFactory.from_path_binary`), cloning (and hence
:meth:`~pykeen.triples.CoreTriplesFactory.split` and
:meth:`~pykeen.triples.TriplesFactory.new_with_restriction`), condensation and relabelling.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, ClassVar, Literal, TextIO, get_args

import numpy as np
import torch
from pykeen.triples import TriplesFactory
from pykeen.triples.triples_factory import TripleCondenser
from pykeen.typing import EntityMapping, LabeledTriples, MappedTriples, RelationMapping
from typing_extensions import Self

__all__ = [
    "Fill",
    "FILLS",
    "ModalityFeatures",
    "MultiModalTriplesFactory",
]

logger = logging.getLogger(__name__)

#: How the rows of entities without a feature are filled.
Fill = Literal["mean", "zeros", "normal"]
#: The admissible values of :data:`Fill`.
FILLS: tuple[str, ...] = get_args(Fill)

#: Version tag of the modality file written by :meth:`MultiModalTriplesFactory.to_path_binary`.
_BINARY_FORMAT = 1


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ModalityFeatures:
    """The features of one modality for all entities of a graph.

    Equality compares values (``torch.equal``); instances are not hashable.

    >>> import torch
    >>> m = ModalityFeatures(features=torch.zeros(3, 2), present=torch.tensor([True, False, True]))
    >>> m
    ModalityFeatures((3, 2), present=2/3, fill='mean')
    """

    #: shape: (num_entities, dim), float32, finite; row ``i`` belongs to the entity with id ``i``
    features: torch.Tensor
    #: shape: (num_entities,), bool; ``False`` where the entity had no feature and its row was filled
    present: torch.Tensor
    #: how the absent rows were filled: one of :data:`FILLS`
    fill: str = "mean"

    def __post_init__(self) -> None:
        """Validate shapes, dtypes and values; convert other floating dtypes to float32."""
        features, present = self.features, self.present
        if isinstance(features, np.ndarray):
            features = torch.from_numpy(features)
        if isinstance(present, np.ndarray):
            present = torch.from_numpy(present)
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        if not isinstance(present, torch.Tensor):
            raise TypeError(f"present must be a torch.Tensor, got {type(present).__name__}")
        if features.ndim != 2:
            raise ValueError(f"features must be 2-D (num_entities, dim), got shape {tuple(features.shape)}")
        if not features.is_floating_point():
            raise TypeError(f"features must have a floating dtype, got {features.dtype}")
        if present.dtype != torch.bool:
            raise TypeError(f"present must be a bool mask, got dtype {present.dtype}")
        if present.shape != features.shape[:1]:
            raise ValueError(
                f"present must have shape ({features.shape[0]},) to match features {tuple(features.shape)}, "
                f"got {tuple(present.shape)}"
            )
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
        if features.dtype != torch.float32:
            features = features.to(torch.float32)
        finite_rows = torch.isfinite(features).all(dim=1)
        if not bool(finite_rows.all()):
            bad = (~finite_rows).nonzero().view(-1)
            raise ValueError(
                f"features of {bad.numel()} entities are not finite (NaN or inf); entity ids: {_head(bad.tolist())}"
            )
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "present", present)

    @property
    def num_entities(self) -> int:
        """The number of rows (entities)."""
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        """The feature dimension."""
        return self.features.shape[1]

    @property
    def num_present(self) -> int:
        """The number of entities that had a feature (the rest were filled)."""
        return int(self.present.sum())

    def select(self, ids: torch.Tensor) -> ModalityFeatures:
        """Return the rows of the given entity ids, e.g. after a condensation.

        :param ids: shape: (k,), long; the entity ids to keep, in their new order
        :return: the features of shape (k, dim)
        """
        return ModalityFeatures(features=self.features[ids], present=self.present[ids], fill=self.fill)

    def __eq__(self, other: object) -> bool:  # noqa: D105
        if not isinstance(other, ModalityFeatures):
            return NotImplemented
        return (
            self.fill == other.fill
            and torch.equal(self.present, other.present)
            and self.features.shape == other.features.shape
            and torch.equal(self.features, other.features)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # noqa: D105
        shape = tuple(self.features.shape)
        return f"ModalityFeatures({shape}, present={self.num_present}/{self.num_entities}, fill={self.fill!r})"


def _head(items: list[Any], n: int = 5) -> str:
    """Format the first ``n`` items of a list for an error message."""
    text = ", ".join(repr(x) for x in items[:n])
    if len(items) > n:
        text += f", ... ({len(items) - n} more)"
    return f"[{text}]"


def _check_modalities(
    modalities: Mapping[str, ModalityFeatures] | None,
    num_entities: int,
) -> dict[str, ModalityFeatures]:
    """Validate modality names, types and row counts; return an insertion-ordered copy."""
    result: dict[str, ModalityFeatures] = {}
    for name, modality in (modalities or {}).items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"modality names must be non-empty strings, got {name!r}")
        if not isinstance(modality, ModalityFeatures):
            raise TypeError(
                f"modality {name!r} must be a ModalityFeatures, got {type(modality).__name__} "
                f"(use pykeen_momok.features.FeatureSource(...).load(entity_to_id) to read a file)"
            )
        if modality.num_entities != num_entities:
            raise ValueError(
                f"modality {name!r} has {modality.num_entities} rows but the triples factory has "
                f"{num_entities} entities"
            )
        result[name] = modality
    return result


def _compact_tensor(x: torch.Tensor) -> torch.Tensor:
    """Return a tensor that owns exactly its data, so that :func:`torch.save` does not write a larger storage."""
    x = x.detach().cpu().contiguous()
    if x.untyped_storage().nbytes() != x.numel() * x.element_size():
        x = x.clone()
    return x


class MultiModalTriplesFactory(TriplesFactory):
    """A triples factory that carries per-entity features of any number of modalities.

    The features are per entity, so factories that share the entity ids (the training, validation and
    testing factories of a dataset) may share the very same :class:`ModalityFeatures` objects.

    >>> import numpy as np, torch
    >>> triples = np.array([["a", "r", "b"], ["b", "r", "c"]])
    >>> image = ModalityFeatures(features=torch.ones(3, 4), present=torch.ones(3, dtype=torch.bool))
    >>> tf = MultiModalTriplesFactory.from_labeled_triples(triples, modalities={"image": image})
    >>> tf.modalities["image"].dim
    4
    """

    #: the file, inside the directory of :meth:`to_path_binary`, that holds the modalities
    file_name_modalities: ClassVar[str] = "modalities.pt"

    #: the features, by modality name, in insertion order
    modalities: dict[str, ModalityFeatures]

    def __init__(
        self,
        mapped_triples: MappedTriples | np.ndarray,
        entity_to_id: EntityMapping,
        relation_to_id: RelationMapping,
        create_inverse_triples: bool = False,
        metadata: Mapping[str, Any] | None = None,
        num_entities: int | None = None,
        num_relations: int | None = None,
        modalities: Mapping[str, ModalityFeatures] | None = None,
    ) -> None:
        """Initialize the factory.

        :param mapped_triples: shape: (n, 3); the ID-based triples
        :param entity_to_id: the mapping from entity labels to ids
        :param relation_to_id: the mapping from relation labels to ids
        :param create_inverse_triples: whether to create inverse triples
        :param metadata: arbitrary metadata to go with the graph
        :param num_entities: the number of entities; inferred from the labeling if None
        :param num_relations: the number of relations; inferred from the labeling if None
        :param modalities: the features by modality name; each of shape (num_entities, dim)
        """
        super().__init__(
            mapped_triples=mapped_triples,
            entity_to_id=entity_to_id,
            relation_to_id=relation_to_id,
            create_inverse_triples=create_inverse_triples,
            metadata=metadata,
            num_entities=num_entities,
            num_relations=num_relations,
        )
        self.modalities = _check_modalities(modalities, num_entities=self.num_entities)

    # construction ----------------------------------------------------------------------------------

    # docstr-coverage: inherited
    @classmethod
    def from_labeled_triples(  # noqa: D102
        cls,
        triples: LabeledTriples,
        *,
        modalities: Mapping[str, ModalityFeatures] | None = None,
        **kwargs: Any,
    ) -> Self:
        factory = super().from_labeled_triples(triples=triples, **kwargs)
        factory.modalities = _check_modalities(modalities, num_entities=factory.num_entities)
        return factory

    # docstr-coverage: inherited
    @classmethod
    def from_path(  # noqa: D102
        cls,
        path: str | pathlib.Path | TextIO,
        *,
        modalities: Mapping[str, ModalityFeatures] | None = None,
        **kwargs: Any,
    ) -> Self:
        # TriplesFactory.from_path ignores unknown keyword arguments, so attach the features afterwards
        factory = super().from_path(path, **kwargs)
        factory.modalities = _check_modalities(modalities, num_entities=factory.num_entities)
        return factory

    @classmethod
    def from_triples_factory(
        cls,
        factory: TriplesFactory,
        *,
        modalities: Mapping[str, ModalityFeatures] | None = None,
    ) -> Self:
        """Add modalities to a plain :class:`~pykeen.triples.TriplesFactory` (the triples are shared)."""
        return cls(
            mapped_triples=factory.mapped_triples,
            entity_to_id=factory.entity_to_id,
            relation_to_id=factory.relation_to_id,
            create_inverse_triples=factory.create_inverse_triples,
            metadata=factory.metadata,
            num_entities=factory.num_entities,
            num_relations=factory.real_num_relations,
            modalities=modalities,
        )

    def with_modalities(self, modalities: Mapping[str, ModalityFeatures] | None) -> Self:
        """Return a copy (sharing triples and labels) whose modalities are exactly the given ones.

        To add a modality, pass ``{**factory.modalities, "new": features}``.
        """
        return self.__class__(
            mapped_triples=self.mapped_triples,
            entity_to_id=self.entity_to_id,
            relation_to_id=self.relation_to_id,
            create_inverse_triples=self.create_inverse_triples,
            metadata=self.metadata,
            num_entities=self.num_entities,
            num_relations=self.real_num_relations,
            modalities=modalities,
        )

    # copies ----------------------------------------------------------------------------------------

    # docstr-coverage: inherited
    def clone_and_exchange_triples(  # noqa: D102
        self,
        mapped_triples: MappedTriples,
        extra_metadata: dict[str, Any] | None = None,
        keep_metadata: bool = True,
        create_inverse_triples: bool | None = None,
    ) -> Self:
        if create_inverse_triples is None:
            create_inverse_triples = self.create_inverse_triples
        return self.__class__(
            mapped_triples=mapped_triples,
            entity_to_id=self.entity_to_id,
            relation_to_id=self.relation_to_id,
            create_inverse_triples=create_inverse_triples,
            metadata={
                **(extra_metadata or {}),
                **(self.metadata if keep_metadata else {}),
            },
            modalities=self.modalities,
        )

    # docstr-coverage: inherited
    def with_labels(  # noqa: D102
        self,
        entity_to_id: Mapping[str, int],
        relation_to_id: Mapping[str, int],
    ) -> Self:
        # validates that the existing ids are covered by the new labeling
        relabeled = super().with_labels(entity_to_id=entity_to_id, relation_to_id=relation_to_id)
        return self.__class__(
            mapped_triples=relabeled.mapped_triples,
            entity_to_id=relabeled.entity_to_id,
            relation_to_id=relabeled.relation_to_id,
            create_inverse_triples=relabeled.create_inverse_triples,
            metadata=relabeled.metadata,
            modalities=self.modalities,
        )

    # docstr-coverage: inherited
    def apply_condenser(self, condenser: TripleCondenser) -> Self:  # noqa: D102
        condensed = super().apply_condenser(condenser)
        if condensed is self:
            return self
        modalities = self.modalities
        if condenser.entities and modalities:
            assert condenser.entities.condensation is not None
            kept = (condenser.entities.condensation >= 0).nonzero().view(-1)
            modalities = {name: modality.select(kept) for name, modality in modalities.items()}
        condensed.modalities = _check_modalities(modalities, num_entities=condensed.num_entities)
        return condensed

    # docstr-coverage: inherited
    def __eq__(self, __o: object) -> bool:  # noqa: D105
        other_modalities = getattr(__o, "modalities", {})
        return (
            super().__eq__(__o)
            and list(self.modalities) == list(other_modalities)
            and all(m == other_modalities[name] for name, m in self.modalities.items())
        )

    # docstr-coverage: inherited
    def iter_extra_repr(self) -> Iterable[str]:  # noqa: D102
        yield from super().iter_extra_repr()
        parts = ", ".join(
            f"{name}: {tuple(m.features.shape)} present={m.num_present}" for name, m in self.modalities.items()
        )
        yield f"modalities={{{parts}}}"

    # binary io -------------------------------------------------------------------------------------

    # docstr-coverage: inherited
    def to_path_binary(  # noqa: D102
        self,
        path: str | pathlib.Path | TextIO,
        *,
        include_modalities: bool = True,
    ) -> pathlib.Path:
        path = super().to_path_binary(path=path)
        modalities = self.modalities if include_modalities else {}
        torch.save(
            {
                "format": _BINARY_FORMAT,
                "modalities": [
                    {
                        "name": name,
                        "features": _compact_tensor(m.features),
                        "present": _compact_tensor(m.present),
                        "fill": m.fill,
                    }
                    for name, m in modalities.items()
                ],
            },
            path.joinpath(self.file_name_modalities),
        )
        return path

    @classmethod
    def _from_path_binary(cls, path: pathlib.Path) -> MutableMapping[str, Any]:
        data = super()._from_path_binary(path)
        data["modalities"] = cls._load_modalities(path.joinpath(cls.file_name_modalities))
        return data

    @staticmethod
    def _load_modalities(path: pathlib.Path) -> dict[str, ModalityFeatures]:
        """Read the modality file written by :meth:`to_path_binary` (none if the file does not exist)."""
        if not path.is_file():
            logger.warning(f"{path} does not exist; loading the triples without modalities")
            return {}
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != _BINARY_FORMAT:
            raise ValueError(f"{path} is not a modality file of format {_BINARY_FORMAT}")
        return {
            entry["name"]: ModalityFeatures(features=entry["features"], present=entry["present"], fill=entry["fill"])
            for entry in state["modalities"]
        }
