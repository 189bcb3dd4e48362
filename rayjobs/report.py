"""What `crs augment` prints after each stage: the figures a user checks before paying for the next one."""

from __future__ import annotations


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def format_embed(s: dict) -> list[str]:
    return [f"encoder {s['encoder']} (dim {s['dim']}): {s['rows']} texts in {s['seconds']}s "
            f"({s['rows_per_s']} rows/s, {s['actors']} actor(s))"]


def format_retrieve(s: dict) -> list[str]:
    lines = [f"candidate recall@{s['top_k']} (gold targets among the semantic top-{s['top_k']}; no collaborative data)",
             f"  {'split':<6} {'all targets':>16} {'not mentioned before':>22}"]
    for split, r in s["splits"].items():
        lines.append(f"  {split:<6} {_pct(r['recall']):>8} (n={r['n']:<5}) {_pct(r['recall_new']):>10} (n={r['n_new']})")
    return lines


def format_teach(s: dict) -> list[str]:
    histogram = " ".join(f"{k}:{v}" for k, v in s["score_histogram"].items())
    mean = "-" if s["mean_score"] is None else f"{s['mean_score']:.2f}"
    return [
        f"teacher {s['teacher']} / model {s['model']} / prompt {s['prompt_version']}",
        f"  {s['pairs']} pairs over {s['contexts']} contexts: {s['ok']} ok, {s['failed']} failed "
        f"({_pct(s['failure_share'])}), {s['cached']} from cache, {s['requests']} requests",
        f"  tokens in/out {s['input_tokens']}/{s['output_tokens']}, cost ${s['cost_usd']:.4f}; "
        f"scores {histogram} (mean {mean})",
    ]


def format_score(s: dict) -> list[str]:
    student = s.get("student", {})
    agreement = s["agreement"]
    mae = "-" if agreement["mae"] is None else f"{agreement['mae']:.3f}"
    rho = "-" if agreement["spearman"] is None else f"{agreement['spearman']:.3f}"
    rate = "-" if not s.get("pairs_per_second") else f"{s['pairs_per_second']:.1f}"
    histogram = " ".join(f"{k}:{v}" for k, v in s["histogram"].items())
    return [
        f"student {student.get('kind', '?')}: held-out agreement with the teacher MAE {mae}, Spearman {rho}",
        f"  scored {s['pairs']} pairs over {s['contexts']} contexts ({rate} pairs/s, {s['actors']} actor(s)); "
        f"scores {histogram}",
    ]


def print_stage_summary(stage: str, summary: dict, config) -> None:
    from crs_core.synthesize import format_expansion

    formatters = {"embed": format_embed, "retrieve": format_retrieve, "teach": format_teach, "score": format_score,
                  "synthesize": lambda s: [format_expansion(s, config.dataset)]}
    reused = " (unchanged, reused)" if summary.get("skipped") else ""
    print(f"\n== {stage}{reused} [{summary.get('wall_s', '?')}s]")
    for line in formatters[stage](summary):
        print(line)
