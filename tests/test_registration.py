"""MoMoK, MoMoKLoss, the batched LCWA loop and the datasets resolve by name in fresh interpreters, whatever first."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from fresh_interpreters import run_fresh

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
    "pykeen_momok.lcwa",
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
assert dataset_resolver.lookup("MKG-Y").__name__ == "MKGY"
assert dataset_resolver.lookup("FB15K-237-IMG").__name__ == "FB15k237IMG"
from pykeen.training import training_loop_resolver  # PyKEEN's models do not import pykeen.training
assert training_loop_resolver.lookup("batchedlcwa").__module__ == "pykeen_momok.lcwa"
import pykeen.datasets.utils
assert getattr(pykeen.datasets.utils._cached_get_dataset, "_momok_wrapped", False), "dataset cache not routed"
import sys, types
# nothing left to wait for: both packages have their plain class back
assert type(sys.modules["pykeen"]) is types.ModuleType and type(sys.modules["pykeen_momok"]) is types.ModuleType
print("ok")
"""


@pytest.fixture(scope="module")
def results() -> dict[str, subprocess.CompletedProcess]:
    # forked from a server that imported torch and the like, never pykeen or pykeen_momok: see fresh_interpreters
    return run_fresh({first: textwrap.dedent(CHECK.format(first=first)) for first in FIRST_IMPORTS})


@pytest.mark.parametrize("first", FIRST_IMPORTS)
def test_resolvable_whatever_is_imported_first(results, first: str):
    result = results[first]
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    # PyKEEN loaded every entry point (it logs "could not load <name>" for one it found half imported)
    assert "could not load" not in result.stderr, result.stderr[-3000:]


