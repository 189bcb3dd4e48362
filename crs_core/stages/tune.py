"""Stage `tune`: Ray Tune over alpha x tau (x learning rate), ASHA early stopping on valid Recall@50.

Cheap by construction: tau only re-filters the stored student scores (`synthesize`, nothing
is re-embedded or re-scored); stage 1 runs ONCE per distinct tau under Ray Train before the sweep (its run
is named by a fingerprint of its labels and settings, so a rerun reuses it); a trial trains stage 2 only, in
its own Tune worker with the trial resources from config, with the same optimisation steps as every other
loop (crs_core.training.steps). Each epoch reports valid metrics and a checkpoint, so ASHA can stop a trial
early and an interrupted sweep resumes from its trials' last checkpoints (`Tuner.restore`).

Under `<run>/tune/`: `<name>-<fingerprint>/` (Tune's experiment: per-trial result.json, progress.csv and
TensorBoard event files), `best.json`, and `valid_recall50.png` (valid Recall@50 over alpha x tau). The best
trial's model is saved as `models/<backbone>-tuned` and evaluated once on test.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from crs_core.artifacts import RunDir, fingerprint, read_table, write_json
from crs_core.config import Config
from crs_core.errors import CRSError
from crs_core.models import load_model
from crs_core.schema import SAMPLES_SCHEMA, SCORES_SCHEMA, table_to_samples
from crs_core.stages.base import Stage
from crs_core.stages.synthesize import expansion, synthesize
from crs_core.stages.train import backbone_params, training_seed
from crs_core.training.data import TrainingData, labelled, load_training_data
from crs_core.training.loop import train_stage
from crs_core.training.steps import (
    METRIC,
    MODEL_DIR,
    build_optimizer,
    checkpoint_progress,
    frozen_reference,
    linear_warmup_schedule,
    load_optimizer,
    plain_step,
    run_epochs,
    save_optimizer,
    stage_loss,
    validate,
    write_checkpoint,
)

TUNE_DIR = "tune"
BEST_FILE = "best.json"
PLOT_FILE = "valid_recall50.png"
INPUTS = ("items.parquet", "samples/train.parquet", "samples/valid.parquet", "scores.parquet")


def tuned_model_name(config: Config) -> str:
    return f"{config.train.backbone}-tuned"


def threshold_data(run: RunDir, finetune: TrainingData, tau: float) -> tuple[TrainingData, dict]:
    """Stage-1 data for `tau`: the original train samples with targets re-filtered from the stored scores."""
    samples = table_to_samples(read_table(run.path("samples", "train.parquet"), SAMPLES_SCHEMA))
    rows = synthesize(samples, read_table(run.path("scores.parquet"), SCORES_SCHEMA), tau)
    targets = {row["sample_id"]: tuple(row["targets"]) for row in rows}
    train = [dataclasses.replace(s, targets=targets[s.sample_id]) for s in finetune.train]
    return TrainingData(finetune.catalog, train, finetune.valid), expansion(rows, tau)


def stage2_trial(params: dict[str, Any], data: TrainingData, stage1: dict[str, str], settings: dict[str, Any]) -> None:
    """Tune function trainable: stage 2 from the stage-1 checkpoint of `params["tau"]` with `params["alpha"]`."""
    import ray.tune

    alpha, lr = float(params["alpha"]), float(params["learning_rate"])
    epochs, batch_size, seed = settings["epochs"], settings["batch_size"], settings["seed"]
    init = Path(stage1[repr(float(params["tau"]))])
    samples, columns = labelled(data.train, data.catalog)
    steps_per_epoch = math.ceil(len(samples) / batch_size)
    with ExitStack() as stack:
        checkpoint = ray.tune.get_checkpoint()
        resume = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
        model = load_model((resume or init) / MODEL_DIR, catalog=data.catalog)
        start = checkpoint_progress(resume)["epoch"] if resume else 0
        reference = frozen_reference(init / MODEL_DIR) if alpha > 0 else None
        optimizer = build_optimizer(model.module, lr)
        scheduler = linear_warmup_schedule(optimizer, steps_per_epoch, epochs * steps_per_epoch)
        if resume:
            load_optimizer(resume, optimizer, scheduler)
    step = plain_step(optimizer, scheduler, [p for p in model.module.parameters() if p.requires_grad])

    def epoch_end(epoch: int, loss: float, seconds: float, seen: int) -> dict[str, float]:
        metrics = {"epoch": epoch, "train_loss": loss, **validate(model, data)}
        with tempfile.TemporaryDirectory() as tmp:
            write_checkpoint(Path(tmp), model, epoch, metrics)
            save_optimizer(Path(tmp), optimizer, scheduler)
            ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(tmp))
        return metrics

    run_epochs(model, model.module, samples, columns, loss_fn=stage_loss("finetune", alpha, reference), step=step,
               epochs=epochs, start=start, seed=seed, batch_size=batch_size, epoch_end=epoch_end)


def train_stage1_per_threshold(config: Config, run: RunDir, finetune: TrainingData) -> tuple[dict[str, str], dict]:
    """{repr(tau): best stage-1 checkpoint dir} and {repr(tau): label expansion}, one Ray Train run per tau."""
    settings = dataclasses.replace(config.train, storage_path=config.train.storage_path
                                   or str(run.path("ray_results").resolve()))
    checkpoints, expansions = {}, {}
    for tau in sorted(set(config.tune.thresholds)):
        data, expansions[repr(float(tau))] = threshold_data(run, finetune, tau)
        _, metrics = train_stage(settings, data, "pretrain", seed=training_seed(config),
                                 backbone_params=backbone_params(config))
        checkpoints[repr(float(tau))] = str(metrics["best_checkpoint"])
    return checkpoints, expansions


def _tuner(config: Config, experiment: Path, trainable, param_space: dict, fresh: bool):
    from ray import tune

    if not fresh and tune.Tuner.can_restore(str(experiment)):
        return tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True)
    scheduler = tune.schedulers.ASHAScheduler(time_attr="training_iteration", max_t=config.train.epochs_stage2,
                                              grace_period=min(config.tune.grace_period, config.train.epochs_stage2),
                                              reduction_factor=config.tune.reduction_factor)
    return tune.Tuner(trainable, param_space=param_space,
                      tune_config=tune.TuneConfig(metric=METRIC, mode="max", scheduler=scheduler),
                      run_config=tune.RunConfig(name=experiment.name, storage_path=str(experiment.parent),
                                                checkpoint_config=tune.CheckpointConfig(
                                                    num_to_keep=1, checkpoint_score_attribute=METRIC,
                                                    checkpoint_score_order="max")))


def trial_rows(results) -> list[dict]:
    """One row per trial: its grid point, epochs run, best valid metrics (what best.json and the plot show)."""
    rows = []
    for result in results:
        history = result.metrics_dataframe
        if history is None or METRIC not in history:
            continue
        best = history.loc[history[METRIC].idxmax()]
        rows.append({"alpha": result.config["alpha"], "tau": result.config["tau"],
                     "learning_rate": result.config["learning_rate"], "epochs_run": int(history["epoch"].max()),
                     "best_epoch": int(best["epoch"]), METRIC: float(best[METRIC]),
                     "valid_recall@10": float(best["valid_recall@10"]), "path": result.path})
    return sorted(rows, key=lambda r: (-r[METRIC], r["alpha"], r["tau"], r["learning_rate"]))


def plot_grid(rows: list[dict], path: Path) -> None:
    """Heatmap of the best valid Recall@50 per (alpha, tau), the best over learning rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    alphas = sorted({r["alpha"] for r in rows})
    taus = sorted({r["tau"] for r in rows})
    grid = np.full((len(alphas), len(taus)), np.nan)
    for r in rows:
        i, j = alphas.index(r["alpha"]), taus.index(r["tau"])
        grid[i, j] = np.nanmax([grid[i, j], 100 * r[METRIC]])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(taus), 1.2 + 0.8 * len(alphas)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(taus)), [f"{t:g}" for t in taus])
    ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_xlabel("threshold tau")
    ax.set_ylabel("alpha (KL weight)")
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="white")
    fig.colorbar(image, ax=ax, label="valid Recall@50 (%)")
    ax.set_title("stage 2, best epoch per trial")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def run_sweep(config: Config, run: RunDir, fresh: bool = False) -> dict:
    """The sweep; returns what tune/best.json holds (the best trial and every trial's row)."""
    from ray import tune

    inputs = [run.path(p) for p in INPUTS]
    finetune = load_training_data(run.root, "finetune")
    sweep = {"tune": dataclasses.asdict(config.tune), "train": dataclasses.asdict(config.train), "seed": config.seed}
    experiment = run.path(TUNE_DIR, f"{config.tune.name}-{fingerprint(sweep, inputs)[:10]}").resolve()
    stage1, expansions = train_stage1_per_threshold(config, run, finetune)
    settings = {"epochs": config.train.epochs_stage2, "batch_size": config.train.batch_size,
                "seed": training_seed(config)}
    trainable = tune.with_resources(
        tune.with_parameters(stage2_trial, data=finetune, stage1=stage1, settings=settings),
        {"cpu": config.tune.cpus_per_trial, "gpu": config.tune.gpus_per_trial})
    param_space = {"alpha": tune.grid_search([float(a) for a in config.tune.alphas]),
                   "tau": tune.grid_search([float(t) for t in config.tune.thresholds]),
                   "learning_rate": tune.grid_search([float(x) for x in config.tune.learning_rates
                                                      or [config.train.learning_rate]])}
    results = _tuner(config, experiment, trainable, param_space, fresh).fit()
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise CRSError(f"{len(errors)} tune trial(s) failed, e.g. {errors[0]!r}; rerun `crs tune` to resume them")
    rows = trial_rows(results)
    best_result = results.get_best_result(metric=METRIC, mode="max", scope="all")
    best_checkpoint = best_result.get_best_checkpoint(metric=METRIC, mode="max")
    with best_checkpoint.as_directory() as directory:
        load_model(Path(directory) / MODEL_DIR, catalog=finetune.catalog).save(
            run.path("models", tuned_model_name(config)))
    plot_grid(rows, run.path(TUNE_DIR, PLOT_FILE))
    row = next(r for r in rows if r["path"] == best_result.path)
    best = {"alpha": row["alpha"], "tau": row["tau"], "learning_rate": row["learning_rate"], METRIC: row[METRIC],
            "best_epoch": row["best_epoch"], "expansion": expansions[repr(float(best_result.config["tau"]))],
            "experiment": str(experiment), "model": f"models/{tuned_model_name(config)}", "trials": rows}
    write_json(run.path(TUNE_DIR, BEST_FILE), best)
    return best


