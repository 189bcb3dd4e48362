"""Stage `train`: the backbone without augmentation (baseline) and with it (stage 1 on synthetic labels,
stage 2 on the original ones with the KL pull towards a frozen copy of stage 1), from the same code.

The baseline is stage 2 with alpha = 0 and no stage 1 (docs/training.md). Both end up under `models/` so
`crs evaluate` scores them next to Popularity and EASE under the same protocol. `train_augmented` takes
any synthetic-label file, so ablations (e.g. self-distillation labels) train through the same path.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crs_core.artifacts import RunDir
from crs_core.config import Config
from crs_core.models import Recommender
from crs_core.stages.base import Stage, shown

SYNTHETIC = "synthetic.parquet"


def model_names(config: Config) -> tuple[str, str]:
    """(baseline, augmented) model directory names under models/."""
    return config.train.backbone, f"{config.train.backbone}-aug"


def training_seed(config: Config) -> int:
    return config.seed if config.train.seed is None else config.train.seed


def _settings(config: Config, run: RunDir):
    return dataclasses.replace(config.train, storage_path=config.train.storage_path or str(run.path("ray_results")))


def backbone_params(config: Config) -> dict[str, Any]:
    """The backbone's own constructor arguments: `train.backbone_params`, and for a backbone that takes a
    `kg_dir` (UniCRS's RGCN) the dataset's KG folder unless set there (absolute: Ray workers run in another
    directory); a dataset without a `kg/` folder gets the graph the backbone builds from the catalog."""
    from crs_core.models import model_class

    params = dict(config.train.backbone_params)
    kg_dir = config.resolved_data_dir() / config.dataset / "kg"
    takes_kg = "kg_dir" in inspect.signature(model_class(config.train.backbone).__init__).parameters
    if takes_kg and "kg_dir" not in params and kg_dir.is_dir():
        params["kg_dir"] = str(kg_dir.resolve())
    return params


def train_baseline(config: Config, run: RunDir) -> tuple[Recommender, dict[str, Any]]:
    """Original labels only: stage 2 with alpha = 0 from the pretrained backbone."""
    from crs_core.training.data import load_training_data
    from crs_core.training.loop import train_stage

    settings = dataclasses.replace(_settings(config, run), alpha=0.0)
    return train_stage(settings, load_training_data(run.root, "finetune"), "finetune", seed=training_seed(config),
                       backbone_params=backbone_params(config))


def train_augmented(config: Config, run: RunDir, synthetic: str = SYNTHETIC,
                    keep_checkpoints: bool = True) -> tuple[Recommender, dict[str, Any], dict[str, Any]]:
    """Stage 1 on the labels in `synthetic`, then stage 2 (CE + alpha * KL) from its best checkpoint.
    `keep_checkpoints` saves both stages' best models under checkpoints/ (the main run's, not ablations')."""
    from crs_core.training.data import load_training_data
    from crs_core.training.loop import train_stage

    settings, seed = _settings(config, run), training_seed(config)
    run_dir = run.root if keep_checkpoints else None
    _, stage1 = train_stage(settings, load_training_data(run.root, "pretrain", synthetic), "pretrain", seed=seed,
                            run_dir=run_dir, backbone_params=backbone_params(config))
    model, stage2 = train_stage(settings, load_training_data(run.root, "finetune"), "finetune",
                                init_checkpoint=stage1["best_checkpoint"], seed=seed, run_dir=run_dir)
    return model, stage1, stage2


class Train(Stage):
    """Train both variants; their model directories are named by `model_names`."""

    name = "train"
    about = "backbone {config.train.backbone} without augmentation, then stage 1 (synthetic) and stage 2 (+KL)"
    needs_ray = True

    def inputs(self, config: Config, run: RunDir) -> list[Path]:
        return [run.path("items.parquet"), *(run.path("samples", f"{s}.parquet") for s in ("train", "valid")),
                run.path(SYNTHETIC)]

    def outputs(self, config: Config) -> list[str]:
        return [f"models/{name}/model.json" for name in model_names(config)]

    def settings(self, config: Config, run: RunDir) -> dict:
        return {"train": dataclasses.asdict(config.train), "seed": training_seed(config)}

    def work(self, config: Config, run: RunDir) -> dict:
        baseline_name, augmented_name = model_names(config)
        baseline, baseline_metrics = train_baseline(config, run)
        baseline.save(run.path("models", baseline_name))
        augmented, stage1, stage2 = train_augmented(config, run)
        augmented.save(run.path("models", augmented_name))
        return {
            "backbone": config.train.backbone,
            "alpha": config.train.alpha,
            "seed": training_seed(config),
            "baseline": brief(baseline_metrics),
            "stage1": brief(stage1),
            "stage2": brief(stage2),
            "models": [baseline_name, augmented_name],
            "figure": draw_training_curves(config, run, baseline_metrics, stage1, stage2),
        }

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        lines = [f"backbone {figures['backbone']}, alpha {figures['alpha']:g} (best epoch by valid Recall@50)"]
        parts = (("no augmentation", "baseline"), ("stage 1 (synthetic)", "stage1"), ("stage 2 (+KL)", "stage2"))
        for label, key in parts:
            part = figures[key]
            recall = shown(part["valid"].get("valid_recall@50"), ".2%")
            lines.append(f"  {label:<20} epoch {part['best_epoch']}/{part['epochs']}: valid R@50 {recall}")
        if figures.get("figure"):  # none for runs only reloaded from Ray checkpoints
            lines.append(f"  figure: {figures['figure']} (valid recall per epoch of each stage)")
        return lines


def brief(metrics: dict) -> dict:
    """Best epoch, its valid metrics and every epoch's reported metrics: what the summary, the printout and
    the training curves need."""
    return {"best_epoch": metrics["best_epoch"], "epochs": metrics["epochs"], "valid": metrics["best"],
            "run_name": metrics["run_name"], "history": metrics["history"]}


def draw_training_curves(config: Config, run: RunDir, baseline: dict, stage1: dict, stage2: dict) -> str | None:
    """figures/training_curves.png: valid recall per epoch of the three trained stages; returns its path, or None
    when no stage trained an epoch in this process (Ray runs that were complete and only reloaded)."""
    from crs_core.evaluation import selection_key
    from crs_core.figures import TRAINING_CURVES, plot_training_curves

    histories = {"no augmentation (original labels)": baseline["history"],
                 "stage 1 (synthetic labels)": stage1["history"],
                 f"stage 2 (original labels + {config.train.alpha:g} * KL)": stage2["history"]}
    if not any(histories.values()):
        return None
    plot_training_curves(histories, run.path(TRAINING_CURVES), dataset=config.dataset_label(),
                         tau=config.synthesize.threshold, seed=training_seed(config),
                         selected_by=selection_key(config.train.backbone))
    return TRAINING_CURVES


STAGE = Train()
