"""Robustness: MRR of every head and of the joint decision as one modality's feature rows are corrupted.

For each feature modality and corruption rate ``q``, a seeded random ``round(q E)`` of the ``E`` entities (the same
entities at every rate, and more of them as ``q`` grows) have their rows of the model's feature table replaced,
in a *copy* of the model (the trained model is never changed):

- ``missing``: by the row the dataset fills absent entities with (:class:`~pykeen_momok.triples.ModalityFeatures`
  ``fill``): for ``"mean"`` and ``"zeros"`` the mean of the table rows of the entities the dataset marks absent
  (the very row its fill put into the table, unless the table was fine-tuned), or, where the dataset marks none
  absent, the mean of the present rows or zeros; for ``"normal"`` draws as for ``noise``;
- ``noise``: by Gaussian noise with the per-column mean and standard deviation of the table rows of the entities
  the dataset marks present.

The corruption works on the model's table (what the model was built from, after its adapter's initialisation,
fine-tuned or not), so it needs no feature file. Each corrupted copy is ranked as :func:`~.ranks.head_ranks` ranks.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import _internals
from .ranks import head_ranks, rank_metrics

__all__ = ["CORRUPTIONS", "DEFAULT_RATES", "corrupt_rows", "corrupted_entities", "robustness_table"]

#: the corruptions :func:`robustness_table` knows
CORRUPTIONS = ("missing", "noise")
#: the default corruption rates
DEFAULT_RATES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _generator(seed: int, *names: str) -> torch.Generator:
    """A generator seeded by the seed and names (stable across runs, unlike ``hash``)."""
    return torch.Generator().manual_seed(zlib.crc32("\0".join((str(seed), *names)).encode("utf-8")))


def corrupted_entities(num_entities: int, rate: float, *, seed: int, modality: str) -> torch.Tensor:
    """The entities whose rows are corrupted at a rate, shape ``(round(rate E),)``.

    The order is one seeded permutation per ``(seed, modality)``, so a higher rate corrupts the entities of every
    lower rate and more.
    """
    order = torch.randperm(num_entities, generator=_generator(seed, modality))
    return order[: round(rate * num_entities)]


def _noise(reference: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian rows ``(count, dim)`` with the per-column mean and standard deviation of ``reference`` ``(n, dim)``."""
    reference = reference.double()
    mean, std = reference.mean(dim=0), reference.std(dim=0, unbiased=False)
    noise = torch.randn(count, reference.shape[1], generator=generator, dtype=torch.float64)
    return (mean + noise * std).float()


def corrupt_rows(
    table: torch.Tensor,
    present: torch.Tensor,
    fill: str,
    rows: torch.Tensor,
    mode: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """A copy of a feature table ``(E, dim)`` with some rows marked missing or replaced by noise (module docstring).

    :param table: the model's feature table, shape ``(E, dim)``
    :param present: shape ``(E,)``, which entities the dataset has a feature for
    :param fill: how the dataset fills absent rows (``"mean"``, ``"zeros"``, ``"normal"``)
    :param rows: shape ``(n,)``, the entities to corrupt
    :param mode: ``"missing"`` or ``"noise"``
    :param generator: the random draws (noise, and the ``"normal"`` fill)
    :return: shape ``(E, dim)``, the table is not changed
    :raises ValueError: for an unknown mode or fill, or a mask that does not fit the table
    """
    if mode not in CORRUPTIONS:
        raise ValueError(f"mode must be one of {CORRUPTIONS}, got {mode!r}")
    if fill not in ("mean", "zeros", "normal"):
        raise ValueError(f"fill must be 'mean', 'zeros' or 'normal', got {fill!r}")
    present = present.bool().cpu()
    if present.shape != table.shape[:1]:
        raise ValueError(f"present has shape {tuple(present.shape)}, the table {tuple(table.shape)}")
    corrupted = table.clone()
    if len(rows) == 0:
        return corrupted
    reference = table[present] if bool(present.any()) else table
    if mode == "noise" or fill == "normal":
        corrupted[rows] = _noise(reference, len(rows), generator).to(table.dtype)
    elif bool((~present).any()):
        corrupted[rows] = table[~present].mean(dim=0)  # the row the dataset's fill put into the table
    elif fill == "zeros":
        corrupted[rows] = 0.0
    else:
        corrupted[rows] = reference.mean(dim=0)
    return corrupted


def _check_rates(rates: Sequence[float]) -> list[float]:
    values = list(rates)
    if not values:
        raise ValueError("rates must name at least one corruption rate")
    for rate in values:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"corruption rates must be numbers in [0, 1], got {rate!r}")
    return sorted({float(rate) for rate in values})


