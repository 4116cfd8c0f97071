#!/usr/bin/env python
"""How many operations a training step issues, and the host time they take at tiny sizes (issue 8, item 3).

On a GPU every aten operation of a step is at least one kernel launch, and the host spends some microseconds
issuing each one. A step cannot finish before the host has issued all of them (unless the step is captured as a
CUDA graph), so ``operations x host time per operation`` is a floor under the GPU step time, whatever the GPU.
This script measures both on any device, CPU included:

- ``ops``: the aten operations of one training step (forward, loss, backward, Adam, the CLUB estimator's step),
  counted by a :class:`~torch.utils._python_dispatch.TorchDispatchMode`, by phase;
- ``host_ms``: the median wall time of a step at tiny sizes (``--dim``, ``--batch-size``, on ``--device``),
  where the arithmetic is negligible and the time is the host issuing operations (on CPU it includes running
  them; on CUDA, with ``--device cuda``, the launches only once the queue is full). Tiny sizes need a tiny
  graph: ``--dataset synthetic`` (the default: the demo graph, 64-d image and 48-d text features, used as they
  are) has MKG-Y's modalities and heads, so a step issues as many operations; on ``--dataset mkgy`` the
  modality heads keep the features' widths (383 and 256 over 15,000 entities), which is real arithmetic.

MoMoK takes the paths it takes on CUDA (every relation's core matrix, no host counts; set here on any device),
next to the per-query reference way and PyKEEN's TuckER at the same sizes. Both Adams (the model's and the CLUB
estimator's) run each way of ``--adam`` in turn: ``foreach``, PyTorch's default on CUDA (multi-tensor updates,
plus one host read of a CPU step counter per parameter); ``fused``, what the configs and recipes ask for
(``optimizer_kwargs=dict(fused=True)``) and the estimator's default (``MoMoK(mi_estimator_fused=True)``): one
kernel per update, the step counters on the device; ``default``, PyTorch's default on this device (on CPU one
tensor at a time, ~7 operations per parameter).

    PYKEEN_HOME=/tmp/pkh python benchmarks/step_ops.py --threads 1 --out benchmarks/results/step_ops.json

At the reference sizes the count differs (a head contracts its masked cores in several chunks, each a few
operations): ``--dataset mkgy --dim 300 --relation-dim 256 --batch-size 1024 --steps 0 --adam fused`` counts
one step there without timing it (CUDA's chunk budgets are used on every device, see below).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import collections  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import _common as common  # noqa: E402

#: aten operations that launch nothing on a GPU (views, metadata): counted apart
NO_KERNEL = frozenset(
    {
        "aten::view", "aten::_unsafe_view", "aten::reshape", "aten::expand", "aten::t", "aten::transpose",
        "aten::permute", "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::as_strided",
        "aten::alias", "aten::detach", "aten::unbind", "aten::split", "aten::split_with_sizes", "aten::chunk",
        "aten::narrow", "aten::lift_fresh", "aten::_reshape_alias", "aten::view_as", "aten::diagonal",
        "aten::empty", "aten::empty_like", "aten::empty_strided", "aten::new_empty", "aten::new_empty_strided",
        "aten::is_same_size", "aten::sym_size", "aten::sym_stride", "aten::sym_numel", "aten::sym_storage_offset",
    }
)  # fmt: skip


#: ``--models``: MoMoK on its CUDA paths, without core dropout, the per-query way, PyKEEN's TuckER
MODELS = ("momok", "momok-no-core-dropout", "per-query", "tucker")


class OperationCount(TorchDispatchMode):
    """Counts aten operations, those that would launch a kernel and the rest (views, allocations)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels: collections.Counter[str] = collections.Counter()
        self.other = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        name = func._schema.name
        if name in NO_KERNEL:
            self.other += 1
        else:
            self.kernels[name] += 1
        return func(*args, **(kwargs or {}))


def phases(trainer: common.Trainer, batch) -> dict[str, OperationCount]:
    """One training step's operations by phase."""
    model = trainer.model
    model.train()
    counts = {name: OperationCount() for name in ("forward", "backward", "optimizer", "estimator")}
    with counts["forward"]:
        loss = trainer._forward(batch)
    with counts["backward"]:
        loss.backward()
    with counts["optimizer"]:
        trainer._update()
    with counts["estimator"]:
        model.post_parameter_update()
    return counts


