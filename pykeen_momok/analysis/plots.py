"""Plots of an analysis, each written as PNG and SVG: fusion heatmap, expert usage, per-head MRR, robustness.

matplotlib is an optional dependency (``pip install pykeen-momok[plots]``); it is imported here only, when a plot
is drawn, and without pyplot (no global figure state, no display needed). Every figure has a fixed size per table
shape (:func:`figure_size`), :data:`DPI` pixels per inch in the PNG.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .ranks import DECISION
from .weights import relation_display

__all__ = [
    "DPI",
    "PlotFiles",
    "figure_size",
    "plot_expert_usage",
    "plot_fusion",
    "plot_head_mrr",
    "plot_robustness",
    "require_matplotlib",
]

#: pixels per inch of the PNG files
DPI = 100


@dataclasses.dataclass(frozen=True)
class PlotFiles:
    """The files of one plot and the PNG's size in pixels."""

    png: pathlib.Path
    svg: pathlib.Path
    width: int
    height: int


def require_matplotlib():
    """Import matplotlib's :class:`~matplotlib.figure.Figure`, or say how to install it.

    :raises ImportError: naming the extra to install
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            f"the plots need matplotlib ({error}): pip install 'pykeen-momok[plots]' (or matplotlib)"
        ) from None
    return Figure


def figure_size(kind: str, rows: int = 1, columns: int = 1) -> tuple[float, float]:
    """The size in inches of a plot of a kind for a table of ``rows`` relations (or groups) and ``columns`` panels.

    :param kind: ``"fusion"``, ``"experts"``, ``"head_mrr"`` or ``"robustness"``
    """
    if kind in ("fusion", "experts"):  # one heatmap row per relation and direction, one panel per column
        return 1.6 + 2.4 * columns, 1.4 + 0.28 * rows
    if kind == "head_mrr":  # the overall bars, then one group of bars per relation
        return 4.0 + 0.55 * rows, 4.0
    if kind == "robustness":  # one panel per modality (row) and corruption (column)
        return 0.8 + 3.6 * columns, 0.6 + 2.8 * rows
    raise ValueError(f"unknown plot kind {kind!r}")


def _save(figure, stem: pathlib.Path) -> PlotFiles:
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    figure.savefig(png, dpi=DPI)
    figure.savefig(svg)
    width, height = figure.get_size_inches()
    return PlotFiles(png=png, svg=svg, width=round(width * DPI), height=round(height * DPI))


def _relation_rows(weights: pd.DataFrame) -> list[tuple[int, str, str]]:
    """The (relation_id, direction, display label) of a weights table, in its order."""
    pairs = weights[["relation_id", "direction", "relation"]].drop_duplicates()
    return [(int(r), d, relation_display(label, d)) for r, d, label in pairs.itertuples(index=False)]


def _heatmap(axes, values: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str], title: str) -> object:
    image = axes.imshow(values, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(column_labels)), labels=column_labels, rotation=30, ha="right")
    axes.set_yticks(range(len(row_labels)), labels=row_labels)
    axes.set_title(title, fontsize=10)
    if values.size <= 400:  # numbers stay readable
        for (i, j), value in np.ndenumerate(values):
            if math.isfinite(value):
                axes.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if value > 0.6 else "white",
                )
    return image


def plot_fusion(weights: pd.DataFrame, stem: str | pathlib.Path) -> PlotFiles:
    """Heatmaps relation x modality of the mean joint-fusion attention: entity fusion (query side) and relation fusion.

    :param weights: a :func:`~.weights.relation_weights` table
    :param stem: the file path without suffix (``.png`` and ``.svg`` are written)
    :raises ValueError: for a model without fusion (one modality)
    """
    Figure = require_matplotlib()
    kinds = [kind for kind in ("entity_fusion", "relation_fusion") if (weights["kind"] == kind).any()]
    if not kinds:
        raise ValueError("the weights hold no fusion attention: the model has one modality and no joint head")
    relations = _relation_rows(weights)
    modalities = list(dict.fromkeys(weights.loc[weights["kind"] == kinds[0], "modality"]))
    figure = Figure(figsize=figure_size("fusion", len(relations), len(kinds)), layout="constrained")
    panels = figure.subplots(1, len(kinds), squeeze=False)[0]
    titles = {"entity_fusion": "entity fusion (query side)", "relation_fusion": "relation fusion"}
    for axes, kind in zip(panels, kinds, strict=True):
        table = weights[weights["kind"] == kind].pivot_table(
            index=["relation_id", "direction"], columns="modality", values="weight", dropna=False
        )
        values = table.reindex(index=[(r, d) for r, d, _ in relations], columns=modalities).to_numpy()
        image = _heatmap(axes, values, [label for _, _, label in relations], modalities, titles[kind])
    figure.colorbar(image, ax=list(panels), shrink=0.8, label="mean attention")
    figure.suptitle("Joint-fusion attention per relation", fontsize=11)
    return _save(figure, pathlib.Path(stem))


def plot_expert_usage(weights: pd.DataFrame, stem: str | pathlib.Path) -> PlotFiles:
    """Heatmaps relation x expert of the mean query-side gate weight, one panel per modality.

    :param weights: a :func:`~.weights.relation_weights` table
    """
    Figure = require_matplotlib()
    gates = weights[weights["kind"] == "gate"]
    relations = _relation_rows(weights)
    modalities = list(dict.fromkeys(gates["modality"]))
    figure = Figure(figsize=figure_size("experts", len(relations), len(modalities)), layout="constrained")
    panels = figure.subplots(1, len(modalities), squeeze=False, sharey=True)[0]
    for axes, name in zip(panels, modalities, strict=True):
        table = gates[gates["modality"] == name].pivot_table(
            index=["relation_id", "direction"], columns="expert", values="weight", dropna=False
        )
        values = table.reindex(index=[(r, d) for r, d, _ in relations]).to_numpy()
        experts = [f"expert {int(e)}" for e in table.columns]
        image = _heatmap(axes, values, [label for _, _, label in relations], experts, name)
    figure.colorbar(image, ax=list(panels), shrink=0.8, label="mean gate weight")
    figure.suptitle("Expert usage per modality (query side)", fontsize=11)
    return _save(figure, pathlib.Path(stem))


def _colours(heads: Sequence[str]) -> dict[str, object]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    colours = {name: palette(index % 10) for index, name in enumerate(h for h in heads if h != DECISION)}
    colours[DECISION] = "black"
    return colours


def plot_head_mrr(
    overall: pd.DataFrame,
    per_relation: pd.DataFrame,
    stem: str | pathlib.Path,
    notes: Mapping[str, str] | None = None,
) -> PlotFiles:
    """Bars of each head's filtered MRR: overall, then per relation (both sides pooled).

    :param overall: :func:`~.ranks.rank_metrics` of all ranks (one row per head)
    :param per_relation: :func:`~.ranks.rank_metrics` by ``relation``
    :param notes: per relation label, a note shown under it (e.g. what a synthetic relation depends on)
    """
    Figure = require_matplotlib()
    heads = list(dict.fromkeys(overall["head"]))
    relations = list(dict.fromkeys(per_relation["relation"]))
    colours = _colours(heads)
    figure = Figure(figsize=figure_size("head_mrr", len(relations)), layout="constrained")
    grid = figure.add_gridspec(1, 2, width_ratios=[1.2, max(1.0, 0.55 * len(relations))])
    left, right = figure.add_subplot(grid[0]), figure.add_subplot(grid[1])
    values = overall.set_index("head").loc[heads, "MRR"]
    left.bar(range(len(heads)), values.to_numpy(), color=[colours[name] for name in heads])
    left.set_xticks(range(len(heads)), labels=heads, rotation=30, ha="right")
    left.set_ylabel("filtered MRR")
    left.set_title("all relations", fontsize=10)
    width = 0.8 / len(heads)
    table = per_relation.pivot_table(index="relation", columns="head", values="MRR").reindex(
        index=relations, columns=heads
    )
    for index, name in enumerate(heads):
        right.bar(
            np.arange(len(relations)) + (index - (len(heads) - 1) / 2) * width,
            table[name].to_numpy(),
            width=width,
            color=colours[name],
            label=name,
        )
    labels = [f"{label}\n{notes[label]}" if notes and label in notes else label for label in relations]
    rotation, alignment = (0, "center") if notes else (30, "right")  # notes go on a second line, unrotated
    right.set_xticks(range(len(relations)), labels=labels, rotation=rotation, ha=alignment)
    right.set_title("per relation (head and tail side)", fontsize=10)
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for axes in (left, right):
        axes.set_ylim(0.0, max(1e-3, float(np.nanmax([values.max(), np.nanmax(table.to_numpy())]))) * 1.15)
    figure.suptitle("Filtered MRR per head", fontsize=11)
    return _save(figure, pathlib.Path(stem))


def plot_robustness(table: pd.DataFrame, stem: str | pathlib.Path) -> PlotFiles:
    """MRR against corruption rate, one panel per modality (rows) and corruption (columns), a line per head.

    :param table: a :func:`~.robustness.robustness_table`
    """
    Figure = require_matplotlib()
    modalities = list(dict.fromkeys(table["modality"]))
    modes = list(dict.fromkeys(table["mode"]))
    heads = list(dict.fromkeys(table["head"]))
    colours = _colours(heads)
    figure = Figure(figsize=figure_size("robustness", len(modalities), len(modes)), layout="constrained")
    panels = figure.subplots(len(modalities), len(modes), squeeze=False, sharex=True, sharey=True)
    for (row, name), (column, mode) in itertools.product(enumerate(modalities), enumerate(modes)):
        axes = panels[row, column]
        selected = table[(table["modality"] == name) & (table["mode"] == mode)]
        for head in heads:
            line = selected[selected["head"] == head].sort_values("rate")
            axes.plot(
                line["rate"],
                line["MRR"],
                marker="o",
                markersize=3,
                color=colours[head],
                label=head,
                linewidth=2.2 if head == DECISION else 1.2,
            )
        axes.set_title(f"{name} {mode}", fontsize=10)
        axes.grid(alpha=0.3)
    for axes in panels[-1]:
        axes.set_xlabel("share of entities corrupted")
    for axes in panels[:, 0]:
        axes.set_ylabel("filtered MRR")
    panels[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.suptitle("Robustness to one modality's corruption", fontsize=11)
    return _save(figure, pathlib.Path(stem))
