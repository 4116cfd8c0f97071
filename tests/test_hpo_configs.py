"""The ``configs/hpo/`` files: what ``pykeen experiments optimize`` reads, what each searches, and one real run.

``pykeen experiments optimize`` passes ``{**config["pipeline"], **config["optuna"]}`` to ``hpo_pipeline`` as is, so
an unknown or doubled key fails only when it runs, and a setting that is both fixed (``model_kwargs``) and searched
(``model_kwargs_ranges``) is silently not searched; a parameter of a ``hpo_default`` that a config neither fixes nor
searches is searched over the class's broad default range. These tests catch all of that before a study starts.
"""

from __future__ import annotations

import inspect
import json
import math
import pathlib
from typing import Any

import optuna
import pytest
from pykeen.hpo import hpo_pipeline, hpo_pipeline_from_config
from pykeen.losses import loss_resolver
from pykeen.models import model_resolver
from pykeen.optimizers import optimizer_resolver, optimizers_hpo_defaults
from pykeen.training import training_loop_resolver

from pykeen_momok.recipes import recipe

HPO_CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs" / "hpo"
BENCHMARKS = {"db15k": "DB15K", "mkgw": "MKG-W", "mkgy": "MKG-Y", "fb15k237img": "FB15K-237-IMG", "kvc16k": "KVC16K"}
ALL_CONFIGS = sorted(path.name for path in HPO_CONFIGS.glob("*.json"))
#: the searched components: prefix of the pipeline keys -> (resolver, class attribute with the default ranges)
COMPONENTS = {
    "model": (model_resolver, "hpo_default"),
    "loss": (loss_resolver, "hpo_default"),
    "optimizer": (optimizer_resolver, None),
    "training": (training_loop_resolver, "hpo_default"),
}


def _load(name: str) -> dict[str, Any]:
    return json.loads((HPO_CONFIGS / name).read_text())


def _component(pipeline: dict[str, Any], prefix: str) -> tuple[type, dict[str, Any], set[str]]:
    """The class of a component, its default search space, and the parameters it accepts."""
    resolver, attribute = COMPONENTS[prefix]
    if prefix == "training":
        cls = resolver.lookup(pipeline.get("training_loop"))
        return cls, dict(cls.hpo_default), set(inspect.signature(cls.train).parameters) - {"self"}
    cls = resolver.lookup(pipeline.get(prefix))
    defaults = optimizers_hpo_defaults[cls] if attribute is None else getattr(cls, attribute)
    return cls, dict(defaults), set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}


