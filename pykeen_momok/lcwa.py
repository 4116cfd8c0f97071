"""LCWA training batches built in one vectorised step, their dense targets on the model's device.

PyKEEN 1.11.1's :class:`~pykeen.triples.instances.LCWAInstances` densifies one sparse row per training pair
(``__getitem__``) and the data loader stacks ``B`` of them: on MKG-Y (15,000 entities) at batch 1024 that takes
about 0.1 s per batch on one CPU core (``benchmarks/lcwa_batches.py``), ~2.8 s an epoch, over an hour for the
paper's 2,000 epochs, whatever the GPU does, and each batch's ``B x E`` float32 target (61 MB there) is then
copied to the device. :class:`BatchedLCWAInstances` answers a whole batch of indices at once
(``__getitems__``, which :class:`torch.utils.data.DataLoader` calls when a dataset has it) with the pairs and
the coordinates of the batch's positive targets; :class:`BatchedLCWATrainingLoop` scatters them into the dense
target on the model's device. The sampler, the order of the pairs and the targets are PyKEEN's, so a run
trains exactly as with :class:`~pykeen.training.LCWATrainingLoop` under the same seed, only faster
(``tests/test_lcwa.py`` compares the trained weights).

A training callback (``on_batch``) sees the batch in its sparse form (no ``target`` key):
:func:`dense_targets` gives PyKEEN's form. :class:`~pykeen_momok.lightning.MoMoKLitModule` trains on these batches
too.

Use it by name, ``training_loop="batchedlcwa"`` (registered with PyKEEN's ``training_loop_resolver`` on import
of PyKEEN, as MoMoK and MoMoKLoss are), or pass the class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from pykeen.training import LCWATrainingLoop
from pykeen.triples import CoreTriplesFactory
from pykeen.triples.instances import LCWAInstances
from pykeen.typing import COLUMN_HEAD, COLUMN_RELATION, COLUMN_TAIL
from torch.utils.data import DataLoader

__all__ = ["BatchedLCWAInstances", "BatchedLCWATrainingLoop", "collate_batched", "dense_targets"]

#: keys of a batch of :class:`BatchedLCWAInstances` that describe its sparse target
TARGET_KEYS = ("target_rows", "target_columns", "target_values", "target_row_pointer", "num_targets")


class BatchedLCWAInstances(LCWAInstances):
    """:class:`~pykeen.triples.instances.LCWAInstances` that answer a whole batch of indices at once.

    A batch is a dict: ``pairs`` ``(B, 2)`` long; the batch's positive targets as coordinates, row after row,
    ``target_rows`` ``(n,)`` (rows of the batch), ``target_columns`` ``(n,)`` and ``target_values`` ``(n,)`` float32
    (the sparse matrix's entries, 1 per distinct triple), ``target_row_pointer`` ``(B + 1,)`` (row ``i``'s entries
    are ``[pointer[i], pointer[i + 1])``: sub-batches cut theirs on the host); ``num_targets`` (the target's width,
    ``E`` or ``R``); and ``weights`` where a loss weighter is set, shaped as PyKEEN's per-item batches have them
    (``(B, 1)``, or ``(B, R)`` for a relation target).
    :func:`dense_targets` turns it into PyKEEN's batch (``pairs``, ``target`` ``(B, num_targets)``).
    """

    def __getitems__(self, items: list[int]) -> dict[str, Any]:
        """The batch of the pairs at ``items`` (torch's data loader calls this with every batch's indices)."""
        index = np.asarray(items, dtype=np.int64)
        pairs = self.pairs[index]
        indptr = self.compressed.indptr
        starts = indptr[index]
        lengths = indptr[index + 1] - starts
        # the positions of the rows' entries in the CSR arrays, row after row, without a loop over rows
        ends = np.cumsum(lengths)
        first = ends - lengths
        positions = np.repeat(starts - first, lengths) + np.arange(int(lengths.sum()))
        batch: dict[str, Any] = dict(
            pairs=torch.from_numpy(pairs),
            target_rows=torch.from_numpy(np.repeat(np.arange(index.shape[0]), lengths)),
            target_columns=torch.from_numpy(self.compressed.indices[positions].astype(np.int64)),
            target_values=torch.from_numpy(self.compressed.data[positions].astype(np.float32)),
            target_row_pointer=torch.from_numpy(np.concatenate([[0], ends]).astype(np.int64)),
            num_targets=int(self.compressed.shape[1]),
        )
        if self.loss_weighter is not None:
            batch["weights"] = self._weights(pairs)
        return batch

    def _weights(self, pairs: np.ndarray) -> torch.Tensor:
        """The loss weights of PyKEEN's ``__getitem__`` stacked, ``(B, *item_shape)``, from one broadcast call.

        A weighter that does not depend on the pair (PyKEEN's relation weighter for a relation target answers
        every relation's weight) gives one item's weights, repeated for every pair as stacking would.
        """
        weights = torch.as_tensor(self._weigh(pairs))
        item_shape = torch.as_tensor(self._weigh(pairs[0])).shape  # one pair (2,), as PyKEEN's __getitem__ has it
        if weights.shape == item_shape:
            return weights.expand(pairs.shape[0], *item_shape).clone()
        if weights.shape != (pairs.shape[0], *item_shape):
            raise ValueError(
                f"the loss weighter {self.loss_weighter!r} gave weights of shape {tuple(weights.shape)} for "
                f"{pairs.shape[0]} pairs; expected {(pairs.shape[0], *item_shape)} or {tuple(item_shape)}"
            )
        return weights

    def _weigh(self, pairs: np.ndarray):
        """The loss weighter called as PyKEEN's ``__getitem__`` calls it, on one pair ``(2,)`` or pairs ``(n, 2)``."""
        x, y = pairs[..., None, 0], pairs[..., None, 1]
        if self.target == COLUMN_HEAD:
            return self.loss_weighter(h=None, r=x, t=y)
        if self.target == COLUMN_RELATION:
            return self.loss_weighter(h=x, r=None, t=y)
        if self.target == COLUMN_TAIL:
            return self.loss_weighter(h=x, r=y, t=None)
        raise ValueError(f"unknown target column {self.target!r}")  # pragma: no cover - PyKEEN allows no other


def dense_targets(
    batch: Mapping[str, Any],
    device: torch.device | str | None = None,
    start: int | None = None,
    stop: int | None = None,
) -> dict[str, Any]:
    """PyKEEN's LCWA batch of rows ``[start, stop)`` of a :class:`BatchedLCWAInstances` batch, its target on ``device``.

    ``target`` is ``(stop - start, num_targets)``; ``pairs`` (and ``weights``) are cut to the same rows and stay
    where they are (PyKEEN moves them). The coordinates travel to ``device`` (a few kilobytes, without waiting:
    ``non_blocking``) and are scattered there, so no dense target is built on the host. A sub-batch's
    coordinates are cut on the host through ``target_row_pointer`` (the whole batch's need no such read).
    """
    size = batch["pairs"].shape[0]
    start, stop = 0 if start is None else start, size if stop is None else min(stop, size)  # as slicing does
    rows, columns, values = (batch[key] for key in TARGET_KEYS[:3])
    if (start, stop) != (0, size):
        pointer = batch["target_row_pointer"]
        lo, hi = int(pointer[start]), int(pointer[stop])
        rows, columns, values = rows[lo:hi] - start, columns[lo:hi], values[lo:hi]
    rows, columns, values = (x.to(device, non_blocking=True) for x in (rows, columns, values))
    target = torch.zeros(stop - start, batch["num_targets"], dtype=torch.float32, device=device)
    target[rows, columns] = values
    out = {
        key: value[start:stop] if torch.is_tensor(value) else value
        for key, value in batch.items()
        if key not in TARGET_KEYS
    }
    out["target"] = target
    return out


def collate_batched(batch: dict[str, Any]) -> dict[str, Any]:
    """The data loader's ``collate_fn``: ``__getitems__`` already returned the batch (module level: picklable)."""
    return batch


class BatchedLCWATrainingLoop(LCWATrainingLoop):
    """PyKEEN's LCWA training loop over :class:`BatchedLCWAInstances`: the same training, batches built faster.

    Example::

        from pykeen.pipeline import pipeline

        pipeline(dataset="SyntheticMMKG", model="MoMoK", loss="MoMoKLoss", training_loop="batchedlcwa")
    """

    def _create_training_data_loader(
        self, triples_factory: CoreTriplesFactory, sampler: str | None, **kwargs
    ) -> DataLoader:  # noqa: D102
        if sampler:
            raise NotImplementedError(
                f"LCWA training does not support non-default batch sampling. Expected sampler=None, but got "
                f"sampler='{sampler}'."
            )
        instances = BatchedLCWAInstances.from_triples_factory(
            triples_factory,
            target=self.target,
            loss_weighter=self.loss_weighter,
            loss_weighter_kwargs=self.loss_weighter_kwargs,
        )
        return DataLoader(dataset=instances, collate_fn=collate_batched, **kwargs)

    def _process_batch(
        self,
        batch: Mapping[str, Any],
        start: int,
        stop: int,
        label_smoothing: float = 0.0,
        slice_size: int | None = None,
    ) -> torch.Tensor:  # noqa: D102
        if "target" not in batch:  # a BatchedLCWAInstances batch (PyKEEN's own batches pass through)
            # only this (sub-)batch's rows get a dense target; PyKEEN then takes all of them
            batch = dense_targets(batch, self.device, start, stop)
            start, stop = 0, batch["pairs"].shape[0]
        return super()._process_batch(batch, start, stop, label_smoothing=label_smoothing, slice_size=slice_size)
