"""`python -m rayjobs.teach --dataset inspired` (= `crs teach`): the teach stage alone, or its Batch API round trip.

Without flags it runs the teach stage as `crs augment --stages teach` does (after prepare; the LLM and KG
teachers need the candidates of `retrieve`). With `--export-batch FILE` it writes the LLM teacher's
requests for the OpenAI Batch API instead of sending them; `--import-batch FILE` reads the batch's output
(and error) files back into teacher.parquet, after which `crs augment` goes on from `distill`. Both need the
same settings (teacher.kind openai, model, prompt, contexts, seed) as the run that uses the labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crs_core.artifacts import RunDir
from crs_core.errors import CRSError
from rayjobs.common import add_common_arguments, run_entry
from rayjobs.runner import run_stages


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
    from crs_core.stages.teach import STAGE, export_batch, import_batch

    if args.export_batch and args.import_batch:
        raise CRSError("--export-batch and --import-batch: use one at a time (export, run the batch, then import)")
    run_stages(config, ["prepare"])
    run = RunDir(config.run_dir())
    if args.export_batch:
        s = export_batch(config, run, args.export_batch)
        print(f"wrote {s['requests']} requests to {s['path']} ({s['pairs']} pairs over {s['contexts']} contexts, "
              f"{s['cached']} already answered in the cache; model {s['model']}, prompt {s['prompt_version']})")
        print("submit it with purpose=batch and endpoint /v1/chat/completions, then run "
              "`crs teach --import-batch OUTPUT_FILE` with the same settings")
        return
    if args.import_batch:
        print(f"\n{STAGE.announce(config)}", flush=True)
        print(import_batch(config, run, args.import_batch))
    else:
        run_stages(config, [STAGE], force=args.force)


def main(argv: list[str] | None = None) -> int:
    return run_entry(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
