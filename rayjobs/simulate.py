"""`python -m rayjobs.simulate` (= `crs simulate`): interactive evaluation with an LLM playing the seeker.

  crs simulate --dataset inspired --models ease,zero-shot --turns 3 --dialogues 50 --base-url URL --llm-model NAME
  crs simulate --dataset inspired --zero-shot --base-url URL --llm-model NAME   (zero-shot row in metrics.json)

--models names saved models (models/<name>/, from `crs baselines` or `crs train`) and/or `zero-shot`, the
zero-shot LLM recommender. Each model is simulated on the same sampled test dialogues; the table shows
cumulative Recall@k after 0..turns seeker turns (turn 0 = the real context). Writes simulate.json.
--zero-shot ranks the whole test split with the zero-shot recommender under the FNSCRS protocol and records
it in metrics.json. Settings come from the config's `simulate:` and `zero_shot:` sections (so
`--set simulate.turns=5` works too); the flags below override them. Endpoint fields (base_url, model,
api_key_env) left unset in both are the teacher section's.

The numbers depend on the seeker LLM. With a small local model as the user (SmolLM2-135M offline) they
measure the harness, not the recommenders; use a strong chat model for results.
"""

from __future__ import annotations

import argparse
import dataclasses

from crs_core.artifacts import RunDir
from crs_core.config import Config, SimulateConfig, ZeroShotConfig
from crs_core.errors import ConfigError
from crs_core.evaluation import format_table
from crs_core.llm_recommender import ZERO_SHOT_NAME
from crs_core.stages.evaluate import saved_models
from crs_core.stages.simulate import Simulate
from crs_core.stages.zero_shot import ZeroShot
from rayjobs.common import add_common_arguments, run_entry
from rayjobs.runner import run_stages


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs simulate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--models", help="comma-separated saved model names and/or 'zero-shot' to simulate")
    parser.add_argument("--zero-shot", action="store_true",
                        help="evaluate the zero-shot LLM recommender on --split and record it in metrics.json")
    parser.add_argument("--split", default="test", choices=("valid", "test"), help="split for --zero-shot")
    endpoint = parser.add_argument_group("LLM endpoint (default: the teacher section's)")
    endpoint.add_argument("--base-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    endpoint.add_argument("--llm-model", help="model name sent to the endpoint (seeker and zero-shot)")
    endpoint.add_argument("--api-key-env", help="environment variable holding the API key")
    endpoint.add_argument("--concurrency", type=int, help="requests in flight")
    endpoint.add_argument("--temperature", type=float)
    sim = parser.add_argument_group("simulation (each flag overrides the simulate.<name> setting)")
    sim.add_argument("--turns", type=int, help=f"seeker turns per dialogue (default {SimulateConfig.turns})")
    sim.add_argument("--dialogues", type=int, help=f"test dialogues sampled (default {SimulateConfig.dialogues})")
    sim.add_argument("--max-tokens", type=int, help=f"seeker answer tokens (default {SimulateConfig.max_tokens})")
    sim.add_argument("--leak-retries", type=int, help="regenerations of a seeker turn that named the target")
    sim.add_argument("--seeker-prompt", help="simulate.prompt: packaged prompt name or prompt file (default seeker_v1)")
    zero = parser.add_argument_group("zero-shot recommender (each flag overrides a zero_shot.<name> setting)")
    zero.add_argument("--titles", type=int, help=f"titles asked for (default {ZeroShotConfig.titles})")
    zero.add_argument("--zero-shot-max-tokens", type=int,
                      help=f"zero_shot.max_tokens (default {ZeroShotConfig.max_tokens})")
    zero.add_argument("--zero-shot-prompt",
                      help="zero_shot.prompt: packaged prompt name or prompt file (default zero_shot_v1)")
    return parser


def _given(**values) -> dict:
    return {key: value for key, value in values.items() if value is not None}


def with_flags(config: Config, args: argparse.Namespace) -> Config:
    """The config with the flags given laid over its `simulate:` and `zero_shot:` sections, checked again.

    Endpoint fields left unset in both are the teacher section's (crs_core.llm_chat.endpoint_config)."""
    shared = _given(base_url=args.base_url, model=args.llm_model, api_key_env=args.api_key_env,
                    concurrency=args.concurrency, temperature=args.temperature)
    simulate = dataclasses.replace(config.simulate, **shared, **_given(
        turns=args.turns, dialogues=args.dialogues, max_tokens=args.max_tokens, leak_retries=args.leak_retries,
        prompt=args.seeker_prompt))
    zero_shot = dataclasses.replace(config.zero_shot, **shared, **_given(
        titles=args.titles, max_tokens=args.zero_shot_max_tokens, prompt=args.zero_shot_prompt))
    config = dataclasses.replace(config, simulate=simulate, zero_shot=zero_shot)
    try:
        config.validate()
    except ConfigError as exc:  # the config files passed: a flag brought the value in
        raise ConfigError(f"command line: {exc}") from exc
    return config


def body(config: Config, args: argparse.Namespace) -> None:
    config = with_flags(config, args)
    run_stages(config, ["prepare"])
    run = RunDir(config.run_dir())
    if args.zero_shot:
        summary = ZeroShot(split=args.split).run(config, run)
        print(f"{config.dataset} {args.split} (FNSCRS protocol; metrics in %)")
        print(format_table([(ZERO_SHOT_NAME, summary["result"])]))
        print("\n".join(summary.lines))
        print(f"written: {config.run_dir() / 'metrics.json'}")
    if args.models or not args.zero_shot:
        models = args.models.split(",") if args.models else saved_models(run)
        print("\n".join(Simulate(models).run(config, run).lines))


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
