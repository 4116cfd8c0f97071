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
