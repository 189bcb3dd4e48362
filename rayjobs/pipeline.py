"""`python -m rayjobs.pipeline --dataset inspired` (= `crs run`, `make demo`): the whole method in order —
prepare, augment (embed, retrieve, teach, score, synthesize), baselines, two-stage training of the backbone
(`train.backbone`) with and without augmentation, and the test table under the FNSCRS protocol.

Two LLM stages are off by default (the offline demo has no LLM server) and need an endpoint
(`<section>.base_url` or `teacher.base_url`; the config is refused without one):
  zero_shot.enabled: true  evaluates the zero-shot LLM recommender on test: a `zero-shot` row in the table
  simulate.enabled: true   plays the LLM user simulator against the trained models (and zero-shot when
                           enabled) and prints cumulative recall per seeker turn (simulate.json)

Each stage reuses its outputs when inputs and settings are unchanged (the LLM stages reuse cached answers),
so a rerun resumes where it stopped and a changed setting reruns only the stages downstream of it.
Per-stage wall times go to timings.json.
"""

from __future__ import annotations

import argparse
import time

from crs_core.artifacts import RunDir, write_json
from crs_core.baselines import run_baselines
from crs_core.evaluate import results_figure, run_evaluate
from crs_core.evaluation import format_table
from crs_core.prepare import format_summary, prepare
from crs_core.simulate import run_simulate
from crs_core.zero_shot import ZERO_SHOT_NAME, run_zero_shot
from crs_core.zero_shot import format_summary as format_zero_shot
from rayjobs.augment import run_augment
from rayjobs.common import add_common_arguments, init_ray, run_entry
from rayjobs.report import format_train, print_stage_start, stage_end_header
from rayjobs.simulate import print_simulation

TIMINGS_FILE = "timings.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, ray=True, force=True)
    return parser


def run_pipeline(config, force: bool = False) -> dict:
    """Every stage; returns {"timings": {stage: seconds}, "results": {model: result}, "train": summary,
    "simulate": the simulate.json report or None}."""
    from crs_core.two_stage import model_names, run_two_stage

    timings: dict[str, float] = {}
    print_stage_start("prepare", config)
    start = time.perf_counter()
    prepared = prepare(config, force=force)
    timings["prepare"] = round(time.perf_counter() - start, 1)
    print(stage_end_header("prepare", timings["prepare"], prepared["skipped"]))
    print(format_summary(prepared))
    for stage, summary in run_augment(config, force=force).items():
        timings[stage] = summary["wall_s"]
    print_stage_start("baselines", config)
    start = time.perf_counter()
    baselines = run_baselines(config, force=force)
    timings["baselines"] = round(time.perf_counter() - start, 1)
    print(stage_end_header("baselines", timings["baselines"]) + f": {', '.join(baselines)}")
    print_stage_start("train", config)
    start = time.perf_counter()
    init_ray(config)
    run = RunDir(config.run_dir())
    train = run_two_stage(config, run, force=force)
    timings["train"] = round(time.perf_counter() - start, 1)
    print(stage_end_header("train", timings["train"], bool(train.get("skipped"))))
    print("\n".join(format_train(train)))
    print_stage_start("evaluate", config)
    start = time.perf_counter()
    results = run_evaluate(config, models=[*model_names(config), *baselines], split="test", figure=True)
    timings["evaluate"] = round(time.perf_counter() - start, 1)
    print(stage_end_header("evaluate", timings["evaluate"]) + " (the table follows at the end)")
    if config.zero_shot.enabled:
        print_stage_start("zero_shot", config)
        start = time.perf_counter()
        results[ZERO_SHOT_NAME], summary = run_zero_shot(config, split="test")
        timings["zero_shot"] = round(time.perf_counter() - start, 1)
        print(f"{stage_end_header('zero_shot', timings['zero_shot'])}\n{format_zero_shot(summary)}")
    simulation = None
    if config.simulate.enabled:
        print_stage_start("simulate", config)
        start = time.perf_counter()
        zero_shot = [ZERO_SHOT_NAME] if config.zero_shot.enabled else []
        simulation = run_simulate(config, [*model_names(config), *zero_shot])
        timings["simulate"] = round(time.perf_counter() - start, 1)
        print(stage_end_header("simulate", timings["simulate"]) + " (the table follows at the end)")
    write_json(run.path(TIMINGS_FILE), timings)
    return {"timings": timings, "results": results, "train": train, "simulate": simulation}


def body(config, args) -> None:
    outcome = run_pipeline(config, force=args.force)
    label = config.data.label or config.dataset
    plain, augmented = (outcome["train"]["models"])
    print(f"\n{label} test (FNSCRS protocol; metrics in %; teacher {config.teacher.kind}, "
          f"backbone {config.train.backbone}, seed {config.seed})")
    print(f"  {plain}: no augmentation (original labels only); {augmented}: stage 1 on the synthetic labels, "
          f"then stage 2 with alpha={config.train.alpha:g} * KL to stage 1")
    print(format_table(list(outcome["results"].items())))
    print(f"figure: {config.run_dir() / results_figure('test')} (removed variant, 95% bootstrap CI over test pairs"
          + (f"; no {ZERO_SHOT_NAME} row)" if ZERO_SHOT_NAME in outcome["results"] else ")"))
    if ZERO_SHOT_NAME in outcome["results"]:
        print(f"  {ZERO_SHOT_NAME}: the LLM {config.zero_shot.model or config.teacher.model} names movies for the "
              "dialogue (no training); a small local model measures the harness, not the method")
    if outcome["simulate"] is not None:
        print_simulation(config, outcome["simulate"])
    timings = outcome["timings"]
    print("\nwall time per stage (s): " + ", ".join(f"{k} {v:g}" for k, v in timings.items())
          + f"; total {sum(timings.values()):.0f}")
    print(f"run directory: {config.run_dir()}")


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
