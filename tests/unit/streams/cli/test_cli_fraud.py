"""`paystream fraud ...` end to end on a tiny history: simulate, train, replay."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from streams.cli.main import app

runner = CliRunner()


def test_simulate_train_replay(tmp_path):
    csv = tmp_path / "tx.csv"
    r = runner.invoke(
        app,
        ["fraud", "simulate", "--days", "21", "--cards", "300", "--merchants", "300", "--seed", "3", "--out", str(csv)],
    )
    assert r.exit_code == 0, r.output
    rows = len(pd.read_csv(csv))
    assert json.loads(r.stdout.strip().splitlines()[-1])["rows"] == rows

    art = tmp_path / "art"
    r = runner.invoke(app, ["fraud", "train", "--input", str(csv), "--out", str(art), "--algo", "hgb"])
    assert r.exit_code == 0, r.output
    assert (art / "manifest.json").is_file()

    scores = tmp_path / "scores.csv"
    r = runner.invoke(app, ["fraud", "replay", "--input", str(csv), "--out", str(scores)])
    assert r.exit_code == 0, r.output
    assert "AUC" in r.output and "card P@100" in r.output
    assert len(pd.read_csv(scores)) == rows


def test_replay_bad_input_exits_2(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("tx_id,timestamp\n1,2\n")
    r = runner.invoke(app, ["fraud", "replay", "--input", str(bad), "--out", str(tmp_path / "o.csv")])
    assert r.exit_code == 2 and "missing columns" in r.output
