"""A report folder of what a trained MoMoK learned: CSV tables, plots (PNG + SVG) and a short Markdown summary.

``pykeen-momok analyze`` writes it; :func:`write_report` does the work::

    relation_weights.csv      tidy: temperature, gates, fusion attention per relation and direction
    relation_summary.csv      the same, one row per relation and direction
    head_ranks.csv            filtered rank of every triple of the split, per side and head
    head_metrics.csv          MRR, H@1, H@3, H@10 per head: head side, tail side, both
    relation_metrics.csv      the same per relation (both sides)
    presence_metrics.csv      the same for target / given entities with and without each modality
    robustness.csv            the same per corrupted modality, corruption and rate
    fusion.png/.svg, experts.png/.svg, head_mrr.png/.svg, robustness.png/.svg
    summary.md
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Mapping, Sequence

import pandas as pd

from . import _internals
from .ranks import DECISION, head_ranks, presence_metrics, rank_metrics, side_metrics
from .robustness import CORRUPTIONS, DEFAULT_RATES, robustness_table
from .weights import relation_display, relation_summary, relation_weights

__all__ = ["REPORT_FILES", "Report", "write_report"]

#: the CSV files of a report, by table name
REPORT_FILES: Mapping[str, str] = {
    "relation_weights": "relation_weights.csv",
    "relation_summary": "relation_summary.csv",
    "head_ranks": "head_ranks.csv",
    "head_metrics": "head_metrics.csv",
    "relation_metrics": "relation_metrics.csv",
    "presence_metrics": "presence_metrics.csv",
    "robustness": "robustness.csv",
}
SUMMARY_FILE = "summary.md"


@dataclasses.dataclass
class Report:
    """The tables of a report (pandas DataFrames, by the names of :data:`REPORT_FILES`) and the files written."""

    tables: dict[str, pd.DataFrame]
    files: list[pathlib.Path]


def _markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A pipe table (pandas' ``to_markdown`` needs the optional tabulate)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _relation_table(summary: pd.DataFrame, metrics: pd.DataFrame, notes: Mapping[str, str]) -> pd.DataFrame:
    """Per relation: what the dataset planted (if it says), each head's MRR, temperature and fusion attention."""
    mrr = metrics.pivot(index="relation", columns="head", values="MRR")[list(dict.fromkeys(metrics["head"]))]
    rows = []
    for record in summary.to_dict("records"):
        row = {"relation": relation_display(record["relation"], record["direction"])}
        if notes:
            row["planted"] = notes.get(str(record["relation"]), "")
        if record["direction"] == "forward" and record["relation"] in mrr.index:
            row |= {f"MRR {head}": float(mrr.loc[record["relation"], head]) for head in mrr.columns}
        row["σ(θ_r)"] = float(record["temperature"])
        row |= {
            f"fusion {key.split(':')[1]}": float(value)
            for key, value in record.items()
            if str(key).startswith("entity_fusion:")
        }
        rows.append(row)
    return pd.DataFrame(rows)  # NaN where a row has no value (the inverse rows' MRR): blank in the summary


