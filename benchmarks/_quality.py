"""The pieces of ``quality.py``: data, a learning-curve stopper, one training run, the output files."""

from __future__ import annotations

import copy
import math
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from pykeen.evaluation import RankBasedEvaluator
from pykeen.losses import loss_resolver
from pykeen.lr_schedulers import lr_scheduler_resolver
from pykeen.models import model_resolver
from pykeen.optimizers import optimizer_resolver
from pykeen.stoppers import Stopper
from pykeen.training import training_loop_resolver
from pykeen.utils import set_random_seed

from _common import write_results

#: the metrics recorded at every evaluation, as PyKEEN names them (both sides, realistic ranks)
METRICS = ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")


def load_dataset(name: str, directory: pathlib.Path | None, dataset_kwargs: Mapping[str, Any] | None = None):
    """The benchmark with the features obtainable offline: structure + the shared name-derived text features.

    :param directory: the benchmark's offline folder; ``None`` for a generated dataset
    :param dataset_kwargs: more keyword arguments of the dataset class (they override the defaults here)
    :return: the dataset and a one-line description of what it holds
    """
    from pykeen.datasets import get_dataset

    kwargs: dict[str, Any] = dict(directory=directory, image_features=None) if directory is not None else {}
    kwargs.update(dataset_kwargs or {})
    dataset = get_dataset(dataset=name, dataset_kwargs=kwargs)
    modalities = {
        key: tuple(value.features.shape) for key, value in (getattr(dataset.training, "modalities", None) or {}).items()
    }
    note = (
        f"{dataset.training.num_entities} entities, {dataset.training.num_relations} relations (with inverses), "
        f"{dataset.training.num_triples} / {dataset.validation.num_triples} / {dataset.testing.num_triples} "
        f"triples; modalities {modalities or 'none (structure only)'}; validation: "
        f"{(dataset.training.metadata or {}).get('validation', 'the published validation split')}"
    )
    return dataset, note


def evaluate(model, triples, filters: Sequence[torch.Tensor], batch_size: int) -> dict[str, float]:
    """Filtered rank-based evaluation, both sides, realistic ranks."""
    evaluator = RankBasedEvaluator(filtered=True)
    result = evaluator.evaluate(
        model,
        mapped_triples=triples.mapped_triples,
        additional_filter_triples=list(filters),
        batch_size=batch_size,
        use_tqdm=False,
    )
    return {metric: float(result.get_metric(metric)) for metric in METRICS}


