"""Explained predictions: top tails or heads, each head's probability, and the gate and fusion weights behind them.

The top tails of ``(h, r, ?)`` or heads of ``(?, r, t)``.

:func:`explain_target` follows :func:`pykeen.predict.predict_target`: exactly one of ``head`` and ``tail`` is left
out, entities and relations are given by id or label, and the result is a
:class:`~pykeen.predict.TargetPredictions` (``df`` sorted by ``score``, ``filter_triples``,
``add_membership_columns``), here with MoMoK's explanation added:

- ``df``: ``<target>_id``, ``<target>_label``, ``score`` (the joint decision: the mean of the heads' sigmoid
  probabilities, what MoMoK ranks by), ``p_<head>`` (each head's sigmoid probability) and ``fusion_<modality>``
  (the candidate's joint-fusion attention over the modalities, averaged over the fusion heads);
- ``query_weights``: what the query ``(given entity, relation)`` weighs: the gate weight of every expert of every
  modality with the relation's temperature, the query side's entity-fusion attention and the relation-fusion
  attention;
- ``temperature``: the relation's :math:`\\sigma(\\theta_r)` (the inverse relation's, for heads).

>>> explained = explain_target(model, factory, head="e00001", relation="r01", k=5)   # doctest: +SKIP
>>> explained.add_membership_columns(training=factory).df                         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import numbers

import pandas as pd
import torch
from pykeen.predict import TargetPredictions

from ..predict import Predictor
from . import _internals
from .weights import query_weights

__all__ = ["ExplainedPredictions", "PROBABILITY_PREFIX", "explain_target"]

#: ``df``'s per-head probability columns are this prefix and the head's name (``p_image``, ``p_joint``)
PROBABILITY_PREFIX = "p_"


@dataclasses.dataclass
class ExplainedPredictions(TargetPredictions):
    """PyKEEN's target predictions with MoMoK's per-head probabilities and the weights behind them."""

    #: the query's weights: ``kind`` (``gate``, ``entity_fusion``, ``relation_fusion``), ``modality``, ``expert``
    #: (0-based; -1 for the fusion kinds) and ``weight``
    query_weights: pd.DataFrame

    #: the temperature :math:`\sigma(\theta_r)` of the relation the query is scored with (the inverse for heads)
    temperature: float


def _entity(predictor: Predictor, value: int | str, what: str) -> int:
    if isinstance(value, str):
        return predictor.entity_id(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < predictor.num_entities:
        raise ValueError(f"{what} must be a label or an entity id in 0..{predictor.num_entities - 1}, got {value!r}")
    return int(value)


def _relation(predictor: Predictor, value: int | str) -> int:
    if isinstance(value, str):
        return predictor.relation_id(value)
    known = len(predictor.relation_to_id)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < known:
        raise ValueError(f"relation must be a label or a relation id in 0..{known - 1}, got {value!r}")
    return int(value)


def explain_target(
    model,
    triples_factory,
    *,
    head: int | str | None = None,
    relation: int | str,
    tail: int | str | None = None,
    k: int | None = 10,
) -> ExplainedPredictions:
    """The best tails of ``(head, relation, ?)`` or heads of ``(?, relation, tail)``, explained.

    :param model: a trained :class:`~pykeen_momok.MoMoK`
    :param triples_factory: its training triples factory (labels; known triples for ``filter_triples``)
    :param head: the head entity (id or label) to predict tails for; leave out to predict heads
    :param relation: the relation (id or label, as in the factory, without inverses)
    :param tail: the tail entity to predict heads for; leave out to predict tails
    :param k: how many of the best candidates to keep (``None``: all, as :func:`pykeen.predict.predict_target`)
    :return: the predictions, best first (see the module docstring for the columns)
    :raises ValueError: unless exactly one of ``head`` and ``tail`` is given, for an id out of range, or ``k < 1``
    :raises pykeen_momok.predict.UnknownLabelError: for an unknown label (with close matches)
    """
    if (head is None) == (tail is None):
        raise ValueError("give exactly one of head (to predict tails) and tail (to predict heads)")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"k must be None or an integer >= 1, got {k!r}")
    _internals.check_momok(model)
    predictor = Predictor(model, triples_factory)
    inverse = head is None
    target = "head" if inverse else "tail"
    given = _entity(predictor, tail if inverse else head, "tail" if inverse else "head")  # type: ignore[arg-type]
    relation_id = _relation(predictor, relation)

    probabilities = predictor.head_probabilities(given, relation_id, inverse=inverse)  # (H, E)
    data = {f"{target}_id": range(predictor.num_entities), "score": probabilities.mean(dim=0).tolist()}
    for name, values in zip(predictor.head_names, probabilities, strict=True):
        data[PROBABILITY_PREFIX + name] = values.tolist()
    df = pd.DataFrame(data)
    df.insert(1, f"{target}_label", predictor.entity_labels)
    modalities = _internals.modality_names(model)
    attention = _internals.candidate_fusion_attention(model, torch.arange(predictor.num_entities))
    if attention is not None:
        for index, name in enumerate(modalities):
            df[f"fusion_{name}"] = attention[:, :, index].mean(dim=1).numpy()
    df = df.sort_values("score", ascending=False, kind="stable")  # the index stays the id, as PyKEEN's
    if k is not None:
        df = df.head(k)

    model_relation = _internals.model_relation_ids(model, torch.tensor([relation_id]), inverse=inverse)
    weights = query_weights(model, torch.tensor([given]), model_relation)
    rows = [
        {"kind": kind, "modality": name, "expert": expert, "weight": float(values[0])}
        for (kind, name, expert), values in weights.items()
    ]
    # PyKEEN's convention: the ids of the other two columns, in (head, relation, tail) order
    fixed = (relation_id, given) if inverse else (given, relation_id)
    return ExplainedPredictions(
        df=df,
        factory=triples_factory,
        target=target,
        other_columns_fixed_ids=fixed,
        query_weights=pd.DataFrame(rows),
        temperature=float(_internals.temperatures(model, model_relation)[0]),
    )
