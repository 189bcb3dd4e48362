"""`python -m rayjobs.pipeline --dataset inspired` (= `crs run`, `make demo`): the whole method in order —
the stages of `crs_core.stages.PIPELINE`: prepare, augment (embed, retrieve, teach, distill, score,
synthesize), baselines, two-stage training of the backbone (`train.backbone`) with and without augmentation,
and the test table under the FNSCRS protocol.

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

from crs_core.artifacts import RunDir, write_json
from crs_core.evaluation import format_table
from crs_core.llm_recommender import ZERO_SHOT_NAME
from crs_core.stages import PIPELINE, Summary
from crs_core.stages.evaluate import results_figure
from rayjobs.common import add_common_arguments, run_entry
from rayjobs.runner import run_stages

TIMINGS_FILE = "timings.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, ray=True, force=True)
    return parser


def run_pipeline(config, force: bool = False) -> dict[str, Summary]:
    """Every enabled stage of PIPELINE; returns {stage: summary} and writes their wall times to timings.json."""
    summaries = run_stages(config, PIPELINE, force=force)
    write_json(RunDir(config.run_dir()).path(TIMINGS_FILE), wall_times(summaries))
    return summaries


def wall_times(summaries: dict[str, Summary]) -> dict[str, float]:
    return {name: summary.wall_s for name, summary in summaries.items()}


def table_rows(summaries: dict[str, Summary]) -> dict[str, dict]:
    """{model: protocol result} of the test table: the evaluated models, then zero-shot when it ran."""
    results = dict(summaries["evaluate"]["results"])
    if "zero_shot" in summaries:
        results[ZERO_SHOT_NAME] = summaries["zero_shot"]["result"]
    return results


def body(config, args) -> None:
    summaries = run_pipeline(config, force=args.force)
    results = table_rows(summaries)
    label = config.data.label or config.dataset
    plain, augmented = summaries["train"]["models"]
    print(f"\n{label} test (FNSCRS protocol; metrics in %; teacher {config.teacher.kind}, "
          f"backbone {config.train.backbone}, seed {config.seed})")
    print(f"  {plain}: no augmentation (original labels only); {augmented}: stage 1 on the synthetic labels, "
          f"then stage 2 with alpha={config.train.alpha:g} * KL to stage 1")
    print(format_table(list(results.items())))
    if ZERO_SHOT_NAME in results:
        print(f"  the figure ({results_figure('test')}) has no {ZERO_SHOT_NAME} row")
        print(f"  {ZERO_SHOT_NAME}: the LLM {config.zero_shot.model or config.teacher.model} names movies for the "
              "dialogue (no training); a small local model measures the harness, not the method")
    timings = wall_times(summaries)
    print("\nwall time per stage (s): " + ", ".join(f"{k} {v:g}" for k, v in timings.items())
          + f"; total {sum(timings.values()):.0f}")
    print(f"run directory: {config.run_dir()}")


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
