"""Command line ``pykeen-momok``: train, evaluate and query MoMoK, and the ``demo`` comparison with TuckER."""

from __future__ import annotations

import copy
import csv
import difflib
import inspect
import json
import logging
import math
import os
import pathlib
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

__all__ = ["cli", "main", "run_demo"]

METRICS = ("inverse_harmonic_mean_rank", "hits_at_1", "hits_at_3", "hits_at_10")
METRIC_NAMES = ("MRR", "H@1", "H@3", "H@10")

_TRUST = (
    "FOLDER holds a whole pickled model (trained_model.pkl, PyKEEN's format): loading it can run code, so load only "
    "folders you trust (ones you trained yourself)."
)


# the demo ----------------------------------------------------------------------------------------------


def _train(model: str, dataset: str, epochs: int, dim: int, lr: float, batch_size: int, seed: int, **extra: Any):
    from pykeen.pipeline import pipeline

    return pipeline(
        model=model,
        dataset=dataset,
        training_loop="batchedlcwa",  # PyKEEN's LCWA, batches built faster
        # gc.collect() at each epoch's end over the new objects only: over the whole process it took 0.22 s an epoch
        training_loop_kwargs=dict(epoch_cleanup="light"),
        epochs=epochs,
        training_kwargs=dict(batch_size=batch_size, **extra.pop("training_kwargs", {})),
        optimizer="adam",
        optimizer_kwargs=dict(lr=lr),
        evaluation_kwargs=dict(batch_size=256),
        random_seed=seed,
        **extra,
    )


def run_demo(
    dataset: str = "SyntheticMMKG",
    epochs: int = 40,
    dim: int = 32,
    lr: float = 1e-2,
    batch_size: int = 64,
    seed: int = 42,
    threads: int | None = 1,
) -> dict[str, dict[str, float]]:
    """Train MoMoK and TuckER with the same budget; return test metrics (filtered, both sides) per model.

    Both run without dropout (and MoMoK without gating noise): at a few CPU minutes of training the
    reference's regularisation only delays the first ranking signal. MoMoK's experts start at the identity
    (``expert_init="identity"``): with the reference's near-zero experts the feature heads learn nothing for
    thousands of steps. MoMoK's per-head BCE is summed over
    candidates instead of averaged: the same optimum, but gradients ~E times larger, which Adam's epsilon
    otherwise damps for the first several hundred steps. The feature tables are kept fixed
    (``trainable_features=False``): cold entities are never a positive, and fine-tuning would only push
    their rows down.

    ``threads`` sets torch's CPU threads for the run (``None``: leave them): the demo's tensors are tiny
    (600 entities, d = 32), so threads cost more in synchronisation than they save (on 2 cores, MoMoK took
    160 s with 2 threads and 53 s with 1, on one day of this machine's varying speed).

    Two settings change only the speed (the figures are the same to the last digit): MoMoK keeps the
    candidates' graph (``recompute_candidates=False``: 600 entities need no memory saving) and both train
    with ``epoch_cleanup="light"`` (PyKEEN's end-of-epoch ``gc.collect()`` took 0.22 s an epoch here).
    """
    for name, value in (("epochs", epochs), ("dim", dim), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    runs = {
        "MoMoK": dict(
            model="MoMoK",
            loss="MoMoKLoss",
            loss_kwargs=dict(reduction="sum"),
            model_kwargs=dict(
                embedding_dim=dim,
                relation_dim=dim,
                mi_estimator_lr=lr,
                input_dropout=0.0,
                core_dropout=0.0,
                hidden_dropout=0.0,
                fusion_dropout=0.0,
                gating_noise=False,
                expert_init="identity",
                trainable_features=False,
                recompute_candidates=False,  # 600 entities: keeping the candidates' graph costs no memory to speak of
            ),
        ),
        "TuckER": dict(
            model="TuckER",
            loss="BCEWithLogitsLoss",
            model_kwargs=dict(embedding_dim=dim, relation_dim=dim, dropout_0=0.0, dropout_1=0.0, dropout_2=0.0),
            training_kwargs=dict(label_smoothing=0.1),
        ),
    }
    import torch

    results: dict[str, dict[str, float]] = {}
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        for name, kwargs in runs.items():
            start = time.perf_counter()
            result = _train(dataset=dataset, epochs=epochs, dim=dim, lr=lr, batch_size=batch_size, seed=seed, **kwargs)
            metrics = {key: float(result.get_metric(key)) for key in METRICS}
            metrics["seconds"] = time.perf_counter() - start
            results[name] = metrics
    finally:
        torch.set_num_threads(previous_threads)
    return results


def _format(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'model':<8}" + "".join(f"{m:>8}" for m in METRIC_NAMES) + f"{'time':>9}"]
    for name, metrics in results.items():
        lines.append(f"{name:<8}" + "".join(f"{metrics[k]:>8.3f}" for k in METRICS) + f"{metrics['seconds']:>8.0f}s")
    return "\n".join(lines)


# option types: errors read "argument --name: why" (the demo's messages since its argparse days) -----------


class OptionError(click.BadParameter):
    """A bad option value: ``Error: argument --name: why``, exit status 2."""

    def format_message(self) -> str:  # noqa: D102
        hint = self.param_hint
        if hint is None and self.param is not None:
            opts = getattr(self.param, "opts", None) or [self.param.name or "?"]
            hint = "/".join(opts)
        if isinstance(hint, list | tuple):
            hint = "/".join(hint)
        return f"argument {hint}: {self.message}" if hint else self.message


class _Integer(click.ParamType):
    name = "integer"

    def __init__(self, low: int, high: int | None = None) -> None:
        self.low, self.high = low, high

    def convert(self, value, param, ctx):  # noqa: D102
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value))
            except ValueError:
                raise OptionError(f"expected an integer, got {value!r}", ctx=ctx, param=param) from None
        if number < self.low or (self.high is not None and number > self.high):
            allowed = f"{self.low} or more" if self.high is None else f"from {self.low} to {self.high}"
            raise OptionError(f"must be {allowed}, got {number}", ctx=ctx, param=param)
        return number


