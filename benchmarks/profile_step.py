#!/usr/bin/env python
"""torch.profiler view of one training step of one configuration (what bounds the time)::

    PYKEEN_HOME=/tmp/pkh-bench python benchmarks/profile_step.py --config momok@1024

Prints the top operators by self time and the time per labelled region (the query side of every Tucker
head, the all-entity candidates, the logits, the loss, backward, optimizer, CLUB estimator); with
``--out`` also writes the tables to a text file. Configurations as in ``train_epoch.py``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import contextlib  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402
from train_epoch import build, parse_config  # noqa: E402

import _common as common  # noqa: E402


def label_regions(model) -> None:
    """Wrap MoMoK's interaction methods and Tucker heads in ``record_function`` labels."""
    interaction = model.interaction

    def wrap(obj, name: str, label: str) -> None:
        original = getattr(obj, name)

        def wrapped(*args, **kwargs):
            with record_function(label):
                return original(*args, **kwargs)

        setattr(obj, name, wrapped)

    wrap(interaction, "queries", "momok.queries")
    wrap(interaction, "candidates", "momok.candidates")
    wrap(interaction, "head_logits", "momok.head_logits")
    names = ["structure", *list(model.modality_names[1:])]
    for head, name in zip(interaction.heads, names):
        wrap(head, "forward", f"momok.tucker.{name}")
    if interaction.joint:
        wrap(interaction.joint_head, "forward", "momok.tucker.joint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="momok@1024")
    parser.add_argument("--dataset-dir", default=str(common.DEFAULT_DATASET_DIR))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--adam", default="fused", choices=sorted(common.ADAMS), help="both Adams (see train_epoch.py)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--row-limit", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the tables to this text file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    kind, batch_size = parse_config(args.config)
    training, _, _ = common.load_mkgy(args.dataset_dir, seed=args.seed)
    model = build(kind, training, device, args.seed)
    trainer = common.Trainer(model, training, device, dtype=args.dtype, seed=args.seed, adam=args.adam)
    trainer.step(trainer.batch(batch_size))  # warm-up (and Adam state)
    if kind != "tucker":
        label_regions(model)
    for method in ("step",):
        original = getattr(trainer.optimizer, method)

        def stepped(*a, _original=original, **k):
            with record_function("train.optimizer_step"):
                return _original(*a, **k)

        setattr(trainer.optimizer, method, stepped)
    original_update = model.post_parameter_update

    def update():
        with record_function("train.post_parameter_update"):
            return original_update()

    model.post_parameter_update = update
    original_backward = torch.Tensor.backward

    def backward(self, *a, **k):
        with record_function("train.backward"):
            return original_backward(self, *a, **k)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    batch = trainer.batch(batch_size)
    torch.Tensor.backward = backward
    try:
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            times = trainer.step(batch)
            wall = time.perf_counter() - start
    finally:
        torch.Tensor.backward = original_backward
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    lines = [
        f"{args.config} on {device} ({args.dtype}), {torch.get_num_threads()} threads, load {os.getloadavg()}",
        f"step {wall:.2f} s (forward {times.forward:.2f}, backward {times.backward:.2f}, "
        f"optimizer {times.optimizer:.2f}, "
        f"estimator {times.estimator:.2f}); profiled step, so slower than unprofiled",
        "",
        "top operators by self time:",
        prof.key_averages().table(sort_by=sort, row_limit=args.row_limit),
    ]
    regions = [e for e in prof.key_averages() if e.key.startswith(("momok.", "train."))]
    if regions:
        lines.append("labelled regions (CPU total, forward only for momok.*; backward runs under train.backward):")
        for event in sorted(regions, key=lambda e: -e.cpu_time_total):
            lines.append(f"  {event.key:32} {event.cpu_time_total / 1e6:8.2f} s  ({event.count} calls)")
    backward_nodes = [e for e in prof.key_averages() if e.key.startswith("autograd::engine::evaluate_function: ")]
    if backward_nodes:
        lines.append("backward nodes (CPU total, top 15):")
        for event in sorted(backward_nodes, key=lambda e: -e.cpu_time_total)[:15]:
            name = event.key.split(": ", 1)[1]
            lines.append(f"  {name:60} {event.cpu_time_total / 1e6:8.2f} s  ({event.count} calls)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        path = pathlib.Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        with contextlib.suppress(Exception):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
