"""The quality benchmark's report (benchmarks/quality.py): mean ± std over training seeds, the paired
difference of each augmented model to the same backbone without augmentation with a bootstrap 95% interval
(crs_core.evaluation.paired), the paper's rows, and a figure with error bars.

Rows are named "<backbone> <variant>" (e.g. "minilm-id ours (kg)"); a row holds one result per training
seed, in seed order, so row s of two models of the same backbone were trained with the same seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crs_core.config import load_config
from crs_core.evaluation.paired import paired_bootstrap
from crs_core.registry import dataset_config

KS = (1, 10, 50)
VARIANTS = ("removed", "not_removed")
BASE = "no augmentation"
# The paper's table, (R@1, R@10, R@50) in %, without -> with augmentation.
PAPER = {
    "inspired": {"BARCOR": ((2.86, 11.06, 30.81), (3.73, 21.12, 43.11)),
                 "UniCRS": ((3.97, 20.00, 40.66), (5.43, 22.91, 39.47)),
                 "Llama2": ((4.46, 11.68, 34.16), (9.32, 28.26, 50.93))},
    "redial": {"BARCOR": ((3.13, 17.34, 36.32), (4.31, 21.26, 43.84)),
               "UniCRS": ((3.53, 19.60, 40.50), (3.76, 20.93, 42.74)),
               "Llama2": ((3.93, 20.74, 41.34), (4.46, 22.37, 44.20))},
}
BOOTSTRAP_NOTE = (
    "How the intervals work: each trained row is one model per training seed. For a comparison (e.g. ours - "
    "no augmentation, same backbone), every (test sample, target) pair gets a 0/1 hit per model and seed under "
    "the protocol. A bootstrap draw resamples the test pairs with replacement (as many as there are) and "
    "uses the same resampled pairs for both models and all seeds; its value is the difference of the two "
    "models' recall on those pairs, each averaged over the seeds. The interval is the 2.5th-97.5th "
    "percentile of {draws} draws (numpy seed {seed}). It covers test-set sampling with the seed-averaged "
    "models; the ± std in the tables is the spread over training seeds alone.")


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def mean_std(results: list[dict], variant: str, key: str) -> tuple[float, float]:
    return _mean_std([100 * r[variant][key] for r in results])


def _cell(values: list[float]) -> str:
    mean, std = _mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def comparisons(rows: dict) -> list[tuple[str, str, str]]:
    """(backbone, row, base row) for every "<backbone> <variant>" row whose backbone has a no-augmentation row
    (Popularity, EASE and the zero-shot row have no backbone prefix and are not compared)."""
    out = []
    for name in rows:
        backbone, _, label = name.partition(" ")
        base = f"{backbone} {BASE}"
        if label and label != BASE and base in rows:
            out.append((backbone, name, base))
    return out


def paired_differences(hits: dict[str, list[dict]], rows: dict, draws: int, seed: int) -> list[dict]:
    """Per comparison and variant: pairs, and per k the difference (row - base, %) with its 95% interval.
    `hits[name][s][variant]` is the (pairs, len(KS)) hit array of seed s (crs_core.evaluation.paired)."""
    out = []
    for backbone, name, base in comparisons(rows):
        for variant in VARIANTS:
            ours = np.stack([h[variant] for h in hits[name]])
            reference = np.stack([h[variant] for h in hits[base]])
            per_k = {}
            for column, k in enumerate(KS):
                result = paired_bootstrap(ours[..., column], reference[..., column], draws=draws, seed=seed)
                per_k[k] = {key: 100 * result[key] for key in ("difference", "low", "high")}
            out.append({"backbone": backbone, "model": name, "base": base, "variant": variant,
                        "pairs": int(ours.shape[1]), "seeds": int(ours.shape[0]), "recall": per_k})
    return out


def _signed(value: float) -> str:
    return f"{value:+.2f}"


def render_paired(differences: list[dict]) -> list[str]:
    lines = ["## Paired differences to the same backbone without augmentation (95% bootstrap interval)", "",
             "Difference in percentage points, mean over seeds [2.5%, 97.5%]; an interval that excludes 0 is "
             "a difference the test set resolves.", ""]
    for variant in VARIANTS:
        lines += [f"### Variant `{variant}`", "", "| model | - base | pairs | seeds | ΔR@1 | ΔR@10 | ΔR@50 |",
                  "|---|---|---|---|---|---|---|"]
        for d in (d for d in differences if d["variant"] == variant):
            cells = [f"{_signed(r['difference'])} [{_signed(r['low'])}, {_signed(r['high'])}]"
                     for r in (d["recall"][k] for k in KS)]
            lines.append(f"| {d['model']} | {d['base']} | {d['pairs']} | {d['seeds']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def render_simulated(simulated: dict[str, list[dict]], meta: dict) -> list[str]:
    """Cumulative Recall@10/50 (%) at turn 0 (the real context) and after the last seeker turn, per row."""
    turns = next(iter(simulated.values()))[0]["turns"]
    lines = ["## Simulated dialogues (LLM user simulator)", "",
             (f"{meta['simulate']}. Cumulative recall in % on the same sampled test dialogues for every row, at "
              f"turn 0 (the real context) and after {turns} seeker turns (FNSCRS protocol per target; a target once "
              "in the top k counts from then on); mean ± std over training seeds where a model has seeds."), ""]
    headers = [f"R@{k} turn 0" for k in (10, 50)] + [f"R@{k} after {turns}" for k in (10, 50)]
    for variant in VARIANTS:
        lines += [f"### Variant `{variant}`", "", "| model | n | " + " | ".join(headers) + " |",
                  "|---" * (2 + len(headers)) + "|"]
        for name, results in simulated.items():
            cells = [_cell([100 * r["per_turn"][turn][variant][f"recall@{k}"] for r in results])
                     for turn in (0, turns) for k in (10, 50)]
            lines.append(f"| {name} | {results[0]['per_turn'][0][variant]['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def dataset_label(dataset: str) -> str:
    """The label and note of the dataset's registry entry."""
    return load_config([dataset_config(dataset)]).dataset_label()


