"""``pykeen-momok train`` -> ``evaluate`` -> ``predict`` on tiny data, through click's CliRunner; and their errors."""

from __future__ import annotations

import csv
import json
import pathlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pykeen_momok.cli import cli, main
from pykeen_momok.predict import CLI_FILE, Predictor
from pykeen_momok.recipes import RECOMMENDED_DEFAULTS, load_experiment_config, merge, recipe

from conftest import assert_rank_metrics_consistent

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
TINY = dict(num_colours=6, num_shapes=6, num_relations=3, triples_per_entity=3, image_dim=8, text_dim=8, seed=1)
FAST = ["--epochs", "2", "--embedding-dim", "8", "--relation-dim", "8", "--batch-size", "32", "--no-progress"]


def _run(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output + (repr(result.exception) if result.exception else "")
    assert "Traceback" not in result.output
    return result


def _fails(*args: str, pattern: str) -> str:
    """The command exits with status 2 (a usage error), no traceback, and says ``pattern``."""
    result = _run(*args, code=2)
    assert isinstance(result.exception, SystemExit)
    assert pattern in result.output, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = _run(
        "train", "--dataset", "SyntheticMMKG", "--dataset-kwargs", json.dumps(TINY), *FAST, "--lr", "0.01", "-o", out
    )
    assert "MRR" in result.stdout and "both" in result.stdout
    return out


# train -> evaluate -> predict ---------------------------------------------------------------------------


def test_train_writes_pykeen_results_folder(trained: pathlib.Path) -> None:
    for name in ("trained_model.pkl", "training_triples", "results.json", "metadata.json", CLI_FILE):
        assert (trained / name).exists(), name
    info = json.loads((trained / CLI_FILE).read_text())
    assert info["dataset"] == {"name": "SyntheticMMKG", "kwargs": TINY}
    assert info["recipe"] == "fast" and info["heads"] == ["structure", "image", "text", "joint"]
    settings = info["pipeline"]
    assert settings["loss"] == "MoMoKLoss" and settings["training_loop"] == "batchedlcwa"
    assert settings["training_kwargs"] == {"num_epochs": 2, "batch_size": 32}
    assert settings["model_kwargs"]["embedding_dim"] == 8 and settings["model_kwargs"]["relation_dim"] == 8
    # --lr is the optimiser's and the CLUB estimator's learning rate; the rest is the fast recipe
    assert settings["optimizer_kwargs"] == {"lr": 0.01, "fused": True}
    assert settings["model_kwargs"]["mi_estimator_lr"] == 0.01
    assert settings["loss_kwargs"]["head_loss"] == "softmax" and settings["model_kwargs"]["expert_init"] == "identity"
    assert len(json.loads((trained / "results.json").read_text())["losses"]) == 2


def test_evaluate_reproduces_the_pipeline_test_metrics(trained: pathlib.Path, tmp_path: pathlib.Path) -> None:
    out = tmp_path / "metrics.json"
    result = _run("evaluate", trained, "--no-progress", "--out", out)
    assert "MRR" in result.stdout and "H@10" in result.stdout
    report = json.loads(out.read_text())
    assert report["split"] == "testing" and report["dataset"]["name"] == "SyntheticMMKG"
    pipeline = json.loads((trained / "results.json").read_text())["metrics"]
    for side in ("head", "tail", "both"):
        for name, key in (("MRR", "inverse_harmonic_mean_rank"), ("H@1", "hits_at_1"), ("H@10", "hits_at_10")):
            assert report["metrics"][side][name] == pytest.approx(pipeline[side]["realistic"][key], abs=1e-6)
    table = tmp_path / "metrics.csv"
    _run("evaluate", trained, "--split", "validation", "--no-progress", "--out", table)
    rows = list(csv.DictReader(table.open()))
    assert [row["side"] for row in rows] == ["head", "tail", "both"]
    assert all(row["split"] == "validation" for row in rows)
    for row in rows:
        assert_rank_metrics_consistent(float(row["MRR"]), float(row["H@1"]), float(row["H@10"]))


def _predict_json(*args: str) -> dict:
    return json.loads(_run("predict", *args, "--json").stdout)


def test_predict_scores_are_the_models_and_each_heads(trained: pathlib.Path) -> None:
    predictor = Predictor.from_folder(trained)
    model, factory = predictor.model, predictor.factory
    h, r, t = (int(x) for x in factory.mapped_triples[0])
    head, relation, tail = predictor.entity_labels[h], factory.relation_id_to_label[r], predictor.entity_labels[t]
    num_entities = model.num_entities

    tails = _predict_json(trained, "--head", head, "--relation", relation, "-k", str(num_entities))
    assert tails["target"] == "tail" and tails["heads"] == ["structure", "image", "text", "joint"]
    rows = tails["predictions"]
    assert [row["rank"] for row in rows] == list(range(1, num_entities + 1))
    with torch.no_grad():
        expected = model.predict_t(torch.tensor([[h, r]]))[0]
    for row in rows:
        assert row["score"] == pytest.approx(float(expected[row["id"]]), abs=1e-5)
        assert row["score"] == pytest.approx(np.mean(list(row["heads"].values())), abs=1e-5)
        assert all(0 < p < 1 for p in row["heads"].values())
    assert [row["score"] for row in rows] == sorted((row["score"] for row in rows), reverse=True)
    assert next(row for row in rows if row["label"] == tail)["known"] is True

    heads = _predict_json(trained, "--relation", relation, "--tail", tail, "-k", str(num_entities))
    with torch.no_grad():  # through the inverse relation, as score_h
        expected = model.predict_h(torch.tensor([[r, t]]))[0]
    assert heads["target"] == "head"
    for row in heads["predictions"]:
        assert row["score"] == pytest.approx(float(expected[row["id"]]), abs=1e-5)
    assert next(row for row in heads["predictions"] if row["label"] == head)["known"] is True

    # --filter-known leaves out every tail of a training triple (h, r, ·), and nothing else
    known = {
        int(x)
        for x in factory.mapped_triples[(factory.mapped_triples[:, 0] == h) & (factory.mapped_triples[:, 1] == r), 2]
    }
    filtered = _predict_json(
        trained, "--head", head, "--relation", relation, "-k", str(num_entities), "--filter-known"
    )["predictions"]
    assert {row["id"] for row in filtered} == set(range(num_entities)) - known
    assert not any(row["known"] for row in filtered)

    table = _run("predict", trained, "--head", head, "--relation", relation, "-k", "3").stdout
    assert f"Top 3 tails of ({head}, {relation}, ?)" in table
    assert all(name in table for name in ("score", "structure", "image", "text", "joint", "known"))


def test_evaluate_refuses_a_dataset_the_model_was_not_trained_on(trained: pathlib.Path) -> None:
    # same labels (e00000, ...), other triples
    _fails(
        "evaluate",
        trained,
        "--dataset",
        "SyntheticMMKG",
        "--dataset-kwargs",
        json.dumps({**TINY, "seed": 2}),
        pattern="other training triples than the model was trained on",
    )
    _fails("evaluate", trained, "--dataset", "Nations", pattern="does not have the entities the model was trained on")


# train --directory and --config ---------------------------------------------------------------------------


def _user_folder(path: pathlib.Path, *, validation: bool = True) -> pathlib.Path:
    """A tiny MMKG in the layout of MultiModalDataset.from_directory: TSV splits, entity2id, an image matrix."""
    path.mkdir()
    entities = [f"city{i}" for i in range(10)]
    rng = np.random.default_rng(0)
    triples = sorted(
        {
            (entities[i], rel, entities[(i + step) % 10])
            for i in range(10)
            for rel, step in (("near", 1), ("twin", 3), ("far", 5))
        }
    )
    order = rng.permutation(len(triples))
    test, valid, train = order[:3], order[3:6], order[6:]

    def write(name: str, rows) -> None:
        (path / name).write_text("".join("\t".join(triples[i]) + "\n" for i in rows), encoding="utf-8")

    write("train.txt", train)
    write("test.txt", test)
    if validation:
        write("valid.txt", valid)
    (path / "entity2id.txt").write_text("".join(f"{e}\t{i}\n" for i, e in enumerate(entities)), encoding="utf-8")
    np.save(path / "image.npy", rng.standard_normal((10, 4)).astype(np.float32))  # rows follow entity2id
    return path


def test_train_directory_then_evaluate_and_predict(tmp_path: pathlib.Path) -> None:
    data = _user_folder(tmp_path / "my-kg")
    out = tmp_path / "run"
    _run("train", "--directory", data, *FAST, "--num-experts", "2", "--seed", "3", "-o", out)
    info = json.loads((out / CLI_FILE).read_text())
    assert info["dataset"] == {"directory": str(data.resolve()), "kwargs": {}}
    assert info["heads"] == ["structure", "image", "joint"] and info["pipeline"]["random_seed"] == 3
    report = tmp_path / "m.json"
    _run("evaluate", out, "--no-progress", "--out", report)  # the folder is rebuilt from momok_cli.json
    both = json.loads(report.read_text())["metrics"]["both"]
    assert_rank_metrics_consistent(both["MRR"], both["H@1"], both["H@10"])
    rows = _predict_json(out, "--head", "city1", "--relation", "near", "-k", "4")["predictions"]
    assert len(rows) == 4 and all(set(row["heads"]) == {"structure", "image", "joint"} for row in rows)
    _fails(
        "predict", out, "--head", "City1", "--relation", "near", pattern="unknown entity 'City1'; did you mean 'city1'"
    )
    # a moved data folder: evaluate says so, and takes the new place with --directory
    moved = data.rename(tmp_path / "moved")
    _fails("evaluate", out, pattern="give --dataset or --directory to load it otherwise")
    _run("evaluate", out, "--directory", moved, "--no-progress")


def test_train_directory_without_validation_trains_without_early_stopping(tmp_path: pathlib.Path) -> None:
    data = _user_folder(tmp_path / "kg", validation=False)
    _fails(
        "train",
        "--directory",
        data,
        *FAST,
        "--early-stopping",
        "-o",
        tmp_path / "a",
        pattern="--early-stopping needs a validation split",
    )
    result = _run("train", "--directory", data, *FAST, "-o", tmp_path / "b")
    assert "no validation split: training without early stopping" in result.output
    assert "stopper" not in json.loads((tmp_path / "b" / CLI_FILE).read_text())["pipeline"]
    _fails("evaluate", tmp_path / "b", "--split", "validation", pattern="has no validation split")


def test_train_from_a_config_file(tmp_path: pathlib.Path) -> None:
    config = json.loads((CONFIGS / "momok_synthetic.json").read_text())
    config["pipeline"].update(dataset_kwargs=TINY, epochs=1)
    config["pipeline"]["model_kwargs"].update(embedding_dim=8, relation_dim=8)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "run"
    _run("train", "--config", path, "--batch-size", "16", "--no-progress", "-o", out)
    info = json.loads((out / CLI_FILE).read_text())
    assert info["config"] == str(path.resolve()) and info["recipe"] is None
    assert info["dataset"] == {"name": "SyntheticMMKG", "kwargs": TINY}
    settings = info["pipeline"]
    assert settings["training_kwargs"] == {"num_epochs": 1, "batch_size": 16}  # "epochs" moved, option applied
    assert settings["loss_kwargs"] == {"reduction": "sum"} and settings["random_seed"] == 42
    assert settings["model_kwargs"]["expert_init"] == "identity" and settings["model_kwargs"]["embedding_dim"] == 8


# recipes = the configs/ files ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(p.name for p in CONFIGS.glob("momok_*.json") if "synthetic" not in p.name))
def test_recipes_are_the_config_files_settings(path: str) -> None:
    pipeline = load_experiment_config(CONFIGS / path)
    name = "fast" if path.endswith(("_fast.json", "_cpu.json")) else "paper"
    expected = {**recipe(name, pipeline["dataset"]), "dataset": pipeline["dataset"]}
    if path.endswith("_cpu.json"):  # the fast recipe, shortened for a 2-core CPU
        expected = merge(expected, dict(training_kwargs=dict(num_epochs=15), stopper_kwargs=dict(patience=2)))
    assert expected == pipeline


def test_recommended_defaults_are_the_models() -> None:
    from pykeen_momok.model import RECOMMENDED_PIPELINE_KWARGS

    assert dict(RECOMMENDED_DEFAULTS) == {"model": "MoMoK", **RECOMMENDED_PIPELINE_KWARGS}


# errors: exit status 2, a message, no traceback ------------------------------------------------------------


def _config(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "config.json"
    path.write_text(text)
    return path


def test_train_usage_errors(tmp_path: pathlib.Path) -> None:
    out = ["-o", tmp_path / "out"]
    kwargs = ["--dataset-kwargs", json.dumps(TINY)]
    _fails("train", "--dataset", "MKG-Z", *out, pattern="unknown dataset 'MKG-Z'; did you mean 'mkgy'")
    _fails("train", *out, pattern="give the dataset")
    _fails("train", "--dataset", "Nations", "--directory", tmp_path, *out, pattern="not both")
    _fails("train", "--directory", tmp_path / "nowhere", *out, pattern="is not a folder")
    _fails("train", "--directory", tmp_path, *out, pattern="has no training file")
    _fails("train", "--dataset", "SyntheticMMKG", "--epochs", "0", *out, pattern="argument --epochs: must be 1 or more")
    _fails("train", "--dataset", "SyntheticMMKG", "--lr", "nan", *out, pattern="must be a finite number > 0")
    _fails(
        "train",
        "--dataset",
        "SyntheticMMKG",
        "--dataset-kwargs",
        "{'a': 1}",
        *out,
        pattern="argument --dataset-kwargs: not valid JSON",
    )
    _fails("train", "--dataset", "SyntheticMMKG", "--dataset-kwargs", "[1]", *out, pattern="expected a JSON object")
    _fails(
        "train",
        "--dataset",
        "SyntheticMMKG",
        "--dataset-kwargs",
        '{"colours": 3}',
        *out,
        pattern="cannot be loaded: TypeError",
    )
    _fails(
        "train",
        "--dataset",
        "Nations",
        "--dataset-kwargs",
        '{"create_inverse": true}',
        *out,
        pattern="unknown keyword argument 'create_inverse' (did you mean 'create_inverse_triples'",
    )
    _fails(
        "train",
        "--dataset",
        "SyntheticMMKG",
        *kwargs,
        "--model-kwargs",
        '{"embeding_dim": 8}',
        *out,
        pattern="'embeding_dim' (did you mean 'embedding_dim'?)",
    )
    _fails(
        "train",
        "--dataset",
        "SyntheticMMKG",
        *kwargs,
        "--model-kwargs",
        '{"core_dropout": 2}',
        *FAST,
        *out,
        pattern="refused before training started: ValueError: core_dropout must be a finite number in [0, 1)",
    )
    _fails("train", "--dataset", "SyntheticMMKG", "--recipe", "quick", *out, pattern="'quick' is not one of")
    if not torch.cuda.is_available():
        _fails("train", "--dataset", "SyntheticMMKG", "--device", "cuda", *out, pattern="CUDA is not available")
    _fails("train", "--dataset", "SyntheticMMKG", "--device", "gpu0", *out, pattern="not a torch device")
    assert not (tmp_path / "out").exists()  # nothing was trained or written


def test_train_config_errors(tmp_path: pathlib.Path) -> None:
    out = ["-o", tmp_path / "out"]
    both = _config(tmp_path, json.dumps({"pipeline": {"dataset": "SyntheticMMKG"}}))
    _fails("train", "--config", both, "--recipe", "fast", *out, pattern="either --config or --recipe")
    _fails("train", "--config", tmp_path / "none.json", *out, pattern="does not exist")
    _fails(
        "train",
        "--config",
        _config(tmp_path, '{\n  "pipeline": {\n    "model": "MoMoK",\n  }\n}'),
        *out,
        pattern="is not valid JSON: Expecting property name enclosed in double quotes at line 4, column 3",
    )
    _fails(
        "train",
        "--config",
        _config(tmp_path, '{"pipeline": {"epoch": 3}}'),
        *out,
        pattern="unknown pipeline key 'epoch' (did you mean 'epochs'",
    )
    _fails(
        "train",
        "--config",
        _config(tmp_path, '{"pipelines": {}}'),
        *out,
        pattern="unknown top-level key 'pipelines' (did you mean 'pipeline'",
    )
    _fails("train", "--config", _config(tmp_path, '{"metadata": {}}'), *out, pattern='expected a "pipeline" object')
    _fails(
        "train",
        "--config",
        _config(tmp_path, '{"pipeline": {"model": "TransE"}}'),
        *out,
        pattern="this command trains MoMoK only",
    )
    _fails(
        "train",
        "--config",
        _config(tmp_path, '{"pipeline": {"training": "train.txt"}}'),
        *out,
        pattern="'training' (a triples file) is not supported here",
    )
    _fails(
        "train",
        "--config",
        _config(tmp_path, '{"pipeline": {"dataset": "Nope"}}'),
        *out,
        pattern="unknown dataset 'Nope'",
    )
    _fails(
        "train",
        "--config",
        _config(tmp_path, '{"pipeline": {"model_kwargs": 3}}'),
        *out,
        pattern="'model_kwargs' must be an object",
    )
    _fails("train", "--config", _config(tmp_path, '{"pipeline": {"model": "MoMoK"}}'), *out, pattern="give the dataset")
    _fails(
        "train",
        "--config",
        _config(tmp_path, '{"pipeline": {"dataset": "SyntheticMMKG", "device": "gpu0"}}'),
        *out,
        pattern='"device": not a torch device',
    )


def test_train_refuses_to_overwrite_a_trained_folder(trained: pathlib.Path) -> None:
    _fails("train", "--dataset", "SyntheticMMKG", "-o", trained, pattern="already holds a trained model")
    _fails("train", "--dataset", "SyntheticMMKG", "-o", trained / "results.json", pattern="is a file")


def test_evaluate_and_predict_usage_errors(trained: pathlib.Path, tmp_path: pathlib.Path) -> None:
    _fails("evaluate", tmp_path / "nowhere", pattern="does not exist")
    _fails("evaluate", tmp_path, pattern="has no momok_cli.json")
    _fails(
        "evaluate", tmp_path, "--dataset", "Nations", pattern="is not a trained-model folder: it has no trained_model"
    )
    _fails("evaluate", trained, "--out", tmp_path / "m.txt", pattern="must end in .json or .csv")
    _fails("evaluate", trained, "--out", tmp_path / "no" / "m.json", pattern="does not exist")
    _fails("evaluate", trained, "--split", "train", pattern="'train' is not one of")
    _fails("predict", tmp_path, "--head", "e00000", "--relation", "r00", pattern="it has no trained_model.pkl")
    _fails("predict", trained, "--relation", "r00", pattern="exactly one of --head")
    _fails("predict", trained, "--head", "e00000", "--tail", "e00001", "--relation", "r00", pattern="exactly one of")
    _fails("predict", trained, "--head", "e00000", pattern="Missing option '--relation'")
    _fails(
        "predict",
        trained,
        "--head",
        "E00000",
        "--relation",
        "r00",
        pattern="argument --head: unknown entity 'E00000'; did you mean 'e00000'",
    )
    _fails(
        "predict",
        trained,
        "--head",
        "e0000",
        "--relation",
        "r00",
        pattern="argument --head: unknown entity 'e0000'; did you mean 'e000",
    )
    _fails(
        "predict",
        trained,
        "--tail",
        "e00000",
        "--relation",
        "r9",
        pattern="argument --relation: unknown relation 'r9'; known: 'r00', 'r01', 'r02'",
    )
    _fails("predict", trained, "--head", "e00000", "--relation", "r00", "-k", "0", pattern="must be 1 or more, got 0")
    _fails(
        "predict",
        trained,
        "--head",
        "e00000",
        "--relation",
        "r00",
        "-k",
        "37",
        pattern="must be from 1 to 36 (the number of entities), got 37",
    )


def test_every_option_is_documented() -> None:
    for name, command in cli.commands.items():
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"{name} {param.opts}"
        text = _run(name, "--help").output
        assert all(opt in text for param in command.params for opt in getattr(param, "opts", []))
    for name in ("evaluate", "predict"):
        assert "only" in _run(name, "--help").output and "trust" in _run(name, "--help").output


def test_main_returns_exit_status(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "pykeen-momok, version" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["predict", "/nonexistent-folder", "--head", "a", "--relation", "r"])
    assert info.value.code == 2 and "does not exist" in capsys.readouterr().err
