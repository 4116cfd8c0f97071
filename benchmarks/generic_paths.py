#!/usr/bin/env python
"""PyKEEN's generic scoring paths on a MoMoK against MoMoK's specialised ones, on MKG-Y::

    PYKEEN_HOME=/tmp/pkh-bench python benchmarks/generic_paths.py --dataset-dir ../shared/data/MKG-Y \\
        --out benchmarks/results/generic_paths.json

``ERModel.score_t`` / ``score_hrt`` called on a MoMoK go through ``MoMoKInteraction.forward``, which
computes the queries on the ``(h, r)`` prefix (the cores contracted once per distinct relation, found by
``torch.unique`` on the relation vectors) and the candidates on the ``t`` prefix; ``MoMoK.score_t`` /
``score_hrt`` work from ids, and in evaluation accumulate the joint decision in place and reuse the cached
candidates. Timed per call (median of ``--repeats``), in training (forward + backward of the mean score)
and in evaluation (no gradients), at the fast recipe's sizes and at the reference sizes. Goal (issue 11): the
generic path within 2x of the specialised one. ``OMP_WAIT_POLICY`` defaults to ``PASSIVE``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as common  # noqa: E402

GOAL_RATIO = 2.0
SIZES = {
    "fast": dict(embedding_dim=64, relation_dim=64, expert_init="identity", adapters="linear"),
    "reference": dict(common.REFERENCE),
}


def _time(function, repeats: int) -> float:
    function()  # warm-up (allocations, the candidate cache)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return common.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", default=str(common.DEFAULT_DATASET_DIR))
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/generic_paths.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from pykeen.models import ERModel

    machine = common.machine_info()
    print(f"machine: {json.dumps(machine)}", flush=True)
    training, _, _ = common.load_mkgy(args.dataset_dir)
    generator = torch.Generator().manual_seed(0)
    rows = []
    for size in args.sizes:
        options = dict(SIZES[size])
        if "adapters" not in options:
            options["adapters"] = common.ADAPTERS
        model = common.build_momok(training, torch.device("cpu"), **options)
        triples = training.mapped_triples[
            torch.randint(len(training.mapped_triples), (args.batch_size,), generator=generator)
        ]
        hr = triples[:, :2]
        cases = {
            "score_t": (lambda m=model, x=hr: m.score_t(x), lambda m=model, x=hr: ERModel.score_t(m, x)),
            "score_hrt": (
                lambda m=model, x=triples: m.score_hrt(x),
                lambda m=model, x=triples: ERModel.score_hrt(m, x),
            ),
        }
        for mode in ("training", "evaluation"):
            model.train(mode == "training")
            for method, (fast, generic) in cases.items():
                if mode == "training":

                    def step(score, m=model):
                        m.zero_grad(set_to_none=True)
                        score().mean().backward()
                        m.mutual_information.collect()  # the penalty of the pass, as a loop would take it

                    seconds = [_time(lambda score=score: step(score), args.repeats) for score in (fast, generic)]
                else:
                    with torch.no_grad():
                        seconds = [_time(score, args.repeats) for score in (fast, generic)]
                row = dict(
                    size=size,
                    mode=mode,
                    method=method,
                    batch_size=args.batch_size,
                    fast_s=round(seconds[0], 4),
                    generic_s=round(seconds[1], 4),
                    ratio=round(seconds[1] / seconds[0], 2),
                )
                rows.append(row)
                print(json.dumps(row), flush=True)
    worst = max(row["ratio"] for row in rows)
    result = dict(machine=machine, goal_ratio=GOAL_RATIO, worst_ratio=worst, goal_met=worst <= GOAL_RATIO, rows=rows)
    common.write_results(args.out, result, rows)
    print(f"worst generic / fast ratio: {worst:.2f} (goal <= {GOAL_RATIO})")


if __name__ == "__main__":
    main()