def test_importing_the_package_is_cheap():
    """``import pykeen_momok`` loads no torch and no PyKEEN module but PyKEEN's package (and its version)."""
    code = (
        "import sys, pykeen_momok; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'pykeen.'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["['pykeen.version']"]


def test_a_package_of_an_unknown_class_is_left_alone():
    """If another tool gave ``pykeen`` its own module class, install() says so and changes nothing."""
    code = textwrap.dedent(
        """
        import sys, types, pykeen
        class Other(types.ModuleType):
            pass
        pykeen.__class__ = Other
        import pykeen_momok
        assert type(pykeen) is Other
        import pykeen.models, pykeen.training
        from pykeen.models import model_resolver
        from pykeen.training import training_loop_resolver
        assert "momok" not in model_resolver.lookup_dict  # nothing could wait for pykeen.models
        pykeen_momok.install()  # what the warning says to do
        assert model_resolver.lookup("MoMoK").__module__ == "pykeen_momok.model"
        assert training_loop_resolver.lookup("batchedlcwa").__module__ == "pykeen_momok.lcwa"
        assert type(pykeen) is Other and type(pykeen_momok) is types.ModuleType
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
    assert "call pykeen_momok.install() again after importing pykeen.models (and pykeen.training" in result.stderr


def test_registration_is_idempotent():
    from pykeen.models import model_resolver

    import pykeen_momok
    from pykeen_momok.registration import register_model_and_loss

    before = dict(model_resolver.lookup_dict)
    pykeen_momok.install()
    register_model_and_loss()
    assert model_resolver.lookup_dict == before


# the dataset cache: only our datasets leave PyKEEN's, and only on the PyKEEN releases we know ----------


def _recording_module():
    """A stand-in for ``pykeen.datasets.utils`` whose ``_cached_get_dataset`` records its calls."""
    import types

    calls = []

    def _cached_get_dataset(dataset, dataset_kwargs, force=False):
        calls.append((dataset, dataset_kwargs, force))
        return "from pykeen"

    return types.SimpleNamespace(_cached_get_dataset=_cached_get_dataset), calls


def test_datasets_that_are_not_ours_reach_pykeens_cache_untouched(monkeypatch):
    import pykeen_momok.datasets.cache
    from pykeen_momok.registration import patch_dataset_cache

    utils, calls = _recording_module()
    patch_dataset_cache(utils)
    assert utils._cached_get_dataset._momok_wrapped
    ours = []
    monkeypatch.setattr(pykeen_momok.datasets.cache, "get_dataset_cached", lambda *args, **kwargs: ours.append(args))
    kwargs = {"some": "thing"}
    assert utils._cached_get_dataset("nations", kwargs) == "from pykeen"
    assert utils._cached_get_dataset("Kinships", None, force=True) == "from pykeen"
    assert calls == [("nations", kwargs, False), ("Kinships", None, True)] and calls[0][1] is kwargs
    assert kwargs == {"some": "thing"}  # no create_inverse_triples added, nothing popped
    assert utils._cached_get_dataset("no-such-dataset", {}) == "from pykeen"  # PyKEEN says what is wrong
    utils._cached_get_dataset("MKG-Y", {"directory": "x"})
    assert len(calls) == 3 and len(ours) == 1 and ours[0][0].__name__ == "MKGY"
    patch_dataset_cache(utils)  # idempotent
    assert utils._cached_get_dataset("nations", {}) == "from pykeen" and len(calls) == 4


def test_pykeens_own_dataset_is_cached_by_pykeen():
    from pykeen.constants import PYKEEN_DATASETS
    from pykeen.datasets import Nations, get_dataset
    from pykeen.datasets.utils import _digest_kwargs

    dataset = get_dataset(dataset="nations")
    assert isinstance(dataset, Nations) or type(dataset).__name__ == "EagerDataset"
    assert not dataset.training.create_inverse_triples  # PyKEEN's default, not ours
    assert PYKEEN_DATASETS.joinpath("nations", "cache", _digest_kwargs({}, ignore={"create_inverse_triples"})).is_dir()
    assert not list(PYKEEN_DATASETS.joinpath("nations").glob("cache/momok-*"))


@pytest.mark.parametrize("version", ["1.12.0", "2.0.0", "unknown"])
def test_an_unknown_pykeen_release_is_left_alone(monkeypatch, caplog, version):
    from pykeen_momok import registration

    monkeypatch.setattr(registration, "_pykeen_version", lambda: version)
    utils, _ = _recording_module()
    original = utils._cached_get_dataset
    with caplog.at_level("WARNING", logger="pykeen_momok.registration"):
        registration.patch_dataset_cache(utils)
    assert utils._cached_get_dataset is original
    assert f"PyKEEN {version} is not one of the releases" in caplog.text and "force=True" in caplog.text


def test_an_unknown_signature_is_left_alone(caplog):
    import types

    from pykeen_momok.registration import patch_dataset_cache

    def _cached_get_dataset(dataset, dataset_kwargs, force=False, *, cache_root=None):
        raise AssertionError("not to be called")

    utils = types.SimpleNamespace(_cached_get_dataset=_cached_get_dataset)
    with caplog.at_level("WARNING", logger="pykeen_momok.registration"):
        patch_dataset_cache(utils)
    assert utils._cached_get_dataset is _cached_get_dataset and "takes ('dataset'" in caplog.text


def test_which_datasets_are_ours():
    from pykeen.datasets import Nations

    from pykeen_momok.datasets.base import MultiModalDataset
    from pykeen_momok.datasets.benchmarks import MKGY
    from pykeen_momok.datasets.synthetic import SyntheticMMKG
    from pykeen_momok.registration import is_momok_dataset

    class UsersGraph(MultiModalDataset):
        pass

    assert is_momok_dataset(MKGY) and is_momok_dataset(SyntheticMMKG) and is_momok_dataset(UsersGraph)
    assert not is_momok_dataset(Nations) and not is_momok_dataset(None) and not is_momok_dataset("MKG-Y")


def test_a_submodule_is_bound_to_its_package_after_its_body_ran(tmp_path):
    """What registration waits on: the binding comes once the body has run, nested imports included."""
    package = tmp_path / "toy"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "inner.py").write_text("X = 1\n")
    (package / "sub.py").write_text("DONE = False\nimport toy.inner\nDONE = True\n")
    code = textwrap.dedent(
        """
        import types, toy
        seen = []
        class Watch(types.ModuleType):
            def __setattr__(self, name, value):
                super().__setattr__(name, value)
                seen.append((name, getattr(value, "DONE", "-")))
        toy.__class__ = Watch
        import toy.sub
        print(seen)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[('inner', '-'), ('sub', True)]"
