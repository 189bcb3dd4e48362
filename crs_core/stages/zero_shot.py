"""Stage `zero_shot` (opt-in): the zero-shot LLM recommender (crs_core/llm_recommender.py) on a split, scored
with the FNSCRS protocol and recorded in metrics.json as the `zero-shot` row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crs_core.artifacts import RunDir, write_json
from crs_core.config import Config
from crs_core.data.prepared import load_prepared
from crs_core.evaluation import evaluate_rankings, write_predictions
from crs_core.llm_chat import ANSWER_CACHE_FILE, AnswerCache
from crs_core.llm_recommender import ZERO_SHOT_NAME, format_summary, zero_shot_recommender
from crs_core.stages.base import Stage
from crs_core.stages.evaluate import record_metrics


class ZeroShot(Stage):
    """Rank every `split` sample with targets, score it with the protocol, record it in metrics.json.

    Also writes the rankings as a predictions file (`crs evaluate --predictions` reads it back) and the
    mapping summary. Opt-in (`zero_shot.enabled`): it needs an LLM endpoint. No fingerprint: answers come
    from the run's answer cache."""

    name = "zero_shot"
    about = "the zero-shot LLM recommender on the {stage.split} split"

    def __init__(self, split: str = "test"):
        self.split = split

    def enabled(self, config: Config) -> bool:
        return config.zero_shot.enabled

    def outputs(self, config: Config) -> list[str]:
        return [f"zero_shot/{self.split}_predictions.jsonl", f"zero_shot/{self.split}_summary.json"]

    def work(self, config: Config, run: RunDir) -> dict:
        split = self.split
        data = load_prepared(run.root)
        samples = [s for s in data.samples[split] if s.targets]
        cache = AnswerCache(run.path(ANSWER_CACHE_FILE))
        try:
            with zero_shot_recommender(config, data.catalog, cache) as recommender:
                rankings = recommender.rank(samples)
                summary = recommender.summary()
        finally:
            cache.close()
        result = evaluate_rankings(rankings, samples, ks=config.evaluation.ks, top_n=config.evaluation.top_n)
        run.path("zero_shot").mkdir(parents=True, exist_ok=True)
        write_predictions(run.path("zero_shot", f"{split}_predictions.jsonl"), [s.sample_id for s in samples],
                          rankings)
        write_json(run.path("zero_shot", f"{split}_summary.json"), summary | {"split": split})
        source = (f"zero-shot LLM {summary['model']} (prompt {summary['prompt_version']}, "
                  f"{100 * summary['mapped_share']:.1f}% of titles mapped, {summary['failed']} failed answers)")
        record_metrics(run, split, {ZERO_SHOT_NAME: result}, {ZERO_SHOT_NAME: source})
        return {"split": split, "result": result, "summary": summary}

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        return format_summary(figures["summary"]).splitlines()


STAGE = ZeroShot()