def render(dataset: str, rows: dict[str, list[dict]], seeds: list[int], meta: dict,
           simulated: dict[str, list[dict]] | None = None, differences: list[dict] | None = None) -> str:
    lines = [f"# Results: {dataset_label(dataset)}", "",
             f"Generated by `benchmarks/quality.py` (the command is under \"Run commands\"; FNSCRS protocol, test "
             f"split, metrics in %; mean ± std (ddof 1) over {len(seeds)} training seed(s) where a model has seeds: "
             f"{', '.join(map(str, seeds))}). Teacher: " + meta["teacher"] + f"; label expansion {meta['expansion']}.",
             ""]
    if differences:
        lines += [BOOTSTRAP_NOTE.format(draws=meta["draws"], seed=meta["bootstrap_seed"]), ""]
    for variant in VARIANTS:
        lines += [f"## Variant `{variant}`", "", "| model | n | R@1 | R@10 | R@50 |", "|---|---|---|---|---|"]
        for name, results in rows.items():
            cells = [_cell([100 * r[variant][f"recall@{k}"] for r in results]) for k in KS]
            lines.append(f"| {name} | {results[0][variant]['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    if differences:
        lines += render_paired(differences)
    if meta.get("zero_shot"):
        lines += [meta["zero_shot"] + ".", ""]
    if simulated:
        lines += render_simulated(simulated, meta)
    if meta.get("zero_shot") or simulated:
        lines += [("With a small local LLM (e.g. SmolLM2-135M) as the zero-shot recommender or the simulated "
                   "seeker, the LLM numbers measure the harness, not the method."), ""]
    lines += ["## The paper (ACL 2025, Table: R@1 / R@10 / R@50, %; GPT-4 teacher, Gemma2-9b student)", "",
              "| backbone | without augmentation | with augmentation |", "|---|---|---|"]
    for backbone, (before, after) in PAPER.get(dataset, {}).items():
        lines.append(f"| {backbone} | {' / '.join(map(str, before))} | {' / '.join(map(str, after))} |")
    lines += ["", ("Our offline backbones are MiniLM with a frozen encoder: `minilm` with an item head initialised "
                   "from the item descriptions, `minilm-id` with a random (ID) head like BARCOR's, so the rows compare "
                   "the pipeline and the training method, not the paper's models."), ""]
    commands = meta.get("commands") or [f"python benchmarks/quality.py {meta['command']}"]
    lines += ["## Run commands", "", "```", *commands, "```", ""]
    return "\n".join(lines)


def plot(rows: dict[str, list[dict]], path: Path, title: str, differences: list[dict] | None = None) -> None:
    """Left: Recall@10/50 per row, mean ± std over seeds; right (given differences): each comparison's paired
    difference with its bootstrap 95% interval. The "removed" variant, as the tables lead with it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    shown = [d for d in differences or [] if d["variant"] == "removed"]
    widths = [1.2 + 1.0 * len(names)] + ([1.2 + 1.0 * len(shown)] if shown else [])
    fig, axes = plt.subplots(1, len(widths), figsize=(sum(widths), 4.4), width_ratios=widths, squeeze=False)
    width = 0.38
    for offset, k in ((-width / 2, 10), (width / 2, 50)):
        stats = [mean_std(rows[n], "removed", f"recall@{k}") for n in names]
        axes[0, 0].bar(np.arange(len(names)) + offset, [m for m, _ in stats], width, yerr=[s for _, s in stats],
                       capsize=3, label=f"Recall@{k}")
    axes[0, 0].set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes[0, 0].set_ylabel("% (removed variant)")
    axes[0, 0].set_title("mean ± std over seeds", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    if shown:
        ax = axes[0, 1]
        for offset, k in ((-width / 2, 10), (width / 2, 50)):
            mid = np.array([d["recall"][k]["difference"] for d in shown])
            err = np.array([[m - d["recall"][k]["low"], d["recall"][k]["high"] - m] for m, d in zip(mid, shown)]).T
            ax.bar(np.arange(len(shown)) + offset, mid, width, yerr=err, capsize=3, label=f"Δ Recall@{k}")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(shown)), [f"{d['model']}\n- {d['base'].split(' ', 1)[1]}" for d in shown],
                      rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("percentage points")
        ax.set_title("paired difference, 95% bootstrap interval", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
