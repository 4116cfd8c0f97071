"""``python -m pykeen_momok.lightning``: two CPU processes (DDP over gloo) against the single-process ``train``.

One run of the entry point with ``--devices 2`` (Lightning starts the second process) trains two epochs of a tiny
SyntheticMMKG; ``pykeen-momok train`` trains the same config in one process for the reference format. The checks:
the same results format, identical weights on both ranks, the CLUB estimator's own step after every optimiser
step, metrics gathered over the ranks equal to one process's evaluation of the saved model, and the selection of
the checkpoint with the best ``val_mrr``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
import torch
from click.testing import CliRunner
from pykeen.datasets import get_dataset
from pykeen.evaluation import RankBasedEvaluator
from pykeen.triples.instances import LCWAInstances

from pykeen_momok.cli import cli
from pykeen_momok.lightning import (
    LIGHTNING_FILE,
    MoMoKLitModule,
    SettingsError,
    ShardSampler,
    lightning_settings,
    main,
    state_checksum,
)
from pykeen_momok.predict import CLI_FILE, load_model
from pykeen_momok.recipes import RECOMMENDED_DEFAULTS, merge

TINY = dict(num_colours=6, num_shapes=6, num_relations=3, triples_per_entity=3, image_dim=8, text_dim=8, seed=1)
BATCH_SIZE = 16
PIPELINE = {
    "dataset": "SyntheticMMKG",
    "dataset_kwargs": TINY,
    "model": "MoMoK",
    # gating_noise=False leaves the gates' noise weights unused: DDP must be told to allow that
    "model_kwargs": {"embedding_dim": 8, "relation_dim": 8, "mi_estimator_lr": 0.01, "gating_noise": False},
    "loss": "MoMoKLoss",
    "training_loop": "batchedlcwa",
    "optimizer": "adam",
    "optimizer_kwargs": {"lr": 0.01, "fused": True},  # as the configs ask for it
    "training_kwargs": {"num_epochs": 2, "batch_size": BATCH_SIZE},
    "stopper": "early",
    "stopper_kwargs": {"frequency": 1, "patience": 5, "metric": "mrr"},
    "evaluation_kwargs": {"batch_size": 64},
    "random_seed": 3,
}
REL = 1e-5  # float32 sums in another order (geometric means over ~100 ranks)


def _write_config(folder: pathlib.Path, pipeline: dict) -> pathlib.Path:
    path = folder / "config.json"
    path.write_text(json.dumps({"metadata": {"title": "tiny"}, "pipeline": pipeline}))
    return path


def _ddp_env() -> dict[str, str]:
    """This environment for a DDP command, without the variables of a launch around it, torch on one thread."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK")
    }
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("lightning")
    config = _write_config(folder, PIPELINE)
    env = _ddp_env()
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "pykeen_momok.lightning",
            "--config",
            str(config),
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--threads",
            "1",
            "--no-progress",
            "-o",
            str(folder / "ddp"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    assert "Starting with 2 processes" in ddp.stderr + ddp.stdout and "MRR" in ddp.stdout
    single = CliRunner().invoke(
        cli, ["train", "--config", str(config), "--threads", "1", "--no-progress", "-o", str(folder / "single")]
    )
    assert single.exit_code == 0, single.output
    return {"ddp": folder / "ddp", "single": folder / "single"}


def _keys(tree, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return {prefix}
    return set().union(*(_keys(value, f"{prefix}/{key}") for key, value in tree.items()))


def test_two_processes_write_the_single_process_format(runs) -> None:
    ddp, single = (json.loads((runs[k] / "results.json").read_text()) for k in ("ddp", "single"))
    assert set(ddp) == set(single) == {"metrics", "losses", "times", "stopper"}
    assert _keys(ddp["metrics"]) == _keys(single["metrics"]) and len(_keys(ddp["metrics"])) > 50
    assert set(ddp["stopper"]) == set(single["stopper"]) and set(ddp["times"]) == set(single["times"])
    assert len(ddp["losses"]) == len(single["losses"]) == 2 and all(math.isfinite(x) for x in ddp["losses"])
    for name in ("trained_model.pkl", "training_triples", "metadata.json", CLI_FILE):
        assert (runs["ddp"] / name).exists(), name
    cli_ddp, cli_single = (json.loads((runs[k] / CLI_FILE).read_text()) for k in ("ddp", "single"))
    assert set(cli_ddp) - set(cli_single) == {"launcher"} and set(cli_single) <= set(cli_ddp)
    assert cli_ddp["dataset"] == cli_single["dataset"] == {"name": "SyntheticMMKG", "kwargs": TINY}
    assert ddp["metrics"] != single["metrics"]  # the same format, not a copy: two processes see other batches


def test_ranks_end_with_identical_weights(runs) -> None:
    info = json.loads((runs["ddp"] / LIGHTNING_FILE).read_text())
    assert info["world_size"] == 2 and info["global_batch_size"] == 2 * BATCH_SIZE
    checksums = info["rank_checksums_after_training"]
    assert len(checksums) == 2 and checksums[0] == checksums[1] and info["ranks_agree"]
    assert state_checksum(load_model(runs["ddp"])) == info["saved_model_checksum"]


def _initial_model():
    """The model as the entry point builds it before training (same seed, same settings)."""
    settings = lightning_settings(
        merge(dict(RECOMMENDED_DEFAULTS), {k: v for k, v in PIPELINE.items() if k not in ("dataset", "dataset_kwargs")})
    )
    dataset = get_dataset(dataset="SyntheticMMKG", dataset_kwargs=TINY)
    pl.seed_everything(settings.random_seed, verbose=False)
    return MoMoKLitModule(dataset=dataset, random_seed=settings.random_seed, **settings.module_kwargs).model, dataset


def test_estimator_took_its_own_step_after_every_optimizer_step(runs) -> None:
    info = json.loads((runs["ddp"] / LIGHTNING_FILE).read_text())
    trained = load_model(runs["ddp"])
    initial, dataset = _initial_model()
    assert info["initial_model_checksum"] == state_checksum(initial)  # the comparison below is against that start
    # one optimiser step per batch of a rank's half of the (h, r) pairs, inverse relations included
    pairs = len(LCWAInstances.from_triples_factory(dataset.training))
    steps_per_epoch = math.ceil(math.ceil(pairs / 2) / BATCH_SIZE)
    selected = info["selected"]
    assert selected["optimizer_steps_per_process"] == selected["epoch"] * steps_per_epoch
    state = trained.mutual_information.optimizer.state_dict()["state"]
    estimator = list(trained.mutual_information.estimator.parameters())
    assert len(state) == len(estimator) and {int(s["step"]) for s in state.values()} == {
        selected["optimizer_steps_per_process"]
    }
    before = dict(initial.mutual_information.estimator.named_parameters())
    changed = [
        name
        for name, p in trained.mutual_information.estimator.named_parameters()
        if not torch.equal(p.detach(), before[name].detach())
    ]
    assert len(changed) == len(estimator)  # the main optimiser never holds them: only the estimator step moved them


def test_gathered_metrics_are_one_process_evaluation_of_the_saved_model(runs) -> None:
    results = json.loads((runs["ddp"] / "results.json").read_text())["metrics"]
    info = json.loads((runs["ddp"] / LIGHTNING_FILE).read_text())
    model = load_model(runs["ddp"])
    dataset = get_dataset(dataset="SyntheticMMKG", dataset_kwargs=TINY)
    evaluator = RankBasedEvaluator(filtered=True)
    test = evaluator.evaluate(
        model,
        dataset.testing.mapped_triples,
        batch_size=64,
        use_tqdm=False,
        additional_filter_triples=[dataset.training.mapped_triples, dataset.validation.mapped_triples],
    ).to_dict()
    compared = 0
    for side, types in test.items():
        for rank_type, metrics in types.items():
            for name, value in metrics.items():
                if isinstance(value, float) and math.isfinite(value):
                    assert results[side][rank_type][name] == pytest.approx(value, rel=REL, abs=1e-9), (
                        side,
                        rank_type,
                        name,
                    )
                    compared += 1
    assert compared > 50
    # the checkpoint kept is the one with the best validation MRR, and the saved model is that checkpoint
    history = info["validation"]
    assert [row["epoch"] for row in history] == [1, 2]
    best = max(history, key=lambda row: row["val_mrr"])
    assert info["selected"]["epoch"] == best["epoch"] and info["selected"]["score"] == best["val_mrr"]
    validation = evaluator.evaluate(
        model,
        dataset.validation.mapped_triples,
        batch_size=64,
        use_tqdm=False,
        additional_filter_triples=[dataset.training.mapped_triples],
    )
    assert validation.get_metric("mrr") == pytest.approx(best["val_mrr"], rel=REL)


def test_evaluate_command_reads_the_folder(runs, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(cli, ["evaluate", str(runs["ddp"]), "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    both = json.loads(out.read_text())["metrics"]["both"]
    expected = json.loads((runs["ddp"] / "results.json").read_text())["metrics"]["both"]["realistic"]
    assert both["MRR"] == pytest.approx(expected["inverse_harmonic_mean_rank"], rel=REL)
    assert both["H@10"] == pytest.approx(expected["hits_at_10"], rel=REL)


# in one process ---------------------------------------------------------------------------------------------


def test_shards_cover_every_index_once() -> None:
    data = list(range(11))
    shards = [list(ShardSampler(data, num_replicas=3, rank=rank)) for rank in range(3)]
    assert sorted(sum(shards, [])) == data and [len(s) for s in shards] == [4, 4, 3]
    assert len(ShardSampler(data, num_replicas=3, rank=2)) == 3
    with pytest.raises(ValueError, match="rank must be in"):
        ShardSampler(data, num_replicas=2, rank=2)


def test_estimator_parameters_stay_out_of_the_main_optimizer_and_ddp() -> None:
    dataset = get_dataset(dataset="SyntheticMMKG", dataset_kwargs=TINY)
    module = MoMoKLitModule(dataset=dataset, model_kwargs={"embedding_dim": 8, "relation_dim": 8})
    estimator = {id(p) for p in module.model.mutual_information.parameters()}
    optimized = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert estimator and not estimator & optimized and optimized
    module.setup("fit")
    ignored = set(module._ddp_params_and_buffers_to_ignore)
    assert ignored == {
        f"model.{name}" for name, _ in module.model.mutual_information.named_parameters(prefix="mutual_information")
    }


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"training_loop": "slcwa"}, "trains LCWA"),
        ({"lr_scheduler": "StepLR"}, "'lr_scheduler' is not supported"),
        ({"training_kwargs": {"num_epochs": 1, "sub_batch_size": 4}}, "['sub_batch_size'] not supported"),
        ({"stopper_kwargs": {"metric": "no_such_metric"}}, "stopper_kwargs metric 'no_such_metric'"),
        ({"stopper": "nop"}, "only early stopping"),
        ({"training_loop_kwargs": {"automatic_memory_optimization": False}}, "not supported here"),
    ],
)
def test_settings_it_cannot_run_are_refused(change: dict, pattern: str) -> None:
    with pytest.raises(SettingsError) as error:
        lightning_settings({**PIPELINE, **change}, where="cfg.json")
    assert pattern in str(error.value) and "cfg.json" in str(error.value)


CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("config", sorted(path.name for path in CONFIGS.glob("*.json")))
def test_every_shipped_config_runs_through_lightning(config: str, caplog: pytest.LogCaptureFixture) -> None:
    """The README runs shipped configs through this entry point: each maps onto settings it can run."""
    pipeline_kwargs = json.loads((CONFIGS / config).read_text())
    with caplog.at_level("INFO", logger="pykeen_momok.lightning"):
        settings = lightning_settings(pipeline_kwargs["pipeline"], where=config)
    assert settings.num_epochs == pipeline_kwargs["pipeline"]["training_kwargs"]["num_epochs"]
    if "training_loop_kwargs" in pipeline_kwargs["pipeline"]:  # the batched loop's settings: said not to apply
        assert f"{config}: training_loop_kwargs" in caplog.text and "not used" in caplog.text


def test_command_errors_exit_with_status_2(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture) -> None:
    config = _write_config(tmp_path, {**PIPELINE, "training_loop": "slcwa"})
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "trains LCWA" in capsys.readouterr().err
    config = _write_config(tmp_path, {**PIPELINE, "model_kwargs": {"embedding_dim": 0}})
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "--accelerator", "cpu", "-o", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "refused before training started" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "--config",
                    str(_write_config(tmp_path, PIPELINE)),
                    "--accelerator",
                    "gpu",
                    "-o",
                    str(tmp_path / "out"),
                ]
            )
        assert exit_info.value.code == 2 and "Lightning refused accelerator='gpu'" in capsys.readouterr().err


