#!/usr/bin/env python
"""Where ``torch.compile`` breaks a MoMoK training forward pass into pieces (issue 8, item 3).

``torch.compile`` fuses a step's small kernels and, with ``mode="reduce-overhead"``, replays them as CUDA graphs;
both only pay where Dynamo traces the step as few graphs. This script asks Dynamo (``torch._dynamo.explain``) how
many graphs the forward pass of a training step (1-N scores and the loss, as PyKEEN's LCWA loop computes them)
becomes, and why it breaks, grouped by the line of ``pykeen_momok`` the break comes from.

Every configuration draws what it can on the device (``mi_pair_draw="device"``) and scores with every relation's
core matrix (``relation_matrices="all"``), as ``graph_step.py``'s step does. ``--configs``:

- ``torch`` / ``torch+keep``: the PyTorch contraction (``core_contraction_path="torch"``), the candidates'
  activations recomputed under an activation checkpoint (the model's default) or kept;
- ``triton`` / ``triton+keep``: the Triton kernels. Dynamo traces Triton kernels on CUDA only: off CUDA (the
  interpreter) these are recorded as skipped, with the reason.

Nothing is compiled: ``explain`` only traces, so a run takes seconds to minutes, not a compile's time.

    PYKEEN_HOME=/tmp/pkh python benchmarks/compile_breaks.py --device cpu --dataset synthetic \\
        --out benchmarks/results/compile_breaks.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import collections  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch._dynamo  # noqa: E402

import _common as common  # noqa: E402

CONFIGS = ("torch", "torch+keep", "triton", "triton+keep")

#: the package's folder: a break is attributed to the innermost frame inside it
PACKAGE = str(pathlib.Path(__file__).resolve().parents[1] / "pykeen_momok")


def build_trainer(training, device: torch.device, config: str, sizes: dict) -> common.Trainer:
    path, _, keep = config.partition("+")
    model = common.build_momok(
        training,
        device,
        relation_matrices="all",
        core_contraction_path=path,
        mi_pair_draw="device",
        recompute_candidates=keep != "keep",
        **sizes,
    )
    return common.Trainer(model, training, device)


def break_site(reason) -> str:
    """``file:line function`` of the innermost frame of the break inside ``pykeen_momok`` (else the innermost)."""
    frames = list(reason.user_stack)
    ours = [frame for frame in frames if frame.filename.startswith(PACKAGE)]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return "(no frame)"
    name = frame.filename
    if name.startswith(PACKAGE):
        name = os.path.relpath(name, os.path.dirname(PACKAGE))
    return f"{name}:{frame.lineno} {frame.name}"


def explain(trainer: common.Trainer, batch: dict[str, torch.Tensor]) -> dict:
    """Dynamo's graphs and breaks of one training forward pass on ``batch``."""
    trainer.model.train()
    torch._dynamo.reset()
    start = time.perf_counter()
    result = torch._dynamo.explain(trainer._forward)(batch)
    seconds = time.perf_counter() - start
    sites: collections.Counter = collections.Counter()
    for reason in result.break_reasons:
        first_line = str(reason.reason).strip().splitlines()[0][:160]
        sites[f"{break_site(reason)}: {first_line}"] += 1
    return dict(
        graphs=result.graph_count,
        breaks=result.graph_break_count,
        ops=result.op_count,
        trace_s=seconds,
        sites=[dict(site=site, count=count) for site, count in sites.most_common()],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_step_arguments(parser)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--dim", type=int, default=None, help="d (default: 300 on MKG-Y, 8 on the demo graph)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 1024 on MKG-Y, 16 on the demo graph")
    parser.add_argument("--out", default="benchmarks/results/compile_breaks.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch._logging.set_logs(dynamo=logging.ERROR)  # the breaks are reported below, grouped; not one warning each
    if args.dataset == "mkgy":
        training, _, _ = common.load_mkgy(args.dataset_dir)
        dim = args.dim or common.REFERENCE["embedding_dim"]
        sizes = dict(adapters=common.ADAPTERS, embedding_dim=dim)
        sizes["relation_dim"] = common.REFERENCE["relation_dim"] if not args.dim else dim
        batch_size = args.batch_size or 1024
    else:
        from pykeen_momok.datasets.synthetic import SyntheticMMKG

        training = SyntheticMMKG().training
        dim = args.dim or 8
        sizes = dict(adapters={"image": "identity", "text": "identity"}, embedding_dim=dim, relation_dim=dim)
        batch_size = args.batch_size or 16
    results = dict(machine=common.machine_info(), args=vars(args), torch=torch.__version__, runs={})
    rows = []
    for config in args.configs:
        if config.startswith("triton") and device.type != "cuda":
            result = dict(skipped=f"Dynamo traces Triton kernels on CUDA only (device {device})")
            print(f"{config:>12}: skipped: {result['skipped']}", flush=True)
        else:
            trainer = build_trainer(training, device, config, sizes)
            result = explain(trainer, trainer.batch(batch_size))
            del trainer
            print(f"{config:>12}: {result['graphs']} graphs, {result['breaks']} breaks ({result['trace_s']:.1f} s)")
            for site in result["sites"]:
                print(f"{'':>14}{site['count']:>3} x {site['site']}", flush=True)
        results["runs"][config] = result
        row = dict(config=config, graphs=result.get("graphs"), breaks=result.get("breaks"))
        rows.append(dict(row, skipped=result.get("skipped", "")))
    path, csv_path = common.write_results(args.out, results, rows)
    print(f"wrote {path} and {csv_path}")


if __name__ == "__main__":
    main()
