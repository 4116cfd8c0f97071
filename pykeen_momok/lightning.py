"""MoMoK on several GPUs or nodes: PyTorch Lightning with DDP, ``python -m pykeen_momok.lightning``.

:class:`MoMoKLitModule` is PyKEEN's :class:`~pykeen.contrib.lightning.LCWALitModule` (LCWA 1-N training through
``score_t``, the model's loss and ``collect_regularization_term()``) with what MoMoK needs under DDP:

- the main optimiser gets ``model.get_grad_params()`` (PyKEEN's module hands it every parameter, the CLUB
  estimator's too);
- ``post_parameter_update()`` (the CLUB estimator's own Adam step) runs right after each optimiser step, on every
  rank. PyKEEN's module calls it from ``on_before_zero_grad``, which Lightning runs between the forward and the
  backward pass: the estimator would change weights that the pending backward pass still needs;
- DDP leaves the parameters outside the main optimiser alone (the estimator's: they are never all-reduced by its
  gradient hooks); instead the estimator's own gradients are averaged over the ranks just before its Adam step,
  so every rank takes the same step;
- BatchNorm running statistics, which each rank updates from its own batches, are averaged over the ranks before
  each validation and at the end of training (DDP's per-forward buffer broadcast is off: a collective in every
  forward would hang the ranks whose validation shard has a batch fewer);
- validation is PyKEEN's filtered :class:`~pykeen.evaluation.RankBasedEvaluator` on PyKEEN's 1-N evaluation
  dataset, sharded over the ranks without padding; the ranks are gathered before the metrics are computed, so the
  numbers are those of a single process (up to the order of float32 sums). They are logged as ``val_mrr``,
  ``val_hits_at_1``, ``val_hits_at_3``, ``val_hits_at_10`` (both sides, realistic ranks) for
  ``ModelCheckpoint(monitor="val_mrr")`` and early stopping;
- at the end of training a checksum of the model's ``state_dict`` is compared across the ranks
  (:attr:`MoMoKLitModule.rank_checksums`).

:func:`train` runs a PyKEEN experiment file (the ``configs/`` files) this way, keeps the checkpoint with the best
validation metric, tests it (sharded as well) and writes what ``pykeen-momok train`` writes: PyKEEN's results folder
(``results.json`` with the :class:`~pykeen.evaluation.RankBasedEvaluator` metrics dict, ``metadata.json``,
``trained_model.pkl``, ``training_triples/``) and ``momok_cli.json``, so ``pykeen-momok evaluate`` and ``predict`` take
the folder as it is, plus ``momok_lightning.json`` (ranks, checksums, validation history). ``--batch-size`` is per
process: the global batch is ``devices x num_nodes x batch_size``.

Needs PyTorch Lightning (``pip install "pykeen-momok[lightning]"``), the package ``pykeen.contrib.lightning`` imports.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import click
import torch
import torch.distributed as dist

try:
    import pytorch_lightning as pl
    from pykeen.contrib.lightning import LCWALitModule
except ImportError as error:  # pragma: no cover -- the tests extra installs it
    raise ImportError(
        f"pykeen_momok.lightning needs PyTorch Lightning, which pykeen.contrib.lightning imports ({error}): "
        f"pip install 'pykeen-momok[lightning]'"
    ) from error

from pykeen.evaluation import RankBasedEvaluator
from pykeen.evaluation.evaluation_loop import LCWAEvaluationLoop
from pykeen.evaluation.rank_based_evaluator import RankBasedMetricResults
from pykeen.losses import loss_resolver
from pykeen.pipeline import PipelineResult
from pykeen.stoppers.early_stopping import EarlyStoppingLogic
from pykeen.training import LCWATrainingLoop
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from . import recipes as recipes_module
from .cli import (
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    OptionError,
    _build_dataset,
    _check_dataset_name,
    _check_out_folder,
    _dataset_options,
    _dataset_spec,
    _jsonable,
    _metrics_table,
    _pipeline_metrics,
    _set_logging,
    _set_threads,
    _spec_option,
    _train_out_options,
)
from .lcwa import BatchedLCWAInstances, collate_batched, dense_targets
from .predict import CLI_FILE, CLI_FILE_VERSION, METRICS

__all__ = [
    "LIGHTNING_FILE",
    "VALIDATION_METRICS",
    "LightningSettings",
    "MoMoKLitModule",
    "SettingsError",
    "ShardSampler",
    "TerminateOnSigterm",
    "ValidationEarlyStopping",
    "ddp_strategy",
    "gather_metric_results",
    "lightning_settings",
    "main",
    "state_checksum",
    "train",
]

logger = logging.getLogger(__name__)

#: what :func:`train` adds to the results folder: world size, per-rank checksums, validation history, selection
LIGHTNING_FILE = "momok_lightning.json"
#: the validation metrics logged every validation, those ``evaluate`` reports (both sides, realistic ranks): logged
#: name -> PyKEEN's metric, ``val_mrr``, ``val_hits_at_1``, ``val_hits_at_3``, ``val_hits_at_10``
VALIDATION_METRICS: Mapping[str, str] = {
    "val_" + key.replace("inverse_harmonic_mean_rank", "mrr"): f"both.realistic.{key}" for key in METRICS.values()
}


# distributed helpers -------------------------------------------------------------------------------------------


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ShardSampler(DistributedSampler):
    """Every ``num_replicas``-th index from ``rank`` on: disjoint shards that together hold each index once.

    :class:`~torch.utils.data.DistributedSampler` pads the shards to equal length with repeated indices, which
    would count some evaluation triples twice. Being a ``DistributedSampler``, Lightning leaves it in place.
    """

    def __init__(self, dataset, *, num_replicas: int, rank: int) -> None:
        """Shard ``dataset`` (anything with a length) for ``rank`` of ``num_replicas``."""
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}")
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self) -> Iterator[int]:  # noqa: D105
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:  # noqa: D105
        return len(range(self.rank, len(self.dataset), self.num_replicas))


def gather_metric_results(evaluator: RankBasedEvaluator, num_entities: int) -> RankBasedMetricResults:
    """The metrics over the ranks every process accumulated in ``evaluator``, on every process; clears it.

    The ranks (and candidate counts) of all processes are gathered and the metrics computed from all of them
    together: every metric, not only the means, is then what a single process would have computed.

    :param num_entities: the number of candidates, for a process whose shard was empty
    """
    ranks = {key: list(values) for key, values in evaluator.ranks.items()}
    candidates = {key: list(values) for key, values in evaluator.num_candidates.items()}
    evaluator.clear()
    if _distributed():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (ranks, candidates))
        ranks, candidates = {}, {}
        for rank_part, candidate_part in gathered:
            for key, values in rank_part.items():
                ranks.setdefault(key, []).extend(values)
            for key, values in candidate_part.items():
                candidates.setdefault(key, []).extend(values)
    if not candidates:
        raise ValueError("no evaluation triple was ranked on any process: is the split empty?")
    evaluator.ranks.update(ranks)
    evaluator.num_candidates.update(candidates)
    evaluator.num_entities = num_entities
    return evaluator.finalize()


def _update_digest(digest, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor {tensor.dtype} {tuple(value.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        digest.update(b"{")
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _update_digest(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, list | tuple):
        digest.update(b"[")
        for item in value:
            _update_digest(digest, item)
        digest.update(b"]")
    else:
        digest.update(repr(value).encode())


def state_checksum(module: torch.nn.Module) -> str:
    """SHA-256 of a module's whole ``state_dict``: every tensor's bytes, dtype and shape, and the extra states.

    MoMoK's ``state_dict`` holds the CLUB estimator's weights and, as extra state, its Adam state.
    """
    digest = hashlib.sha256()
    _update_digest(digest, dict(module.state_dict()))
    return digest.hexdigest()


# the Lightning module ----------------------------------------------------------------------------------------


def _batch_norms(module: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


class MoMoKLitModule(LCWALitModule):
    """PyKEEN's LCWA Lightning module, made right for MoMoK under DDP, with rank-based validation and testing.

    The module docstring (:mod:`pykeen_momok.lightning`) lists what it changes and why. Use it with your own
    :class:`pytorch_lightning.Trainer`::

        import pytorch_lightning as pl
        from pykeen_momok.lightning import MoMoKLitModule, ddp_strategy

        module = MoMoKLitModule(dataset="SyntheticMMKG", model_kwargs=dict(embedding_dim=32, relation_dim=32))
        trainer = pl.Trainer(
            accelerator="gpu", devices=4, num_nodes=1, max_epochs=100, num_sanity_val_steps=0,
            strategy=ddp_strategy(),  # DDPStrategy(find_unused_parameters=True, forward_sync_buffers=False)
            callbacks=[pl.callbacks.ModelCheckpoint(monitor="val_mrr", mode="max")],
        )
        trainer.fit(module)
        trainer.test(module)  # module.test_results: PyKEEN's RankBasedMetricResults

    :func:`ddp_strategy` says why DDP needs those two settings; without them training fails or validation hangs.
    """

    def __init__(
        self,
        *,
        dataset,
        dataset_kwargs: Mapping[str, Any] | None = None,
        model: str = "MoMoK",
        model_kwargs: Mapping[str, Any] | None = None,
        loss: str | None = "MoMoKLoss",
        loss_kwargs: Mapping[str, Any] | None = None,
        batch_size: int = 512,
        learning_rate: float = 1e-3,
        label_smoothing: float = 0.0,
        optimizer: str | None = "adam",
        optimizer_kwargs: Mapping[str, Any] | None = None,
        evaluation_batch_size: int = 256,
        monitor: str = "mrr",
        random_seed: int | None = None,
    ) -> None:
        """Build the dataset (as PyKEEN's ``get_dataset`` resolves it), the loss and the model.

        :param dataset: a :class:`~pykeen.datasets.Dataset`, or a name with ``dataset_kwargs``; it needs inverse
            triples (MoMoK's datasets have them)
        :param model_kwargs: the model's keyword arguments (without ``loss``)
        :param loss: the loss (default: :class:`~pykeen_momok.losses.MoMoKLoss`), with ``loss_kwargs``
        :param batch_size: the training batch size *per process*
        :param learning_rate: the main optimiser's learning rate (``optimizer_kwargs`` without ``lr``)
        :param label_smoothing: PyKEEN's LCWA label smoothing (MoMoKLoss has its own, in ``loss_kwargs``)
        :param evaluation_batch_size: (side, triple) ranking tasks per evaluation batch, per process
        :param monitor: the validation metric logged as well, by any name PyKEEN's rank-based results resolve
            (``"mrr"``, ``"hits@10"``, ``"tail.optimistic.mrr"``, ...); :attr:`monitor_name` is its logged name
        :param random_seed: seeds the model's initialisation (the same on every rank); in training, rank ``i``
            draws its dropout and gating noise from ``random_seed + i``
        :raises ValueError: for a batch size or evaluation batch size below 1, or an unknown ``monitor`` metric
        """
        for name, value in (("batch_size", batch_size), ("evaluation_batch_size", evaluation_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        model_kwargs = dict(model_kwargs or {})
        if "loss" in model_kwargs:
            raise ValueError("give the loss as loss= and loss_kwargs=, not in model_kwargs")
        model_kwargs["loss"] = loss_resolver.make(loss, loss_kwargs)
        if random_seed is not None:
            model_kwargs.setdefault("random_seed", random_seed)
        super().__init__(
            dataset=dataset,
            dataset_kwargs=dataset_kwargs,
            model=model,
            model_kwargs=model_kwargs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            label_smoothing=label_smoothing,
            optimizer=optimizer,
            optimizer_kwargs=optimizer_kwargs,
        )
        self.evaluation_batch_size = evaluation_batch_size
        self.random_seed = random_seed
        try:
            key = RankBasedMetricResults.key_from_string(monitor)
        except (KeyError, ValueError) as error:
            raise ValueError(f"unknown validation metric {monitor!r}: {error}") from None
        self.monitor_key = f"{key.side}.{key.rank_type}.{key.metric}"
        named = {value: name for name, value in VALIDATION_METRICS.items()}
        #: the logged name of the monitored validation metric (``val_mrr`` for ``"mrr"``)
        self.monitor_name = named.get(self.monitor_key) or "val_" + self.monitor_key.replace(".", "_")
        self.logged_metrics = {**VALIDATION_METRICS, self.monitor_name: self.monitor_key}
        #: per validation: the epoch (1-based, as PyKEEN counts) and the logged metrics
        self.validation_history: list[dict[str, float]] = []
        #: per epoch: the mean training loss over all ranks' batches (PyKEEN's ``losses``)
        self.epoch_losses: list[float] = []
        #: the test metrics of the last :meth:`pytorch_lightning.Trainer.test`, the same on every rank
        self.test_results: RankBasedMetricResults | None = None
        #: the state_dict checksum of every rank at the end of training (:func:`state_checksum`), by rank
        self.rank_checksums: list[str] = []
        self._evaluation_loops: dict[str, LCWAEvaluationLoop] = {}
        self._estimator_hook = None
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0

    # -- parameters: the main optimiser's, and the CLUB estimator's own ----------------------------------------
    def _own_optimizer_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Trainable parameters the main optimiser leaves alone (MoMoK: the CLUB estimator's), with their names."""
        main = {id(p) for p in self.model.get_grad_params()}
        return [(name, p) for name, p in self.model.named_parameters() if p.requires_grad and id(p) not in main]

    def configure_optimizers(self):  # noqa: D102
        from pykeen.optimizers import optimizer_resolver

        return optimizer_resolver.make(
            self.optimizer, self.optimizer_kwargs, params=self.model.get_grad_params(), lr=self.learning_rate
        )

    def setup(self, stage: str) -> None:  # noqa: D102
        # runs before the strategy wraps this module in DDP: DDP neither broadcasts these parameters nor registers
        # gradient hooks on them (their optimiser is the model's own, stepped in post_parameter_update)
        names = [f"model.{name}" for name, _ in self._own_optimizer_parameters()]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, names)

    def on_fit_start(self) -> None:  # noqa: D102
        if _distributed():
            world = dist.get_world_size()
            # DDP synchronised everything else when it wrapped the module; these start the same on every rank too
            for _, parameter in self._own_optimizer_parameters():
                dist.broadcast(parameter.data, src=0)
            estimator = getattr(self.model, "mutual_information", None)
            if estimator is not None and self._estimator_hook is None:
                parameters = list(estimator.estimator.parameters())

                def average_gradients(optimizer, args, kwargs) -> None:
                    # one flat all-reduce: the gradients plus, per parameter, whether this rank had one
                    flat = torch.cat(
                        [
                            torch.cat([p.grad.reshape(-1), p.grad.new_ones(1)])
                            if p.grad is not None
                            else p.new_zeros(p.numel() + 1)
                            for p in parameters
                        ]
                    )
                    dist.all_reduce(flat)
                    offset = 0
                    for p in parameters:
                        values, present = flat[offset : offset + p.numel()], flat[offset + p.numel()]
                        offset += p.numel() + 1
                        if present > 0:  # a rank without a gradient counts as zeros, as DDP counts it
                            p.grad = (values / world).view_as(p).clone()

                self._estimator_hook = estimator.optimizer.register_step_pre_hook(average_gradients)
            if self.random_seed is not None:
                # the same initialisation everywhere (seeded at construction), but independent dropout and gating
                # noise per rank; the training data's shuffling has its own seed, the same on every rank
                torch.manual_seed(self.random_seed + self.global_rank)

    def _remove_estimator_hook(self) -> None:
        # a closure cannot be pickled with the model (trained_model.pkl)
        if self._estimator_hook is not None:
            self._estimator_hook.remove()
            self._estimator_hook = None

    def on_fit_end(self) -> None:  # noqa: D102
        self._remove_estimator_hook()
        checksum = state_checksum(self.model)
        if _distributed():
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, checksum)
            self.rank_checksums = list(gathered)
        else:
            self.rank_checksums = [checksum]
        if len(set(self.rank_checksums)) > 1:
            warnings.warn(
                f"the ranks ended training with different model weights (state_dict checksums by rank: "
                f"{self.rank_checksums}); the results are rank 0's",
                RuntimeWarning,
                stacklevel=2,
            )

    def teardown(self, stage: str) -> None:  # noqa: D102
        self._remove_estimator_hook()

    # -- training ------------------------------------------------------------------------------------------------
    def on_before_zero_grad(self, optimizer) -> None:  # noqa: D102
        # PyKEEN's module calls post_parameter_update here, between forward and backward: see optimizer_step
        pass

    def optimizer_step(self, *args, **kwargs) -> None:  # noqa: D102
        super().optimizer_step(*args, **kwargs)
        # after every step of the main optimiser, on every rank: MoMoK's estimator step (and PyKEEN's constraints)
        self.model.post_parameter_update()

    def on_train_epoch_start(self) -> None:  # noqa: D102
        self._loss_sum, self._loss_count = None, 0

    def _dataloader(self, triples_factory, shuffle: bool = False) -> DataLoader:
        """The training batches of the batched LCWA loop (:mod:`pykeen_momok.lcwa`): PyKEEN's, built in one step.

        Lightning gives it its distributed sampler as it does PyKEEN's loader; the targets are scattered into
        their dense form on the rank's device in :meth:`training_step`.
        """
        return DataLoader(
            dataset=BatchedLCWAInstances.from_triples_factory(triples_factory),
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=collate_batched,
        )

    def training_step(self, batch, batch_idx):  # noqa: D102
        if "target" not in batch:  # a batched LCWA batch: its targets as coordinates
            batch = dense_targets(batch, self.device)
        loss = LCWATrainingLoop._process_batch_static(
            model=self.model,
            score_method=self.model.score_t,
            loss=self.loss,
            num_targets=self.model.num_entities,
            mode=self.mode,
            batch=batch,
            start=None,
            stop=None,
            label_smoothing=self.label_smoothing,
            slice_size=None,
        )
        size = int(batch["pairs"].shape[0])
        self.log("train_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=size)
        weighted = loss.detach() * size
        self._loss_sum = weighted if self._loss_sum is None else self._loss_sum + weighted
        self._loss_count += size
        return loss

    def on_train_epoch_end(self) -> None:  # noqa: D102
        if self._loss_sum is None:
            return
        totals = torch.stack([self._loss_sum.float(), self._loss_sum.new_tensor(float(self._loss_count))])
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        self.epoch_losses.append(float(totals[0] / totals[1]))

    def _synchronise_batch_norm_statistics(self) -> None:
        """Average the BatchNorm running statistics over the ranks (each rank updated them from its own batches)."""
        if not _distributed():
            return
        world = dist.get_world_size()
        with torch.no_grad():
            for norm in _batch_norms(self.model):
                for statistic in (norm.running_mean, norm.running_var):
                    if statistic is not None:
                        dist.all_reduce(statistic)
                        statistic /= world
                if norm.num_batches_tracked is not None:
                    dist.broadcast(norm.num_batches_tracked, src=0)

    def on_train_end(self) -> None:  # noqa: D102
        self._synchronise_batch_norm_statistics()

    # -- evaluation: sharded over the ranks, gathered before the metrics --------------------------------------
    def _evaluation_loop(self, split: str) -> LCWAEvaluationLoop:
        """PyKEEN's 1-N evaluation of ``"validation"`` or ``"testing"``, filtered as PyKEEN's pipeline filters.

        Validation is filtered by the training triples (as PyKEEN's early stopper does), testing by the training
        and validation triples (as ``pipeline()`` does); each split by its own triples as well.
        """
        if split not in self._evaluation_loops:
            factory = getattr(self.dataset, split)
            if factory is None:
                raise ValueError(f"the dataset has no {split} split")
            others = [self.dataset.training.mapped_triples]
            if split == "testing" and self.dataset.validation is not None:
                others.append(self.dataset.validation.mapped_triples)
            self._evaluation_loops[split] = LCWAEvaluationLoop(
                triples_factory=factory,
                evaluator=RankBasedEvaluator(filtered=True),
                additional_filter_triples=others,
                model=self.model,
            )
        return self._evaluation_loops[split]

    def _evaluation_dataloader(self, split: str) -> DataLoader:
        loop = self._evaluation_loop(split)
        trainer = self.trainer
        if len(loop.dataset) < trainer.world_size:
            # a rank without a batch would skip the loop, and the others would wait for it in the gather
            raise ValueError(
                f"the {split} split has {len(loop.dataset)} ranking tasks (triples x sides), fewer than the "
                f"{trainer.world_size} processes"
            )
        return DataLoader(
            loop.dataset,
            batch_size=self.evaluation_batch_size,
            sampler=ShardSampler(loop.dataset, num_replicas=trainer.world_size, rank=trainer.global_rank),
            collate_fn=loop.get_collator(),
        )

    def val_dataloader(self):  # noqa: D102
        if self.dataset.validation is None:
            return []
        return self._evaluation_dataloader("validation")

    def test_dataloader(self):  # noqa: D102
        return self._evaluation_dataloader("testing")

    def validation_step(self, batch, batch_idx, *args, **kwargs) -> None:  # noqa: D102
        self._evaluation_loop("validation").process_batch(batch)

    def test_step(self, batch, batch_idx, *args, **kwargs) -> None:  # noqa: D102
        self._evaluation_loop("testing").process_batch(batch)

    def on_validation_epoch_start(self) -> None:  # noqa: D102
        if not self.trainer.sanity_checking:
            self._synchronise_batch_norm_statistics()

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        evaluator = self._evaluation_loop("validation").evaluator
        if self.trainer.sanity_checking:  # a few batches only: no metrics from them
            evaluator.clear()
            return
        results = gather_metric_results(evaluator, self.model.num_entities)
        values = {name: float(results.get_metric(key)) for name, key in self.logged_metrics.items()}
        for name, value in values.items():
            # the same value on every rank: "max" keeps it exact, and every rank's callbacks see it
            self.log(name, value, prog_bar=name == self.monitor_name, sync_dist=True, reduce_fx="max")
        self.validation_history.append({"epoch": self.current_epoch + 1, **values})

    def on_test_epoch_end(self) -> None:  # noqa: D102
        results = gather_metric_results(self._evaluation_loop("testing").evaluator, self.model.num_entities)
        self.test_results = results
        for name, key in VALIDATION_METRICS.items():
            self.log("test" + name.removeprefix("val"), float(results.get_metric(key)), sync_dist=True, reduce_fx="max")


class TerminateOnSigterm(pl.Callback):
    """On SIGTERM, end every process of the run at once, in place of Lightning's handling, which can hang DDP.

    Lightning 2.6 answers SIGTERM with a broadcast from inside the signal handler. Where every rank gets the signal
    (``timeout``, a container or job being stopped), the ranks' collectives stop matching and the run hangs until
    it is killed: two CPU processes (gloo) under ``timeout 25`` were still running 60 s later. This handler passes
    the signal on to the processes Lightning launched and ends this one by the signal, as a plain Python process
    ends; the run's files are left as they are. Lightning installs its handler at the start of every stage
    (fitting, validating, testing, predicting), so this one is installed right after, at each stage's start; its
    teardown puts back whatever was there before Lightning's (a handler of the calling application is not called
    while a stage runs).

    Under SLURM (where Lightning's environment requeues by default) Lightning's handling stays: its SIGUSR1 handler
    saves a checkpoint and requeues the job, and ending the process on the SIGTERM that follows could cut the save.
    """

    @staticmethod
    def _install(trainer: pl.Trainer) -> None:
        # where Lightning itself looks (its signal connector): the strategy of a single device has no environment
        environment = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
        if getattr(environment, "auto_requeue", False) or threading.current_thread() is not threading.main_thread():
            return

        def terminate(signum: int, frame: Any) -> None:
            logger.warning("rank %d received signal %d: ending the run's processes", trainer.global_rank, signum)
            launcher = trainer.strategy.launcher
            if launcher is not None:
                launcher.kill(signum)  # the ranks Lightning started from this process
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

        signal.signal(signal.SIGTERM, terminate)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        self._install(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        self._install(trainer)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        self._install(trainer)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        self._install(trainer)


class ValidationEarlyStopping(pl.Callback):
    """Stop when a validation metric stops improving: PyKEEN's early-stopping rule, on Lightning's metric logs.

    The rule is PyKEEN's :class:`~pykeen.stoppers.early_stopping.EarlyStoppingLogic` (``patience`` validations
    without a relative improvement of more than ``relative_delta``), so a config's ``stopper_kwargs`` mean here what
    they mean to ``pipeline()``. Lightning's ``EarlyStopping`` knows only an absolute ``min_delta``.
    """

    def __init__(
        self,
        monitor: str,
        *,
        metric: str,
        frequency: int,
        patience: int = 2,
        relative_delta: float = 0.01,
        larger_is_better: bool = True,
    ) -> None:
        """Watch the logged metric ``monitor`` (PyKEEN's name for it: ``metric``; validated every ``frequency``)."""
        super().__init__()
        self.monitor, self.metric, self.frequency = monitor, metric, frequency
        self.logic = EarlyStoppingLogic(
            patience=patience, relative_delta=relative_delta, larger_is_better=larger_is_better
        )
        self.results: list[float] = []
        self.stopped = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # noqa: D102
        if trainer.sanity_checking:
            return
        if self.monitor not in trainer.callback_metrics:
            raise KeyError(
                f"early stopping watches {self.monitor!r}, which the module did not log; logged: "
                f"{sorted(trainer.callback_metrics)}"
            )
        value = float(trainer.callback_metrics[self.monitor])
        self.results.append(value)
        stop = self.logic.report_result(metric=value, epoch=trainer.current_epoch + 1)
        # every rank sees the same value; the decision is still made together, so no rank trains on alone
        if trainer.strategy.reduce_boolean_decision(stop, all=False):
            self.stopped = True
            trainer.should_stop = True

    def summary(self) -> dict[str, Any]:
        """The summary PyKEEN's ``EarlyStopper.get_summary_dict`` writes into ``results.json`` as ``"stopper"``."""
        logic = self.logic
        return dict(
            frequency=self.frequency,
            patience=logic.patience,
            remaining_patience=logic.remaining_patience,
            relative_delta=logic.relative_delta,
            metric=self.metric,
            larger_is_better=logic.larger_is_better,
            results=list(self.results),
            stopped=self.stopped,
            best_epoch=logic.best_epoch,
            best_metric=logic.best_metric,
        )

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return self.summary()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        self.results = list(state_dict["results"])
        self.stopped = bool(state_dict["stopped"])
        self.logic.best_epoch = state_dict["best_epoch"]
        self.logic.best_metric = state_dict["best_metric"]
        self.logic.remaining_patience = state_dict["remaining_patience"]


# experiment files -> settings ----------------------------------------------------------------------------------


class SettingsError(ValueError):
    """Settings this entry point cannot run; the message says which and why."""


#: per pipeline() argument this entry point takes: the keys it takes inside it (None: any)
_SUPPORTED: Mapping[str, frozenset[str] | None] = {
    "dataset": None,
    "dataset_kwargs": None,
    "model": None,
    "model_kwargs": None,
    "loss": None,
    "loss_kwargs": None,
    "training_loop": None,
    # the batched loop's host-side settings (per-epoch loss reads, the end-of-epoch cleanup): Lightning runs its own
    # loop, which has neither PyKEEN's per-batch loss reads nor its gc.collect(); accepted, logged as not applying
    "training_loop_kwargs": frozenset({"read_loss", "epoch_cleanup"}),
    "optimizer": None,
    "optimizer_kwargs": None,
    "training_kwargs": frozenset({"num_epochs", "batch_size", "label_smoothing"}),
    "epochs": None,
    "stopper": None,
    "stopper_kwargs": frozenset({"frequency", "patience", "metric", "relative_delta", "larger_is_better"}),
    "evaluator": None,
    "evaluator_kwargs": frozenset({"filtered"}),
    "evaluation_kwargs": frozenset({"batch_size"}),
    "random_seed": None,
}
#: PyKEEN's EarlyStopper defaults, for the stopper_kwargs a config leaves out
_STOPPER_DEFAULTS = dict(frequency=10, patience=2, metric="hits_at_k", relative_delta=0.01, larger_is_better=True)


@dataclasses.dataclass
class LightningSettings:
    """What :func:`train` runs: the :class:`MoMoKLitModule` arguments and the trainer's schedule."""

    #: keyword arguments of :class:`MoMoKLitModule` (without the dataset)
    module_kwargs: dict[str, Any]
    num_epochs: int
    #: PyKEEN's early stopping (``stopper_kwargs`` with its defaults filled in), or None
    stopper: dict[str, Any] | None
    random_seed: int


def lightning_settings(pipeline_kwargs: Mapping[str, Any], *, where: str = "the config") -> LightningSettings:
    """Map ``pipeline()`` keyword arguments (an experiment file's ``"pipeline"``) onto :class:`LightningSettings`.

    :raises SettingsError: for an argument this entry point does not run (naming it and what it takes), a training loop
        other than LCWA, a stopper other than ``"early"``, an evaluator other than the rank-based one, or unfiltered
        evaluation
    """
    settings = dict(pipeline_kwargs)
    for key, value in settings.items():
        if key not in _SUPPORTED:
            raise SettingsError(
                f"{where}: {key!r} is not supported by the Lightning entry point; it takes "
                f"{', '.join(sorted(_SUPPORTED))}"
            )
        allowed = _SUPPORTED[key]
        if allowed is not None and value:
            extra = sorted(set(value) - allowed)
            if extra:
                raise SettingsError(f"{where}: {key} {extra} not supported here; it takes {sorted(allowed)}")
    if settings.get("training_loop_kwargs"):
        logger.info(
            "%s: training_loop_kwargs %s apply to PyKEEN's training loop, not to Lightning's: not used",
            where,
            settings["training_loop_kwargs"],
        )
    loop = str(settings.get("training_loop") or "lcwa").lower()
    if loop not in ("lcwa", "lcwatrainingloop", "batchedlcwa", "batchedlcwatrainingloop"):
        raise SettingsError(
            f"{where}: training_loop {settings['training_loop']!r}: the Lightning entry point trains LCWA only"
        )
    evaluator = str(settings.get("evaluator") or "rankbased").lower().replace("_", "")
    if evaluator not in ("rankbased", "rankbasedevaluator"):
        raise SettingsError(f"{where}: evaluator {settings['evaluator']!r}: only the rank-based evaluator is supported")
    if not (settings.get("evaluator_kwargs") or {}).get("filtered", True):
        raise SettingsError(f"{where}: evaluator_kwargs filtered=false: the Lightning entry point evaluates filtered")
    training = dict(settings.get("training_kwargs") or {})
    num_epochs = settings.get("epochs") if settings.get("epochs") is not None else training.get("num_epochs", 5)
    optimizer_kwargs = dict(settings.get("optimizer_kwargs") or {})
    learning_rate = optimizer_kwargs.pop("lr", 1e-3)
    stopper = settings.get("stopper")
    stopper_settings = None
    if stopper is not None:
        if str(stopper).lower() not in ("early", "earlystopper"):
            raise SettingsError(f"{where}: stopper {stopper!r}: only early stopping ('early') is supported")
        stopper_settings = {**_STOPPER_DEFAULTS, **(settings.get("stopper_kwargs") or {})}
        try:
            RankBasedMetricResults.key_from_string(str(stopper_settings["metric"]))
        except (KeyError, ValueError) as error:
            raise SettingsError(f"{where}: stopper_kwargs metric {stopper_settings['metric']!r}: {error}") from None
    random_seed = settings.get("random_seed")
    module_kwargs = dict(
        model=settings.get("model") or "MoMoK",
        model_kwargs=dict(settings.get("model_kwargs") or {}),
        loss=settings.get("loss") or "MoMoKLoss",
        loss_kwargs=dict(settings.get("loss_kwargs") or {}),
        batch_size=training.get("batch_size", 256),
        learning_rate=learning_rate,
        label_smoothing=training.get("label_smoothing", 0.0),
        optimizer=settings.get("optimizer") or "adam",
        optimizer_kwargs=optimizer_kwargs,
        evaluation_batch_size=(settings.get("evaluation_kwargs") or {}).get("batch_size") or 256,
        monitor=stopper_settings["metric"] if stopper_settings else "mrr",
    )
    return LightningSettings(
        module_kwargs=module_kwargs,
        num_epochs=num_epochs,
        stopper=stopper_settings,
        random_seed=random_seed if random_seed is not None else 10010,
    )


# the run -----------------------------------------------------------------------------------------------------


def ddp_strategy():
    """Lightning's DDP strategy as MoMoK needs it: unused parameters allowed, no buffer broadcast in ``forward``.

    Some settings leave trainable weights out of the forward pass (``gating_noise=False``: the gates' noise
    weights), which DDP refuses unless told to look for them. A buffer broadcast in every forward pass is a
    collective that would hang validation, whose shards may differ by a batch; :class:`MoMoKLitModule` averages the
    BatchNorm statistics itself (torch >= 2.13 calls that ``forward_sync_buffers=False``, earlier releases
    ``broadcast_buffers=False``).
    """
    import inspect

    from pytorch_lightning.strategies import DDPStrategy

    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return DDPStrategy(find_unused_parameters=True, forward_sync_buffers=False)
    return DDPStrategy(find_unused_parameters=True, broadcast_buffers=False)


def _best_state(trainer: pl.Trainer, checkpoint: pl.callbacks.ModelCheckpoint | None) -> dict[str, Any] | None:
    """Rank 0 reads the best checkpoint and hands it to every rank (no shared disk needed).

    Returns its ``state_dict``, and where it came from (the path, the epoch counted from 1 as PyKEEN counts, the
    optimiser steps, the score).
    """
    best = None
    if checkpoint is not None and trainer.global_rank == 0 and checkpoint.best_model_path:
        stored = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        best = {
            "state_dict": stored["state_dict"],
            "checkpoint": checkpoint.best_model_path,
            "epoch": int(stored["epoch"]) + 1,
            "optimizer_steps_per_process": int(stored["global_step"]),
            "score": float(checkpoint.best_model_score),
        }
    return trainer.strategy.broadcast(best, src=0)


def train(
    settings: LightningSettings,
    dataset,
    out: str | pathlib.Path,
    *,
    devices: int = 1,
    num_nodes: int = 1,
    accelerator: str = "auto",
    validation_frequency: int | None = None,
    progress: bool = True,
    cli_info: Mapping[str, Any] | None = None,
) -> PipelineResult | None:
    """Train, select by validation, test, and (rank 0) write the results folder; see the module docstring.

    Every process runs this function (Lightning starts the other local ones by running the same command again, or
    ``torchrun``/SLURM start them all).

    :param dataset: the built dataset (:meth:`~pykeen_momok.predict.DatasetSpec.build`)
    :param out: the results folder
    :param validation_frequency: validate every this many epochs (``None``: the stopper's frequency, else every
        epoch; 0: never, the final weights are tested). The best validated checkpoint is the model tested and saved.
    :param cli_info: what ``momok_cli.json`` says besides the model's heads and sizes (the dataset spec, the
        settings); not written when None
    :return: the results (on rank 0; None on the other ranks)
    :raises SettingsError: for early stopping without a validation split or with ``validation_frequency=0``, or
        when the module cannot be built with the settings (unknown model or loss arguments, ...)
    """
    out = pathlib.Path(out)
    stopper = settings.stopper
    if validation_frequency is None:
        validation_frequency = int(stopper["frequency"]) if stopper else 1
    if dataset.validation is None and validation_frequency:
        if stopper:
            raise SettingsError("early stopping needs a validation split, and the dataset has none")
        validation_frequency = 0
    if stopper and not validation_frequency:
        raise SettingsError("early stopping needs validation: a validation frequency of 0 turns it off")
    pl.seed_everything(settings.random_seed, workers=True, verbose=False)
    try:
        module = MoMoKLitModule(dataset=dataset, random_seed=settings.random_seed, **settings.module_kwargs)
    except (ValueError, TypeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise SettingsError(
            f"the settings were refused before training started: {type(error).__name__}: {message}"
        ) from error
    initial_checksum = state_checksum(module.model)

    callbacks: list[pl.Callback] = [TerminateOnSigterm()]
    checkpoint = early = None
    if validation_frequency:
        larger = bool(stopper["larger_is_better"]) if stopper else True
        checkpoint = pl.callbacks.ModelCheckpoint(
            dirpath=out / "checkpoints",
            filename="best-{epoch}",
            monitor=module.monitor_name,
            mode="max" if larger else "min",
            save_top_k=1,
            save_on_train_epoch_end=False,
        )
        callbacks.append(checkpoint)
        if stopper:
            early = ValidationEarlyStopping(
                module.monitor_name,
                metric=str(stopper["metric"]),
                frequency=validation_frequency,
                patience=int(stopper["patience"]),
                relative_delta=float(stopper["relative_delta"]),
                larger_is_better=larger,
            )
            callbacks.append(early)
    from pytorch_lightning.loggers import CSVLogger
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    try:
        trainer = pl.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=ddp_strategy() if devices * num_nodes > 1 else "auto",
            max_epochs=settings.num_epochs,
            log_every_n_steps=1,  # the per-step training loss into lightning_logs/metrics.csv
            check_val_every_n_epoch=validation_frequency or 1,
            limit_val_batches=1.0 if validation_frequency else 0,
            num_sanity_val_steps=0,
            callbacks=callbacks,
            enable_checkpointing=checkpoint is not None,
            logger=CSVLogger(save_dir=str(out), name="", version="lightning_logs"),
            enable_progress_bar=progress,
            default_root_dir=str(out),
        )
    except MisconfigurationException as error:
        # e.g. GPUs asked for where there are none, or more devices than there are
        raise SettingsError(
            f"Lightning refused accelerator={accelerator!r}, devices={devices}, num_nodes={num_nodes}: {error}"
        ) from None
    with warnings.catch_warnings():
        # the data are in memory: worker processes would only copy them
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        start = time.perf_counter()
        trainer.fit(module)
        train_seconds = time.perf_counter() - start
        final_checksums = list(module.rank_checksums)
        best = _best_state(trainer, checkpoint)
        if best is not None:
            module.load_state_dict(best.pop("state_dict"))
        start = time.perf_counter()
        trainer.test(module, verbose=False)
        evaluate_seconds = time.perf_counter() - start
    if trainer.global_rank != 0:
        return None

    model = module.model.cpu()
    result = _LightningPipelineResult(
        random_seed=settings.random_seed,
        model=model,
        training=dataset.training,
        training_loop=None,
        losses=module.epoch_losses,
        metric_results=module.test_results,
        train_seconds=train_seconds,
        evaluate_seconds=evaluate_seconds,
        stopper_summary=early.summary() if early is not None else None,
    )
    out.mkdir(parents=True, exist_ok=True)
    result.save_to_directory(out)
    estimator = getattr(model, "mutual_information", None)
    estimator_steps = None
    if estimator is not None:
        steps = [state.get("step") for state in estimator.optimizer.state.values()]
        estimator_steps = int(steps[0]) if steps else 0
    info = {
        "world_size": trainer.world_size,
        "devices": devices,
        "num_nodes": num_nodes,
        "accelerator": type(trainer.accelerator).__name__,
        "batch_size_per_process": settings.module_kwargs["batch_size"],
        "global_batch_size": settings.module_kwargs["batch_size"] * trainer.world_size,
        "epochs_trained": trainer.current_epoch,
        "optimizer_steps_per_process": trainer.global_step,
        "estimator_steps": estimator_steps,
        "initial_model_checksum": initial_checksum,
        "rank_checksums_after_training": final_checksums,
        "ranks_agree": len(set(final_checksums)) == 1,
        "validation_frequency": validation_frequency,
        "monitor": module.monitor_name if checkpoint is not None else None,
        "validation": module.validation_history,
        # the model tested and saved: the best validated checkpoint, else the weights after the last epoch
        "selected": best if best is not None else "final weights",
        "saved_model_checksum": state_checksum(model),
    }
    (out / LIGHTNING_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if cli_info is not None:
        cli = {
            "version": CLI_FILE_VERSION,
            **cli_info,
            "random_seed": settings.random_seed,
            "heads": list(getattr(model, "head_names", ())),
            "num_entities": int(model.num_entities),
            "num_relations": int(model.num_relations),
            "evaluation_batch_size": settings.module_kwargs["evaluation_batch_size"],
        }
        (out / CLI_FILE).write_text(json.dumps(cli, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result


@dataclasses.dataclass
class _LightningPipelineResult(PipelineResult):
    """PyKEEN's pipeline result, so its own writer writes the folder; the stopper summary from our callback."""

    stopper_summary: dict[str, Any] | None = None

    def _get_results(self) -> Mapping[str, Any]:
        results = dict(super()._get_results())
        if self.stopper_summary is not None:
            results["stopper"] = self.stopper_summary
        return results


# the command ---------------------------------------------------------------------------------------------------


@click.command(
    context_settings=dict(help_option_names=["-h", "--help"], max_content_width=110),
    help="Train MoMoK with PyTorch Lightning on DEVICES processes per node and NUM_NODES nodes (DDP), select the "
    "checkpoint with the best validation metric, test it and write what `pykeen-momok train` writes (PyKEEN's "
    "results folder plus momok_cli.json), and momok_lightning.json.\n\n"
    "The settings are a PyKEEN experiment file (--config, e.g. configs/momok_mkgy_fast.json); LCWA training only. "
    "--batch-size is per process: the global batch is DEVICES x NUM_NODES x batch size.\n\n"
    "\b\nOne node, 4 GPUs:\n"
    "  python -m pykeen_momok.lightning --config configs/momok_mkgy_fast.json --devices 4 -o runs/mkgy\n"
    "Two nodes (run on each, NODE_RANK 0 and 1):\n"
    "  MASTER_ADDR=node0 MASTER_PORT=29500 NODE_RANK=0 python -m pykeen_momok.lightning \\\n"
    "      --config configs/momok_mkgy_fast.json --devices 4 --num-nodes 2 -o runs/mkgy",
)
@click.option(
    "--config",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
    help='a PyKEEN experiment JSON file ({"metadata": ..., "pipeline": {...}}), as in configs/.',
)
@_dataset_options
@click.option(
    "--devices",
    type=POSITIVE,
    default=1,
    show_default=True,
    help="processes (GPUs, or CPU processes with --accelerator cpu) per node.",
)
@click.option("--num-nodes", type=POSITIVE, default=1, show_default=True, help="nodes.")
@click.option(
    "--accelerator",
    type=click.Choice(["auto", "cpu", "gpu"]),
    default="auto",
    show_default=True,
    help="auto: the GPUs if there are any, else the CPU (gloo).",
)
@click.option("--epochs", type=POSITIVE, help="training epochs (default: the config's).")
@click.option("--batch-size", type=POSITIVE, help="training batch size per process (default: the config's).")
@click.option("--eval-batch-size", type=POSITIVE, help="evaluation batch size per process (default: the config's).")
@click.option(
    "--val-every",
    type=NON_NEGATIVE,
    help="validate every N epochs; 0: never (the final weights are tested). Default: the config's early "
    "stopping frequency, else 1.",
)
@click.option("--seed", type=SEED, help="random seed (default: the config's, else 10010).")
@click.option(
    "--threads",
    type=NON_NEGATIVE,
    default=0,
    show_default=True,
    help="torch CPU threads per process; 0 leaves the default.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Lightning's progress bar.")
@_train_out_options
@click.option("-v", "--verbose", is_flag=True, help="show PyKEEN's INFO log messages.")
def command(
    config,
    dataset,
    directory,
    dataset_kwargs,
    devices,
    num_nodes,
    accelerator,
    epochs,
    batch_size,
    eval_batch_size,
    val_every,
    seed,
    threads,
    progress,
    out,
    overwrite,
    verbose,
) -> int:
    _check_out_folder(out, overwrite)
    try:
        base = recipes_module.load_experiment_config(config)
    except recipes_module.ConfigError as error:
        raise OptionError(str(error), param_hint="--config") from None
    pipeline_kwargs = recipes_module.merge(dict(recipes_module.RECOMMENDED_DEFAULTS), base)
    config_dataset = pipeline_kwargs.pop("dataset", None)
    config_dataset_kwargs = pipeline_kwargs.pop("dataset_kwargs", None) or {}
    if dataset is None and directory is None:
        if config_dataset is None:
            raise click.UsageError("give the dataset: --dataset NAME, --directory FOLDER, or a --config naming one")
        _check_dataset_name(config_dataset, option="--config")
        dataset = config_dataset
    inherited = (
        config_dataset_kwargs if directory is None and recipes_module.same_dataset(dataset, config_dataset) else {}
    )
    spec = _dataset_spec(dataset, directory, recipes_module.merge(inherited, dataset_kwargs or {}))
    training_kwargs = dict(pipeline_kwargs.get("training_kwargs") or {})
    if pipeline_kwargs.get("epochs") is not None:
        training_kwargs["num_epochs"] = pipeline_kwargs.pop("epochs")
    for key, value in (("num_epochs", epochs), ("batch_size", batch_size)):
        if value is not None:
            training_kwargs[key] = value
    pipeline_kwargs["training_kwargs"] = training_kwargs
    if eval_batch_size is not None:
        pipeline_kwargs["evaluation_kwargs"] = {
            **(pipeline_kwargs.get("evaluation_kwargs") or {}),
            "batch_size": eval_batch_size,
        }
    if seed is not None:
        pipeline_kwargs["random_seed"] = seed
    try:
        settings = lightning_settings(pipeline_kwargs, where=repr(str(config)))
    except SettingsError as error:
        raise OptionError(str(error), param_hint="--config") from None
    _set_logging(verbose)
    if threads:
        # Lightning's launcher sets each process's threads (cores / processes) unless OMP_NUM_THREADS is set
        os.environ["OMP_NUM_THREADS"] = str(threads)
    _set_threads(threads)
    built = _build_dataset(spec, _spec_option(spec))
    try:
        result = train(
            settings,
            built,
            out,
            devices=devices,
            num_nodes=num_nodes,
            accelerator=accelerator,
            validation_frequency=val_every,
            progress=progress,
            cli_info={
                "dataset": spec.to_json(),
                "recipe": None,
                "config": str(config.resolve()),
                "pipeline": _jsonable(pipeline_kwargs),
                "launcher": "pykeen_momok.lightning",
            },
        )
    except SettingsError as error:
        raise click.UsageError(str(error)) from None
    if result is not None:
        click.echo(f"\nTest set of the {spec.describe()}: filtered, realistic ranks")
        click.echo(_metrics_table(_pipeline_metrics(result)))
        click.echo(f"\nSaved to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pykeen_momok.lightning``: the exit status (usage errors: 2, without a traceback)."""
    try:
        value = command.main(
            args=list(argv) if argv is not None else None,
            prog_name="python -m pykeen_momok.lightning",
            standalone_mode=False,
        )
    except click.ClickException as error:
        error.show()
        raise SystemExit(error.exit_code) from None
    return value if isinstance(value, int) else 0


if __name__ == "__main__":
    sys.exit(main())
