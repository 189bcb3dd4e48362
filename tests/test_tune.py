"""`crs tune` on the tiny data tree: one stage-1 run per threshold, the alpha x tau grid on Ray Tune with
ASHA, best.json + plot + the tuned model, and a rerun that resumes (reloads) the finished sweep."""

from __future__ import annotations

import json

import pytest
from tiny_data import TINY_AUGMENT, make_inspired

from crs_core.config import load_config
from crs_core.errors import ConfigError
from crs_core.stages.tune import BEST_FILE, PLOT_FILE, TUNE_DIR
from rayjobs.cli import main

SWEEP = [*TINY_AUGMENT, "tune.alphas=[0.0, 1.0]", "tune.thresholds=[0.0, 4.0]", "tune.cpus_per_trial=0.5",
         "train.epochs_stage1=1", "train.epochs_stage2=2", "train.max_length=32", "train.trainable_layers=0",
         "train.batch_size=4", "train.learning_rate=1e-3"]


def test_tune_sweeps_alpha_and_tau_then_resumes(tmp_path, ray_local, capsys):
    data = make_inspired(tmp_path / "data")
    argv = ["tune", "--dataset", "inspired", "--data-dir", str(data), "--runs-dir", str(tmp_path / "runs"),
            *(arg for s in SWEEP for arg in ("--set", s))]
    assert main(argv) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "inspired" / "default"
    best = json.loads((run / TUNE_DIR / BEST_FILE).read_text())
    assert len(best["trials"]) == 4  # 2 alphas x 2 thresholds x 1 learning rate
    assert {(t["alpha"], t["tau"]) for t in best["trials"]} == {(a, t) for a in (0.0, 1.0) for t in (0.0, 4.0)}
    assert best["valid_recall@50"] == max(t["valid_recall@50"] for t in best["trials"])
    assert all(1 <= t["epochs_run"] <= 2 for t in best["trials"])
    # tau = 0 keeps every scored candidate; tau = 4 almost nothing: the two stage-1 runs saw different labels
    assert best["expansion"]["threshold"] == best["tau"]
    assert (run / TUNE_DIR / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run / "models" / "minilm-tuned" / "model.json").exists()
    assert "best: alpha" in out and "minilm-tuned" in out
    stage1_runs = [p for p in (run / "ray_results").iterdir() if p.name.startswith("stage1-")]
    assert len(stage1_runs) == 2
    # TensorBoard event files for every trial
    assert len(list((run / TUNE_DIR).rglob("events.out.tfevents.*"))) >= 4

    assert main(argv) == 0  # same sweep: restored from its experiment directory, no new trial
    again = json.loads((run / TUNE_DIR / BEST_FILE).read_text())
    assert [(t["alpha"], t["tau"], t["valid_recall@50"]) for t in again["trials"]] == \
        [(t["alpha"], t["tau"], t["valid_recall@50"]) for t in best["trials"]]


@pytest.mark.parametrize("override, key", [("tune.alphas=[-1]", "tune.alphas"),
                                           ("tune.thresholds=[5]", "tune.thresholds"),
                                           ("tune.alphas=[]", "tune.alphas"),
                                           ("train.alpha=-0.5", "train.alpha")])
def test_bad_sweep_settings_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(overrides=[override])
