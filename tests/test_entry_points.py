"""The PyKEEN entry points a user reaches MoMoK from: the experiments CLI and HPO."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

from pykeen.hpo import hpo_pipeline

from conftest import assert_rank_metrics_consistent

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
TINY = dict(num_colours=10, num_shapes=10, num_relations=3, triples_per_entity=3, image_dim=8, text_dim=8)


def test_experiments_cli_runs_a_config(tmp_path):
    config = json.loads((CONFIGS / "momok_synthetic.json").read_text())
    pipeline = config["pipeline"]
    pipeline["dataset_kwargs"] = TINY
    pipeline["training_kwargs"]["num_epochs"] = 1
    pipeline["model_kwargs"].update(embedding_dim=8, relation_dim=8)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "out"
    # a fresh interpreter through PyKEEN's own console entry point: nothing imports pykeen_momok by hand
    result = subprocess.run(
        [sys.executable, "-m", "pykeen", "experiments", "run", str(path), "--keep-seed", "-d", str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(next(out.rglob("results.json")).read_text())
    both = results["metrics"]["both"]["realistic"]
    assert_rank_metrics_consistent(both["inverse_harmonic_mean_rank"], both["hits_at_1"], both["hits_at_10"])


def test_configs_are_valid_json_with_the_recommended_setup():
    for path in CONFIGS.glob("*.json"):
        pipeline = json.loads(path.read_text())["pipeline"]
        assert pipeline["model"] == "MoMoK" and pipeline["loss"] == "MoMoKLoss", path
        assert pipeline["training_loop"] == "batchedlcwa", path


def test_hpo_pipeline_samples_momok_defaults():
    result = hpo_pipeline(
        model="MoMoK",
        dataset="SyntheticMMKG",
        dataset_kwargs=TINY,
        loss="MoMoKLoss",
        training_loop="lcwa",
        model_kwargs=dict(embedding_dim=8, relation_dim=8),
        training_kwargs=dict(num_epochs=1, batch_size=64),
        evaluation_kwargs=dict(batch_size=64),
        n_trials=2,
        sampler="random",
    )
    sampled = {key for trial in result.study.trials for key in trial.params}
    assert {"model.num_experts", "model.mi_weight"} <= sampled