class _PositiveFloat(click.ParamType):
    name = "number"

    def convert(self, value, param, ctx):  # noqa: D102
        if isinstance(value, float):
            return value
        try:
            number = float(value)
        except ValueError:
            raise OptionError(f"expected a number, got {value!r}", ctx=ctx, param=param) from None
        if not math.isfinite(number) or number <= 0:
            raise OptionError(f"must be a finite number > 0, got {value}", ctx=ctx, param=param)
        return number


class _JSONObject(click.ParamType):
    name = "json"

    def convert(self, value, param, ctx):  # noqa: D102
        if isinstance(value, dict):
            return value
        try:
            data = json.loads(value)
        except json.JSONDecodeError as error:
            raise OptionError(
                f"not valid JSON: {error.msg} at line {error.lineno}, column {error.colno} (in {value!r}); expected an "
                f"object such as '{{\"key\": 1}}'",
                ctx=ctx,
                param=param,
            ) from None
        if not isinstance(data, dict):
            raise OptionError(f"expected a JSON object such as '{{\"key\": 1}}', got {value!r}", ctx=ctx, param=param)
        return data


class _Device(click.ParamType):
    name = "device"

    def convert(self, value, param, ctx):  # noqa: D102
        import torch

        if value == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        try:
            device = torch.device(value)
        except (RuntimeError, ValueError) as error:
            raise OptionError(
                f"not a torch device: {value!r} ({error}); e.g. cpu, cuda, cuda:1", ctx=ctx, param=param
            ) from error
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise OptionError(f"{value!r}: CUDA is not available here; use --device cpu", ctx=ctx, param=param)
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise OptionError(
                    f"{value!r}: there are {torch.cuda.device_count()} CUDA devices", ctx=ctx, param=param
                )
        return str(device)


POSITIVE = _Integer(1)
NON_NEGATIVE = _Integer(0)
SEED = _Integer(0, 2**32 - 1)  # numpy's seeding, which PyKEEN's set_random_seed calls, takes 0 .. 2**32 - 1
LEARNING_RATE = _PositiveFloat()
JSON_OBJECT = _JSONObject()
DEVICE = _Device()

_device_option = click.option(
    "--device",
    type=DEVICE,
    default="auto",
    show_default=True,
    help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N.",
)
_threads_option = click.option(
    "--threads",
    type=NON_NEGATIVE,
    default=0,
    show_default=True,
    help="torch CPU threads; 0 leaves torch's default.",
)
_progress_option = click.option(
    "--progress/--no-progress", default=True, show_default=True, help="show PyKEEN's progress bars (on stderr)."
)


def _dataset_options(function):
    for decorator in reversed(
        (
            click.option(
                "--dataset",
                metavar="NAME",
                help="any PyKEEN dataset name, ours included: MKG-Y, MKG-W, DB15K, FB15K-237-IMG, KVC16K, "
                "SyntheticMMKG, ...",
            ),
            click.option(
                "--directory",
                type=click.Path(file_okay=False, path_type=pathlib.Path),
                help="a folder with your own MMKG, as MultiModalDataset.from_directory reads it: train.txt, test.txt, "
                "optional valid.txt, entity2id.txt, relation2id.txt, and one feature file per modality "
                "(<modality>.npy|.npz|.pt|.pth|.h5, optional <modality>_entities.txt).",
            ),
            click.option(
                "--dataset-kwargs",
                type=JSON_OBJECT,
                metavar="JSON",
                help="keyword arguments of the dataset (with --directory: of from_directory), a JSON object, e.g. "
                "'{\"num_colours\": 6}'.",
            ),
        )
    ):
        function = decorator(function)
    return function


def _train_out_options(function):
    """``-o/--out`` and ``--overwrite`` of a command that writes a trained folder (``train``, the Lightning one)."""
    function = click.option("--overwrite", is_flag=True, help="replace a trained model already in --out.")(function)
    return click.option(
        "-o",
        "--out",
        required=True,
        type=click.Path(path_type=pathlib.Path),
        help="the results folder to write (created if needed).",
    )(function)


_verbose_option = click.option(
    "-v", "--verbose", is_flag=True, help="show PyKEEN's INFO log messages (default: warnings only)."
)


def _set_logging(verbose: bool) -> None:
    import pykeen  # noqa: F401 -- sets its own logger to INFO when first imported: import it before setting it

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    logging.getLogger("pykeen").setLevel(logging.INFO if verbose else logging.WARNING)
    # torch_max_mem warns on every CPU evaluation that it only tunes CUDA batch sizes
    logging.getLogger("torch_max_mem").setLevel(logging.INFO if verbose else logging.ERROR)


def _set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


# datasets ------------------------------------------------------------------------------------------------


