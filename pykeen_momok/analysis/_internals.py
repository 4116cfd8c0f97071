"""The one place where the analysis reads a MoMoK model's insides (representations, adapters, experts, fusion, heads).

Everything else in :mod:`pykeen_momok.analysis` goes through these functions, so a change of the model's anatomy
is adapted here alone. Every function works in eval mode without gradients (no gating noise, no dropout: the
weights the model ranks with) and puts the model back into the mode it was in.

Relation ids here are the *model's* ids, inverse relations included (PyKEEN's relation inverter: ``2 r`` for
relation ``r`` of the triples factory, ``2 r + 1`` for its inverse); :func:`model_relation_ids` maps them.

What it relies on (``pykeen_momok.model.MoMoK`` and ``pykeen_momok.nn.interaction.MoMoKInteraction``):
``model.modality_names``, ``model.head_names``, ``model._queries``, ``model._candidates``,
``model.entity_representations`` (structure first, then one per feature modality, in ``modality_names`` order;
a feature modality's is its table, an :class:`~pykeen.nn.representation.Embedding`, or a
:class:`~pykeen.nn.representation.TransformedRepresentation` over it), ``model.relation_representations``
(``theta_r`` first, then one ``d_r`` embedding per modality), ``model.interaction.experts``, ``.entity_fusion``,
``.relation_fusion``, ``.joint`` and ``.head_logits``. The entity representations' rows are the working vectors
(the modality adapters are part of the representations).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch

__all__ = [
    "candidate_fusion_attention",
    "check_momok",
    "copy_for_corruption",
    "feature_modalities",
    "feature_table",
    "head_logits",
    "head_names",
    "model_relation_ids",
    "modality_names",
    "query_fusion_attention",
    "query_gates",
    "relation_fusion_attention",
    "temperatures",
    "write_feature_table",
]


def check_momok(model) -> None:
    """Refuse anything that is not a MoMoK model with inverse relations.

    :raises TypeError: for another kind of model
    :raises ValueError: for a MoMoK trained without inverse relations
    """
    missing = [
        name
        for name in ("modality_names", "head_names", "_queries", "_candidates", "interaction")
        if not hasattr(model, name)
    ]
    if missing:
        raise TypeError(
            f"the analysis needs a MoMoK model (pykeen_momok.MoMoK), got a {type(model).__name__} without "
            f"{', '.join(missing)}"
        )
    if not getattr(model, "use_inverse_triples", False):
        raise ValueError("the model was trained without inverse relations; MoMoK needs them")


def modality_names(model) -> tuple[str, ...]:
    """The base modalities, structure first, shape ``(M,)``: the order of every per-modality result here."""
    return tuple(model.modality_names)


def feature_modalities(model) -> tuple[str, ...]:
    """The modalities read from feature tables (all but the structure)."""
    return tuple(model.modality_names[1:])


def head_names(model) -> tuple[str, ...]:
    """The scoring heads, in the order of :func:`head_logits` (the base modalities, then ``joint`` if there is one)."""
    return tuple(model.head_names)


@contextlib.contextmanager
def _evaluating(model) -> Iterator[None]:
    """Eval mode without gradients for the block; the model's mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def model_relation_ids(model, relations: torch.Tensor, *, inverse: bool) -> torch.Tensor:
    """The model's ids of the factory's relation ids ``(n,)``, or of their inverses, shape ``(n,)``."""
    batch = torch.stack([torch.zeros_like(relations), relations], dim=1)
    return model.relation_inverter.map(batch=batch, index=1, invert=inverse)[:, 1]


def _working_vectors(model, entities: torch.Tensor) -> list[torch.Tensor]:
    """Each base modality's working vectors of the entities (its representation's rows), shapes ``(n, d_m)``."""
    entities = entities.to(model.device)
    return [representation(indices=entities) for representation in model.entity_representations]


