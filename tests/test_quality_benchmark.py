"""benchmarks/quality.py end to end on the generated dataset: curves, best-validation state, outputs."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402

TINY = dict(num_colours=6, num_shapes=6, num_relations=3, triples_per_entity=3, image_dim=8, text_dim=8, seed=1)


def test_setup_overrides_and_unknown_names():
    known = {"base": dict(model="MoMoK", model_kwargs=dict(embedding_dim=8), loss_kwargs=dict(head_loss="softmax"))}
    setup = quality.parse_setup(
        'base@model_kwargs.embedding_dim=16,loss_kwargs.head_loss="bce",optimizer=adagrad', known
    )
    assert setup["model_kwargs"]["embedding_dim"] == 16 and setup["loss_kwargs"]["head_loss"] == "bce"
    assert setup["optimizer"] == "adagrad"
    assert known["base"]["model_kwargs"]["embedding_dim"] == 8  # the known setup is not changed
    assert "head_loss" not in quality.parse_setup("base@loss_kwargs.head_loss=null", known)["loss_kwargs"]
    with pytest.raises(SystemExit, match="unknown setup"):
        quality.parse_setup("nope", known)
    with pytest.raises(SystemExit, match="key=value"):
        quality.parse_setup("base@embedding_dim", known)


def test_every_benchmark_has_paper_fast_and_baseline_setups():
    for name in ("DB15K", "MKG-W", "MKG-Y", "FB15K-237-IMG", "KVC16K"):
        setups = {**quality.momok_setups(name), **quality.baseline_setups(name)}
        assert {"momok-paper", "momok-fast", "tucker", "tucker-fast", "complex-ce", "complex-ce-n3"} <= set(setups), (
            name
        )
        assert setups["momok-paper"]["loss_kwargs"]["head_loss"] == "bce"
        assert setups["momok-fast"]["loss_kwargs"]["head_loss"] == "softmax"
        assert setups["momok-paper"]["dataset"] == setups["momok-fast"]["dataset"] == name


def test_quality_run_on_synthetic_data(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    out = tmp_path / "q"
    status = quality.main(
        [
            "--dataset",
            "SyntheticMMKG",
            "--dataset-kwargs",
            json.dumps(TINY),
            "--setups",
            f"{quality.CONFIGS / 'momok_synthetic.json'}@model_kwargs.embedding_dim=8,model_kwargs.relation_dim=8",
            "tucker@model_kwargs.embedding_dim=8,model_kwargs.relation_dim=8",
            "--epochs",
            "3",
            "--eval-every-epochs",
            "1",
            "--eval-batch-size",
            "64",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert [run["config"]["model"] for run in result["runs"]] == ["MoMoK", "TuckER"]
    for run in result["runs"]:
        assert [row["epoch"] for row in run["curve"]] == [1, 2, 3]
        best = max(run["curve"], key=lambda row: row["valid"]["mrr"])
        assert run["best_epoch"] == best["epoch"]
        # the test figures are those of the best-validation state, evaluated again after training
        assert run["test"]["mrr"] == pytest.approx(best["test"]["mrr"], abs=1e-6)
        assert run["paper_protocol"]["mrr"] == max(row["test"]["mrr"] for row in run["curve"])
        assert len(run["losses"]) == 3
    csv_rows = out.with_suffix(".csv").read_text().splitlines()
    assert csv_rows[0].startswith("setup,epoch,train_seconds,valid_mrr") and len(csv_rows) == 1 + 6
    table = out.with_suffix(".md").read_text()
    assert table.count("momok_synthetic.json@") == 1 and table.count("| tucker@") == 1 and "paper protocol" in table
    # two result files merge into one table and plot
    assert (
        quality.main(
            ["--merge", str(out.with_suffix(".json")), str(out.with_suffix(".json")), "--out", str(tmp_path / "m")]
        )
        == 0
    )
    assert (tmp_path / "m.md").read_text().count("| tucker@") == 2
    from PIL import Image

    with Image.open(out.with_suffix(".png")) as image:
        assert image.size == (640, 400)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 2  # lines, not a blank canvas


def test_bad_budgets_are_refused(capsys):
    for argv, message in (
        (["--setups", "tucker"], "give a budget"),
        (["--minutes", "-1"], "must be positive"),
        (["--epochs", "0"], "at least 1"),
    ):
        with pytest.raises(SystemExit):
            quality._parse_args(argv)
        assert message in capsys.readouterr().err
