"""Stage `simulate`: the LLM user simulator (crs_core/simulation.py) against saved models -> simulate.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crs_core.artifacts import RunDir, write_json
from crs_core.config import Config
from crs_core.data.prepared import load_prepared
from crs_core.errors import CRSError
from crs_core.llm_recommender import ZERO_SHOT_NAME
from crs_core.models import load_model
from crs_core.simulation import (
    SIMULATE_FILE,
    SavedModelRanker,
    format_seeker_summary,
    format_turn_table,
    open_simulation,
)
from crs_core.stages.base import Stage
from crs_core.stages.evaluate import saved_models


class Simulate(Stage):
    """Simulate `simulate.dialogues` test dialogues against each named saved model (or `zero-shot`); writes
    simulate.json. `models` None: the backbone with and without augmentation (and zero-shot when enabled).
    Opt-in (`simulate.enabled`): it needs an LLM endpoint. No fingerprint: answers come from the cache."""

    name = "simulate"
    about = "the LLM user simulator against the trained models"

    def __init__(self, models: Sequence[str] | None = None):
        self.models = models

    def enabled(self, config: Config) -> bool:
        return config.simulate.enabled

    def outputs(self, config: Config) -> list[str]:
        return [SIMULATE_FILE]

    def model_names(self, config: Config) -> list[str]:
        from crs_core.stages.train import model_names

        if self.models is not None:
            return list(self.models)
        return [*model_names(config), *([ZERO_SHOT_NAME] if config.zero_shot.enabled else [])]

    def work(self, config: Config, run: RunDir) -> dict:
        models = self.model_names(config)
        data = load_prepared(run.root)
        known = saved_models(run)
        unknown = [m for m in models if m != ZERO_SHOT_NAME and m not in known]
        if unknown:
            raise CRSError(f"no saved model {', '.join(unknown)} in {run.path('models')} (saved: "
                           f"{', '.join(known) or 'none'}; or '{ZERO_SHOT_NAME}'); "
                           "run `crs baselines` or `crs train` first")
        results: dict[str, dict] = {}
        with open_simulation(config, data, run) as simulation:
            for name in models:
                if name == ZERO_SHOT_NAME:
                    with simulation.zero_shot() as recommender:
                        results[name] = simulation.play(recommender)
                else:
                    model = load_model(run.path("models", name), data.catalog)
                    results[name] = simulation.play(SavedModelRanker(name, model, data.catalog,
                                                                     config.evaluation.top_n))
            report = simulation.report(results)
        write_json(run.path(SIMULATE_FILE), report)
        return report

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        """The per-turn table and the seeker's summary."""
        return [f"{config.dataset} test, {len(figures['samples'])} simulated dialogues, seeker "
                f"{figures['seeker_model']} (prompt {figures['seeker_prompt_version']}); cumulative recall in % "
                "after N seeker turns",
                "(a small local seeker such as SmolLM2-135M measures the harness, not the recommenders)",
                *format_turn_table(figures["models"]).splitlines(),
                *format_seeker_summary(figures["models"]).splitlines(),
                f"written: {config.run_dir() / SIMULATE_FILE}"]


STAGE = Simulate()