def host_ms(trainer: common.Trainer, batch_size: int, steps: int) -> float:
    """Median milliseconds of ``steps`` steps, each run back to back with the next (one wait at the end)."""
    times = []
    for _ in range(3):
        batches = [trainer.batch(batch_size) for _ in range(steps)]
        times.append(trainer.steps_back_to_back(batches) * 1e3)
    return common.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", default=str(common.DEFAULT_DATASET_DIR), help="the MKG-Y folder (read only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dataset", choices=["synthetic", "mkgy"], default="synthetic", help="see above")
    parser.add_argument(
        "--adam",
        nargs="+",
        choices=sorted(common.ADAMS),
        default=["foreach", "fused"],
        help="the Adams of both optimisers, each in turn (see above)",
    )
    parser.add_argument("--dim", type=int, default=8, help="d of every model (tiny: the host's share)")
    parser.add_argument("--relation-dim", type=int, default=None, help="d_r of every model (default: --dim)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--steps", type=int, default=10, help="steps per timing (three timings, the median); 0: count only"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=list(MODELS),
        help="which models (PyKEEN's TuckER at d = 300, batch 1024 on MKG-Y needs more than 24 GB)",
    )
    parser.add_argument(
        "--chunk-mib",
        type=int,
        default=None,
        help="the core contraction's chunk budget in MiB (default: CUDA's, tucker.DEFAULT_CHUNK_BYTES)",
    )
    parser.add_argument("--out", default="benchmarks/results/step_ops.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.dataset == "mkgy":
        training, _, _ = common.load_mkgy(args.dataset_dir)
        adapters = common.ADAPTERS
    else:
        from pykeen_momok.datasets.synthetic import SyntheticMMKG

        training, adapters = SyntheticMMKG().training, {"image": "identity", "text": "identity"}
    from pykeen_momok.nn import tucker

    # the CUDA choices on any device: every relation's core matrix, chunks instead of host-counted groups
    tucker._groups_on_the_host = lambda x: not torch.is_grad_enabled()
    # and CUDA's chunk budgets, so that a head issues as many chunks of masked contractions as on CUDA (the same
    # at tiny sizes, where a batch is one chunk either way; at the reference sizes CPU's 4 MiB would count 93
    # chunks per head where CUDA has 11)
    for budgets in (tucker.DEFAULT_CHUNK_BYTES, tucker.DEFAULT_GEMM_BYTES):
        budgets[device.type] = budgets["cuda"]
    if args.chunk_mib:
        tucker.DEFAULT_CHUNK_BYTES[device.type] = args.chunk_mib << 20
    relation_dim = args.relation_dim or args.dim
    sizes = dict(embedding_dim=args.dim, relation_dim=relation_dim, adapters=adapters)
    builders = {
        "momok": lambda: common.build_momok(training, device, relation_matrices="all", **sizes),
        "momok-no-core-dropout": lambda: common.build_momok(
            training, device, relation_matrices="all", core_dropout=0.0, **sizes
        ),
        "per-query": lambda: common.build_momok(training, device, relation_matrices="all", **sizes),
        "tucker": lambda: common.build_tucker(training, device, embedding_dim=args.dim, relation_dim=relation_dim),
    }
    results = dict(machine=common.machine_info(), args=vars(args), runs={})
    rows = []
    chosen = [(name, builders[name]) for name in args.models]
    for adam, (name, build) in ((adam, item) for adam in args.adam for item in chosen):
        model = build()
        if name == "per-query":
            common.set_per_query(model, True)
        trainer = common.Trainer(model, training, device, adam=adam)
        for _ in range(2 if args.steps else 1):  # warm-up (Adam state, cached choices)
            trainer.step(trainer.batch(args.batch_size))
        counts = phases(trainer, trainer.batch(args.batch_size))
        milliseconds = host_ms(trainer, args.batch_size, args.steps) if args.steps else float("nan")
        kernels = {phase: sum(c.kernels.values()) for phase, c in counts.items()}
        total = sum(kernels.values())
        top = sum((c.kernels for c in counts.values()), collections.Counter()).most_common(12)
        results["runs"][f"{name}/{adam}"] = dict(
            model=name,
            adam=adam,
            kernel_ops=kernels,
            kernel_ops_total=total,
            other_ops=sum(c.other for c in counts.values()),
            host_ms=milliseconds,
            us_per_op=milliseconds * 1e3 / total,
            top=top,
        )
        rows.append(
            dict(
                model=name,
                adam=adam,
                kernel_ops=total,
                host_ms=milliseconds,
                **{f"{k}_ops": v for k, v in kernels.items()},
            )
        )
        phases_text = ", ".join(f"{k} {v}" for k, v in kernels.items())
        other = results["runs"][f"{name}/{adam}"]["other_ops"]
        print(
            f"{name + ' / Adam ' + adam:>32}: {total:5d} kernel operations a step ({phases_text}; +{other} "
            f"views/allocations), {milliseconds:7.2f} ms a step at d={args.dim}, B={args.batch_size} "
            f"({milliseconds * 1e3 / total:.1f} us per operation)",
            flush=True,
        )
        print("      most frequent: " + ", ".join(f"{op.removeprefix('aten::')} {n}" for op, n in top), flush=True)
        del model, trainer
    path, csv_path = common.write_results(args.out, results, rows)
    print(f"wrote {path} and {csv_path}")


if __name__ == "__main__":
    main()
