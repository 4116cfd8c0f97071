#!/usr/bin/env python
"""Training-step time and peak memory on MKG-Y: MoMoK vs the per-query (reference) way vs PyKEEN's TuckER.

One command, one process for the timings (configurations interleaved, repeated; medians reported),
plus one fresh child process per configuration for its peak memory::

    PYKEEN_HOME=/tmp/pkh-bench python benchmarks/train_epoch.py --dataset-dir ../shared/data/MKG-Y \\
        --out benchmarks/results/train.json

Configurations (``--configs``; all share the data, MoMoK's two paths share one set of weights):

- ``momok@B``: MoMoK as shipped (fused core contraction, candidate recomputation), batch ``B``, its Tucker heads
  on the process-wide core contraction path (``"torch"`` unless ``PYKEEN_MOMOK_TUCKER_PATH`` says otherwise; with
  ``auto``: the PyTorch path on CPU, the faster of PyTorch and Triton on CUDA, timed once per shape);
- ``momok-torch@B`` / ``momok-triton@B``: the same with the masked core contraction pinned to the PyTorch
  chunked path / the Triton kernels (``nn/tucker_triton.py``; CUDA, or CPU under ``TRITON_INTERPRET=1``);
- ``per-query@B``: the same model switched to the reference's way (``fused=False``: one ``d x d`` matrix per
  query with ``F.dropout``; ``recompute_candidates=False``), the "per-query implementation" of issue 4;
- ``tucker@B``: PyKEEN's ``TuckER`` (``embedding_dim=300, relation_dim=256``, its default loss), LCWA 1-N;
- options of the MoMoK kinds, ``KIND+OPTION@B`` (e.g. ``momok-torch+bf16@1024``), set on the shared model for that
  configuration only: ``+bf16`` (``autocast_dtype="bfloat16"``), ``+all`` / ``+batch`` (``relation_matrices``:
  every relation's core matrix, or the batch's distinct ones through ``torch.unique``), ``+keep``
  (``recompute_candidates=False``: the candidates' activations kept for the backward pass), ``+tf32`` (float32
  matrix products on CUDA's TF32 tensor cores, ``torch.set_float32_matmul_precision("high")``, for this
  configuration's steps; nothing changes on CPU); otherwise the model's defaults (float32, ``"auto"``: ``"all"``
  on CUDA, ``"batch"`` on CPU) and no TF32. ``--dtype`` instead wraps every configuration's step (TuckER's too)
  in an outer autocast.

A training step is what PyKEEN's LCWA loop does per batch, MoMoK's CLUB estimator step included. Every
configuration's main optimiser is Adam with PyTorch's fused kernel, as the configs and recipes train
(``--adam default``: PyTorch's default for the device, what the figures before December 2026 used; ``--adam
foreach``: its multi-tensor updates); MoMoK's CLUB estimator takes the same choice. In each
repeat every configuration first takes ``--warmup`` untimed steps, then ``--batches`` timed ones: an epoch
runs one configuration back to back, and the first step after another configuration pays one-off costs
(on this VM mostly page faults of memory the other one freed: PyKEEN's TuckER at batch 256 took ~20 s
for that step, 5-11 s for the next). The epoch time is the median timed step times the number of LCWA
batches of an epoch (unique (h, r) pairs of the training triples with inverses / batch size, rounded up);
``projection_h`` is that epoch time times ``--projection-epochs`` (2,000: the reference's MKG-Y run), in hours,
training steps only (no evaluation). Each timed step waits for the device after each phase (forward, backward,
optimiser, estimator): on a GPU its total holds every phase's launch latency. So each repeat also runs
``--back-to-back`` steps with one wait at the end, as the batched LCWA loop runs them (``read_loss="epoch"``,
its default on CUDA): ``stream_s`` per step (median over repeats), ``stream_epoch_s`` per epoch. ``full_min``
is the whole run in minutes: those back-to-back steps (the phased ones with ``--back-to-back 0``), building
each epoch's batches with the batched LCWA loop, the loop's end-of-epoch cleanup, and a filtered validation
every ``--eval-every`` epochs (see :func:`full_projection`). The steps' batches are ready on the device (built
outside the clock: ``batch_build_s``).

Peak memory: one fresh child process per configuration (run before the timings, while this process is
small), which loads the data, builds the model and takes ``--memory-steps`` steps; its peak resident set
size is ``VmHWM`` (``ru_maxrss`` is inherited across fork/exec on Linux, so a child would report its
parent's peak). ``peak_above_baseline_gb`` subtracts the child's RSS after loading the data (interpreter,
torch, PyKEEN, features), before building the model.

``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` here (set before torch loads): on a 2-core machine shared
with other jobs, OpenMP's default spin-waiting makes every parallel region wait for a time slice
(measured here: a 4 MB ``index_select`` took 85 ms instead of 0.1 ms).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402

from pykeen_momok.nn.interaction import autocast_dtype_named  # noqa: E402
from pykeen_momok.nn.tucker import reads_wait_for_device  # noqa: E402

import _common as common  # noqa: E402

DEFAULT_CONFIGS = ["momok@1024", "per-query@1024", "momok@256", "per-query@256", "tucker@256", "tucker@128"]
CHILD_MARKER = "MEMORY-RESULT "
GOALS = {
    "epoch time MoMoK / per-query, batch 1024": ("momok@1024", "per-query@1024", "epoch_s", 0.5),
    # issue 8's goal on a GPU: MoMoK (momok@1024: the process-wide contraction path, "auto" in gpu_session.sh)
    # <= 0.2x the per-query way, steps as a training loop runs them
    "back-to-back step MoMoK / per-query, batch 1024 (GPU goal)": ("momok@1024", "per-query@1024", "stream_s", 0.2),
    "epoch time MoMoK / TuckER, batch 256": ("momok@256", "tucker@256", "epoch_s", 1.0),
    "peak memory MoMoK / per-query, batch 1024 (process peak RSS)": ("momok@1024", "per-query@1024", "peak_gb", 0.5),
    "peak memory MoMoK / per-query, batch 1024 (above the data-loaded baseline)": (
        "momok@1024",
        "per-query@1024",
        "peak_above_baseline_gb",
        0.5,
    ),
}


#: configuration kinds: MoMoK's core contraction path pinned per kind (None: the process-wide setting)
MOMOK_PATHS = {"momok": None, "momok-torch": "torch", "momok-triton": "triton", "per-query": None}
KINDS = (*MOMOK_PATHS, "tucker")
#: options a MoMoK kind may carry, ``KIND+OPTION...@B``: the model attribute each sets, and its value
MOMOK_OPTIONS = {
    "bf16": ("autocast_dtype", "bfloat16"),  # MoMoK(autocast_dtype="bfloat16")
    "all": ("relation_matrices", "all"),  # every relation's core matrix: no torch.unique in the step
    "batch": ("relation_matrices", "batch"),  # the batch's distinct relations (torch.unique)
    # keep the all-entity candidates' activations for the backward pass instead of recomputing them there: one
    # candidate forward fewer per step, for memory a GPU has to spare (0.34 GB more at the peak on CPU, MKG-Y)
    "keep": ("recompute_candidates", False),
    # not the model's: the process-wide TF32 setting of float32 matrix products on CUDA (no effect on CPU), set for
    # this configuration's steps only
    "tf32": ("float32_matmul_precision", "high"),
}


def parse_config(name: str) -> tuple[str, int]:
    """``KIND[+OPTION...]@B`` -> ``(KIND[+OPTION...], B)``, checked."""
    kind, _, size = name.partition("@")
    base, *options = kind.split("+")
    bad = base not in KINDS or not size.isdigit() or int(size) < 1 or any(o not in MOMOK_OPTIONS for o in options)
    if bad or (options and base == "tucker") or len({MOMOK_OPTIONS[o][0] for o in options}) < len(options):
        raise argparse.ArgumentTypeError(
            f"bad configuration {name!r}; expected KIND[+OPTION...]@B with KIND in {', '.join(KINDS)} and MoMoK's "
            f"OPTIONs in {', '.join(MOMOK_OPTIONS)} (one per attribute, none for tucker)"
        )
    return kind, int(size)


def switch(model, kind: str) -> None:
    """Put the (shared) MoMoK on the way ``kind`` trains: per-query reference, or fused on its contraction path.

    Options (``+bf16``, ``+all``, ``+batch``, ``+keep``) are set on the model for this configuration, ``+tf32`` on torch
    (``torch.set_float32_matmul_precision("high")``); the defaults (float32, ``relation_matrices="auto"``,
    ``"highest"``: no TF32) otherwise.
    """
    base, *options = kind.split("+")
    common.set_per_query(model, base == "per-query")
    common.set_contraction_path(model, MOMOK_PATHS[base])
    chosen = dict(MOMOK_OPTIONS[o] for o in options)
    model.relation_matrices = chosen.get("relation_matrices", "auto")
    if "recompute_candidates" in chosen:  # else as set_per_query left it (True, or False for the per-query way)
        model.recompute_candidates = chosen["recompute_candidates"]
    dtype = chosen.get("autocast_dtype")
    model.interaction.autocast_dtype = autocast_dtype_named(dtype)
    torch.set_float32_matmul_precision(chosen.get("float32_matmul_precision", "highest"))


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", default=str(common.DEFAULT_DATASET_DIR), help="the MKG-Y folder (read only)")
    parser.add_argument(
        "--configs", nargs="+", default=DEFAULT_CONFIGS, help=f"kind@batch_size, kind in {', '.join(KINDS)}"
    )
    parser.add_argument(
        "--projection-epochs", type=int, default=2000, help="epochs of the projected full run (reference: 2000)"
    )
    parser.add_argument("--batches", type=int, default=1, help="timed batches per configuration and repeat")
    parser.add_argument(
        "--back-to-back",
        type=int,
        default=5,
        help="steps per configuration and repeat also run back to back, one device wait at the end (0: none)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median over all timed batches)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed batches per configuration before each repeat's timed ones"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast dtype")
    parser.add_argument(
        "--adam",
        default="fused",
        choices=sorted(common.ADAMS),
        help="every configuration's Adams (see _common.ADAMS): fused (as the configs and recipes train), foreach, or "
        "PyTorch's default",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, = cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory children")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=100,
        help="epochs between the validations of the full projection (the paper recipe's early-stopper frequency)",
    )
    parser.add_argument(
        "--no-full-projection", action="store_true", help="skip timing the batches and one validation (full_min)"
    )
    parser.add_argument(
        "--validation-limit",
        type=int,
        default=None,
        help="validate on the first N validation triples only (a check of the script, not a measurement)",
    )
    parser.add_argument(
        "--memory-steps", type=int, default=2, help="training steps of a memory child (>= 2: Adam state)"
    )
    parser.add_argument(
        "--memory-configs", nargs="+", default=None, help="the configurations that get a memory child (default: all)"
    )
    parser.add_argument("--memory-cap-gb", type=float, default=16.0, help="address-space cap of a memory child (CPU)")
    parser.add_argument("--memory-timeout", type=float, default=600.0, help="seconds before a memory child is stopped")
    parser.add_argument(
        "--out", default="benchmarks/results/train.json", help="JSON result (a .csv is written next to it)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser


# -- one configuration in a fresh process: peak memory ------------------------------------------------------


def run_child(args: argparse.Namespace) -> None:
    """Build one configuration, take ``--memory-steps`` training steps, print the peak memory as JSON."""
    device = torch.device(args.device)
    if device.type == "cpu" and args.memory_cap_gb:
        cap = int(args.memory_cap_gb * 1e9)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    kind, batch_size = parse_config(args.child)
    result: dict[str, Any] = dict(config=args.child)
    training, _, _ = common.load_mkgy(args.dataset_dir, seed=args.seed)
    result["baseline_rss_gb"] = common.rss_gb()  # interpreter, torch, PyKEEN and the data, no model yet
    try:
        model = build(kind, training, device, args.seed)
        trainer = common.Trainer(model, training, device, dtype=args.dtype, seed=args.seed, adam=args.adam)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.memory_steps):
            trainer.step(trainer.batch(batch_size))
        result["status"] = "ok"
    except (MemoryError, RuntimeError) as error:
        result["status"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    result["peak_gb"] = common.peak_rss_gb()
    result["ru_maxrss_gb"] = common.max_rss_gb()
    result["peak_above_baseline_gb"] = result["peak_gb"] - result["baseline_rss_gb"]
    if device.type == "cuda":
        result["cuda_peak_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
    print(CHILD_MARKER + json.dumps(result), flush=True)


def measure_memory(args: argparse.Namespace, config: str) -> dict[str, Any]:
    command = [
        sys.executable,
        str(pathlib.Path(__file__).resolve()),
        "--child",
        config,
        "--dataset-dir",
        args.dataset_dir,
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--adam",
        args.adam,
        "--seed",
        str(args.seed),
        "--memory-steps",
        str(args.memory_steps),
        "--memory-cap-gb",
        str(args.memory_cap_gb),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.memory_timeout, check=False)
    except subprocess.TimeoutExpired:
        return dict(config=config, status=f"timed out after {args.memory_timeout:.0f} s")
    for line in done.stdout.splitlines():
        if line.startswith(CHILD_MARKER):
            result = json.loads(line[len(CHILD_MARKER) :])
            result["child_seconds"] = time.perf_counter() - start
            return result
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return dict(config=config, status=f"child exited {done.returncode}: {' | '.join(tail)[:300]}")


# -- all configurations in this process: time ---------------------------------------------------------------


def build(kind: str, training, device: torch.device, seed: int):
    if kind.split("+")[0] == "tucker":
        return common.build_tucker(training, device, seed=seed)
    model = common.build_momok(training, device, seed=seed)
    switch(model, kind)
    return model


def run_timing(args: argparse.Namespace, training, configs: list[str]) -> tuple[dict[str, dict[str, Any]], dict]:
    """Time every configuration; the results, and each configuration's trainer."""
    device = torch.device(args.device)
    trainers: dict[str, common.Trainer] = {}
    kinds = {parse_config(c)[0] for c in configs}

    def trainer(kind: str) -> common.Trainer:
        model = build(kind, training, device, args.seed)
        return common.Trainer(model, training, device, dtype=args.dtype, seed=args.seed, adam=args.adam)

    # one set of weights (and one Adam state) for all of MoMoK's configurations
    momok_trainer = trainer("momok") if kinds - {"tucker"} else None
    tucker_trainer = trainer("tucker") if "tucker" in kinds else None
    for config in configs:
        trainers[config] = tucker_trainer if parse_config(config)[0] == "tucker" else momok_trainer
    switched = {config: trainers[config] for config in configs}

    def step(config: str) -> common.StepTimes:
        kind, batch_size = parse_config(config)
        trainer = trainers[config]
        if kind != "tucker":
            switch(trainer.model, kind)
        else:
            torch.set_float32_matmul_precision("highest")  # a MoMoK configuration's +tf32 does not carry over
        return trainer.step(trainer.batch(batch_size))

    def back_to_back(config: str) -> float:
        kind, batch_size = parse_config(config)
        trainer = trainers[config]
        step(config)  # the configuration's settings (and one more warm step)
        batches = [trainer.batch(batch_size) for _ in range(args.back_to_back)]  # ready before the clock starts
        return trainer.steps_back_to_back(batches)

    results: dict[str, dict[str, Any]] = {
        c: dict(config=c, steps=[], warmup_steps=[], back_to_back_steps=[]) for c in configs
    }
    for repeat in range(args.repeats):
        for config in configs:
            for _ in range(args.warmup):
                times = step(config)
                results[config]["warmup_steps"].append(times.total)
                print(
                    f"  repeat {repeat + 1}/{args.repeats} {config:>16}: {times.total:7.2f} s (warm-up, untimed)",
                    flush=True,
                )
            for _ in range(args.batches):
                times = step(config)
                results[config]["steps"].append(vars(times))
                print(
                    f"  repeat {repeat + 1}/{args.repeats} {config:>16}: {times.total:7.2f} s "
                    f"(forward {times.forward:.2f}, backward {times.backward:.2f}, optimizer {times.optimizer:.2f}, "
                    f"estimator {times.estimator:.2f})",
                    flush=True,
                )
            if args.back_to_back:
                seconds = back_to_back(config)
                results[config]["back_to_back_steps"].append(seconds)
                print(
                    f"  repeat {repeat + 1}/{args.repeats} {config:>16}: {seconds:7.3f} s per step, "
                    f"{args.back_to_back} steps back to back",
                    flush=True,
                )
    pairs = common.lcwa_pairs(training)
    for config, result in results.items():
        _, batch_size = parse_config(config)
        totals = [s["total"] for s in result["steps"]]
        result["batch_size"] = batch_size
        result["batch_s"] = common.median(totals)
        result["batch_s_min"] = min(totals)
        result["batch_s_max"] = max(totals)
        for part in ("forward", "backward", "optimizer", "estimator"):
            result[f"{part}_s"] = common.median([s[part] for s in result["steps"]])
        result["batches_per_epoch"] = math.ceil(pairs / batch_size)
        result["epoch_s"] = result["batch_s"] * result["batches_per_epoch"]
        result["projection_epochs"] = args.projection_epochs
        result["projection_h"] = result["epoch_s"] * args.projection_epochs / 3600
        result["stream_s"] = common.median(result["back_to_back_steps"])
        result["stream_epoch_s"] = result["stream_s"] * result["batches_per_epoch"]
    if trainers and any(parse_config(c)[0] != "tucker" for c in configs):
        # which path "auto" took for each shape it met (empty on CPU, where it takes PyTorch's without timing)
        from pykeen_momok.nn.tucker import core_contraction_choices

        choices = {
            " ".join(map(str, key)): dict(path=path, seconds=times)
            for key, (path, times) in core_contraction_choices().items()
        }
        for result in results.values():
            result["auto_choices"] = choices
    return results, switched