def _check_dataset_name(name: str, option: str = "--dataset") -> str:
    """The normalised name of a dataset PyKEEN knows; the known names (close ones first) otherwise."""
    from pykeen.datasets import dataset_resolver

    try:
        dataset_resolver.lookup(name)
    except (KeyError, ValueError):
        known = sorted(dataset_resolver.lookup_dict)
        close = difflib.get_close_matches(dataset_resolver.normalize(name), known, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise OptionError(f"unknown dataset {name!r}{hint}; known: {', '.join(known)}", param_hint=option) from None
    return dataset_resolver.normalize(name)


def _accepted_kwargs(callables: Sequence[Any]) -> list[str] | None:
    """The keyword arguments the first callable takes, following ``**kwargs`` along the list; None if open-ended."""
    names: list[str] = []
    for function in callables:
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        open_ended = False
        for parameter in parameters:
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                open_ended = True
            elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL and parameter.name not in ("self", "cls"):
                names.append(parameter.name)
        if not open_ended:
            return names
    return None


def _check_kwargs(kwargs: Mapping[str, Any], callables: Sequence[Any], what: str, option: str) -> None:
    accepted = _accepted_kwargs(callables)
    if accepted is None:
        return
    accepted = [name for name in accepted if name not in ("directory",) or what != "from_directory"]
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(key, accepted, n=3)
            parts.append(repr(key) + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        raise OptionError(
            f"unknown keyword arguments of {what}: {', '.join(parts)}; accepted: {', '.join(sorted(accepted))}",
            param_hint=option,
        )


def _dataset_spec(dataset: str | None, directory: pathlib.Path | None, dataset_kwargs: Mapping[str, Any] | None):
    """The :class:`~pykeen_momok.predict.DatasetSpec` of the dataset options (None if neither name nor folder)."""
    from .predict import DatasetSpec

    if dataset is not None and directory is not None:
        raise click.UsageError("give either --dataset or --directory, not both")
    kwargs = dict(dataset_kwargs or {})
    if directory is not None:
        if not directory.is_dir():
            raise OptionError(f"{str(directory)!r} is not a folder", param_hint="--directory")
        from .datasets.base import MultiModalDataset

        _check_kwargs(
            kwargs, [MultiModalDataset.from_directory, MultiModalDataset.__init__], "from_directory", "--dataset-kwargs"
        )
        return DatasetSpec(directory=str(directory.resolve()), kwargs=kwargs)
    if dataset is not None:
        _check_dataset_name(dataset)
        from pykeen.datasets import dataset_resolver

        cls = dataset_resolver.lookup(dataset)
        # only a closed signature is checked here: a class's **kwargs may go anywhere (the build reports them)
        _check_kwargs(kwargs, [cls.__init__], cls.__name__, "--dataset-kwargs")
        return DatasetSpec(name=dataset, kwargs=kwargs)
    if kwargs:
        raise click.UsageError("--dataset-kwargs needs --dataset or --directory")
    return None


def _build_dataset(spec, option: str):
    """Build a dataset; errors about its files or arguments as usage errors (exit status 2), without a traceback."""
    from .features import DataFormatError
    from .predict import CLI_FILE

    try:
        return spec.build()
    except DataFormatError as error:
        raise OptionError(f"{spec.describe()}: {error}", param_hint=option) from None
    except (OSError, ValueError, TypeError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        hint = ""
        match = re.search(r"unexpected keyword argument '([^']+)'", str(error))
        match = match if isinstance(error, TypeError) else None
        if match is not None:
            hint = f"; unknown keyword argument {match.group(1)!r}"
            close = difflib.get_close_matches(match.group(1), _dataset_kwargs_names(spec), n=3)
            if close:
                hint += f" (did you mean {', '.join(map(repr, close))}?)"
        if option == "FOLDER":
            hint += f" (the dataset stored in {CLI_FILE}; give --dataset or --directory to load it otherwise)"
        raise OptionError(
            f"{spec.describe()} cannot be loaded: {type(error).__name__}: {message}{hint}", param_hint=option
        ) from None


def _dataset_kwargs_names(spec) -> list[str]:
    """Keyword argument names a dataset may take: its class's and, through ``**kwargs``, its base classes'."""
    if spec.directory is not None:
        from .datasets.base import MultiModalDataset

        classes: Sequence[Any] = [MultiModalDataset.from_directory, MultiModalDataset.__init__]
    else:
        from pykeen.datasets import dataset_resolver

        classes = [klass.__init__ for klass in dataset_resolver.lookup(spec.name).__mro__ if "__init__" in vars(klass)]
    names: list[str] = []
    for function in classes:
        try:
            parameters = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            break
        names += [p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names


def _spec_option(spec) -> str:
    return "--directory" if spec.directory is not None else "--dataset"


# metric tables -------------------------------------------------------------------------------------------


def _metrics_table(metrics: Mapping[str, Mapping[str, float]]) -> str:
    from .predict import METRICS as NAMES

    lines = [f"{'side':<6}" + "".join(f"{name:>8}" for name in NAMES)]
    for side, values in metrics.items():
        lines.append(f"{side:<6}" + "".join(f"{values[name]:>8.3f}" for name in NAMES))
    return "\n".join(lines)


def _pipeline_metrics(result) -> dict[str, dict[str, float]]:
    from .predict import METRICS as NAMES
    from .predict import SIDES

    return {
        side: {name: float(result.metric_results.get_metric(f"{side}.realistic.{key}")) for name, key in NAMES.items()}
        for side in SIDES
    }


def _check_output_file(path: pathlib.Path | None, option: str, suffixes: Sequence[str] | None = None) -> None:
    """Fail before the work, not after it, if the file cannot be written."""
    if path is None:
        return
    folder = path.parent
    if path.is_dir():
        raise OptionError(f"{str(path)!r} is a folder; expected a file path", param_hint=option)
    if not folder.is_dir():
        raise OptionError(f"the folder {str(folder)!r} does not exist", param_hint=option)
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OptionError(f"{str(path)!r} is not writable", param_hint=option)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise OptionError(
            f"{str(path)!r}: the file name must end in {' or '.join(suffixes)} (that decides the format)",
            param_hint=option,
        )


# the command group ---------------------------------------------------------------------------------------


_GROUP_HELP = """MoMoK (Mixture of Modality Knowledge Experts) for multi-modal KG completion, on PyKEEN.

\b
  pykeen-momok demo
  pykeen-momok train --dataset SyntheticMMKG -o runs/synthetic
  pykeen-momok evaluate runs/synthetic --split test --out metrics.json
  pykeen-momok predict runs/synthetic --head e00001 --relation r01 -k 5
  pykeen-momok analyze runs/synthetic -o reports/synthetic
"""


@click.group(
    help=_GROUP_HELP,
    context_settings=dict(help_option_names=["-h", "--help"], max_content_width=110),
)
@click.version_option(package_name="pykeen-momok", prog_name="pykeen-momok")
def cli() -> None:
    """The ``pykeen-momok`` command group."""


@cli.command(
    help="Train MoMoK and TuckER on the built-in synthetic MMKG and print filtered test metrics.",
    short_help="MoMoK vs TuckER on the built-in synthetic MMKG.",
)
@click.option("--dataset", default="SyntheticMMKG", show_default=True, help="any PyKEEN dataset name.")
@click.option("--epochs", type=POSITIVE, default=40, show_default=True, help="1 or more.")
@click.option(
    "--dim",
    type=POSITIVE,
    default=32,
    show_default=True,
    help="embedding and relation dimension of both models, 1 or more.",
)
@click.option("--lr", type=LEARNING_RATE, default=1e-2, show_default=True, help="learning rate, > 0.")
@click.option("--batch-size", type=POSITIVE, default=64, show_default=True, help="1 or more.")
@click.option("--seed", type=SEED, default=42, show_default=True, help="0 to 2**32 - 1.")
@click.option(
    "--threads",
    type=NON_NEGATIVE,
    default=1,
    show_default=True,
    help="torch CPU threads; 0 leaves torch's default. 1 suits the small built-in data; give 0 for larger datasets.",
)
@click.option(
    "--json",
    "json_path",
    metavar="PATH",
    type=click.Path(path_type=pathlib.Path),
    help="also write the metrics as JSON.",
)
def demo(dataset, epochs, dim, lr, batch_size, seed, threads, json_path) -> int:  # noqa: D103
    _check_output_file(json_path, "--json")
    from pykeen.datasets import dataset_resolver

    try:
        dataset_resolver.lookup(dataset)
    except (KeyError, ValueError):
        known = ", ".join(sorted(dataset_resolver.lookup_dict))
        raise OptionError(f"unknown dataset {dataset!r}; known: {known}", param_hint="--dataset") from None
    logging.basicConfig(level=logging.WARNING)
    results = run_demo(
        dataset=dataset, epochs=epochs, dim=dim, lr=lr, batch_size=batch_size, seed=seed, threads=threads or None
    )
    print(f"\nTest set of {dataset}, filtered ranks, head and tail averaged:")
    print(_format(results))
    if json_path:
        with open(json_path, "w") as file:
            json.dump(results, file, indent=2)
    return 0


# train -----------------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """A JSON copy of pipeline() arguments (non-JSON values as their repr)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def _check_out_folder(out: pathlib.Path, overwrite: bool) -> None:
    from .predict import CLI_FILE, MODEL_FILE

    if out.exists() and not out.is_dir():
        raise OptionError(f"{str(out)!r} is a file; expected a folder", param_hint="--out")
    if out.is_dir():
        existing = [name for name in (MODEL_FILE, CLI_FILE) if (out / name).exists()]
        if existing and not overwrite:
            raise OptionError(
                f"{str(out)!r} already holds a trained model ({', '.join(existing)}); pass --overwrite to replace it",
                param_hint="--out",
            )
        if not os.access(out, os.W_OK | os.X_OK):
            raise OptionError(f"{str(out)!r} is not writable", param_hint="--out")
    else:
        parent = next((p for p in out.parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise OptionError(
                f"cannot create {str(out)!r}: {str(parent)!r} is not a writable folder", param_hint="--out"
            )


def _started_callback():
    from pykeen.training.callbacks import TrainingCallback

    class Started(TrainingCallback):
        """Marks that the first batch is under way (errors before it are the settings' fault)."""

        started = False

        def pre_batch(self, **kwargs: Any) -> None:  # noqa: D102
            self.started = True

    return Started()


@cli.command(
    short_help="Train MoMoK; write PyKEEN's results folder.",
    help="Train MoMoK with PyKEEN's pipeline() and write PyKEEN's results folder (trained_model.pkl, "
    "training_triples/, results.json, metadata.json) plus momok_cli.json (how to rebuild the dataset, the settings), "
    "then print the filtered test metrics.\n\n"
    "The dataset comes from --dataset (a PyKEEN name), --directory (your own folder) or the --config file. The "
    'settings come from --config (a PyKEEN experiment JSON whose "pipeline" holds pipeline() arguments, as in '
    "configs/) or else --recipe; the options below override them. Defaults either way: loss MoMoKLoss, training "
    "loop lcwa (PyKEEN's pipeline() would otherwise pick others).",
)
@_dataset_options
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
    help='a PyKEEN experiment JSON file ({"metadata": ..., "pipeline": {...}}, e.g. configs/momok_mkgy_fast.json); '
    "not with --recipe.",
)
@click.option(
    "--recipe",
    type=click.Choice(["paper", "fast"]),
    help="paper: the reference code's settings (per-head BCE, d=256 (MKG-Y 300, MKG-W 200), Adam 5e-4, batch 1024, "
    "2000 epochs, early stopping every 100); fast: configs/*_fast.json (per-head softmax, d=64, identity experts, "
    "fixed features, Adam 1e-2, batch 512, 100 epochs, early stopping every 5). Both use Adam's fused kernel. "
    "Default: fast, unless --config.",
)
@click.option("--epochs", type=POSITIVE, help="training epochs, 1 or more (default: the recipe's).")
@click.option("--batch-size", type=POSITIVE, help="training batch size, 1 or more (default: the recipe's).")
@click.option(
    "--lr",
    type=LEARNING_RATE,
    help="Adam's learning rate, > 0; also the CLUB estimator's (mi_estimator_lr), as the reference does, unless "
    "--model-kwargs sets it (default: the recipe's).",
)
@click.option("--embedding-dim", type=POSITIVE, help="d, the structural and joint dimension (default: the recipe's).")
@click.option("--relation-dim", type=POSITIVE, help="d_r, the per-modality relation dimension (default: the recipe's).")
@click.option("--num-experts", type=POSITIVE, help="K, experts per modality (default: the recipe's).")
@click.option(
    "--model-kwargs",
    type=JSON_OBJECT,
    metavar="JSON",
    help='further MoMoK keyword arguments as a JSON object, e.g. \'{"modalities": ["image"], "core_dropout": 0}\'; '
    "applied last.",
)
@click.option(
    "--early-stopping/--no-early-stopping",
    default=None,
    help="early stopping on validation MRR (default: as the recipe or config; off by itself when the dataset has no "
    "validation split).",
)
@click.option("--eval-batch-size", type=POSITIVE, help="evaluation batch size (default: the recipe's).")
@click.option("--seed", type=SEED, help="random seed, 0 to 2**32 - 1 (default: the recipe's, 10010).")
@click.option(
    "--device",
    type=DEVICE,
    default=None,
    help="torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N (default: the config's, else auto).",
)
@_threads_option
@_progress_option
@_train_out_options
@_verbose_option
def train(
    dataset,
    directory,
    dataset_kwargs,
    config,
    recipe,
    epochs,
    batch_size,
    lr,
    embedding_dim,
    relation_dim,
    num_experts,
    model_kwargs,
    early_stopping,
    eval_batch_size,
    seed,
    device,
    threads,
    progress,
    out,
    overwrite,
    verbose,
) -> int:  # noqa: D103
    from . import recipes as recipes_module
    from .predict import CLI_FILE, CLI_FILE_VERSION

    if config is not None and recipe is not None:
        raise click.UsageError("give either --config or --recipe, not both (a config holds the settings)")
    _check_out_folder(out, overwrite)

    # the settings: a config file, or a recipe
    config_dataset = None
    if config is not None:
        try:
            base = recipes_module.load_experiment_config(config)
        except recipes_module.ConfigError as error:
            raise OptionError(str(error), param_hint="--config") from None
        config_dataset = base.pop("dataset", None)
        config_dataset_kwargs = base.pop("dataset_kwargs", None) or {}
        settings = recipes_module.merge(dict(recipes_module.RECOMMENDED_DEFAULTS), base)
    else:
        recipe = recipe or "fast"
        settings = recipes_module.recipe(recipe, dataset)
        config_dataset_kwargs = settings.pop("dataset_kwargs", {})

    # the dataset
    if dataset is None and directory is None and config_dataset is not None:
        try:
            _check_dataset_name(config_dataset, option="--config")
        except OptionError as error:
            raise OptionError(f"{str(config)!r}: {error.message}", param_hint="--config") from None
        dataset = config_dataset
    if dataset is None and directory is None:
        raise click.UsageError("give the dataset: --dataset NAME, --directory FOLDER, or a --config that names one")
    inherited = (
        config_dataset_kwargs
        if directory is None and (config is None or recipes_module.same_dataset(dataset, config_dataset))
        else {}
    )
    spec = _dataset_spec(dataset, directory, recipes_module.merge(inherited, dataset_kwargs or {}))

    # the options over the settings (pipeline()'s "epochs" is training_kwargs' num_epochs)
    training_kwargs = dict(settings.get("training_kwargs") or {})
    if settings.get("epochs") is not None:
        training_kwargs["num_epochs"] = settings["epochs"]
    settings.pop("epochs", None)
    if epochs is not None:
        training_kwargs["num_epochs"] = epochs
    if batch_size is not None:
        training_kwargs["batch_size"] = batch_size
    settings["training_kwargs"] = training_kwargs
    model_settings = dict(settings.get("model_kwargs") or {})
    for key, value in (("embedding_dim", embedding_dim), ("relation_dim", relation_dim), ("num_experts", num_experts)):
        if value is not None:
            model_settings[key] = value
    if lr is not None:
        settings["optimizer_kwargs"] = {**(settings.get("optimizer_kwargs") or {}), "lr": lr}
        model_settings["mi_estimator_lr"] = lr
    if model_kwargs:
        from pykeen.models import ERModel, Model

        from .model import MoMoK

        _check_kwargs(model_kwargs, [MoMoK.__init__, ERModel.__init__, Model.__init__], "MoMoK", "--model-kwargs")
        model_settings.update(model_kwargs)
    settings["model_kwargs"] = model_settings
    if eval_batch_size is not None:
        settings["evaluation_kwargs"] = {**(settings.get("evaluation_kwargs") or {}), "batch_size": eval_batch_size}
    if seed is not None:
        settings["random_seed"] = seed
    if device is None:
        try:
            device = DEVICE.convert(settings.get("device") or "auto", None, None)
        except click.BadParameter as error:
            raise OptionError(
                f'{str(config)!r}, "pipeline": "device": {error.message}', param_hint="--config"
            ) from error
    settings["device"] = device

    _set_logging(verbose)
    _set_threads(threads)
    built = _build_dataset(spec, _spec_option(spec))
    if early_stopping is False:
        settings.pop("stopper", None)
        settings.pop("stopper_kwargs", None)
    elif early_stopping and not settings.get("stopper"):
        settings["stopper"] = "early"
    if settings.get("stopper") and built.validation is None:
        if early_stopping:
            raise click.UsageError(
                f"--early-stopping needs a validation split, and the {spec.describe()} has none (a folder: add "
                f"valid.txt); or pass --no-early-stopping"
            )
        click.echo(f"The {spec.describe()} has no validation split: training without early stopping.", err=True)
        settings.pop("stopper", None)
        settings.pop("stopper_kwargs", None)

    recorded = copy.deepcopy(settings)
    started = _started_callback()
    run_settings = copy.deepcopy(settings)
    if "callbacks" not in run_settings["training_kwargs"]:
        run_settings["training_kwargs"]["callbacks"] = [started]
    else:  # the config's own callbacks (and their kwargs) stay as they are: every error is then shown as it is
        started.started = True
    if not progress:
        run_settings["use_tqdm"] = False

    from pykeen.pipeline import pipeline

    click.echo(
        f"Training MoMoK on the {spec.describe()} ({'config ' + str(config) if config else 'recipe ' + recipe})",
        err=True,
    )
    try:
        result = pipeline(dataset=built, **run_settings)
    except (ValueError, TypeError, KeyError) as error:
        if started.started:
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise click.UsageError(
            f"the settings were refused before training started: {type(error).__name__}: {message}"
        ) from error
    out.mkdir(parents=True, exist_ok=True)
    result.save_to_directory(out)
    model = result.model
    info = {
        "version": CLI_FILE_VERSION,
        "dataset": spec.to_json(),
        "recipe": recipe if config is None else None,
        "config": str(config.resolve()) if config is not None else None,
        "pipeline": _jsonable(recorded),
        "random_seed": getattr(result, "random_seed", None)
        if recorded.get("random_seed") is None
        else recorded["random_seed"],
        "heads": list(getattr(model, "head_names", ())),
        "num_entities": int(model.num_entities),
        "num_relations": int(model.num_relations),
        "evaluation_batch_size": (recorded.get("evaluation_kwargs") or {}).get("batch_size"),
    }
    (out / CLI_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    metrics = _pipeline_metrics(result)
    click.echo(f"\nTest set of the {spec.describe()}: filtered, realistic ranks")
    click.echo(_metrics_table(metrics))
    click.echo(f"\nSaved to {out}")
    return 0


# evaluate --------------------------------------------------------------------------------------------------


def _load_folder_model(folder: pathlib.Path, device: str):
    from .predict import TrainedFolderError, load_model, load_training_factory

    try:
        return load_model(folder, device=device), load_training_factory(folder)
    except TrainedFolderError as error:
        raise OptionError(str(error), param_hint="FOLDER") from None


_split_option = click.option(
    "--split", type=click.Choice(["test", "validation"]), default="test", show_default=True, help="the split to rank."
)


def _folder_and_dataset(folder, dataset, directory, dataset_kwargs, split, device, threads, verbose):
    """A trained folder's model and training factory, its dataset (checked to be the model's) and the split's key.

    The dataset is the one of the folder's momok_cli.json unless --dataset / --directory give another.
    """
    from .predict import DatasetSpec, TrainedFolderError, check_dataset_matches, read_cli_file

    spec = _dataset_spec(dataset, directory, dataset_kwargs)
    info: dict[str, Any] = {}
    if spec is None:
        try:
            info = read_cli_file(folder)
        except TrainedFolderError as error:
            raise OptionError(str(error), param_hint="FOLDER") from None
        spec = DatasetSpec.from_json(info["dataset"])
    else:
        try:
            info = read_cli_file(folder)
        except TrainedFolderError:
            info = {}
    _set_logging(verbose)
    _set_threads(threads)
    model, factory = _load_folder_model(folder, device)
    built = _build_dataset(spec, _spec_option(spec) if (dataset or directory) else "FOLDER")
    try:
        check_dataset_matches(built, factory, model, spec.describe())
    except TrainedFolderError as error:
        raise OptionError(str(error), param_hint=_spec_option(spec) if (dataset or directory) else "FOLDER") from None
    key = "testing" if split == "test" else "validation"
    if getattr(built, key, None) is None:
        raise OptionError(f"the {spec.describe()} has no {split} split", param_hint="--split")
    return model, factory, built, spec, info, key


@cli.command(
    short_help="Filtered MRR, H@1, H@3, H@10 of a trained folder.",
    help="Evaluate a trained folder (what `pykeen-momok train` or `pykeen experiments run` wrote) on the test or "
    "validation split: filtered (by every split's triples), realistic ranks, head and tail sides and both; prints "
    "MRR, H@1, H@3, H@10 and writes them with --out.\n\n"
    "The dataset is rebuilt from the folder's momok_cli.json; --dataset / --directory give it otherwise (it must have "
    "the entities and relations the model was trained on).\n\n" + _TRUST,
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=pathlib.Path))
@_dataset_options
@_split_option
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=pathlib.Path),
    help="also write the metrics: a .json file (everything) or a .csv file (side, MRR, H@1, H@3, H@10).",
)
@click.option("--batch-size", type=POSITIVE, help="evaluation batch size (default: the training run's, else 256).")
@_device_option
@_threads_option
@_progress_option
@_verbose_option
def evaluate(
    folder, dataset, directory, dataset_kwargs, split, out_path, batch_size, device, threads, progress, verbose
) -> int:  # noqa: D103
    from .predict import evaluate_model

    _check_output_file(out_path, "--out", suffixes=(".json", ".csv"))
    model, _, built, spec, info, key = _folder_and_dataset(
        folder, dataset, directory, dataset_kwargs, split, device, threads, verbose
    )
    batch_size = batch_size or info.get("evaluation_batch_size") or 256
    report = evaluate_model(model, built, key, batch_size=batch_size, use_tqdm=progress)
    report = {"folder": str(folder), "dataset": spec.to_json(), **report}
    click.echo(
        f"\n{split.capitalize()} set of the {spec.describe()} ({report['num_triples']} triples): filtered, "
        f"realistic ranks"
    )
    click.echo(_metrics_table(report["metrics"]))
    if out_path is not None:
        if out_path.suffix.lower() == ".json":
            out_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        else:
            from .predict import METRICS as NAMES

            with out_path.open("w", newline="", encoding="utf-8") as file:
                writer = csv.writer(file)
                writer.writerow(["split", "side", *NAMES])
                for side, values in report["metrics"].items():
                    writer.writerow([split, side, *(f"{values[name]:.6f}" for name in NAMES)])
        click.echo(f"Wrote {out_path}")
    return 0


# predict ---------------------------------------------------------------------------------------------------


def _predictions_table(rows, head_names: Sequence[str], filter_known: bool) -> str:
    width = min(max([len("entity"), *(len(row.label) for row in rows)]), 60)
    columns = [f"{'rank':>4}", f"{'entity':<{width}}", f"{'score':>8}", *(f"{name:>10}" for name in head_names)]
    if not filter_known:
        columns.append(f"{'known':>6}")
    lines = ["  ".join(columns)]
    for row in rows:
        label = row.label if len(row.label) <= width else row.label[: width - 1] + "…"
        cells = [
            f"{row.rank:>4}",
            f"{label:<{width}}",
            f"{row.score:>8.4f}",
            *(f"{row.heads[name]:>10.4f}" for name in head_names),
        ]
        if not filter_known:
            cells.append(f"{'yes' if row.known else '':>6}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


@cli.command(
    short_help="Top-k heads or tails by label, with each head's probability.",
    help="Predict the top-k tails of (HEAD, RELATION, ?) (--head, --relation) or heads of (?, RELATION, TAIL) "
    "(--relation, --tail) with a trained folder, by label. The score is the model's joint decision (the mean of "
    "its heads' sigmoid probabilities, what evaluation ranks by); each head's probability is shown too (heads "
    "through the inverse relation, as MoMoK scores them).\n\n" + _TRUST,
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=pathlib.Path))
@click.option("--head", metavar="LABEL", help="the head entity: predict tails.")
@click.option("--relation", metavar="LABEL", required=True, help="the relation.")
@click.option("--tail", metavar="LABEL", help="the tail entity: predict heads.")
@click.option(
    "-k",
    "--top-k",
    "k",
    type=POSITIVE,
    default=10,
    show_default=True,
    help="how many candidates, 1 to the number of entities.",
)
@click.option(
    "--filter-known",
    is_flag=True,
    help="leave out candidates that complete a training triple (otherwise they are marked 'known').",
)
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table.")
@_device_option
@_threads_option
@_verbose_option
def predict(folder, head, relation, tail, k, filter_known, as_json, device, threads, verbose) -> int:  # noqa: D103
    from .predict import Predictor, TrainedFolderError, UnknownLabelError

    _set_logging(verbose)
    if (head is None) == (tail is None):
        raise click.UsageError("give exactly one of --head (to predict tails) and --tail (to predict heads)")
    _set_threads(threads)
    model, factory = _load_folder_model(folder, device)
    try:
        predictor = Predictor(model, factory)
    except TrainedFolderError as error:
        raise OptionError(str(error), param_hint="FOLDER") from None
    if k > predictor.num_entities:
        raise OptionError(
            f"must be from 1 to {predictor.num_entities} (the number of entities), got {k}", param_hint="-k/--top-k"
        )
    try:
        rows = predictor.predict(head=head, relation=relation, tail=tail, k=k, filter_known=filter_known)
    except UnknownLabelError as error:
        option = "--relation" if error.kind == "relation" else ("--head" if head is not None else "--tail")
        raise OptionError(str(error), param_hint=option) from None
    query = {"head": head, "relation": relation, "tail": tail}
    target = "tail" if tail is None else "head"
    if as_json:
        click.echo(
            json.dumps(
                {
                    "query": query,
                    "target": target,
                    "heads": list(predictor.head_names),
                    "filter_known": filter_known,
                    "predictions": [row.to_json() for row in rows],
                },
                indent=2,
            )
        )
    else:
        shown = f"({head}, {relation}, ?)" if target == "tail" else f"(?, {relation}, {tail})"
        click.echo(
            f"Top {len(rows)} {target}s of {shown}" + (", known training triples left out" if filter_known else "")
        )
        click.echo(_predictions_table(rows, predictor.head_names, filter_known))
    return 0


# analyze ---------------------------------------------------------------------------------------------------


class _Rates(click.ParamType):
    name = "rates"

    def convert(self, value, param, ctx):  # noqa: D102
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",") if part.strip()]
        rates = []
        for part in parts:
            try:
                rate = float(part)
            except ValueError:
                raise OptionError(
                    f"expected numbers separated by commas, e.g. 0,0.5,1; got {part!r}", ctx=ctx, param=param
                ) from None
            if not 0.0 <= rate <= 1.0:
                raise OptionError(f"a rate is a share of entities, from 0 to 1; got {part}", ctx=ctx, param=param)
            rates.append(rate)
        return tuple(rates)


@cli.command(
    short_help="What a trained folder learned: CSV tables, plots, a Markdown summary.",
    help="Analyse a trained folder and write a report folder: per relation the temperature, the experts' gate weights "
    "and the joint-fusion attention; each head's filtered MRR / Hits@k (overall, per relation, for entities with and "
    "without each modality); MRR as one modality's feature rows are marked missing or replaced by noise (in a copy of "
    "the model); the plots (PNG and SVG, needs matplotlib: pip install 'pykeen-momok[plots]') and summary.md.\n\n"
    "The dataset is rebuilt from the folder's momok_cli.json; --dataset / --directory give it otherwise.\n\n" + _TRUST,
)
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=pathlib.Path))
@_dataset_options
@_split_option
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=pathlib.Path),
    help="the report folder to write (created if needed).",
)
@click.option(
    "--rates",
    type=_Rates(),
    default="0,0.25,0.5,0.75,1",
    show_default=True,
    help="corruption rates of the robustness table, shares of entities from 0 to 1, comma-separated; an "
    "empty string leaves the table out.",
)
@click.option(
    "--corruption",
    "modes",
    type=click.Choice(["missing", "noise"]),
    multiple=True,
    help="the corruptions, repeatable (default: both): missing = the dataset's fill row, noise = Gaussian "
    "rows with the table's per-column mean and standard deviation.",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="seed of the corrupted entities and the noise.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="draw the plots (needs matplotlib).")
@click.option("--batch-size", type=POSITIVE, help="queries scored at once (default: the training run's, else 256).")
@click.option("--overwrite", is_flag=True, help="replace a report already in --out.")
@_device_option
@_threads_option
@_progress_option
@_verbose_option
def analyze(
    folder,
    dataset,
    directory,
    dataset_kwargs,
    split,
    out,
    rates,
    modes,
    seed,
    plots,
    batch_size,
    overwrite,
    device,
    threads,
    progress,
    verbose,
) -> int:  # noqa: D103
    from .analysis.report import SUMMARY_FILE, write_report
    from .analysis.robustness import CORRUPTIONS

    if out.exists() and not out.is_dir():
        raise OptionError(f"{str(out)!r} is a file; expected a folder", param_hint="--out")
    if (out / SUMMARY_FILE).exists() and not overwrite:
        raise OptionError(
            f"{str(out)!r} already holds a report ({SUMMARY_FILE}); pass --overwrite to replace it", param_hint="--out"
        )
    if plots:
        from .analysis.plots import require_matplotlib

        try:
            require_matplotlib()
        except ImportError as error:
            raise click.UsageError(f"{error}; or pass --no-plots") from None
    model, _, built, spec, info, key = _folder_and_dataset(
        folder, dataset, directory, dataset_kwargs, split, device, threads, verbose
    )
    report = write_report(
        model,
        built,
        out,
        split=key,
        rates=rates,
        modes=modes or CORRUPTIONS,
        seed=seed,
        plots=plots,
        batch_size=batch_size or info.get("evaluation_batch_size") or 256,
        use_tqdm=progress,
        describe=f"MoMoK of `{folder}` on the {spec.describe()}",
    )
    click.echo((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    click.echo(f"Wrote {len(report.files)} files to {out}")
    return 0


# entry point -----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pykeen-momok`` console script: the exit status (usage errors: exit 2, no traceback)."""
    try:
        value = cli.main(args=list(argv) if argv is not None else None, prog_name="pykeen-momok", standalone_mode=False)
    except click.ClickException as error:
        error.show()
        raise SystemExit(error.exit_code) from None
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        raise SystemExit(1) from None
    return value if isinstance(value, int) else 0


if __name__ == "__main__":
    sys.exit(main())
