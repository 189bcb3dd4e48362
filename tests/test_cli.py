"""The `crs` front door end to end: prepare, baselines, evaluate (saved models and outside predictions)."""

from __future__ import annotations

import json

import pytest
from tiny_data import make_inspired

from crs_core.data.prepared import load_prepared
from crs_core.evaluation import evaluate_rankings, write_predictions
from rayjobs.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def common(tmp_path, data_dir):
    return ["--dataset", "inspired", "--data-dir", str(data_dir), "--runs-dir", str(tmp_path / "runs")]


def test_baselines_on_real_inspired_print_the_table_and_write_metrics(tmp_path, capsys, real_data_dir):
    code, out, err = run(capsys, "prepare", *common(tmp_path, real_data_dir))
    assert code == 0, err
    assert "training labels (repeated targets dropped): 1401 (paper: 1404)" in out
    assert run(capsys, "baselines", *common(tmp_path, real_data_dir))[0] == 0
    code, out, err = run(capsys, "evaluate", *common(tmp_path, real_data_dir))
    assert code == 0, err
    for row in ("popularity  removed      161", "popularity  not_removed  195", "ease        removed      161"):
        assert row in out
    run_dir = tmp_path / "runs" / "inspired" / "default"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["ease"]["removed"]["n"] == 161
    assert (run_dir / "config.yaml").exists()

    # an outside model's predictions, scored under the same protocol: here popularity's own ranking
    data = load_prepared(run_dir)
    counts = {}
    for sample in data.samples["train"]:
        for target in sample.targets:
            counts[target] = counts.get(target, 0) + 1
    ranking = sorted(data.catalog.item_ids.tolist(), key=lambda item: -counts.get(item, 0))[:100]
    predictions = tmp_path / "outside.jsonl"
    write_predictions(predictions, [s.sample_id for s in data.samples["test"]], [ranking] * len(data.samples["test"]))
    code, out, err = run(capsys, "evaluate", *common(tmp_path, real_data_dir), "--models", "popularity",
                         "--predictions", f"outside={predictions}")
    assert code == 0, err
    assert any(line.startswith("outside") for line in out.splitlines())
    # popularity's table row is a mean over tie orders; the file is its catalog-order ranking, scored as given
    expected = evaluate_rankings([ranking] * len(data.samples["test"]), data.samples["test"])
    scored = json.loads((run_dir / "metrics.json").read_text())["test"]["outside"]
    assert scored["removed"]["recall@10"] == pytest.approx(expected["removed"]["recall@10"])
    assert scored["not_removed"]["n"] == expected["not_removed"]["n"] == 195


def test_errors_exit_2_with_one_clear_line(tmp_path, capsys):
    data = make_inspired(tmp_path / "data")
    code, _, err = run(capsys, "prepare", *common(tmp_path, data), "--set", "baselines.ease_l2=-3")
    assert code == 2 and "baselines.ease_l2" in err and "Traceback" not in err
    code, _, err = run(capsys, "evaluate", *common(tmp_path, data))
    assert code == 2 and "run the stage that writes it first" in err
    assert run(capsys, "prepare", *common(tmp_path, data))[0] == 0
    code, _, err = run(capsys, "evaluate", *common(tmp_path, data), "--models", "ease")
    assert code == 2 and "crs baselines" in err
    code, _, err = run(capsys, "bogus")
    assert code == 2 and "unknown command" in err
