"""Stage `train`: the backbone without augmentation (baseline) and with it (stage 1 on synthetic labels,
stage 2 on the original ones with the KL pull towards a frozen copy of stage 1), from the same code.

The baseline is stage 2 with alpha = 0 and no stage 1 (DESIGN.md §5). Both end up under `models/` so
`crs evaluate` scores them next to Popularity and EASE under the same protocol.
"""

from __future__ import annotations

import dataclasses

from crs_core.artifacts import RunDir, fingerprint
from crs_core.config import Config

SYNTHETIC = "synthetic.parquet"


def model_names(config: Config) -> tuple[str, str]:
    """(baseline, augmented) model directory names under models/."""
    return config.train.backbone, f"{config.train.backbone}-aug"


def run_two_stage(config: Config, run: RunDir, force: bool = False) -> dict:
    """Train both variants unless saved ones match the data, the synthetic labels and the settings."""
    from crs_core.training.data import load_training_data
    from crs_core.training.loop import train_stage

    baseline_name, augmented_name = model_names(config)
    outputs = [f"models/{baseline_name}/model.json", f"models/{augmented_name}/model.json"]
    inputs = [run.path("items.parquet"), *(run.path("samples", f"{s}.parquet") for s in ("train", "valid")),
              run.path(SYNTHETIC)]
    fp = fingerprint({"train": dataclasses.asdict(config.train), "seed": config.seed}, inputs)
    if not force and run.is_current("train", fp, outputs):
        return run.summary("train") | {"skipped": True}

    settings = dataclasses.replace(config.train, storage_path=config.train.storage_path or str(run.path("ray_results")))
    finetune = load_training_data(run.root, "finetune")
    baseline, baseline_metrics = train_stage(dataclasses.replace(settings, alpha=0.0), finetune, "finetune",
                                             seed=config.seed)
    baseline.save(run.path("models", baseline_name))

    _, stage1 = train_stage(settings, load_training_data(run.root, "pretrain"), "pretrain", seed=config.seed,
                            run_dir=run.root)
    augmented, stage2 = train_stage(settings, finetune, "finetune", init_checkpoint=stage1["best_checkpoint"],
                                    seed=config.seed, run_dir=run.root)
    augmented.save(run.path("models", augmented_name))

    summary = {
        "backbone": config.train.backbone,
        "alpha": config.train.alpha,
        "baseline": _brief(baseline_metrics),
        "stage1": _brief(stage1),
        "stage2": _brief(stage2),
        "models": [baseline_name, augmented_name],
    }
    run.mark_done("train", fp, outputs, summary)
    return summary | {"skipped": False}


def _brief(metrics: dict) -> dict:
    """Best epoch and its valid metrics: what the summary and the printout need."""
    return {"best_epoch": metrics["best_epoch"], "epochs": metrics["epochs"], "valid": metrics["best"],
            "run_name": metrics["run_name"]}
