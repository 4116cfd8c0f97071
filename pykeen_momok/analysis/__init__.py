"""What a trained MoMoK learned: weights per relation, per-head metrics, explained predictions, robustness, plots.

All tables are pandas DataFrames:

- :func:`relation_weights` / :func:`relation_summary`: per relation (and its inverse) the temperature
  :math:`\\sigma(\\theta_r)`, the query side's mean gate weight of every expert of every modality and the mean
  joint-fusion attention per modality (:mod:`.weights`);
- :func:`head_ranks`, then :func:`rank_metrics` / :func:`side_metrics` / :func:`presence_metrics`: filtered MRR and
  Hits@k of every head (each modality alone, the joint head) and of the joint decision, overall, per relation and
  for entities with and without each modality (:mod:`.ranks`);
- :func:`explain_target`: top-k tails or heads with each head's probability and the weights behind them, as a
  :class:`pykeen.predict.TargetPredictions` (:mod:`.explain`);
- :func:`robustness_table`: the metrics with a rising share of one modality's feature rows marked missing or
  replaced by noise, in a copy of the model (:mod:`.robustness`);
- :func:`write_report`: all of it as CSV files, plots (:mod:`.plots`, needs matplotlib) and a Markdown summary, what
  ``pykeen-momok analyze`` writes (:mod:`.report`).

Every access to the model's insides is in :mod:`._internals`.
"""

from .explain import ExplainedPredictions, explain_target
from .ranks import DECISION, head_ranks, presence_metrics, rank_metrics, side_metrics
from .report import Report, write_report
from .robustness import CORRUPTIONS, DEFAULT_RATES, robustness_table
from .weights import relation_summary, relation_weights

__all__ = [
    "CORRUPTIONS",
    "DECISION",
    "DEFAULT_RATES",
    "ExplainedPredictions",
    "Report",
    "explain_target",
    "head_ranks",
    "presence_metrics",
    "rank_metrics",
    "relation_summary",
    "relation_weights",
    "robustness_table",
    "side_metrics",
    "write_report",
]
