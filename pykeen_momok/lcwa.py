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

Two per-epoch costs of PyKEEN's loop that have nothing to do with the model are options of the loop (both
``"auto"``: PyKEEN's way on the CPU, the cheap way on CUDA; the weights trained are the same either way):

- ``read_loss``: PyKEEN checks ``torch.isfinite(loss)`` and reads ``loss.item()`` after every batch. On a GPU
  each read makes the host wait until the step has run, so the next step's launches cannot overlap it.
  ``"epoch"`` sums the batch losses on the device and reads (and checks) them once per epoch.
- ``epoch_cleanup``: after every epoch PyKEEN calls ``gc.collect()`` over every object of the process
  (0.2-0.25 s on the dev machine with MKG-Y and PyKEEN loaded: 7-8 min of the paper's 2,000 epochs) and
  ``torch.cuda.empty_cache()`` (the next epoch allocates its memory again). ``"light"`` lets that collection
  skip what existed before training began (``gc.freeze`` around the training; it still collects everything
  training creates) and keeps CUDA's cache.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from pykeen.stoppers import EarlyStopper, Stopper
from pykeen.training import LCWATrainingLoop
from pykeen.training.training_loop import NonFiniteLossError
from pykeen.triples import CoreTriplesFactory
from pykeen.triples.instances import LCWAInstances
from pykeen.typing import COLUMN_HEAD, COLUMN_RELATION, COLUMN_TAIL
from torch.utils.data import DataLoader

from .nn.tucker import reads_wait_for_device

__all__ = [
    "EPOCH_CLEANUP",
    "READ_LOSS",
    "BatchedLCWAInstances",
    "BatchedLCWATrainingLoop",
    "collate_batched",
    "dense_targets",
]

logger = logging.getLogger(__name__)

#: ``BatchedLCWATrainingLoop(read_loss=...)``: ``"batch"`` PyKEEN's ``isfinite`` check and ``loss.item()`` after
#: every batch; ``"epoch"`` the batch losses summed on the device, read and checked once per epoch (a non-finite
#: loss is then reported at the epoch's end, after the epoch's optimiser steps, so the weights, and a failure
#: checkpoint PyKEEN writes then, hold those steps' non-finite updates; ``on_batch`` callbacks get
#: the batch loss as a 0-d tensor on the device); ``"auto"`` "epoch" where reads wait for the device (CUDA)
READ_LOSS = ("auto", "batch", "epoch")

#: ``BatchedLCWATrainingLoop(epoch_cleanup=...)``: ``"full"`` PyKEEN's ``gc.collect()`` over the whole process and
#: ``torch.cuda.empty_cache()`` after every epoch; ``"light"`` the collection skips the objects that existed before
#: training began (frozen for the training) and CUDA's cached memory is kept for the next epoch; ``"auto"``
#: "light" on CUDA
EPOCH_CLEANUP = ("auto", "full", "light")

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
        rows, columns, values = rows[lo:hi], columns[lo:hi], values[lo:hi]  # views: still pinned
    rows, columns, values = (x.to(device, non_blocking=True) for x in (rows, columns, values))
    if start:
        rows = rows - start  # on the device: a host-side difference would be pageable memory, a waiting copy
    target = torch.zeros(stop - start, batch["num_targets"], dtype=torch.float32, device=device)
    target[rows, columns] = values
    out = {
        key: value[start:stop] if torch.is_tensor(value) else value
        for key, value in batch.items()
        if key not in TARGET_KEYS
    }
    out["target"] = target
    return out


def _moved(batch: dict[str, Any], device: torch.device | str | None) -> dict[str, Any]:
    """``batch``'s tensors on ``device`` without waiting (the loader pins them on CUDA; PyKEEN's ``.to`` would wait)."""
    return {
        key: value.to(device, non_blocking=True) if torch.is_tensor(value) else value for key, value in batch.items()
    }


def collate_batched(batch: dict[str, Any]) -> dict[str, Any]:
    """The data loader's ``collate_fn``: ``__getitems__`` already returned the batch (module level: picklable)."""
    return batch


class BatchedLCWATrainingLoop(LCWATrainingLoop):
    """PyKEEN's LCWA training loop over :class:`BatchedLCWAInstances`: the same training, batches built faster.

    Example::

        from pykeen.pipeline import pipeline

        pipeline(dataset="SyntheticMMKG", model="MoMoK", loss="MoMoKLoss", training_loop="batchedlcwa")
        # PyKEEN's per-batch loss reads and per-epoch cleanup on every device:
        pipeline(..., training_loop="batchedlcwa", training_loop_kwargs=dict(read_loss="batch", epoch_cleanup="full"))
    """

    def __init__(self, *, read_loss: str = "auto", epoch_cleanup: str = "auto", **kwargs) -> None:
        """Initialise the loop.

        :param read_loss: when the host reads the loss, one of :data:`READ_LOSS`
        :param epoch_cleanup: what is freed after each epoch, one of :data:`EPOCH_CLEANUP`
        :param kwargs: passed to :class:`~pykeen.training.LCWATrainingLoop`
        :raises ValueError: for an unknown ``read_loss`` or ``epoch_cleanup``
        """
        for name, value, choices in (
            ("read_loss", read_loss, READ_LOSS),
            ("epoch_cleanup", epoch_cleanup, EPOCH_CLEANUP),
        ):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        super().__init__(**kwargs)
        self.read_loss = read_loss
        self.epoch_cleanup = epoch_cleanup
        #: what is resolved once per epoch (the device, the choices of "auto"); empty outside an epoch
        self._epoch_state: dict[str, Any] = {}
        self._said = False  # whether _say_once has logged

    def _cheap(self, setting: str, cheap: str, device: torch.device | None = None) -> bool:
        """Whether ``setting`` (``"auto"`` or a choice) takes its ``cheap`` choice on ``device`` (the model's)."""
        if setting != "auto":
            return setting == cheap
        return reads_wait_for_device(self.device if device is None else device)

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
            # the device as resolved once for the epoch: model.device walks every parameter
            device = self._epoch_state.get("device") or self.device
            batch = _moved(dense_targets(batch, device, start, stop), device)
            # PyKEEN's _process_batch_static, less its two moves to model.device (already there; each call of
            # model.device walks every parameter: 4 ms a batch at the demo's size, 7 % of its training time)
            predictions = self.score_method(batch["pairs"], slice_size=slice_size, mode=self.mode)
            return (
                self.loss.process_lcwa_scores(
                    predictions=predictions,
                    labels=batch["target"],
                    label_smoothing=label_smoothing,
                    num_entities=self.num_targets,
                    weights=batch.get("weights"),
                )
                + self.model.collect_regularization_term()
            )
        return super()._process_batch(batch, start, stop, label_smoothing=label_smoothing, slice_size=slice_size)

    def _forward_pass(
        self,
        batch: Mapping[str, Any],
        start: int,
        stop: int,
        current_batch_size: int,
        label_smoothing: float,
        slice_size: int | None,
        backward: bool = True,
    ) -> float | torch.Tensor:
        """PyKEEN's forward and backward pass; with ``read_loss="epoch"`` the loss stays on the device (detached)."""
        read_per_epoch = self._epoch_state.get("read_per_epoch")
        if read_per_epoch is None:  # called outside an epoch of this loop
            read_per_epoch = self._cheap(self.read_loss, "epoch")
        if not read_per_epoch:
            return super()._forward_pass(batch, start, stop, current_batch_size, label_smoothing, slice_size, backward)
        loss = self._process_batch(batch, start, stop, label_smoothing=label_smoothing, slice_size=slice_size)
        if self.model.loss.reduction == "mean":  # as PyKEEN: sub-batch losses add up to the batch's mean
            loss = loss * ((stop - start) / current_batch_size)
        if backward:
            loss.backward()
        self.model.post_forward_pass()
        return loss.detach()

    def _train(self, *args, **kwargs):  # noqa: D102
        # PyKEEN's end-of-epoch gc.collect() skips what existed before training began (modules, data, the model),
        # and still sees everything training creates, between epochs too (evaluations, callbacks). Frozen only
        # when nobody froze objects before: unfreezing afterwards must not thaw someone else's.
        freeze = self._cheap(self.epoch_cleanup, "light") and gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            losses = super()._train(*args, **kwargs)
        finally:
            if freeze:
                gc.unfreeze()
        if not kwargs.get("only_size_probing"):
            self._say_if_not_best(kwargs.get("stopper"))
        return losses

    def _say_if_not_best(self, stopper: Stopper | None) -> None:
        """Warn when training ran to its last epoch past the early stopper's best one.

        PyKEEN's :class:`~pykeen.stoppers.EarlyStopper` loads its best weights back only when it stops the
        training; one that never stops leaves the last epoch's weights in the model (and what the pipeline
        tests then), and its saved best weights in a file nobody is told about.
        """
        if not isinstance(stopper, EarlyStopper) or stopper.stopped or stopper.best_epoch is None:
            return
        if stopper.best_epoch >= self._epoch:
            return
        logger.warning(
            "training ran to epoch %d without an early stop: the model holds that epoch's weights, not those of "
            "the best validation %s (%.4f at epoch %d), which PyKEEN's EarlyStopper loads back only when it stops "
            "the training. Those are in %s: model.load_state_dict(torch.load(path, weights_only=True)).",
            self._epoch,
            stopper.metric,
            stopper.best_metric,
            stopper.best_epoch,
            stopper.best_model_path,
        )

    def _train_epoch(self, *args, **kwargs) -> float:
        """PyKEEN's epoch; the summed device loss read once (``read_loss``), CUDA's cache kept (``epoch_cleanup``)."""
        device = self.device
        outer = self._epoch_state  # a nested call (a validation-loss callback) restores it
        self._epoch_state = dict(
            device=device,
            read_per_epoch=self._cheap(self.read_loss, "epoch", device),
            # read by _free_graph_and_cache, which PyKEEN calls at the epoch's end
            keep_cuda_cache=self._cheap(self.epoch_cleanup, "light", device)
            and not kwargs.get("only_size_probing", False),
        )
        self._say_once()
        try:
            loss = super()._train_epoch(*args, **kwargs)
        finally:
            self._epoch_state = outer
        if torch.is_tensor(loss):
            loss = loss.item()  # the epoch's one read of the loss
            if not math.isfinite(loss):
                raise NonFiniteLossError(
                    f"Loss is non-finite in epoch {kwargs.get('epoch')} (read once per epoch: read_loss="
                    f"{self.read_loss!r}; read_loss='batch' stops at the first such batch)."
                )
        return loss

    def _say_once(self) -> None:
        """Log, once per loop, where ``"auto"`` leaves PyKEEN's way (nothing changes silently)."""
        if self._said:
            return
        self._said = True
        cheap = [
            f"{name}={value!r} -> {choice!r}"
            for name, value, choice in (
                ("read_loss", self.read_loss, "epoch"),
                ("epoch_cleanup", self.epoch_cleanup, "light"),
            )
            if value == "auto" and self._cheap(value, choice)
        ]
        if cheap:
            logger.info(
                "training on %s: %s (PyKEEN's per-batch loss reads / full cleanup: read_loss='batch', "
                "epoch_cleanup='full')",
                self.device,
                ", ".join(cheap),
            )

    def _free_graph_and_cache(self) -> None:  # noqa: D102
        if self._epoch_state.get("keep_cuda_cache"):  # an epoch's end: the next epoch needs the same blocks
            self.model._free_graph_and_cache()
        else:  # PyKEEN's (the memory searches need CUDA's cache emptied to measure what fits)
            super()._free_graph_and_cache()