def _in_range(value: Any, info: dict[str, Any]) -> bool:
    """Whether ``value`` is one the range ``info`` (in PyKEEN's ``*_kwargs_ranges`` format) can suggest."""
    if info.get("scale") == "power_two":
        return value in [2**exponent for exponent in range(info["low"], info["high"] + 1)]
    if not info["low"] <= value <= info["high"]:
        return False
    step = info.get("step", 1 if info["type"] == "int" else None)
    return step is None or math.isclose(round((value - info["low"]) / step) * step + info["low"], value)


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_config_keys_are_hpo_pipeline_parameters(name: str) -> None:
    config = _load(name)
    assert set(config) <= {"metadata", "pipeline", "optuna"}, sorted(config)
    pipeline, study = config["pipeline"], config["optuna"]
    parameters = set(inspect.signature(hpo_pipeline).parameters)
    assert not (set(pipeline) | set(study)) - parameters, sorted((set(pipeline) | set(study)) - parameters)
    assert not set(pipeline) & set(study), f"given twice: {sorted(set(pipeline) & set(study))}"
    # hpo_pipeline takes no seed (each trial draws one, stored as its user attribute "random_seed"), and a seeded
    # sampler would hand every worker the same sequence of parameters
    assert "random_seed" not in parameters
    assert "seed" not in (study.get("sampler_kwargs") or {})
    assert study["load_if_exists"] is True and study["direction"] == "maximize" and study["metric"] == "mrr"
    assert study["storage"] == f"sqlite:///{study['study_name']}_hpo.db?timeout=60"
    assert f"{study['study_name']}.json" == name


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_default_range_is_fixed_or_searched_explicitly(name: str) -> None:
    pipeline = _load(name)["pipeline"]
    for prefix in COMPONENTS:
        cls, defaults, accepted = _component(pipeline, prefix)
        fixed = pipeline.get(f"{prefix}_kwargs") or {}
        searched = pipeline.get(f"{prefix}_kwargs_ranges") or {}
        where = f"{name}, {prefix} ({cls.__name__})"
        both, given = set(fixed) & set(searched), set(fixed) | set(searched)
        assert not both, f"{where}: fixed and searched (so not searched): {both}"
        assert set(defaults) <= given, f"{where}: searched over the default range: {set(defaults) - given}"
        assert given <= accepted, f"{where}: not parameters of {cls.__name__}: {given - accepted}"
        for key, info in searched.items():
            assert info["type"] in {"int", "float", "categorical", "bool"}, (where, key, info)
            if info["type"] in {"int", "float"}:
                assert info["low"] < info["high"], (where, key, info)
                # PyKEEN reads "log": true for floats and ignores "scale": "log" (its own Adam default has that slip)
                assert info.get("scale") in (None, "power_two"), (where, key, info)
                assert not (info.get("log") and info.get("step")), f"{where}: {key} is log-scaled with a step"
                if info.get("step"):
                    assert _in_range(info["high"], info), f"{where}: {key}'s high is not on its step grid"


@pytest.mark.parametrize("short", sorted(BENCHMARKS))
def test_benchmark_configs_search_around_the_fast_recipe(short: str) -> None:
    pipeline = _load(f"momok_{short}.json")["pipeline"]
    fast = recipe("fast", BENCHMARKS[short])
    fast.pop("random_seed")  # hpo_pipeline has none: see test_config_keys_are_hpo_pipeline_parameters
    assert pipeline["dataset"] == BENCHMARKS[short]
    for key, value in fast.items():
        searched = pipeline.get(f"{key}_ranges", {})
        if not isinstance(value, dict):
            assert pipeline[key] == value, key
            continue
        assert (pipeline.get(key) or {}) == {k: v for k, v in value.items() if k not in searched}, key
        for parameter, info in searched.items():
            assert _in_range(value[parameter], info), (
                f"the fast recipe's {key}.{parameter}={value[parameter]} not in {info}"
            )
    # the searched space is the same on every benchmark
    reference = _load("momok_mkgy.json")["pipeline"]
    assert {k: v for k, v in pipeline.items() if k.endswith("_ranges")} == {
        k: v for k, v in reference.items() if k.endswith("_ranges")
    }


def test_a_benchmark_config_runs_through_hpo_pipeline() -> None:
    """MKG-Y's config as ``pykeen experiments optimize`` runs it, on a tiny synthetic graph: early stopper + pruner."""
    config = _load("momok_mkgy.json")
    config["pipeline"].update(
        dataset="SyntheticMMKG",
        # 196 entities: about 1,800 LCWA instances, so that a batch of 1024 is not the (dropped) last one
        dataset_kwargs=dict(num_colours=14, num_shapes=14, seed=1),
        training_kwargs=dict(num_epochs=2),
        stopper_kwargs={**config["pipeline"]["stopper_kwargs"], "frequency": 1},
    )
    config["optuna"].update(storage=None, n_trials=2)
    study = hpo_pipeline_from_config(config).study
    trials = study.get_trials(deepcopy=False)
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:
        # the early stopper reported each epoch's validation MRR to the trial, which the pruner reads
        assert sorted(trial.intermediate_values) == [1, 2], trial.intermediate_values
        assert {key.split(".")[0] for key in trial.params} == {"model", "loss", "optimizer", "training"}
        assert trial.params["training.batch_size"] in (256, 512, 1024)
