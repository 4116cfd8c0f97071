"""Filtered ranks of every MoMoK head, and MRR / Hits@k tables from them: overall, per relation, per modality presence.

:func:`head_ranks` ranks each triple of a split on both sides, as PyKEEN's
:class:`~pykeen.evaluation.RankBasedEvaluator` does (filtered by the triples of every split, realistic ranks of
:class:`pykeen.evaluation.ranks.Ranks`, heads answered through the inverse relation), once per head with that
head's sigmoid probabilities and once with the *decision*, the mean of them, which is what MoMoK ranks by. The
rank table has one row per (triple, side); :func:`rank_metrics` turns it into MRR and Hits@k per head, for any
grouping of its columns.

>>> ranks = head_ranks(model, dataset, "testing")                      # doctest: +SKIP
>>> rank_metrics(ranks, by=["relation"])                               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from pykeen.evaluation.evaluator import create_sparse_positive_filter_, filter_scores_
from pykeen.evaluation.ranks import Ranks
from tqdm.auto import tqdm

from . import _internals

__all__ = [
    "DECISION",
    "HITS_AT",
    "RANK_PREFIX",
    "SPLITS",
    "filter_triples",
    "head_ranks",
    "metric_columns",
    "presence_metrics",
    "rank_metrics",
    "ranked_heads",
    "side_metrics",
]

#: the name of MoMoK's ranking score (the mean of the heads' sigmoid probabilities) among the head names
DECISION = "decision"
#: the rank columns of :func:`head_ranks` are this prefix and the head's name (``rank_image``, ``rank_decision``)
RANK_PREFIX = "rank_"
#: the k of the Hits@k columns
HITS_AT = (1, 3, 10)
#: the splits a dataset may have, as PyKEEN's ``Dataset.factory_dict`` names them
SPLITS = ("training", "validation", "testing")
#: the sides, as PyKEEN names its prediction targets: ``head`` ranks the head of (?, r, t), ``tail`` that of (h, r, ?)
SIDES = ("head", "tail")


def metric_columns() -> list[str]:
    """The metric columns of :func:`rank_metrics`: ``MRR``, ``H@1``, ``H@3``, ``H@10``."""
    return ["MRR", *(f"H@{k}" for k in HITS_AT)]


def ranked_heads(model) -> tuple[str, ...]:
    """The heads :func:`head_ranks` ranks with: the model's heads, then :data:`DECISION`."""
    return (*_internals.head_names(model), DECISION)


def filter_triples(dataset) -> torch.Tensor:
    """Every split's triples, shape ``(n, 3)`` (the factory's relation ids): what a filtered ranking leaves out."""
    factories = dataset.factory_dict
    return torch.cat([factories[key].mapped_triples for key in SPLITS if factories.get(key) is not None])


def _split_factory(dataset, split: str):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    factory = dataset.factory_dict.get(split)
    if factory is None:
        raise ValueError(f"the dataset has no {split} split")
    return factory


def head_ranks(
    model,
    dataset,
    split: str = "testing",
    *,
    batch_size: int = 256,
    use_tqdm: bool = False,
) -> pd.DataFrame:
    """Filtered realistic ranks of every triple of a split, on both sides, for every head and the decision.

    :param model: a trained :class:`~pykeen_momok.MoMoK`
    :param dataset: its dataset (the splits share the model's entity and relation ids)
    :param split: ``"testing"``, ``"validation"`` or ``"training"``
    :param batch_size: queries scored at once (memory: ``(H + 1) x batch_size x E`` floats)
    :param use_tqdm: show a progress bar over the batches
    :return: one row per (triple, side), ``2 n`` rows: ``triple`` (its row in the split), ``side`` (``head`` /
        ``tail``: which entity is ranked), ``head_id``, ``relation_id``, ``tail_id``, ``relation`` (label),
        ``given_id`` / ``target_id`` (the entity given in the query and the one ranked), ``candidates`` (the number
        of candidates left after filtering), and one rank column per head of :func:`ranked_heads`,
        ``rank_<head>`` (:data:`RANK_PREFIX`; realistic ranks, 1 = best)
    :raises ValueError: for an unknown split, a dataset without it, or ``batch_size < 1``
    :raises TypeError: for a model that is not a MoMoK
    """
    _internals.check_momok(model)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    factory = _split_factory(dataset, split)
    triples = factory.mapped_triples.long().cpu()
    positives = filter_triples(dataset).long().cpu()
    names = ranked_heads(model)
    labels = dataset.training.relation_id_to_label
    frames = []
    with tqdm(total=2 * len(triples), desc=f"Ranking {split}", unit="query", disable=not use_tqdm) as progress:
        for side in SIDES:
            column, given_column = (0, 2) if side == "head" else (2, 0)
            ranks: list[list[torch.Tensor]] = [[] for _ in names]
            counts = []
            for start in range(0, len(triples), batch_size):
                batch = triples[start : start + batch_size]
                relations = _internals.model_relation_ids(model, batch[:, 1], inverse=side == "head")
                probabilities = torch.sigmoid(_internals.head_logits(model, batch[:, given_column], relations))
                # heads rank by their probabilities, as the decision does: candidates with the same feature row (the
                # fill row of absent entities) then tie exactly, where their logits differ by GEMM rounding; the
                # price: float32's sigmoid is 1.0 above a logit of ~16.6, so such candidates tie too
                scores = torch.cat([probabilities, probabilities.mean(dim=0, keepdim=True)])  # (H + 1, B, E)
                # PyKEEN's filtered ranking (pykeen.evaluation.evaluator._evaluate_batch): other positives -> NaN
                positive_filter, _ = create_sparse_positive_filter_(
                    hrt_batch=batch, all_pos_triples=positives, filter_col=column
                )
                rows = torch.arange(len(batch))
                for index, head_scores in enumerate(scores):
                    true_scores = head_scores[rows, batch[:, column]].clone()
                    head_scores = filter_scores_(scores=head_scores, filter_batch=positive_filter)
                    head_scores[rows, batch[:, column]] = true_scores
                    result = Ranks.from_scores(true_score=true_scores.unsqueeze(-1), all_scores=head_scores)
                    ranks[index].append(result.realistic.float())
                counts.append(result.number_of_options)  # the same filter for every head
                progress.update(len(batch))
            frame = pd.DataFrame(
                {
                    "triple": np.arange(len(triples)),
                    "side": side,
                    "head_id": triples[:, 0].numpy(),
                    "relation_id": triples[:, 1].numpy(),
                    "tail_id": triples[:, 2].numpy(),
                    "given_id": triples[:, given_column].numpy(),
                    "target_id": triples[:, column].numpy(),
                    "candidates": torch.cat(counts).numpy(),
                }
            )
            frame.insert(3, "relation", [str(labels[int(r)]) for r in triples[:, 1]])
            for name, values in zip(names, ranks, strict=True):
                frame[RANK_PREFIX + name] = torch.cat(values).numpy().astype(np.float64)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _metrics(ranks: pd.DataFrame, heads: Sequence[str]) -> pd.DataFrame:
    """MRR and Hits@k of each head over all rows: one row per head (``head``, metrics, ``count``)."""
    rows = []
    for name in heads:
        values = ranks[RANK_PREFIX + name].to_numpy(dtype=np.float64)
        row = {"head": name, "MRR": float(np.mean(1.0 / values)) if len(values) else float("nan")}
        for k in HITS_AT:
            row[f"H@{k}"] = float(np.mean(values <= k)) if len(values) else float("nan")
        row["count"] = len(values)
        rows.append(row)
    return pd.DataFrame(rows)


