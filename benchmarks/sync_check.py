#!/usr/bin/env python
"""Where a MoMoK training step on MKG-Y makes the host wait for the device, by function (issue 8, item 3).

One LCWA training step (forward through PyKEEN's loop, loss, backward, Adam, the CLUB estimator's step) per
``relation_matrices`` setting, after warm-up steps, audited two ways:

- ``audit``: every data-dependent aten operation, by the pykeen_momok function that asked for it
  (``benchmarks/_host_sync.py``; works on any device, so on CPU too);
- ``cuda``: on CUDA only, the waits PyTorch itself reports under ``torch.cuda.set_sync_debug_mode("warn")``, by the
  innermost frame in pykeen_momok, else in PyKEEN, else anywhere.

The batch is on the device before the audited step. Then one epoch of the batched LCWA loop itself
(``training_loop="batchedlcwa"`` with its defaults, on the first ``--loop-triples`` training triples, after a
warm-up epoch), PyKEEN's frames audited too: what a whole epoch waits for, the loop's loss reads, batch copies
and end-of-epoch cleanup included (run ``loop``).

    PYKEEN_HOME=/tmp/pkh python benchmarks/sync_check.py --device cuda --dataset-dir ../shared/data/MKG-Y \\
        --out benchmarks/results/sync_check.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402
from _host_sync import HostSyncAudit  # noqa: E402
from pykeen.training.callbacks import TrainingCallback  # noqa: E402

import _common as common  # noqa: E402

PACKAGE_MARKERS = (f"{os.sep}pykeen_momok{os.sep}", f"{os.sep}pykeen{os.sep}")


def _site(stack: list[traceback.FrameSummary]) -> str:
    """The innermost frame in pykeen_momok, else in PyKEEN, else the innermost one, as ``file:line function``."""
    for marker in PACKAGE_MARKERS:
        for frame in reversed(stack):
            if marker in frame.filename:
                name = frame.filename[frame.filename.rindex(marker) + 1 :]
                return f"{name}:{frame.lineno} {frame.name}"
    frame = stack[-1]
    return f"{frame.filename}:{frame.lineno} {frame.name}"


class CudaSyncWarnings:
    """``torch.cuda.set_sync_debug_mode("warn")``, its warnings counted by site."""

    def __init__(self) -> None:
        self.sites: collections.Counter[str] = collections.Counter()

    def __enter__(self):
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("always")
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if "synchroniz" in str(message):
                self.sites[_site(traceback.extract_stack()[:-1])] += 1
            else:
                original(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        self._catch.__exit__(*exc)
        return False


def audited_step(trainer: common.Trainer, batch: dict[str, torch.Tensor], device: torch.device) -> dict:
    """One training step under the audits; the counts by site."""
    model = trainer.model
    model.train()
    size = batch["pairs"].shape[0]
    batch = {key: value.to(device) for key, value in batch.items()}
    common.sync(device)
    audit = HostSyncAudit()
    cuda = CudaSyncWarnings() if device.type == "cuda" else None
    with audit, cuda if cuda is not None else contextlib.nullcontext():
        loss = trainer.loop._process_batch(batch, 0, size, label_smoothing=0.0, slice_size=None)
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        model.post_parameter_update()
    common.sync(device)
    return dict(
        audit={f"{site} {operation}": count for (site, operation), count in sorted(audit.sites.items())},
        cuda=None if cuda is None else dict(sorted(cuda.sites.items())),
    )


class BatchCounter(TrainingCallback):
    """Counts the training batches."""

    count = 0

    def on_batch(self, epoch: int, batch, batch_loss, **kwargs) -> None:  # noqa: D102
        self.count += 1


def audited_epoch(args: argparse.Namespace, training, device: torch.device, sizes: dict) -> dict:
    """One epoch of :class:`~pykeen_momok.lcwa.BatchedLCWATrainingLoop` under the audits, PyKEEN's frames included."""
    import pykeen

    import pykeen_momok
    from pykeen_momok.lcwa import BatchedLCWATrainingLoop

    subset = training.clone_and_exchange_triples(training.mapped_triples[: args.loop_triples])
    model = common.build_momok(training, device, **sizes)
    loop = BatchedLCWATrainingLoop(
        model=model, triples_factory=subset, optimizer="adam", automatic_memory_optimization=False
    )
    options = dict(batch_size=args.batch_size, use_tqdm=False)
    loop.train(subset, num_epochs=1, **options)  # warm-up: kernels chosen, memory cached, Adam state made
    audit = HostSyncAudit(packages=(pykeen_momok, pykeen))
    cuda = CudaSyncWarnings() if device.type == "cuda" else None
    common.sync(device)
    counter = BatchCounter()  # the loop drops an incomplete last batch (MoMoK has BatchNorm)
    with audit, cuda if cuda is not None else contextlib.nullcontext():
        loop.train(subset, num_epochs=2, continue_training=True, callbacks=counter, **options)
    common.sync(device)
    return dict(
        batches=counter.count,
        audit={f"{site} {operation}": count for (site, operation), count in sorted(audit.sites.items())},
        cuda=None if cuda is None else dict(sorted(cuda.sites.items())),
        read_loss=loop.read_loss,
        epoch_cleanup=loop.epoch_cleanup,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", default=str(common.DEFAULT_DATASET_DIR), help="the MKG-Y folder (read only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=None, help="d and d_r (default: the reference sizes)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each audited one")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--loop-triples", type=int, default=4096, help="training triples of the audited batched-LCWA-loop epoch"
    )
    parser.add_argument("--out", default="benchmarks/results/sync_check.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    training, _, _ = common.load_mkgy(args.dataset_dir)
    sizes = {} if args.dim is None else dict(embedding_dim=args.dim, relation_dim=args.dim)
    results = dict(machine=common.machine_info(), batch_size=args.batch_size, sizes=sizes or "reference", runs={})
    for choice in ("all", "batch", "auto"):
        model = common.build_momok(training, device, relation_matrices=choice, **sizes)
        trainer = common.Trainer(model, training, device)
        for _ in range(args.warmup):
            trainer.step(trainer.batch(args.batch_size))
        run = audited_step(trainer, trainer.batch(args.batch_size), device)
        run["all_relation_matrices"] = model._all_relation_matrices(
            torch.zeros(args.batch_size, dtype=torch.long, device=device)
        )
        results["runs"][choice] = run
        print(f"relation_matrices={choice!r} (every relation's matrix: {run['all_relation_matrices']})")
        for kind in ("audit", "cuda"):
            if run[kind] is None:
                continue
            total = sum(run[kind].values())
            print(f"  {kind}: {total} in all" + "".join(f"\n    {n:4d}  {site}" for site, n in run[kind].items()))
        del model, trainer
    results["runs"]["loop"] = run = audited_epoch(args, training, device, sizes)
    print(f"one epoch of the batched LCWA loop ({run['batches']} batches of {args.batch_size}, its defaults)")
    for kind in ("audit", "cuda"):
        if run[kind] is not None:
            total = sum(run[kind].values())
            print(f"  {kind}: {total} in all" + "".join(f"\n    {n:4d}  {site}" for site, n in run[kind].items()))
    rows = [
        dict(relation_matrices=choice, audit=kind, site=site, count=count)
        for choice, run in results["runs"].items()
        for kind in ("audit", "cuda")
        for site, count in (run[kind] or {}).items()
    ]
    path, csv_path = common.write_results(args.out, results, rows, ["relation_matrices", "audit", "site", "count"])
    print(f"wrote {path} and {csv_path}")


if __name__ == "__main__":
    main()
