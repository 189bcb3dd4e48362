"""`python -m rayjobs.teach --dataset inspired` (= `crs teach`): the teach stage alone, or its Batch API round trip.

Without flags it runs the teach stage as `crs augment --stages teach` does (after prepare; the LLM and KG
teachers need the candidates of `retrieve`). With `--export-batch FILE` it writes the LLM teacher's
requests for the OpenAI Batch API instead of sending them; `--import-batch FILE` reads the batch's output
(and error) files back into teacher.parquet, after which `crs augment` goes on from `score`. Both need the
same settings (teacher.kind openai, model, prompt, contexts, seed) as the run that uses the labels.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from crs_core.artifacts import RunDir
from crs_core.errors import CRSError
from crs_core.prepare import prepare
from rayjobs.common import add_common_arguments, run_entry
from rayjobs.report import print_stage_start, print_stage_summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crs teach", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, force=True)
    parser.add_argument("--export-batch", type=Path, metavar="FILE",
                        help="write the Batch API input file (JSONL, one chat completion request per pair)")
    parser.add_argument("--import-batch", type=Path, metavar="FILE", action="append", default=[],
                        help="read a Batch API output or error file into teacher.parquet (repeatable)")
    return parser


def body(config, args) -> None:
    from crs_core.teach import export_batch, import_batch, run_teach

    if args.export_batch and args.import_batch:
        raise CRSError("--export-batch and --import-batch: use one at a time (export, run the batch, then import)")
    prepare(config)
    run = RunDir(config.run_dir())
    start = time.perf_counter()
    if args.export_batch:
        s = export_batch(config, run, args.export_batch)
        print(f"wrote {s['requests']} requests to {s['path']} ({s['pairs']} pairs over {s['contexts']} contexts, "
              f"{s['cached']} already answered in the cache; model {s['model']}, prompt {s['prompt_version']})")
        print("submit it with purpose=batch and endpoint /v1/chat/completions, then run "
              "`crs teach --import-batch OUTPUT_FILE` with the same settings")
        return
    print_stage_start("teach", config)
    if args.import_batch:
        summary = import_batch(config, run, args.import_batch)
    else:
        summary = run_teach(config, run, force=args.force)
    summary.setdefault("wall_s", round(time.perf_counter() - start, 1))
    print_stage_summary("teach", summary, config)


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
