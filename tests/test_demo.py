"""The README's first command: ``pykeen-momok demo`` on the built-in SyntheticMMKG."""

from __future__ import annotations

import json

import pytest

from pykeen_momok.cli import main, run_demo

from conftest import assert_rank_metrics_consistent


def test_demo_momok_beats_tucker_on_cold_entities():
    """With the demo's settings MoMoK places entities that no training triple mentions; TuckER cannot.

    About 15 % of SyntheticMMKG's entities are cold, and nearly all test triples touch one: TuckER solves
    the few warm test triples and ranks the rest at random (MRR ~0.10); MoMoK reads colour and shape off
    the image and text features (MRR ~0.3 at the demo's 40 epochs).
    """
    results = run_demo()
    momok, tucker = results["MoMoK"], results["TuckER"]
    print(f"MEASURED demo MoMoK {momok}, TuckER {tucker}")
    assert tucker["inverse_harmonic_mean_rank"] < 0.15
    assert momok["inverse_harmonic_mean_rank"] > tucker["inverse_harmonic_mean_rank"] + 0.1
    assert momok["hits_at_10"] > tucker["hits_at_10"] + 0.2


def test_demo_command_line(tmp_path, capsys):
    path = tmp_path / "metrics.json"
    assert main(["demo", "--epochs", "1", "--dim", "8", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "MoMoK" in out and "TuckER" in out and "MRR" in out
    metrics = json.loads(path.read_text())
    assert set(metrics) == {"MoMoK", "TuckER"}
    for m in metrics.values():
        assert_rank_metrics_consistent(m["inverse_harmonic_mean_rank"], m["hits_at_1"], m["hits_at_10"])


def test_demo_rejects_negative_threads(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--threads", "-1"])
    assert "must be 0 or more" in capsys.readouterr().err
