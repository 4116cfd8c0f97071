"""Shared test set-up: an isolated PyKEEN home and the location of the shared benchmark files."""

from __future__ import annotations

import os
import pathlib
import tempfile

# Importing PyKEEN creates its data folder under $HOME unless told otherwise: keep tests hermetic.
_HOME = tempfile.mkdtemp(prefix="pykeen-momok-tests-")
os.environ.setdefault("PYKEEN_HOME", _HOME)
os.environ.setdefault("PYSTOW_HOME", _HOME)
# Busy-waiting OpenMP threads slow torch by orders of magnitude when another process shares the cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Triton runs its kernels on CPU tensors only under its interpreter, chosen when triton is first imported, and
# other test modules import it early (pytorch-lightning, sentence-transformers, torch._dynamo): switch the
# interpreter on before any of them where there is no NVIDIA GPU, or tests/test_nn_tucker_triton.py would skip.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

#: The read-only benchmark files (never copied into the project); override with MOMOK_SHARED_DATA.
SHARED_DATA = pathlib.Path(
    os.environ.get("MOMOK_SHARED_DATA", pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")
)


def shared_dataset_dir(name: str) -> pathlib.Path:
    """Return ``../shared/data/<name>`` or skip the calling test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared benchmark files not found at {path} (set MOMOK_SHARED_DATA to their folder)")
    return path


def assert_rank_metrics_consistent(mrr: float, hits_at_1: float, hits_at_10: float) -> None:
    """Fail unless MRR, H@1 and H@10 can come from one list of ranks.

    Every rank is 1 (reciprocal 1) or at least 2 (reciprocal at most 1/2), so
    ``H@1 <= MRR <= H@1 + (1 - H@1) / 2``; and ``H@1 <= H@10``; a metric swapped, scaled or taken from another
    evaluation breaks one of them.
    """
    assert 0.0 <= hits_at_1 <= hits_at_10 <= 1.0, (hits_at_1, hits_at_10)
    assert hits_at_1 - 1e-9 <= mrr <= hits_at_1 + (1.0 - hits_at_1) / 2 + 1e-9, (mrr, hits_at_1)
