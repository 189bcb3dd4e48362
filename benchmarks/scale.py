"""Cost curve: wall time and peak memory of the augmentation stages as the number of scored pairs grows.

    python benchmarks/scale.py [--pairs 10000,100000,300000,1000000] [--items 6576] [--encoder tiny|minilm]
    python benchmarks/scale.py --report      # the table and plot again from benchmarks/scale.json

For each size a synthetic-but-realistic world (benchmarks/scale_world.py: a ReDial-sized catalog, dialogues in
the feature student's vocabulary, top-50 candidates per train context, 2,000 teacher judgments) is written as a
prepared run, and the REAL stage code runs on it, each stage in a fresh Python process so that its peak memory
is its own:
- distill:    the offline profile's student (features, 5-fold grouped) on the 2,000 judgments (the same at every size)
- score:      `crs_core.stages.score`, every (train context, candidate) pair
- synthesize: `crs_core.stages.synthesize` at tau 3 (with the tau curve and the score figure)
- train:      stage 1 on the synthetic labels (`crs_core.training.loop.train_stage`, runner local, one epoch,
              frozen encoder + item head as in the offline profile; validation on 200 fixed contexts)
- evaluate:   `crs_core.stages.evaluate` of the stage-1 model on 500 fixed test contexts (full catalog)

The encoder is a seeded 2-layer, 64-wide BERT (`--encoder tiny`) by default: its cost per context is a constant
factor that benchmarks/throughput.py measures for MiniLM, while this curve looks for what grows faster than the
pairs in the pipeline's own code. Time is each stage's wall time inside its process (imports and process start
excluded); memory is the process's peak RSS (VmHWM), printed beside the peak after its imports. The slope of
log(time) on log(pairs) is fitted over all sizes, and the slope of the part that grows (time above the smallest
size's, against pairs above the smallest size's: fixed start-up costs - model loads, the catalog side of the
features, figures - drop out; goal: 1.0 +- 0.15 for score, synthesize and train), beside the seconds and MiB each
further 10^5 pairs cost. Writes benchmarks/scale.json and benchmarks/scale.png.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
STAGES = ("distill", "score", "synthesize", "train", "evaluate")
SCALED = ("score", "synthesize", "train")  # the stages whose work grows with the pairs
DEFAULT_PAIRS = (10_000, 100_000, 300_000, 1_000_000)
REDIAL_CATALOG = 6_576
TAU = 3.0


def scale_config(run_root: Path, encoder: str | None):
    """The offline profile's settings on the benchmark's run directory."""
    from crs_core.config import Config

    config = Config(dataset="scale", runs_dir=str(run_root.parent.parent), run_id=run_root.name)
    config.student.kind = "features"
    config.synthesize.threshold = TAU
    train = config.train
    train.model, train.trainable_layers, train.epochs_stage1, train.learning_rate = encoder, 0, 1, 1e-3
    train.runner, train.max_length, train.storage_path = "local", 64, str(run_root / "ray_results")
    config.validate()
    return config


def tiny_encoder(folder: Path) -> str:
    """A seeded 2-layer BERT with the MiniLM tokenizer, saved as an HF folder (the `train.model` code path)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from crs_core.encoders import minilm_path

    if not (folder / "config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
        torch.manual_seed(0)
        model = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=128, max_position_embeddings=128))
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def run_one_stage(stage: str, run_root: Path, encoder: str | None) -> dict:
    """Run `stage` of the benchmark run in this process; returns its seconds and summary counts."""
    from crs_core.artifacts import RunDir

    config, run = scale_config(run_root, encoder), RunDir(run_root)
    started = time.perf_counter()
    if stage == "distill":
        from crs_core.stages.distill import STAGE

        summary = STAGE.run(config, run, force=True)
        facts = {"spearman_oof": summary["holdout_spearman"], "judged_pairs": summary["train_pairs"]}
    elif stage == "score":
        from crs_core.stages.score import STAGE

        summary = STAGE.run(config, run)
        facts = {"pairs": summary["pairs"], "contexts": summary["contexts"]}
    elif stage == "synthesize":
        from crs_core.stages.synthesize import STAGE

        summary = STAGE.run(config, run, force=True)
        facts = {"labels": summary["original_labels"], "synthetic_labels": summary["synthetic_labels"]}
    elif stage == "train":
        from crs_core.training.data import load_training_data
        from crs_core.training.loop import train_stage

        data = load_training_data(run.root, "pretrain")
        model, metrics = train_stage(config.train, data, "pretrain", seed=config.seed,
                                     name=f"pretrain-{time.time_ns()}")
        model.save(run.path("models", "stage1"))
        facts = {"train_contexts": len(data.train), "samples_per_s": metrics["history"][-1]["samples_per_s"]}
    elif stage == "evaluate":
        from crs_core.stages.evaluate import Evaluate

        result = Evaluate(models=["stage1"], figure=False).run(config, run)["results"]["stage1"]
        facts = {"test_pairs": result["removed"]["n"], "recall@50": result["removed"]["recall@50"]}
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return {"seconds": time.perf_counter() - started, **facts}