def epoch_end_seconds(device: torch.device, repeats: int = 3) -> dict[str, float]:
    """Median seconds of the batched LCWA loop's end-of-epoch cleanup, ``"full"`` (PyKEEN's) and ``"light"``."""

    def full() -> None:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def light() -> None:
        # as the loop does around the training; nothing was created since the freeze, so this is a lower bound:
        # in training the collection also scans what the training created
        gc.freeze()
        gc.collect()
        gc.unfreeze()

    seconds: dict[str, float] = {}
    for name, cleanup in (("full", full), ("light", light)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            cleanup()
            times.append(time.perf_counter() - start)
        seconds[name] = common.median(times)
    return seconds


def full_projection(args: argparse.Namespace, results, trainers, training, validation) -> None:
    """Add ``batch_build_s``, ``validation_s`` and ``full_min`` to every result: the projected whole run.

    ``full_min`` = ``--projection-epochs`` x (epoch of steps, back to back where ``--back-to-back`` measured them,
    else phased, + building its batches with the batched LCWA loop
    + the loop's end-of-epoch cleanup) + one filtered validation (both sides, PyKEEN's evaluator) every
    ``--eval-every`` epochs, in minutes. The cleanup (``epoch_end_s``) is what the batched loop does by default on
    this device (:data:`pykeen_momok.lcwa.EPOCH_CLEANUP`, ``"auto"``), timed in this process (its Python heap
    is a training run's): ``"full"``, PyKEEN's ``gc.collect()`` over every object and ``torch.cuda.empty_cache()``,
    on CPU, ``"light"`` on CUDA; both are reported (``epoch_end_full_s``, ``epoch_end_light_s``). What emptying
    the cache costs the next epoch's allocations is not in it.
    The steps' own batches are ready-made; building them is timed here (coordinates cut on the host, targets
    scattered on the device), and one validation per model (the first one after a warm-up run; the candidate
    cache cleared before each, as changed weights clear it in training).
    """
    from pykeen.evaluation import RankBasedEvaluator

    from pykeen_momok.lcwa import BatchedLCWAInstances, dense_targets

    device = torch.device(args.device)
    instances = BatchedLCWAInstances.from_triples_factory(training)
    generator = torch.Generator().manual_seed(args.seed)
    build_s: dict[int, float] = {}
    for batch_size in sorted({parse_config(c)[1] for c in results}):
        seconds = []
        for _ in range(6):
            items = torch.randperm(len(instances), generator=generator)[:batch_size].tolist()
            common.sync(device)
            start = time.perf_counter()
            dense_targets(instances.__getitems__(items), device)
            common.sync(device)
            seconds.append(time.perf_counter() - start)
        build_s[batch_size] = common.median(seconds[1:])
    validation_s: dict[int, float] = {}
    torch.set_float32_matmul_precision("highest")  # no configuration's +tf32 carries over into the validations
    for trainer in {id(t): t for t in trainers.values()}.values():
        model = trainer.model
        model.eval()
        times = []
        for _ in range(2):
            if hasattr(model, "_candidate_cache"):
                model._candidate_cache = None
            common.sync(device)
            start = time.perf_counter()
            RankBasedEvaluator(filtered=True).evaluate(
                model,
                mapped_triples=validation.mapped_triples[: args.validation_limit],
                additional_filter_triples=[training.mapped_triples],
                batch_size=512,
                device=device,
                use_tqdm=False,
            )
            common.sync(device)
            times.append(time.perf_counter() - start)
        model.train()
        validation_s[id(trainer)] = times[-1]
    epoch_end = epoch_end_seconds(device)
    default_cleanup = "light" if reads_wait_for_device(device) else "full"  # the loop's "auto"
    evaluations = math.ceil(args.projection_epochs / args.eval_every)
    for config, result in results.items():
        batches = result["batches_per_epoch"]
        result["epoch_end_full_s"], result["epoch_end_light_s"] = epoch_end["full"], epoch_end["light"]
        result["epoch_end_s"] = epoch_end[default_cleanup]
        result["batch_build_s"] = build_s[result["batch_size"]]
        result["validation_s"] = validation_s[id(trainers[config])]
        result["eval_every"] = args.eval_every
        result["validation_triples"] = int(validation.mapped_triples[: args.validation_limit].shape[0])
        epoch_s = result["epoch_s"] if math.isnan(result["stream_epoch_s"]) else result["stream_epoch_s"]
        result["full_min"] = (
            args.projection_epochs * (epoch_s + batches * result["batch_build_s"] + result["epoch_end_s"])
            + evaluations * result["validation_s"]
        ) / 60


def main() -> None:
    args = get_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        run_child(args)
        return
    configs = list(dict.fromkeys(args.configs))
    for config in configs:
        parse_config(config)
    started = time.time()
    machine_before = common.machine_info()
    print(f"machine: {json.dumps(machine_before)}", flush=True)
    training, validation, _ = common.load_mkgy(args.dataset_dir, seed=args.seed)
    print(
        f"data: {training.num_entities} entities, {training.num_relations} relations (with inverses), "
        f"{common.lcwa_pairs(training)} LCWA pairs",
        flush=True,
    )

    memory: dict[str, dict[str, Any]] = {}
    if not args.no_memory:
        for config in configs if args.memory_configs is None else [c for c in configs if c in args.memory_configs]:
            print(f"memory child {config} ...", flush=True)
            memory[config] = measure_memory(args, config)
            print(f"  {json.dumps(memory[config])}", flush=True)
    print(
        f"timing {configs}: {args.repeats} repeats x ({args.warmup} untimed + {args.batches} timed) batches each",
        flush=True,
    )
    results, trainers = run_timing(args, training, configs)
    if not args.no_full_projection:
        full_projection(args, results, trainers, training, validation)
    for config, value in memory.items():
        results[config]["memory"] = value
    for result in results.values():
        memory = result.get("memory") or {}
        for key in ("peak_gb", "peak_above_baseline_gb", "baseline_rss_gb", "cuda_peak_gb"):
            if key in memory and memory.get("status") == "ok":
                result[key] = memory[key]

    goals = {}
    for label, (a, b, key, bound) in GOALS.items():
        if a in results and b in results and key in results[a] and key in results[b]:
            ratio = results[a][key] / results[b][key]
            goal = dict(ratio=ratio, goal=bound, met=ratio <= bound, numerator=a, denominator=b, quantity=key)
            if key == "epoch_s":
                # the same ratio from the two configurations' steps of each repeat, taken minutes apart at most:
                # less exposed to load that changes during the run
                steps_a, steps_b = results[a]["steps"], results[b]["steps"]
                n = min(len(steps_a), len(steps_b))
                scale = results[a]["batches_per_epoch"] / results[b]["batches_per_epoch"]
                paired = [scale * steps_a[i]["total"] / steps_b[i]["total"] for i in range(n)]
                goal["paired_ratios"] = paired
                goal["paired_ratio_median"] = common.median(paired)
            goals[label] = goal

    report(results, goals)
    out = dict(
        benchmark="train_epoch",
        args=vars(args),
        machine=machine_before,
        loadavg_after=list(os.getloadavg()),
        wall_seconds=time.time() - started,
        lcwa_pairs=common.lcwa_pairs(training),
        results=results,
        goals=goals,
    )
    columns = [
        "config", "batch_size", "batch_s", "batch_s_min", "batch_s_max", "forward_s", "backward_s", "optimizer_s",
        "estimator_s", "batches_per_epoch", "epoch_s", "projection_h", "stream_s", "stream_epoch_s", "batch_build_s",
        "validation_s", "epoch_end_s", "epoch_end_full_s", "epoch_end_light_s", "full_min", "peak_gb",
        "peak_above_baseline_gb", "baseline_rss_gb", "cuda_peak_gb",
    ]  # fmt: skip
    path, csv_path = common.write_results(args.out, out, list(results.values()), columns)
    print(f"wrote {path} and {csv_path} ({out['wall_seconds']:.0f} s in all)")


def report(results: dict[str, dict[str, Any]], goals: dict[str, dict[str, Any]]) -> None:
    def fmt(value, spec=".2f"):
        return format(value, spec) if isinstance(value, (int, float)) and not math.isnan(value) else "-"

    print()
    projection = next(iter(results.values()), {}).get("projection_epochs", 2000)
    header = (
        f"{'config':>18} {'batch s (min-max)':>20} {'fwd':>6} {'bwd':>6} {'opt':>5} {'est':>5} {'batches':>7} "
        f"{'epoch s':>8} {'epoch min':>9} {f'{projection} ep h':>9} {'b2b ms':>8} {'peak GB':>8} {'>base GB':>8} "
        f"{'cuda GB':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results.values():
        spread = f"{fmt(r['batch_s'], '.3f')} ({fmt(r['batch_s_min'], '.3f')}-{fmt(r['batch_s_max'], '.3f')})"
        print(
            f"{r['config']:>18} {spread:>20} {fmt(r['forward_s'], '.3f'):>6} {fmt(r['backward_s'], '.3f'):>6} "
            f"{fmt(r['optimizer_s']):>5} {fmt(r['estimator_s']):>5} {r['batches_per_epoch']:>7} "
            f"{fmt(r['epoch_s'], '.1f'):>8} "
            f"{fmt(r['epoch_s'] / 60, '.2f'):>9} {fmt(r['projection_h'], '.2f'):>9} "
            f"{fmt(r.get('stream_s', math.nan) * 1e3, '.1f'):>8} {fmt(r.get('peak_gb')):>8} "
            f"{fmt(r.get('peak_above_baseline_gb')):>8} {fmt(r.get('cuda_peak_gb')):>8}"
        )
        status = (r.get("memory") or {}).get("status")
        if status and status != "ok":
            print(f"{'':>18} memory: {status}")
    if any("full_min" in r for r in results.values()):
        first = next(r for r in results.values() if "full_min" in r)
        print(
            f"\nthe whole run: {projection} epochs of steps + building their batches (batched LCWA loop) + its "
            f"end-of-epoch cleanup + a validation every {first['eval_every']} epochs (goal, MoMoK on a GPU: < 10 min); "
            f"end of an epoch: PyKEEN's full cleanup {first['epoch_end_full_s'] * 1e3:.1f} ms, the light one "
            f"{first['epoch_end_light_s'] * 1e3:.2f} ms"
        )
        for r in results.values():
            if "full_min" in r:
                print(
                    f"{r['config']:>24}: {r['full_min']:8.1f} min (batch built in {r['batch_build_s'] * 1e3:.2f} ms, "
                    f"epoch end {r['epoch_end_s'] * 1e3:.1f} ms, validation {r['validation_s']:.2f} s)"
                )
    choices = next(iter(results.values()), {}).get("auto_choices")
    if choices:
        print(
            "core contraction path chosen by 'auto' (contraction device dtype B d: path, median "
            "seconds of forward + backward):"
        )
        for key, choice in choices.items():
            times = ", ".join(f"{path} {seconds * 1e3:.2f} ms" for path, seconds in choice["seconds"].items())
            print(f"  {key}: {choice['path']} ({times or 'not timed'})")
    print()
    for label, goal in goals.items():
        paired = ""
        if "paired_ratios" in goal:
            paired = f"; per repeat {', '.join(f'{r:.3f}' for r in goal['paired_ratios'])}"
        print(f"{label}: {goal['ratio']:.3f} (goal <= {goal['goal']}) {'met' if goal['met'] else 'NOT met'}{paired}")


if __name__ == "__main__":
    main()
