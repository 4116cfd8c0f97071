"""``benchmarks/graph_step.py``: the CUDA-graph benchmark's CPU side (the capture itself needs CUDA)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import torch

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import graph_step  # noqa: E402

from pykeen_momok.datasets.synthetic import SyntheticMMKG  # noqa: E402

import _common as common  # noqa: E402


def test_the_script_runs_the_eager_steps_and_says_capture_needs_cuda(tmp_path):
    """Tiny sizes on CPU, the Triton kernels interpreted: eager figures and losses, and why there is no graph."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYKEEN_HOME=str(tmp_path / "pykeen"), OMP_NUM_THREADS="1")
    out = tmp_path / "graph_step.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "graph_step.py"), "--device", "cpu", "--dataset", "synthetic"]
        + ["--batch-size", "4", "--steps", "1", "--loss-steps", "2", "--warmup", "0", "--configs", "momok"]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    run = result["runs"]["momok"]
    assert result["adam"] == "fused" and run["eager_ms"] > 0
    assert len(run["eager_losses"]) == 2 and all(loss > 0 for loss in run["eager_losses"])
    assert run["capture_error"] == "capture needs CUDA (device cpu)" and "graph_ms" not in run
    assert "no graph: capture needs CUDA" in done.stdout


def test_restoring_the_state_tensors_repeats_the_steps(monkeypatch):
    """What the loss check restores between its eager and replayed runs is the whole state a step changes:
    parameters, batch-norm statistics, both Adams. Restored, and the RNG reseeded, the same steps give the same
    losses bit for bit; not restored, they do not."""
    monkeypatch.setenv("PYKEEN_HOME", os.environ.get("PYKEEN_HOME", "/tmp/pykeen-momok-tests"))
    training = SyntheticMMKG().training
    model = common.build_momok(
        training,
        torch.device("cpu"),
        embedding_dim=8,
        relation_dim=8,
        adapters={"image": "identity", "text": "identity"},
        mi_pair_draw="device",
    )
    trainer = common.Trainer(model, training, torch.device("cpu"))
    trainer.train_step(trainer.batch(16))  # the Adams' state exists from here on
    batches = [trainer.batch(16) for _ in range(3)]
    saved = [t.detach().clone() for t in graph_step.state_tensors(trainer)]
    assert any(t.dim() == 0 for t in saved)  # the Adams' step counts are among them

    def losses() -> list[float]:
        torch.manual_seed(3)
        return [float(trainer.train_step(b)) for b in batches]

    first = losses()
    moved = losses()
    graph_step.restore_state(trainer, saved)
    assert losses() == first
    assert moved != first