def _rss_mib() -> float:
    """Peak resident memory of this process so far, MiB: VmHWM on Linux. Not ru_maxrss: Linux carries the
    parent's peak across fork and exec into it, so a child would report at least the benchmark's own memory."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / (1024 if sys.platform == "darwin" else 1)


def child_main(args: argparse.Namespace) -> None:
    """`--stage`: one stage in this fresh process; prints one JSON line with time and memory."""
    import crs_core.stages.evaluate  # noqa: F401  the heavy imports (torch, transformers, sklearn) before the baseline
    import crs_core.stages.score  # noqa: F401
    import crs_core.training.loop  # noqa: F401

    baseline = _rss_mib()
    result = run_one_stage(args.stage, Path(args.run_dir), args.encoder_path)
    print(json.dumps(result | {"peak_rss_mib": _rss_mib(), "rss_after_imports_mib": baseline}), flush=True)


def measure(stage: str, run_root: Path, encoder: str | None) -> dict:
    command = [sys.executable, __file__, "--stage", stage, "--run-dir", str(run_root)]
    if encoder:
        command += ["--encoder-path", encoder]
    done = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"CRS_LOG_LEVEL": "warning"})
    if done.returncode:
        raise RuntimeError(f"stage {stage} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def slope(pairs: list[int], values: list[float]) -> float | None:
    """Least-squares slope of log(value) on log(pairs): 1.0 is linear."""
    if len(pairs) < 2:
        return None
    return float(np.polyfit(np.log(pairs), np.log(values), 1)[0])


def plot(results: dict, path: Path, items: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(k) for k in results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in STAGES:
        left.plot(sizes, [results[str(n)][stage]["seconds"] for n in sizes], marker="o", label=stage)
        right.plot(sizes, [results[str(n)][stage]["peak_rss_mib"] for n in sizes], marker="o", label=stage)
    score = [results[str(n)]["score"]["seconds"] for n in sizes]
    if len(sizes) >= 2:  # what "linear" looks like on these axes: a fixed cost plus a cost per pair
        fine = np.geomspace(sizes[0], sizes[-1], 50)
        left.plot(fine, np.polyval(np.polyfit(sizes, score, 1), fine), "k:", label="score: a + b x pairs (fit)")
    for axis, title in ((left, "wall time per stage (s)"), (right, "peak RSS per stage process (MiB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("scored (context, candidate) pairs")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(f"crs-augment cost curve: synthetic world, {items:,}-item catalog, 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results: dict) -> str:
    sizes = sorted(int(k) for k in results)
    lines = ["| pairs | " + " | ".join(f"{s} s / MiB" for s in STAGES) + " |", "|---" * (len(STAGES) + 1) + "|"]
    for n in sizes:
        row = results[str(n)]
        lines.append(f"| {n:,} | " + " | ".join(f"{row[s]['seconds']:.1f} / {row[s]['peak_rss_mib']:.0f}"
                                                 for s in STAGES) + " |")
    seconds = {s: [results[str(n)][s]["seconds"] for n in sizes] for s in STAGES}
    rows = {"time slope, all sizes": {s: slope(sizes, seconds[s]) for s in STAGES},
            "slope of the growing part": {s: growth_slope(sizes, seconds[s]) for s in STAGES},
            "R^2 of time = a + b x pairs": {s: linear_r2(sizes, seconds[s]) for s in STAGES},
            "s per 10^5 pairs above the smallest": {s: marginal(sizes, seconds[s]) for s in STAGES},
            "MiB per 10^5 pairs above the smallest": {
                s: marginal(sizes, [results[str(n)][s]["peak_rss_mib"] for n in sizes]) for s in STAGES}}
    for label, values in rows.items():
        lines.append(f"| {label} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in values.values()) + " |")
    return "\n".join(lines)


def growth_slope(sizes: list[int], values: list[float]) -> float | None:
    """Slope of log(t - t_smallest) on log(n - n_smallest): whether the cost ABOVE the fixed start-up (model loads,
    the catalog's side of the features, figures) grows linearly (1.0) with the pairs; None when it does not grow."""
    grown = [(n - sizes[0], v - values[0]) for n, v in zip(sizes[1:], values[1:])]
    if len(grown) < 2 or any(v <= 0 for _, v in grown):
        return None
    return slope([n for n, _ in grown], [v for _, v in grown])


def linear_r2(sizes: list[int], values: list[float]) -> float | None:
    """R^2 of the least-squares line time = a + b x pairs (1.0: a fixed cost plus a linear one explain it all)."""
    if len(sizes) < 3 or np.ptp(values) == 0:
        return None
    fit = np.polyval(np.polyfit(sizes, values, 1), sizes)
    return float(1 - np.sum((np.asarray(values) - fit) ** 2) / np.sum((np.asarray(values) - np.mean(values)) ** 2))


def marginal(sizes: list[int], values: list[float]) -> float | None:
    """Seconds per 10^5 pairs beyond the smallest size (the cost that grows, without the fixed start-up)."""
    if len(sizes) < 2:
        return None
    return (values[-1] - values[0]) / (sizes[-1] - sizes[0]) * 1e5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=",".join(map(str, DEFAULT_PAIRS)), help="comma-separated pair counts")
    parser.add_argument("--items", type=int, default=REDIAL_CATALOG, help="catalog size")
    parser.add_argument("--encoder", choices=("tiny", "minilm"), default="tiny")
    parser.add_argument("--work-dir", type=Path, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=HERE / "scale.json")
    parser.add_argument("--report", action="store_true", help="print the table and redraw the plot from --out")
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--encoder-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        return child_main(args)
    if args.report:
        saved = json.loads(args.out.read_text())
        print(table(saved["results"]))
        return plot(saved["results"], args.out.with_suffix(".png"), saved["items"])
    from scale_world import CANDIDATES_PER_CONTEXT, write_world

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="crs-scale-"))
    os.environ.setdefault("CRS_CACHE_DIR", str(work / "cache"))  # frozen-encoder vectors: not the user's cache
    encoder = tiny_encoder(work / "tiny-encoder") if args.encoder == "tiny" else None
    results = {}
    for pairs in sorted(int(float(p)) for p in args.pairs.split(",")):
        run_root = work / "runs" / "scale" / f"pairs-{pairs}"
        started = time.perf_counter()
        write_world(run_root, max(1, pairs // CANDIDATES_PER_CONTEXT), args.items)
        print(f"{pairs:,} pairs: world written in {time.perf_counter() - started:.0f} s", flush=True)
        results[str(pairs)] = {}
        for stage in STAGES:
            results[str(pairs)][stage] = measure(stage, run_root, encoder)
            print(f"  {stage}: {json.dumps(results[str(pairs)][stage])}", flush=True)
    print(table(results))
    args.out.write_text(json.dumps({"items": args.items, "encoder": args.encoder, "results": results}, indent=1))
    plot(results, args.out.with_suffix(".png"), args.items)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
