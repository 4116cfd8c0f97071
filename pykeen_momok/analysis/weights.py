"""What a trained MoMoK weighs per relation: its temperature, the experts' gates and the joint fusion's attention.

For every relation ``r`` of the triples factory and its inverse (MoMoK answers ``(?, r, t)`` as ``(t, r^-1, ?)``)
:func:`relation_weights` averages, over the queries of a set of triples (``(h, r)`` for ``r``, ``(t, r^-1)`` for
the inverse, each distinct query once):

- ``gate``: the query side's gate weight of every expert of every base modality,
  :math:`\\alpha = \\mathrm{softmax}(x U / \\sigma(\\theta_r))` (method doc, section 1);
- ``entity_fusion``: the joint head's attention over the modalities for the query entity (section 2), averaged
  over the fusion heads;
- ``relation_fusion``: the attention of the fused relation vector ``r_J`` over the modalities' relation vectors
  (per relation, the same for every query);

and reports the relation's temperature :math:`\\sigma(\\theta_r)` (a smaller one sharpens the gates).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from . import _internals

__all__ = ["DIRECTIONS", "WEIGHT_KINDS", "query_weights", "relation_display", "relation_summary", "relation_weights"]

#: a relation as the triples factory has it, and its inverse (the model's ``2 r`` and ``2 r + 1``)
DIRECTIONS = ("forward", "inverse")
#: the kinds of weight in :func:`relation_weights`
WEIGHT_KINDS = ("entity_fusion", "relation_fusion", "gate")


def relation_display(label: str, direction: str) -> str:
    """How a relation is shown in tables and plots: its label, with ``⁻¹`` for the inverse."""
    return f"{label}⁻¹" if direction == "inverse" else str(label)


def _queries(triples: torch.Tensor, num_relations: int) -> pd.DataFrame:
    """The distinct queries of the triples: ``relation_id``, ``direction`` and ``given_id`` (the query entity)."""
    frames = []
    for direction, given in (("forward", 0), ("inverse", 2)):
        pairs = torch.unique(triples[:, [given, 1]], dim=0)
        frames.append(
            pd.DataFrame({"relation_id": pairs[:, 1].numpy(), "direction": direction, "given_id": pairs[:, 0].numpy()})
        )
    queries = pd.concat(frames, ignore_index=True)
    if len(queries) and (queries["relation_id"].max() >= num_relations or queries["relation_id"].min() < 0):
        raise ValueError(f"the triples hold relation ids outside 0..{num_relations - 1}")
    return queries


def query_weights(model, given: torch.Tensor, relations: torch.Tensor) -> dict[tuple[str, str, int], torch.Tensor]:
    """Every weight of every query ``(given entity, relation)``.

    :param given: shape ``(B,)``, the query entities; :param relations: shape ``(B,)``, the model's relation ids
    :return: per ``(kind, modality, expert)`` (expert -1 for the fusion kinds; kinds as :data:`WEIGHT_KINDS`,
        fusion averaged over the fusion heads) the weights of the queries, shape ``(B,)``
    """
    modalities = _internals.modality_names(model)
    columns: dict[tuple[str, str, int], torch.Tensor] = {}
    for kind, attention in (
        ("entity_fusion", _internals.query_fusion_attention(model, given, relations)),
        ("relation_fusion", _internals.relation_fusion_attention(model, relations)),
    ):
        if attention is not None:  # a model without a joint head has no fusion
            columns |= {(kind, name, -1): attention[:, :, index].mean(dim=1) for index, name in enumerate(modalities)}
    gates, _ = _internals.query_gates(model, given, relations)
    columns |= {
        ("gate", name, expert): weights[:, expert]
        for name, weights in zip(modalities, gates, strict=True)
        for expert in range(weights.shape[1])
    }
    return columns


def relation_weights(model, factory, triples: torch.Tensor | None = None, *, batch_size: int = 1024) -> pd.DataFrame:
    """Per relation and direction: temperature, mean gate weight per expert, mean fusion attention per modality.

    :param model: a trained :class:`~pykeen_momok.MoMoK`
    :param factory: its training triples factory (relation labels; its triples by default)
    :param triples: shape ``(n, 3)``, the triples whose queries are averaged over (the factory's relation ids;
        default: the factory's own)
    :param batch_size: queries evaluated at once
    :return: a tidy table, one row per weight: ``relation_id``, ``relation`` (label), ``direction``
        (:data:`DIRECTIONS`), ``queries`` (how many distinct queries were averaged; 0 leaves ``gate`` and
        ``entity_fusion`` NaN), ``temperature``, ``kind`` (:data:`WEIGHT_KINDS`), ``modality``, ``expert`` (0-based;
        -1 for the fusion kinds) and ``weight``. A model without a joint head (one modality) has no fusion rows.
    :raises TypeError: for a model that is not a MoMoK
    :raises ValueError: for triples of the wrong shape or with unknown relation ids
    """
    _internals.check_momok(model)
    triples = (factory.mapped_triples if triples is None else torch.as_tensor(triples)).long().cpu()
    if triples.ndim != 2 or triples.shape[1] != 3:
        raise ValueError(f"triples must have shape (n, 3), got {tuple(triples.shape)}")
    num_relations = factory.real_num_relations if factory.create_inverse_triples else factory.num_relations
    modalities = _internals.modality_names(model)
    queries = _queries(triples, num_relations)

    # query side: gates and entity fusion of every query, averaged per (relation, direction) below
    keys: list[tuple[str, str, int]] = []  # (kind, modality, expert) of each column of `parts`
    parts: list[np.ndarray] = []
    for start in range(0, len(queries), batch_size):
        chunk = queries.iloc[start : start + batch_size]
        inverse = torch.tensor((chunk["direction"] == "inverse").to_numpy(), dtype=torch.long)
        relations = (
            _internals.model_relation_ids(model, torch.tensor(chunk["relation_id"].to_numpy()), inverse=False) + inverse
        )  # 2 r + 1: the inverse of r
        columns = {
            key: values
            for key, values in query_weights(model, torch.tensor(chunk["given_id"].to_numpy()), relations).items()
            if key[0] != "relation_fusion"
        }  # per relation, below (also for relations without queries)
        keys = list(columns)
        parts.append(torch.stack(list(columns.values()), dim=1).numpy())
    per_query = pd.DataFrame(np.concatenate(parts) if parts else np.zeros((0, len(keys))))
    per_query[["relation_id", "direction"]] = queries[["relation_id", "direction"]].to_numpy()
    grouped = per_query.groupby(["relation_id", "direction"])
    means, sizes = grouped.mean(), grouped.size()

    # per relation: temperature and relation fusion
    ids = torch.arange(num_relations)
    model_ids = {
        direction: _internals.model_relation_ids(model, ids, inverse=direction == "inverse") for direction in DIRECTIONS
    }
    labels = factory.relation_id_to_label
    rows = []
    for direction in DIRECTIONS:
        temperatures = _internals.temperatures(model, model_ids[direction])
        relation_attention = _internals.relation_fusion_attention(model, model_ids[direction])
        for relation in range(num_relations):
            key = (relation, direction)
            base = dict(
                relation_id=relation,
                relation=str(labels[relation]),
                direction=direction,
                queries=int(sizes.get(key, 0)),
                temperature=float(temperatures[relation]),
            )
            for column, (kind, name, expert) in enumerate(keys):
                value = float(means.loc[key, column]) if key in means.index else float("nan")
                rows.append({**base, "kind": kind, "modality": name, "expert": expert, "weight": value})
            if relation_attention is not None:
                for index, name in enumerate(modalities):
                    value = float(relation_attention[relation, :, index].mean())
                    rows.append({**base, "kind": "relation_fusion", "modality": name, "expert": -1, "weight": value})
    table = pd.DataFrame(rows)
    order = {kind: i for i, kind in enumerate(WEIGHT_KINDS)}
    table["_order"] = table["kind"].map(order)
    table = table.sort_values(["relation_id", "direction", "_order"], kind="stable").drop(columns="_order")
    return table.reset_index(drop=True)


def relation_summary(weights: pd.DataFrame) -> pd.DataFrame:
    """A :func:`relation_weights` table as one row per relation and direction (for reading and CSV files).

    :return: ``relation_id``, ``relation``, ``direction``, ``queries``, ``temperature``, then one column per weight:
        ``entity_fusion:<modality>``, ``relation_fusion:<modality>``, ``gate:<modality>:<expert>``, in the order of
        the tidy table
    """
    keys = ["relation_id", "relation", "direction", "queries", "temperature"]
    names = [
        f"{kind}:{modality}" + (f":{expert}" if kind == "gate" else "")
        for kind, modality, expert in zip(weights["kind"], weights["modality"], weights["expert"], strict=True)
    ]
    wide = weights.assign(column=names).pivot(index=keys, columns="column", values="weight")
    # the columns in the order of the tidy table (kinds as WEIGHT_KINDS, modalities as the model's), not sorted
    return wide[list(dict.fromkeys(names))].reset_index().rename_axis(columns=None)