def _robustness_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per corrupted modality and mode: each head's MRR clean and at the highest rate, and the share kept."""
    rows = []
    for (name, mode), group in table.groupby(["modality", "mode"], sort=False):
        low, high = group["rate"].min(), group["rate"].max()
        for head, lines in group.groupby("head", sort=False):
            clean = float(lines.loc[lines["rate"] == low, "MRR"].iloc[0])
            worst = float(lines.loc[lines["rate"] == high, "MRR"].iloc[0])
            rows.append(
                {
                    "corrupted": name,
                    "mode": mode,
                    "head": head,
                    f"MRR at {low:g}": clean,
                    f"MRR at {high:g}": worst,
                    "kept": worst / clean if clean > 0 else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def _summary(
    model,
    split: str,
    metrics: pd.DataFrame,
    relations: pd.DataFrame,
    robustness: pd.DataFrame | None,
    files: Sequence[pathlib.Path],
    describe: str,
) -> str:
    both = metrics[metrics["side"] == "both"].drop(columns=["side"])
    parts = [
        "# What the model learned",
        "",
        f"{describe}. Heads: {', '.join(_internals.head_names(model))}; `{DECISION}` is the joint decision (the mean "
        f"of the heads' sigmoid probabilities), what the model ranks by. Filtered ranks on the {split} split, head "
        "and tail side pooled.",
        "",
        "## Per head",
        "",
        _markdown(both),
        "",
        "## Per relation",
        "",
        "MRR per head (forward rows: the relation's triples, both sides), the relation's temperature σ(θ_r) and the "
        "query side's mean entity-fusion attention per modality (⁻¹: the inverse relation, which answers heads).",
        "",
        _markdown(relations),
    ]
    if robustness is not None and not robustness.empty:
        parts += [
            "",
            "## Robustness",
            "",
            "MRR with a share of one modality's feature rows corrupted (`kept`: the share of the clean MRR left at the "
            "highest rate).",
            "",
            _markdown(_robustness_summary(robustness)),
        ]
    parts += ["", "## Files", "", *(f"- `{path.name}`" for path in files), ""]
    return "\n".join(parts)


def write_report(
    model,
    dataset,
    out: str | pathlib.Path,
    *,
    split: str = "testing",
    rates: Sequence[float] = DEFAULT_RATES,
    modes: Sequence[str] = CORRUPTIONS,
    seed: int = 0,
    plots: bool = True,
    batch_size: int = 256,
    use_tqdm: bool = True,
    describe: str = "A trained MoMoK",
) -> Report:
    """Analyse a trained model on its dataset and write the report folder (module docstring).

    :param model: a trained :class:`~pykeen_momok.MoMoK`
    :param dataset: its dataset (the one it was trained on: same entities, relations, features)
    :param out: the report folder (created if needed; the report's files in it are replaced)
    :param split: the split to rank
    :param rates: corruption rates of the robustness table (empty: no robustness table)
    :param modes: corruptions (``"missing"``, ``"noise"``)
    :param seed: seed of the corruption
    :param plots: draw the plots (needs matplotlib)
    :param batch_size: queries scored at once
    :param use_tqdm: progress bars
    :param describe: the first words of the summary (what model, which data)
    :return: the tables and the files written
    :raises ImportError: with ``plots`` and without matplotlib, before any work
    """
    if plots:
        from .plots import require_matplotlib

        require_matplotlib()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    training = dataset.training
    weights = relation_weights(model, training)
    ranks = head_ranks(model, dataset, split, batch_size=batch_size, use_tqdm=use_tqdm)
    per_relation = rank_metrics(ranks, by="relation")
    tables = {
        "relation_weights": weights,
        "relation_summary": relation_summary(weights),
        "head_ranks": ranks,
        "head_metrics": side_metrics(ranks),
        "relation_metrics": per_relation,
        "presence_metrics": presence_metrics(ranks, getattr(training, "modalities", None) or {}),
    }
    has_features = bool(_internals.feature_modalities(model)) and bool(getattr(training, "modalities", None))
    if list(rates) and has_features:
        tables["robustness"] = robustness_table(
            model, dataset, rates=rates, modes=modes, split=split, seed=seed, batch_size=batch_size, use_tqdm=use_tqdm
        )
    # what the dataset says each relation depends on (SyntheticMMKG's planted attributes), shown where present
    notes = dict((getattr(training, "metadata", None) or {}).get("relation_attributes") or {})
    files = []
    for name, table in tables.items():
        path = out / REPORT_FILES[name]
        table.to_csv(path, index=False)
        files.append(path)
    if plots:
        from . import plots as plotting

        drawn = [
            plotting.plot_expert_usage(weights, out / "experts"),
            plotting.plot_head_mrr(rank_metrics(ranks), per_relation, out / "head_mrr", notes=notes),
        ]
        if (weights["kind"] == "entity_fusion").any():
            drawn.insert(0, plotting.plot_fusion(weights, out / "fusion"))
        if "robustness" in tables:
            drawn.append(plotting.plot_robustness(tables["robustness"], out / "robustness"))
        files += [path for plot in drawn for path in (plot.png, plot.svg)]
    relations = _relation_table(tables["relation_summary"], per_relation, notes)
    summary = out / SUMMARY_FILE
    files.append(summary)
    summary.write_text(
        _summary(model, split, tables["head_metrics"], relations, tables.get("robustness"), files, describe),
        encoding="utf-8",
    )
    return Report(tables=tables, files=files)
