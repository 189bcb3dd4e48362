"""What `crs augment` prints after each stage: the figures a user checks before paying for the next one."""

from __future__ import annotations


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_embed(s: dict) -> list[str]:
    return [(f"encoder {s['encoder']} (dim {s['dim']}): {s['rows']} texts in {s['seconds']}s "
             f"({s['rows_per_s']} rows/s, {s['actors']} actor(s))")]


def format_retrieve(s: dict) -> list[str]:
    lines = [f"candidate recall@{s['top_k']} (gold targets among the retrieved top-{s['top_k']}, retrieval "
             f"{s.get('method', 'dense')}; no collaborative data)",
             f"  {'split':<6} {'all targets':>16} {'not mentioned before':>22}"]
    for split, r in s["splits"].items():
        lines.append(f"  {split:<6} {_pct(r['recall']):>8} (n={r['n']:<5}) "
                     f"{_pct(r['recall_new']):>10} (n={r['n_new']})")
    return lines


def format_teach(s: dict) -> list[str]:
    histogram = " ".join(f"{k}:{v}" for k, v in s["score_histogram"].items())
    mean = "-" if s["mean_score"] is None else f"{s['mean_score']:.2f}"
    lines = [
        f"teacher {s['teacher']} / model {s['model']} / prompt {s['prompt_version']}",
        (f"  {s['pairs']} pairs over {s['contexts']} contexts: {s['ok']} ok, {s['failed']} failed "
         f"({_pct(s['failure_share'])}), {s['cached']} from cache, {s['requests']} requests"),
        (f"  tokens in/out {s['input_tokens']}/{s['output_tokens']}, cost ${s['cost_usd']:.4f}; "
         f"scores {histogram} (mean {mean})"),
    ]
    if "batch_price_factor" in s:
        lines.append(f"  Batch API: cost at {s['batch_price_factor']:.0%} of the list price "
                     f"${s['cost_usd_list_price']:.4f}, answers from {', '.join(s['batch_files'])}")
    if "files" in s:
        files = ", ".join(f"{path} ({n} pairs)" for path, n in s["files"].items())
        skipped = " ".join(f"{split}:{n}" for split, n in s["skipped_not_train"].items()) or "none"
        judges = ", ".join(f"{judge} ({n})" for judge, n in s["judges"].items())
        lines += [f"  recorded judgments from {files}; judges {judges}",
                  (f"  conversations no longer as recorded: {s['mismatched_conversations']} pairs; item descriptions "
                   f"changed: {s['mismatched_descriptions']} pairs; non-train judgments skipped: {skipped}")]
    return lines


def format_train(summary: dict) -> list[str]:
    lines = [f"backbone {summary['backbone']}, alpha {summary['alpha']:g} (best epoch by valid Recall@50)"]
    parts = (("no augmentation", "baseline"), ("stage 1 (synthetic)", "stage1"), ("stage 2 (+KL)", "stage2"))
    for label, key in parts:
        part = summary[key]
        recall = part["valid"].get("valid_recall@50")
        shown = "-" if recall is None else f"{100 * recall:.2f}%"
        lines.append(f"  {label:<20} epoch {part['best_epoch']}/{part['epochs']}: valid R@50 {shown}")
    if summary.get("figure"):  # none for runs trained before it existed or only reloaded from Ray checkpoints
        lines.append(f"  figure: {summary['figure']} (valid recall per epoch of each stage)")
    return lines


STAGE_STARTS = {
    "prepare": "items and dialogue samples of {config.dataset}",
    "embed": "item descriptions and dialogue contexts to vectors (encoder {config.encoder.kind})",
    "retrieve": "the top-{config.retrieval.top_k} candidate items of every context",
    "teach": "teacher {config.teacher.kind} rates (context, item) pairs 0-4",
    "score": "student {config.student.kind} learns the teacher and scores every candidate",
    "synthesize": "candidates scored >= tau {config.synthesize.threshold:g} become synthetic positives",
    "baselines": "Popularity and EASE",
    "train": "backbone {config.train.backbone} without augmentation, then stage 1 (synthetic) and stage 2 (+KL)",
    "evaluate": "saved models on the test split, FNSCRS protocol",
    "zero_shot": "the zero-shot LLM recommender on the test split",
    "simulate": "the LLM user simulator against the trained models",
    "tune": "Ray Tune sweep of alpha x tau",
}


def print_stage_start(stage: str, config) -> None:
    """`== stage: what it does ...` before a stage runs, so a long stage is not silent until its summary."""
    print(f"\n== {stage}: {STAGE_STARTS[stage].format(config=config)} ...", flush=True)


def stage_end_header(stage: str, wall_s, reused: bool = False) -> str:
    """The first line of a stage's summary: `-- stage [12.3s]`, `-- stage (unchanged, reused) [0.1s]`."""
    return f"-- {stage}{' (unchanged, reused)' if reused else ''} [{wall_s}s]"


def print_stage_summary(stage: str, summary: dict, config) -> None:
    from crs_core.score import format_score
    from crs_core.synthesize import format_expansion

    formatters = {"embed": format_embed, "retrieve": format_retrieve, "teach": format_teach,
                  "score": lambda s: [format_score(s)],
                  "synthesize": lambda s: [format_expansion(s, config)]}
    print(stage_end_header(stage, summary.get("wall_s", "?"), bool(summary.get("skipped"))))
    for line in formatters[stage](summary):
        print(line)
