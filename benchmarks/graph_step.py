#!/usr/bin/env python
"""A MoMoK training step captured as one CUDA graph, against the same step run eagerly (issue 8, item 3).

A MoMoK step issues about 1,300 kernel launches at the reference sizes (``step_ops.py``); at several microseconds
of host time each, issuing them takes about as long as the issue's 10 ms goal. A CUDA graph replays the whole
step with one launch. Capture needs a step that decides nothing on the host: the core-dropout seeds drawn on the
device and read there by the Triton kernels (``core_contraction_path="triton"``), the CLUB estimator's expert pairs
drawn on the device (``mi_pair_draw="device"``), every relation's core matrix (``relation_matrices="all"``: no
``torch.unique``), and both Adams fused with their step counts on the device (``capturable``). That step is
checked on CPU by ``tests/test_nn_tucker_triton.py::test_a_capture_ready_training_step_decides_nothing_on_the_host``.

For each configuration (``--configs``: ``momok+keep`` keeps the candidates' activations for the backward pass,
``momok`` recomputes them there under an activation checkpoint, the model's default), on ``--device cuda``:

- ``eager_ms``: ``--steps`` steps back to back, one wait at the end (median of three runs);
- ``graph_ms``: the same number of replays of the captured step, each after copying its batch into the graph's
  input tensors (median of three runs); ``speedup`` is ``eager_ms / graph_ms``;
- ``capture_s``: warm-up on a side stream (Triton compiles there) and the capture;
- ``seeds_differ``: whether three replays drew three different core-dropout seeds (a graph that replayed one
  mask would be a bug, not a speed-up);
- ``eager_losses`` / ``graph_losses``: ``--loss-steps`` steps on the same batches from the same state (weights,
  batch norms, both Adams restored in place between the two), eagerly and replayed: other random draws, so close
  but not equal.

A capture that fails is recorded with its error (``capture_error``), and the next configuration runs. ``momok`` is
expected to fail: PyTorch's activation checkpoint saves the CUDA generator's state in the forward pass to replay the
candidates' dropout and gating noise in the backward pass, and that state cannot be read during a capture ("Cannot
call CUDAGeneratorImpl::current_seed during CUDA graph capture"); it runs second, so that ``momok+keep`` is
measured whatever it does. Off CUDA the script runs the eager steps only (the Triton kernels interpreted on CPU,
``TRITON_INTERPRET=1``; tiny sizes) and says that capture needs CUDA.

    PYKEEN_HOME=/tmp/pkh python benchmarks/graph_step.py --device cuda --dataset mkgy \\
        --out benchmarks/results/graph_step.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the first torch import

import argparse  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import torch  # noqa: E402

import _common as common  # noqa: E402

#: ``--configs``: the candidates' activations recomputed under an activation checkpoint, or kept (``+keep``)
CONFIGS = ("momok+keep", "momok")


class CapturedStep:
    """One :meth:`common.Trainer.train_step` captured as a CUDA graph, replayed on new batches.

    :param trainer: a trainer whose model and Adams are capture-ready (see the module docstring)
    :param batch: a batch of the size every replay takes (its tensors are copied into the graph's inputs)
    :param warmup: eager steps on a side stream before the capture (PyTorch's advice; Triton compiles here)
    """

    def __init__(self, trainer: common.Trainer, batch: dict[str, torch.Tensor], warmup: int = 3) -> None:
        self.trainer = trainer
        self.inputs = {key: value.clone() for key, value in batch.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                trainer.train_step(self.inputs)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = trainer.train_step(self.inputs)
        # the heads' seed tensors of the captured step: each replay draws new values into them
        self.seeds = [head.last_core_seed for head in common.tucker_heads(trainer.model)]

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Replay on ``batch``; the step's loss (a tensor the next replay overwrites: clone it to keep it)."""
        for key, value in self.inputs.items():
            value.copy_(batch[key])
        self.graph.replay()
        return self.loss


def state_tensors(trainer: common.Trainer) -> list[torch.Tensor]:
    """Every tensor a step changes in place: parameters, buffers, both Adams' state."""
    model = trainer.model
    tensors = [*model.parameters(), *model.buffers()]
    optimizers = [trainer.optimizer, model.mutual_information.optimizer]
    for optimizer in optimizers:
        for state in optimizer.state.values():
            tensors.extend(value for value in state.values() if isinstance(value, torch.Tensor))
    return tensors


def restore_state(trainer: common.Trainer, saved: list[torch.Tensor]) -> None:
    """Copy ``saved`` (clones of :func:`state_tensors`) back into the trainer's state, in place."""
    with torch.no_grad():
        for tensor, value in zip(state_tensors(trainer), saved, strict=True):
            tensor.copy_(value)


def build_trainer(training, device: torch.device, config: str, sizes: dict, adam: str) -> common.Trainer:
    model = common.build_momok(
        training,
        device,
        relation_matrices="all",
        core_contraction_path="triton",
        mi_pair_draw="device",
        recompute_candidates=config != "momok+keep",
        **sizes,
    )
    return common.Trainer(model, training, device, adam=adam)


def timed(run, device: torch.device, repeats: int = 3) -> float:
    """Median milliseconds of ``run()`` (one wait for the device at its end)."""
    times = []
    for _ in range(repeats):
        common.sync(device)
        start = time.perf_counter()
        run()
        common.sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return common.median(times)


def measure(trainer: common.Trainer, device: torch.device, args: argparse.Namespace) -> dict:
    """The figures of one configuration (see the module docstring)."""
    size = args.batch_size
    result: dict = {}
    for _ in range(args.warmup):
        trainer.train_step(trainer.batch(size))
    batches = [trainer.batch(size) for _ in range(args.steps)]
    per_step = timed(lambda: trainer.steps_back_to_back(batches), device) / args.steps
    result["eager_ms"] = per_step
    loss_batches = [trainer.batch(size) for _ in range(args.loss_steps)]
    saved = [t.detach().clone() for t in state_tensors(trainer)]
    result["eager_losses"] = [float(trainer.train_step(b)) for b in loss_batches]
    if device.type != "cuda":
        result["capture_error"] = f"capture needs CUDA (device {device})"
        return result
    restore_state(trainer, saved)
    start = time.perf_counter()
    try:
        step = CapturedStep(trainer, batches[0])
    except Exception as error:  # recorded: the next configuration runs
        result["capture_error"] = f"{type(error).__name__}: {error}"
        result["capture_traceback"] = traceback.format_exc()
        return result
    torch.cuda.synchronize(device)
    result["capture_s"] = time.perf_counter() - start
    # the warm-up and capture moved the state on: restore it, so the replayed losses start where the eager ones did
    restore_state(trainer, saved)
    result["graph_losses"] = [float(step(b)) for b in loss_batches]
    seeds = []
    for b in batches[:3]:
        step(b)
        seeds.append(tuple(int(seed) for seed in step.seeds))
    result["seeds_differ"] = len(set(seeds)) == len(seeds)

    def replays() -> None:
        total = None
        for b in batches:
            loss = step(b)
            total = loss.clone() if total is None else total + loss
        if not math.isfinite(float(total)):
            raise FloatingPointError(f"non-finite loss sum {float(total)}")

    result["graph_ms"] = timed(replays, device) / args.steps
    result["speedup"] = result["eager_ms"] / result["graph_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_step_arguments(parser)
    parser.add_argument("--configs", nargs="+", choices=CONFIGS, default=list(CONFIGS))
    parser.add_argument("--dim", type=int, default=None, help="d (default: 300 on MKG-Y, 8 on the demo graph)")
    parser.add_argument("--relation-dim", type=int, default=None, help="d_r (default: 256 on MKG-Y, --dim otherwise)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10, help="steps per timing (three timings, the median)")
    parser.add_argument("--warmup", type=int, default=2, help="eager steps before the timings")
    parser.add_argument("--loss-steps", type=int, default=5, help="steps of the eager-against-replayed loss check")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results/graph_step.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.dataset == "mkgy":
        training, _, _ = common.load_mkgy(args.dataset_dir)
        dim = args.dim or common.REFERENCE["embedding_dim"]
        sizes = dict(adapters=common.ADAPTERS, embedding_dim=dim)
        sizes["relation_dim"] = args.relation_dim or (common.REFERENCE["relation_dim"] if not args.dim else dim)
    else:
        from pykeen_momok.datasets.synthetic import SyntheticMMKG

        training = SyntheticMMKG().training
        dim = args.dim or 8
        sizes = dict(adapters={"image": "identity", "text": "identity"}, embedding_dim=dim)
        sizes["relation_dim"] = args.relation_dim or dim
    adam = "capturable" if device.type == "cuda" else "fused"  # PyTorch's capturable Adam is CUDA's only
    results = dict(machine=common.machine_info(), args=vars(args), adam=adam, runs={})
    rows = []
    for config in args.configs:
        trainer = build_trainer(training, device, config, sizes, adam)
        result = measure(trainer, device, args)
        results["runs"][config] = result
        rows.append(
            dict(
                config=config,
                eager_ms=result["eager_ms"],
                graph_ms=result.get("graph_ms", float("nan")),
                speedup=result.get("speedup", float("nan")),
                capture_s=result.get("capture_s", float("nan")),
                seeds_differ=result.get("seeds_differ"),
                capture_error=result.get("capture_error", ""),
            )
        )
        graph = (
            f"graph {result['graph_ms']:.2f} ms ({result['speedup']:.2f}x; capture {result['capture_s']:.1f} s, "
            f"seeds differ between replays: {result['seeds_differ']})"
            if "graph_ms" in result
            else f"no graph: {result['capture_error']}"
        )
        print(f"{config:>12}: eager {result['eager_ms']:.2f} ms a step, {graph}", flush=True)
        losses = ", ".join(f"{a:.4f}/{b:.4f}" for a, b in zip(result["eager_losses"], result.get("graph_losses", [])))
        if losses:
            print(f"{'':>12}  losses eager/replayed from one state: {losses}", flush=True)
        del trainer
    path, csv_path = common.write_results(args.out, results, rows)
    print(f"wrote {path} and {csv_path}")


if __name__ == "__main__":
    main()
