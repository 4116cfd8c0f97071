"""``benchmarks/compile_breaks.py``: where ``torch.compile`` breaks a training forward pass, on CPU."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_breaks_of_the_pytorch_path_are_its_host_seeds_and_generators(tmp_path):
    """The PyTorch contraction's breaks all come from ``nn/tucker.py`` (host-side seeds, one generator per chunk):
    the rest of the step, the activation-checkpointed candidates included, traces without a break. The Triton
    configurations are skipped off CUDA, with the reason."""
    env = dict(os.environ, PYKEEN_HOME=str(tmp_path / "pykeen"), OMP_NUM_THREADS="1")
    out = tmp_path / "compile_breaks.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compile_breaks.py"), "--device", "cpu", "--dataset", "synthetic"]
        + ["--configs", "torch", "triton", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    runs = json.loads(out.read_text())["runs"]
    torch_run = runs["torch"]
    assert torch_run["breaks"] > 0 and torch_run["graphs"] == torch_run["breaks"] + 1
    sites = [entry["site"] for entry in torch_run["sites"]]
    assert any(site.startswith("pykeen_momok/nn/tucker.py:") and "draw_core_seed" in site for site in sites)
    # the only break outside the Tucker module is the call into it (the resumed frame of the head's caller)
    outside = [site for site in sites if not site.startswith("pykeen_momok/nn/tucker.py:")]
    assert all(site.startswith("pykeen_momok/nn/interaction.py:") for site in outside), outside
    assert runs["triton"]["skipped"].startswith("Dynamo traces Triton kernels on CUDA only")
    assert "torch: " in done.stdout and (tmp_path / "compile_breaks.csv").exists()