def _heads_of(ranks: pd.DataFrame) -> list[str]:
    """The heads of a :func:`head_ranks` table: its :data:`RANK_PREFIX` columns, in order."""
    heads = [str(column)[len(RANK_PREFIX) :] for column in ranks.columns if str(column).startswith(RANK_PREFIX)]
    if not heads:
        raise ValueError(f"not a head_ranks table: no {RANK_PREFIX}<head> column among {list(ranks.columns)}")
    return heads


def rank_metrics(ranks: pd.DataFrame, by: str | Sequence[str] = ()) -> pd.DataFrame:
    """MRR and Hits@k of every head, over all rows of a :func:`head_ranks` table or per group of rows.

    Both sides are pooled unless ``by`` names ``"side"`` (as PyKEEN's ``both`` metrics).

    :param ranks: a :func:`head_ranks` table (or a selection of its rows)
    :param by: columns to group by (e.g. ``"relation"``, ``["relation", "side"]``); none: one group
    :return: the ``by`` columns, ``head``, ``MRR``, ``H@1``, ``H@3``, ``H@10`` and ``count`` (ranks averaged),
        one row per group and head
    :raises ValueError: for a table that is not a rank table, or an unknown column in ``by``
    """
    heads = _heads_of(ranks)
    by = [by] if isinstance(by, str) else list(by)
    unknown = [column for column in by if column not in ranks.columns]
    if unknown:
        raise ValueError(f"cannot group by {unknown}: the rank table has the columns {list(ranks.columns)}")
    if not by:
        return _metrics(ranks, heads)
    frames = []
    for key, group in ranks.groupby(by, sort=True):
        frame = _metrics(group, heads)
        for column, value in zip(by, key if isinstance(key, tuple) else (key,), strict=True):
            frame[column] = value
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[[*by, "head", *metric_columns(), "count"]]


def side_metrics(ranks: pd.DataFrame) -> pd.DataFrame:
    """:func:`rank_metrics` per side and for both sides pooled (``side``: ``head``, ``tail``, ``both``)."""
    both = rank_metrics(ranks)
    both.insert(0, "side", "both")
    return pd.concat([rank_metrics(ranks, by="side"), both], ignore_index=True)


def presence_metrics(ranks: pd.DataFrame, modalities: Mapping[str, object]) -> pd.DataFrame:
    """:func:`rank_metrics` for entities with and without each modality.

    :param ranks: a :func:`head_ranks` table
    :param modalities: per modality name, its :class:`~pykeen_momok.triples.ModalityFeatures` (``present``
        ``(E,)``: which entities had a feature; a dataset's ``training.modalities``)
    :return: ``modality``, ``entity`` (``target``: the ranked entity, ``given``: the one in the query),
        ``present`` (bool), then the :func:`rank_metrics` columns; both sides pooled
    """
    frames = []
    for name, features in modalities.items():
        present = features.present.cpu().numpy()
        for role in ("target", "given"):
            has = present[ranks[f"{role}_id"].to_numpy()]
            for value in (True, False):
                selected = ranks[has == value]
                if selected.empty:
                    continue
                frame = rank_metrics(selected)
                frame.insert(0, "present", value)
                frame.insert(0, "entity", role)
                frame.insert(0, "modality", name)
                frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["modality", "entity", "present", "head", *metric_columns(), "count"])
    return pd.concat(frames, ignore_index=True)
