"""MoMoK, MoMoKLoss and the datasets resolve by name in fresh interpreters, whatever is imported first."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

FIRST_IMPORTS = [
    "pykeen",
    "pykeen.models",
    "pykeen.pipeline",
    "pykeen.hpo",
    "pykeen.datasets",
    "pykeen.nn",
    "pykeen.training",
    "pykeen.evaluation",
    "pykeen.losses",
    "pykeen.triples",
    "pykeen.experiments",
    "pykeen_momok",
    "pykeen_momok.model",
    "pykeen_momok.losses",
    "pykeen_momok.datasets.synthetic",
    "pykeen_momok.datasets.benchmarks",
]

CHECK = """
import {first}
from pykeen.models import model_resolver
from pykeen.losses import loss_resolver
from pykeen.datasets import dataset_resolver
assert model_resolver.lookup("MoMoK").__module__ == "pykeen_momok.model", model_resolver.lookup("MoMoK")
assert model_resolver.lookup("momok") is model_resolver.lookup("MoMoK")
assert loss_resolver.lookup("MoMoKLoss").__module__ == "pykeen_momok.losses"
assert dataset_resolver.lookup("SyntheticMMKG").__module__ == "pykeen_momok.datasets.synthetic"
assert dataset_resolver.lookup("MKG-Y").__name__ == "MKGY" and dataset_resolver.lookup("FB15K-237-IMG").__name__ == "FB15k237IMG"
print("ok")
"""


def _run(first: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECK.format(first=first))],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def results() -> dict[str, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(FIRST_IMPORTS, pool.map(_run, FIRST_IMPORTS), strict=True))


@pytest.mark.parametrize("first", FIRST_IMPORTS)
def test_resolvable_whatever_is_imported_first(results, first: str):
    result = results[first]
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_registration_is_idempotent():
    from pykeen.models import model_resolver

    import pykeen_momok
    from pykeen_momok.registration import register_model_and_loss

    before = dict(model_resolver.lookup_dict)
    pykeen_momok.install()
    register_model_and_loss()
    assert model_resolver.lookup_dict == before