def _query_inputs(model, heads: torch.Tensor, relations: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The query entities' working vectors per base modality ``(B, d_m)`` and ``sigma(theta_r)`` ``(B, 1)``."""
    return _working_vectors(model, heads), _temperature(model, relations)


def _temperature(model, relations: torch.Tensor) -> torch.Tensor:
    """``sigma(theta_r)`` of the model's relation ids ``(U,)``, shape ``(U, 1)``."""
    return torch.sigmoid(model.relation_representations[0](indices=relations.to(model.device)))


def temperatures(model, relations: torch.Tensor) -> torch.Tensor:
    """The relation temperatures ``sigma(theta_r)`` of the model's relation ids ``(U,)``, shape ``(U,)``."""
    with _evaluating(model):
        return _temperature(model, relations).view(-1).float().cpu()


def query_gates(model, heads: torch.Tensor, relations: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The query side's gate weights: ``softmax(x U / sigma(theta_r))`` per base modality.

    :param heads: shape ``(B,)``, the query entities' ids
    :param relations: shape ``(B,)``, the model's relation ids (see :func:`model_relation_ids`)
    :return: per base modality (:func:`modality_names` order) the gate weights ``(B, K)``, and the temperatures
        ``sigma(theta_r)`` ``(B,)``
    """
    with _evaluating(model):
        vectors, temperature = _query_inputs(model, heads, relations)
        gates = [experts.gates(x, temperature) for experts, x in zip(model.interaction.experts, vectors, strict=True)]
        return [g.float().cpu() for g in gates], temperature.view(-1).float().cpu()


def _joint(model) -> bool:
    return bool(getattr(model.interaction, "joint", False))


def query_fusion_attention(model, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor | None:
    """The joint head's entity-fusion attention on the query side (the experts mixed with the relation temperature).

    :param heads: shape ``(B,)``; :param relations: shape ``(B,)``, the model's relation ids
    :return: shape ``(B, fusion_heads, M)``, or None for a model without a joint head (one modality)
    """
    if not _joint(model):
        return None
    with _evaluating(model):
        vectors, temperature = _query_inputs(model, heads, relations)
        embedded = [
            experts(x, temperature=temperature)[0]
            for experts, x in zip(model.interaction.experts, vectors, strict=True)
        ]
        return model.interaction.entity_fusion.attention_weights(embedded).float().cpu()


def candidate_fusion_attention(model, entities: torch.Tensor) -> torch.Tensor | None:
    """The entity-fusion attention of entities as candidates (experts with a plain softmax, no relation).

    :param entities: shape ``(n,)``
    :return: shape ``(n, fusion_heads, M)``, or None for a model without a joint head
    """
    if not _joint(model):
        return None
    with _evaluating(model):
        vectors = _working_vectors(model, entities)
        embedded = [experts(x)[0] for experts, x in zip(model.interaction.experts, vectors, strict=True)]
        return model.interaction.entity_fusion.attention_weights(embedded).float().cpu()


def relation_fusion_attention(model, relations: torch.Tensor) -> torch.Tensor | None:
    """The relation-fusion attention (the joint head's relation vector ``r_J``) of the model's relation ids ``(U,)``.

    :return: shape ``(U, fusion_heads, M)``, or None for a model without a joint head
    """
    if not _joint(model):
        return None
    with _evaluating(model):
        relations = relations.to(model.device)
        rows = [representation(indices=relations) for representation in model.relation_representations[1:]]
        return model.interaction.relation_fusion.attention_weights(rows).float().cpu()


def head_logits(model, heads: torch.Tensor, relations: torch.Tensor) -> torch.Tensor:
    """Every head's logits of every candidate entity, shape ``(H, B, E)`` (float32, on the CPU).

    :param heads: shape ``(B,)``, the given entities; :param relations: shape ``(B,)``, the model's relation ids
    """
    with _evaluating(model):
        z = model._queries(heads.to(model.device), relations.to(model.device))
        return model.interaction.head_logits(z, model._candidates(None)).float().cpu()


# feature tables (robustness) --------------------------------------------------------------------------------


def _table(model, modality: str) -> torch.nn.Parameter:
    """The weight ``(E, table_dim)`` of a modality's feature table (inside a transformed representation or not)."""
    names = feature_modalities(model)
    if modality not in names:
        raise ValueError(f"the model has no feature modality {modality!r}; it has {list(names)}")
    representation = model.entity_representations[1 + names.index(modality)]
    table = getattr(representation, "base", representation)  # a TransformedRepresentation wraps its table
    embeddings = getattr(table, "_embeddings", None)
    if not isinstance(embeddings, torch.nn.Embedding):
        raise TypeError(
            f"the {modality!r} representation is a {type(representation).__name__} without an embedding table; "
            f"pykeen_momok.analysis._internals does not know this model layout"
        )
    return embeddings.weight


def feature_table(model, modality: str) -> torch.Tensor:
    """A copy of a modality's (possibly fine-tuned) feature table, shape ``(E, table_dim)`` (on the CPU).

    :raises ValueError: for a modality the model does not read from a feature table
    """
    return _table(model, modality).detach().clone().cpu()


def copy_for_corruption(model):
    """A deep copy of the model, in eval mode, whose feature tables may be overwritten (the model stays as it is)."""
    duplicate = copy.deepcopy(model)
    duplicate.eval()
    return duplicate


def write_feature_table(model, modality: str, table: torch.Tensor) -> None:
    """Overwrite a modality's feature table in place (only on a :func:`copy_for_corruption` copy).

    :param table: shape ``(E, table_dim)``, the table's shape
    :raises ValueError: for another shape
    """
    weight = _table(model, modality)
    if tuple(table.shape) != tuple(weight.shape):
        raise ValueError(f"the {modality!r} table has shape {tuple(weight.shape)}, got {tuple(table.shape)}")
    with torch.no_grad():
        # in place: the tensor version changes, so the model's cached candidate vectors are recomputed
        weight.copy_(table.to(device=weight.device, dtype=weight.dtype))