class CurveStopper(Stopper):
    """A PyKEEN stopper that records a learning curve, keeps the best-validation state and enforces a budget.

    Training time is counted between the training loop's calls to :meth:`should_evaluate` (once per epoch),
    without the evaluations themselves.
    """

    def __init__(
        self,
        *,
        model,
        training,
        validation,
        testing,
        budget_seconds: float | None,
        max_epochs: int,
        eval_every_seconds: float | None,
        eval_every_epochs: int | None,
        paper_protocol: bool,
        eval_batch_size: int,
        label: str,
    ) -> None:
        super().__init__()
        self.model = model
        self.validation = validation
        self.testing = testing
        self.valid_filters = [training.mapped_triples]
        self.test_filters = [training.mapped_triples, validation.mapped_triples]
        self.budget_seconds = budget_seconds
        self.max_epochs = max_epochs
        self.eval_every_seconds = eval_every_seconds
        self.eval_every_epochs = eval_every_epochs
        self.paper_protocol = paper_protocol
        self.eval_batch_size = eval_batch_size
        self.label = label
        self.curve: list[dict[str, Any]] = []
        self.best_state: dict[str, Any] | None = None
        self.best_mrr = -math.inf
        self.train_seconds = 0.0
        self.eval_seconds = 0.0
        self._mark = time.perf_counter()
        self._last_eval_seconds = 0.0
        self.stopped = False

    def _tick(self) -> None:
        now = time.perf_counter()
        self.train_seconds += now - self._mark
        self._mark = now

    def out_of_budget(self) -> bool:
        """Whether the training-time budget is spent."""
        return self.budget_seconds is not None and self.train_seconds >= self.budget_seconds

    def should_evaluate(self, epoch: int) -> bool:  # noqa: D102
        self._tick()
        if epoch >= self.max_epochs or self.out_of_budget():
            return True
        if self.eval_every_epochs:
            return epoch % self.eval_every_epochs == 0
        return self.train_seconds - self._last_eval_seconds >= (self.eval_every_seconds or math.inf)

    def should_stop(self, epoch: int) -> bool:  # noqa: D102
        start = time.perf_counter()
        row: dict[str, Any] = dict(epoch=epoch, train_seconds=round(self.train_seconds, 2))
        row["valid"] = evaluate(self.model, self.validation, self.valid_filters, self.eval_batch_size)
        if self.paper_protocol:
            row["test"] = evaluate(self.model, self.testing, self.test_filters, self.eval_batch_size)
        if row["valid"]["mrr"] > self.best_mrr:
            self.best_mrr = row["valid"]["mrr"]
            self.best_epoch = epoch
            # tensors copied to the CPU; extra state (the CLUB estimator's optimiser) deep-copied
            self.best_state = {
                k: v.detach().to("cpu", copy=True) if isinstance(v, torch.Tensor) else copy.deepcopy(v)
                for k, v in self.model.state_dict().items()
            }
        self._last_eval_seconds = self.train_seconds
        row["eval_seconds"] = round(time.perf_counter() - start, 2)
        self.eval_seconds += row["eval_seconds"]
        self.curve.append(row)
        test = f", test MRR {row['test']['mrr']:.4f}" if "test" in row else ""
        print(
            f"[quality] {self.label} epoch {epoch:4d} {self.train_seconds / 60:6.2f} min: valid MRR "
            f"{row['valid']['mrr']:.4f} H@10 {row['valid']['hits_at_10']:.4f}{test} (eval {row['eval_seconds']:.1f} s)",
            flush=True,
        )
        self.stopped = self.out_of_budget()
        self._mark = time.perf_counter()  # the evaluation is not training time
        return self.stopped

    def get_summary_dict(self) -> Mapping[str, Any]:  # noqa: D102
        return dict(best_epoch=self.best_epoch, best_mrr=self.best_mrr, curve=self.curve)


def train_setup(
    label: str,
    setup: Mapping[str, Any],
    dataset,
    *,
    minutes: float | None,
    epochs: int | None,
    eval_every_minutes: float | None,
    eval_every_epochs: int | None,
    paper_protocol: bool,
    eval_batch_size: int,
    device: str,
    seed: int | None,
) -> dict[str, Any]:
    """Train one setup through PyKEEN's training loop with a :class:`CurveStopper`; test the best state once."""
    setup = copy.deepcopy(dict(setup))
    seed = seed if seed is not None else setup.get("random_seed", 10010)
    set_random_seed(seed)
    training = dataset.training
    training_kwargs = dict(setup.get("training_kwargs") or {})
    setup_epochs = training_kwargs.pop("num_epochs", None)
    max_epochs = epochs or setup_epochs or 10**6
    loss = loss_resolver.make(setup["loss"], setup.get("loss_kwargs")) if setup.get("loss") else None
    model = model_resolver.make(
        setup["model"], setup.get("model_kwargs"), triples_factory=training, loss=loss, random_seed=seed
    ).to(device)
    optimizer = optimizer_resolver.make(
        setup.get("optimizer", "adam"), setup.get("optimizer_kwargs"), params=model.get_grad_params()
    )
    lr_scheduler = None
    if setup.get("lr_scheduler"):
        lr_scheduler = lr_scheduler_resolver.make(
            setup["lr_scheduler"], setup.get("lr_scheduler_kwargs"), optimizer=optimizer
        )
    loop = training_loop_resolver.make(
        setup.get("training_loop", "batchedlcwa"),
        setup.get("training_loop_kwargs"),
        model=model,
        triples_factory=training,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
    )
    stopper = CurveStopper(
        model=model,
        training=training,
        validation=dataset.validation,
        testing=dataset.testing,
        budget_seconds=None if minutes is None else minutes * 60,
        max_epochs=max_epochs,
        eval_every_seconds=None if eval_every_minutes is None else eval_every_minutes * 60,
        eval_every_epochs=eval_every_epochs,
        paper_protocol=paper_protocol,
        eval_batch_size=eval_batch_size,
        label=label,
    )
    start = time.perf_counter()
    stopper._mark = start
    losses = loop.train(
        triples_factory=training, num_epochs=max_epochs, stopper=stopper, use_tqdm=False, **training_kwargs
    )
    wall = time.perf_counter() - start
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    test = evaluate(model, dataset.testing, stopper.test_filters, eval_batch_size)
    paper = {}
    if paper_protocol and stopper.curve:
        paper = {metric: max(row["test"][metric] for row in stopper.curve) for metric in METRICS}
    best_row = next((row for row in stopper.curve if row["epoch"] == stopper.best_epoch), None)
    run = dict(
        setup=label,
        config=setup,
        seed=seed,
        epochs=stopper.curve[-1]["epoch"] if stopper.curve else 0,
        train_seconds=round(stopper.train_seconds, 1),
        eval_seconds=round(stopper.eval_seconds, 1),
        wall_seconds=round(wall, 1),
        best_epoch=stopper.best_epoch,
        best_epoch_train_seconds=best_row["train_seconds"] if best_row else None,
        valid=best_row["valid"] if best_row else {},
        test=test,
        paper_protocol=paper,
        losses=[float(x) for x in losses],
        curve=stopper.curve,
    )
    run["summary_line"] = (
        f"{run['epochs']} epochs, {run['train_seconds'] / 60:.1f} min training; best valid MRR "
        f"{stopper.best_mrr:.4f} at epoch {stopper.best_epoch}; test MRR {test['mrr']:.4f} H@1 {test['hits_at_1']:.4f} "
        f"H@3 {test['hits_at_3']:.4f} H@10 {test['hits_at_10']:.4f}"
        + (f"; paper protocol MRR {paper['mrr']:.4f}" if paper else "")
    )
    return run