class Tune(Stage):
    """The sweep, the best config written to tune/best.json and its model saved as models/<backbone>-tuned.
    No fingerprint of its own: the experiment folder is named by one, and Ray Tune restores its trials
    (`fresh` starts the sweep over)."""

    name = "tune"
    about = "Ray Tune sweep of alpha x tau"
    needs_ray = True

    def __init__(self, fresh: bool = False):
        self.fresh = fresh

    def outputs(self, config: Config) -> list[str]:
        return [f"{TUNE_DIR}/{BEST_FILE}", f"{TUNE_DIR}/{PLOT_FILE}", f"models/{tuned_model_name(config)}/model.json"]

    def work(self, config: Config, run: RunDir) -> dict:
        return run_sweep(config, run, self.fresh)

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        lines = ["stage 2 per trial; trials stopped early by ASHA ran fewer epochs",
                 f"{'alpha':>6} {'tau':>5} {'lr':>8} {'epochs':>6} {'best':>5} {'valid R@50':>10} {'valid R@10':>10}"]
        for r in figures["trials"]:
            lines.append(f"{r['alpha']:>6g} {r['tau']:>5g} {r['learning_rate']:>8.0e} {r['epochs_run']:>6} "
                         f"{r['best_epoch']:>5} {100 * r['valid_recall@50']:>9.2f}% "
                         f"{100 * r['valid_recall@10']:>9.2f}%")
        exp = figures["expansion"]
        lines.append(f"best: alpha {figures['alpha']:g}, tau {figures['tau']:g}, lr {figures['learning_rate']:g} "
                     f"(valid R@50 {100 * figures['valid_recall@50']:.2f}% at epoch {figures['best_epoch']}; "
                     f"labels {exp['original_labels']:,} -> {exp['synthetic_labels']:,} at this tau)")
        return lines


STAGE = Tune()
