"""Training recipes and experiment configurations for ``pykeen-momok train``.

A *recipe* is a set of :func:`pykeen.pipeline.pipeline` keyword arguments (without the dataset):

- ``"paper"``: the reference code's settings (per-head BCE with label smoothing, d = 256 — 300 on MKG-Y, 200
  on MKG-W —, Adam 5e-4, batch 1024, 2000 epochs, early stopping on validation MRR every 100 epochs);
- ``"fast"``: the same model with the settings the ``configs/*_fast.json`` files use (per-head softmax
  cross-entropy, d = 64, identity-started experts, fixed feature tables, linear adapters, no core dropout, Adam 1e-2,
  batch 512,
  100 epochs, early stopping every 5 epochs).

They are the settings of the ``configs/momok_<dataset>.json`` and ``configs/momok_<dataset>_fast.json`` files,
held here so that an installed package has them (``tests/test_cli.py`` checks that both agree).

:func:`load_experiment_config` reads a PyKEEN experiment file (``{"metadata": ..., "pipeline": {...}}``, as
``pykeen experiments run`` takes) and refuses what it cannot run, with the reason.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import json
import pathlib
from collections.abc import Mapping
from typing import Any

__all__ = [
    "RECIPES",
    "RECOMMENDED_DEFAULTS",
    "ConfigError",
    "load_experiment_config",
    "merge",
    "pipeline_parameters",
    "recipe",
    "same_dataset",
]

#: the settings shared by every benchmark, per recipe (see the module docstring)
RECIPES: Mapping[str, Mapping[str, Any]] = {
    "paper": dict(
        model="MoMoK",
        model_kwargs=dict(embedding_dim=256, relation_dim=256, num_experts=3, mi_weight=1e-4, mi_estimator_lr=5e-4),
        loss="MoMoKLoss",
        loss_kwargs=dict(head_loss="bce", label_smoothing=0.1),
        training_loop="batchedlcwa",
        optimizer="adam",
        optimizer_kwargs=dict(lr=5e-4, fused=True),
        training_kwargs=dict(num_epochs=2000, batch_size=1024),
        stopper="early",
        stopper_kwargs=dict(frequency=100, patience=3, metric="mrr"),
        evaluator_kwargs=dict(filtered=True),
        evaluation_kwargs=dict(batch_size=512),
        random_seed=10010,
    ),
    "fast": dict(
        model="MoMoK",
        model_kwargs=dict(
            embedding_dim=64,
            relation_dim=64,
            num_experts=3,
            mi_weight=1e-4,
            mi_estimator_lr=1e-2,
            adapters="linear",
            expert_init="identity",
            trainable_features=False,
            input_dropout=0.2,
            core_dropout=0.0,
            hidden_dropout=0.3,
            recompute_candidates=False,
        ),
        loss="MoMoKLoss",
        loss_kwargs=dict(head_loss="softmax", label_smoothing=0.1),
        training_loop="batchedlcwa",
        optimizer="adam",
        optimizer_kwargs=dict(lr=1e-2, fused=True),
        training_kwargs=dict(num_epochs=100, batch_size=512),
        stopper="early",
        stopper_kwargs=dict(frequency=5, patience=4, metric="mrr"),
        evaluator_kwargs=dict(filtered=True),
        evaluation_kwargs=dict(batch_size=1024),
        random_seed=10010,
    ),
}

#: what every run gets unless its config says otherwise (PyKEEN 1.11.1's pipeline() ignores the model's loss
#: default and trains sLCWA; see ``pykeen_momok.RECOMMENDED_PIPELINE_KWARGS``)
RECOMMENDED_DEFAULTS: Mapping[str, Any] = dict(model="MoMoK", loss="MoMoKLoss", training_loop="batchedlcwa")

#: per recipe and normalised dataset name, what differs from :data:`RECIPES` (the reference's per-dataset settings)
_DATASET_OVERRIDES: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    "paper": {
        "mkgy": dict(model_kwargs=dict(embedding_dim=300)),
        "mkgw": dict(model_kwargs=dict(embedding_dim=200, mi_estimator_lr=1e-3), optimizer_kwargs=dict(lr=1e-3)),
        "db15k": dict(dataset_kwargs=dict(validation="heldout")),
    },
    "fast": {
        "db15k": dict(dataset_kwargs=dict(validation="heldout")),
    },
}

#: pipeline() arguments a configuration may not set here: the dataset comes from --dataset / --directory
_UNSUPPORTED = {
    "training": 'give the dataset by name ("dataset") or its folder with --directory',
    "testing": 'give the dataset by name ("dataset") or its folder with --directory',
    "validation": 'give the dataset by name ("dataset") or its folder with --directory',
}
_TOP_LEVEL = ("metadata", "pipeline")


class ConfigError(ValueError):
    """An experiment configuration that cannot be run; the message says where and why."""


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``update`` into a deep copy of ``base``; nested ``*_kwargs`` dicts are merged key by key."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _normalize(dataset: str | None) -> str | None:
    if dataset is None:
        return None
    from pykeen.datasets import dataset_resolver

    return dataset_resolver.normalize(dataset)


def same_dataset(a: str | None, b: str | None) -> bool:
    """Whether two dataset names name the same PyKEEN dataset (None is no dataset)."""
    return a is not None and b is not None and _normalize(a) == _normalize(b)


def recipe(name: str, dataset: str | None = None) -> dict[str, Any]:
    """The pipeline() keyword arguments of a recipe for a dataset (by any name PyKEEN normalises; None: a user's).

    :raises KeyError: for an unknown recipe name
    """
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; known: {sorted(RECIPES)}")
    return merge(RECIPES[name], _DATASET_OVERRIDES[name].get(_normalize(dataset) or "", {}))


def pipeline_parameters() -> list[str]:
    """The keyword arguments :func:`pykeen.pipeline.pipeline` takes."""
    from pykeen.pipeline import pipeline

    return list(inspect.signature(pipeline).parameters)


def _unknown(kind: str, keys: list[str], known: list[str], where: str) -> ConfigError:
    parts = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=3)
        parts.append(f"{key!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
    return ConfigError(f"{where}: unknown {kind} {', '.join(parts)}; known: {', '.join(known)}")


def load_experiment_config(path: str | pathlib.Path) -> dict[str, Any]:
    """Read a PyKEEN experiment JSON file and return its ``"pipeline"`` dict (pipeline() keyword arguments).

    :raises ConfigError: naming the file and, for JSON syntax errors, the line and column; for a top level that is
        not ``{"metadata": ..., "pipeline": {...}}``, unknown pipeline() arguments (with close matches), arguments
        this command cannot take (``training``/``testing``/``validation`` paths), a ``dataset`` that is not a
        name, or a model other than MoMoK
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{str(path)!r}: cannot read it: {error}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{str(path)!r} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(
            f'{str(path)!r}: expected a JSON object with a "pipeline" object, got {type(config).__name__}'
        )
    extra = sorted(set(config) - set(_TOP_LEVEL))
    if extra:
        raise _unknown("top-level key", extra, list(_TOP_LEVEL), repr(str(path)))
    pipeline_kwargs = config.get("pipeline")
    if not isinstance(pipeline_kwargs, dict):
        raise ConfigError(
            f'{str(path)!r}: expected a "pipeline" object (the keyword arguments of pykeen.pipeline.pipeline), '
            + ("found none" if pipeline_kwargs is None else f"got {type(pipeline_kwargs).__name__}")
        )
    known = pipeline_parameters()
    extra = sorted(set(pipeline_kwargs) - set(known))
    if extra:
        raise _unknown("pipeline key", extra, known, f'{str(path)!r}, "pipeline"')
    for key, why in _UNSUPPORTED.items():
        if key in pipeline_kwargs:
            raise ConfigError(f'{str(path)!r}, "pipeline": {key!r} (a triples file) is not supported here: {why}')
    dataset = pipeline_kwargs.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise ConfigError(f'{str(path)!r}, "pipeline": "dataset" must be a dataset name, got {dataset!r}')
    model = pipeline_kwargs.get("model", "MoMoK")
    if not isinstance(model, str) or model.lower() != "momok":
        raise ConfigError(
            f'{str(path)!r}, "pipeline": "model" is {model!r}; this command trains MoMoK only (run other models '
            f"with `pykeen experiments run`)"
        )
    for key, value in pipeline_kwargs.items():
        if key.endswith("_kwargs") and value is not None and not isinstance(value, dict):
            raise ConfigError(f'{str(path)!r}, "pipeline": {key!r} must be an object, got {value!r}')
    return pipeline_kwargs