def test_sigterm_to_every_rank_ends_the_run(tmp_path: pathlib.Path) -> None:
    """``timeout`` (or a stopped container) signals every process of a 2-process run: all end within seconds.

    With Lightning 2.6's own handling the run hung until killed (its handler broadcasts between the ranks from inside
    the signal handler); :class:`TerminateOnSigterm` ends each process by the signal instead.
    """
    pipeline = {key: value for key, value in PIPELINE.items() if key not in ("stopper", "stopper_kwargs")}
    config = _write_config(tmp_path, {**pipeline, "training_kwargs": {"num_epochs": 1000, "batch_size": 16}})
    env = _ddp_env()
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pykeen_momok.lightning", "--config", str(config), "--accelerator", "cpu"]
    command += ["--devices", "2", "--threads", "1", "--val-every", "0", "--no-progress", "-o", str(out)]
    log = tmp_path / "stderr.txt"
    with log.open("w") as stderr:
        run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True)
    try:
        # written after the first 100 training steps: both ranks are training (no stopper, no validation)
        metrics = out / "lightning_logs" / "metrics.csv"
        deadline = time.monotonic() + 300
        while not metrics.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert metrics.exists() and run.poll() is None, log.read_text()[-3000:]
        os.killpg(run.pid, signal.SIGTERM)  # as timeout does: the whole process group
        run.wait(timeout=60)
        text = log.read_text()
        assert run.returncode == -signal.SIGTERM, text[-3000:]
        assert "rank 0 received signal 15" in text and "rank 1 received signal 15" in text, text[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()


@pytest.mark.parametrize("hook", ["on_train_start", "on_validation_start", "on_test_start", "on_predict_start"])
@pytest.mark.parametrize("requeue", [False, True])
def test_the_sigterm_handler_is_installed_at_every_stage_but_not_under_slurm_requeue(hook: str, requeue: bool) -> None:
    """Lightning installs its handler at each stage's start; ours follows at every stage, unless SLURM requeues."""
    import types

    from pykeen_momok.lightning import TerminateOnSigterm

    environment = types.SimpleNamespace(auto_requeue=requeue)
    trainer = types.SimpleNamespace(_accelerator_connector=types.SimpleNamespace(cluster_environment=environment))
    before = signal.getsignal(signal.SIGTERM)
    try:
        getattr(TerminateOnSigterm(), hook)(trainer, None)
        installed = signal.getsignal(signal.SIGTERM)
        if requeue:
            assert installed is before
        else:
            assert installed is not before and installed.__qualname__.startswith("TerminateOnSigterm._install")
    finally:
        signal.signal(signal.SIGTERM, before)