def markdown_table(meta: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> str:
    """The results as a Markdown table: validation-selected test metrics and the paper protocol's."""
    lines = [
        f"{meta['dataset']}, budget {meta['budget_minutes'] or '-'} min / {meta['budget_epochs'] or '-'} epochs, "
        f"{meta['device']} ({meta['machine'].get('cpu', '')}, {meta['machine'].get('torch_threads')} threads)",
        "",
        "| setup | epochs | train min | best epoch (min) | MRR | H@1 | H@3 | H@10 "
        "| paper protocol MRR / H@1 / H@3 / H@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        test, paper = run["test"], run["paper_protocol"]
        protocol = " / ".join(f"{paper[m]:.3f}" for m in METRICS) if paper else "-"
        best_minutes = (run["best_epoch_train_seconds"] or 0) / 60
        lines.append(
            f"| {run['setup']} | {run['epochs']} | {run['train_seconds'] / 60:.1f} | {run['best_epoch']} "
            f"({best_minutes:.1f}) | {test['mrr']:.3f} | {test['hits_at_1']:.3f} | {test['hits_at_3']:.3f} | "
            f"{test['hits_at_10']:.3f} | {protocol} |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(path: pathlib.Path, meta: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> pathlib.Path | None:
    """Validation MRR against training minutes, one line per setup (PNG); ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[quality] matplotlib is not installed (pip install pykeen-momok[plots]): no plot written")
        return None
    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for run in runs:
        xs = [row["train_seconds"] / 60 for row in run["curve"]]
        ys = [row["valid"]["mrr"] for row in run["curve"]]
        axis.plot(xs, ys, marker="o", markersize=3, label=run["setup"])
    axis.set_xlabel("training time (minutes)")
    axis.set_ylabel("validation MRR (filtered)")
    axis.set_title(f"{meta['dataset']} ({meta['device']})")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def write_outputs(out: pathlib.Path, meta: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> list[pathlib.Path]:
    """``<out>.json`` (everything), ``<out>.csv`` (the curves), ``<out>.md`` (the table), ``<out>.png``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in runs:
        for row in run["curve"]:
            flat = dict(setup=run["setup"], epoch=row["epoch"], train_seconds=row["train_seconds"])
            flat.update({f"valid_{m}": row["valid"][m] for m in METRICS})
            flat.update({f"test_{m}": row["test"][m] for m in METRICS} if "test" in row else {})
            rows.append(flat)
    paths = write_results(out.with_suffix(".json"), dict(meta=meta, runs=list(runs)), rows)
    table = out.with_suffix(".md")
    table.write_text(markdown_table(meta, runs))
    paths = [*paths, table]
    plot = plot_curves(out.with_suffix(".png"), meta, runs)
    return [*paths, plot] if plot else paths