def robustness_table(
    model,
    dataset,
    *,
    modalities: Sequence[str] | None = None,
    rates: Sequence[float] = DEFAULT_RATES,
    modes: Sequence[str] = CORRUPTIONS,
    split: str = "testing",
    seed: int = 0,
    batch_size: int = 256,
    use_tqdm: bool = True,
) -> pd.DataFrame:
    """MRR and Hits@k of every head and the decision with a rising share of one modality's rows corrupted.

    :param model: a trained :class:`~pykeen_momok.MoMoK` (not changed: a copy is corrupted)
    :param dataset: its dataset: the split to rank, the filter triples, and per modality which entities have a
        feature and how the dataset fills the others (``dataset.training.modalities``)
    :param modalities: the feature modalities to corrupt, one at a time (default: all the model uses)
    :param rates: the shares of entities to corrupt, in [0, 1]; rate 0 is the clean model
    :param modes: ``"missing"`` and/or ``"noise"`` (see the module docstring)
    :param split: the split to rank
    :param seed: the seed of the corrupted entities and of the noise
    :param batch_size: queries scored at once
    :param use_tqdm: a progress bar over the corrupted copies
    :return: ``modality``, ``mode``, ``rate``, ``corrupted`` (the number of entities), then the
        :func:`~.ranks.rank_metrics` columns (``head``, ``MRR``, ``H@1``, ``H@3``, ``H@10``, ``count``; both sides)
    :raises ValueError: for an unknown modality or mode, a rate outside [0, 1], or a dataset without the features
    """
    _internals.check_momok(model)
    known = _internals.feature_modalities(model)
    modalities = list(known if modalities is None else modalities)
    unknown = [name for name in modalities if name not in known]
    if unknown:
        raise ValueError(f"the model has no feature modality {unknown}; it has {list(known)}")
    modes = list(modes)
    bad = [mode for mode in modes if mode not in CORRUPTIONS]
    if bad or not modes:
        raise ValueError(f"modes must be among {CORRUPTIONS}, got {modes}")
    rates = _check_rates(rates)
    features: Mapping[str, object] = getattr(dataset.training, "modalities", None) or {}
    missing = [name for name in modalities if name not in features]
    if missing:
        raise ValueError(
            f"the dataset has no features of {missing} (it has {sorted(features)}): the corruption needs to know which "
            f"entities have a feature and how the dataset fills the others; build the dataset with its feature files"
        )

    clean = rank_metrics(head_ranks(model, dataset, split, batch_size=batch_size))
    corrupted_model = _internals.copy_for_corruption(model) if any(rate > 0 for rate in rates) else None
    runs = [(name, mode, rate) for name in modalities for mode in modes for rate in rates if rate > 0]
    frames = []
    with tqdm(total=len(runs), desc="Corrupting", unit="copy", disable=not use_tqdm) as progress:
        for name in modalities:
            table = _internals.feature_table(model, name)
            present, fill = features[name].present, features[name].fill
            for mode in modes:
                for rate in rates:
                    rows = corrupted_entities(table.shape[0], rate, seed=seed, modality=name)
                    if rate == 0:
                        metrics = clean.copy()
                    else:
                        generator = _generator(seed, name, mode, repr(rate))
                        _internals.write_feature_table(
                            corrupted_model, name, corrupt_rows(table, present, fill, rows, mode, generator)
                        )
                        metrics = rank_metrics(head_ranks(corrupted_model, dataset, split, batch_size=batch_size))
                        progress.update()
                    metrics.insert(0, "corrupted", len(rows))
                    metrics.insert(0, "rate", rate)
                    metrics.insert(0, "mode", mode)
                    metrics.insert(0, "modality", name)
                    frames.append(metrics)
            if corrupted_model is not None:
                _internals.write_feature_table(corrupted_model, name, table)  # the next modality is corrupted alone
    return pd.concat(frames, ignore_index=True)
