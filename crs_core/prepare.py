"""Stage `prepare`: raw dataset files -> items.parquet, samples/{train,valid,test}.parquet, counts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from crs_core import __version__
from crs_core.artifacts import RunDir, fingerprint, read_table, write_json, write_table
from crs_core.config import Config
from crs_core.data import inspired, redial
from crs_core.data.dialogue import Dialogue, MentionStats, build_samples
from crs_core.data.kg import KnowledgeGraph, load_catalog
from crs_core.schema import (
    ITEMS_SCHEMA,
    SAMPLES_SCHEMA,
    Catalog,
    Sample,
    items_to_table,
    samples_to_table,
    table_to_catalog,
    table_to_samples,
)

SPLITS = ("train", "valid", "test")
ITEM_SETS_SCHEMA = pa.schema([pa.field("dialog_id", pa.string(), False), pa.field("items", pa.list_(pa.int64()), False)])
PAPER_TRAIN_LABELS = {"inspired": 1404, "redial": 29810}
OUTPUTS = ("items.parquet", *(f"samples/{s}.parquet" for s in SPLITS), "item_sets.parquet")


@dataclass
class PreparedData:
    catalog: Catalog
    samples: dict[str, list[Sample]]
    item_sets: list[list[int]]


def _dataset_files(dataset: str, data_dir: Path) -> list[Path]:
    root = data_dir / dataset
    return sorted(p for p in root.rglob("*") if p.is_file())


def _load_dialogues(config: Config, data_dir: Path, kg: KnowledgeGraph, movie_to_item: dict[str, int]):
    if config.dataset == "inspired":
        return {split: inspired.load_split(data_dir, split, kg) for split in SPLITS}, []
    resolver = redial.MentionResolver(kg, movie_to_item)
    pool = redial.load_train_pool(data_dir, kg, resolver)
    if config.data.redial_valid == "cfcrs":
        valid_ids = {d.dialog_id for d in redial.load_cfcrs(data_dir / "redial" / redial.CFCRS_TRAIN_FILE, kg)}
        train = [d for d in pool if d.dialog_id not in valid_ids]
        valid = [d for d in pool if d.dialog_id in valid_ids]
    else:
        train, valid = redial.split_train_valid(pool, config.data.valid_fraction, config.data.valid_seed)
    test = redial.load_test(data_dir, kg, resolver)
    dialogues = {"train": train, "valid": valid, "test": test}
    item_sets = []
    if config.baselines.ease_use_kascrs:
        held_out = {d.dialog_id for d in valid + test}
        item_sets = redial.load_kascrs_item_sets(data_dir, movie_to_item, exclude=held_out)
    return dialogues, item_sets


def _split_counts(dialogues: list[Dialogue], samples: list[Sample]) -> dict:
    """`pairs` and `pairs_not_repeated` are the (sample, label) pairs FNSCRS counts in its "not_removed"
    and "removed" variants (valid/test); for train, the training labels."""
    pairs = sum(len(s.targets) for s in samples)
    new_pairs = sum(1 for s in samples for t in s.targets if t not in s.context_items)
    return {
        "dialogues": len(dialogues),
        "samples": len(samples),
        "pairs": pairs,
        "pairs_not_repeated": new_pairs,
        "mentions": MentionStats.of(dialogues).as_dict(),
    }


def prepare(config: Config, force: bool = False) -> dict:
    """Build the run directory's data artifacts; skipped when inputs and settings are unchanged."""
    data_dir = config.resolved_data_dir()
    run = RunDir(config.run_dir())
    settings = {"dataset": config.dataset, "data": config.data.__dict__, "version": __version__,
                "kascrs": config.baselines.ease_use_kascrs}
    fp = fingerprint(settings, _dataset_files(config.dataset, data_dir))
    if not force and run.is_current("prepare", fp, OUTPUTS):
        return run.summary("prepare") | {"skipped": True}

    kg_dir = data_dir / config.dataset / "kg"
    kg = KnowledgeGraph.load(kg_dir)
    id2info = kg_dir / ("id2info_inspired.json" if config.dataset == "inspired" else "id2info.json.gz")
    items, movie_to_item = load_catalog(id2info, kg)
    dialogues, item_sets = _load_dialogues(config, data_dir, kg, movie_to_item)

    summary: dict = {"dataset": config.dataset, "items": len(items), "splits": {}}
    write_table(run.path("items.parquet"), items_to_table(items), ITEMS_SCHEMA)
    for split in SPLITS:
        samples = build_samples(
            dialogues[split],
            require_context_entity=config.dataset == "redial",
            drop_repeated_targets=split == "train",
        )
        write_table(run.path("samples", f"{split}.parquet"), samples_to_table(samples), SAMPLES_SCHEMA)
        summary["splits"][split] = _split_counts(dialogues[split], samples)
        if config.dataset == "inspired":
            summary["splits"][split]["source"] = str(inspired.source_file(data_dir, split).relative_to(data_dir))
    write_table(run.path("item_sets.parquet"),
                pa.Table.from_pylist([{"dialog_id": d, "items": i} for d, i in item_sets], schema=ITEM_SETS_SCHEMA),
                ITEM_SETS_SCHEMA)
    summary["item_sets"] = len(item_sets)
    summary["train_labels"] = summary["splits"]["train"]["pairs"]
    summary["paper_train_labels"] = PAPER_TRAIN_LABELS[config.dataset]
    summary["partial"] = config.dataset == "redial"
    write_json(run.path("prepare_summary.json"), summary)
    run.mark_done("prepare", fp, OUTPUTS, summary)
    return summary | {"skipped": False}


def load_prepared(run_dir: Path) -> PreparedData:
    """Read what `prepare` wrote (schemas checked), for the stages after it."""
    run = RunDir(run_dir)
    catalog = table_to_catalog(read_table(run.path("items.parquet"), ITEMS_SCHEMA))
    samples = {s: table_to_samples(read_table(run.path("samples", f"{s}.parquet"), SAMPLES_SCHEMA)) for s in SPLITS}
    item_sets = read_table(run.path("item_sets.parquet"), ITEM_SETS_SCHEMA).column("items").to_pylist()
    return PreparedData(catalog=catalog, samples=samples, item_sets=item_sets)


def format_summary(summary: dict) -> str:
    """The counts `crs prepare` prints, next to the paper's training label count."""
    lines = [f"dataset: {summary['dataset']}" + (" (ReDial-PARTIAL: ~20% of train dialogues have text)" if summary["partial"] else ""),
             f"catalog items: {summary['items']}",
             f"{'split':<6} {'dialogues':>9} {'samples':>8} {'pairs':>7} {'new pairs':>9} {'mentions':>8} {'unmapped':>8}"]
    for split in SPLITS:
        c = summary["splits"][split]
        m = c["mentions"]
        lines.append(f"{split:<6} {c['dialogues']:>9} {c['samples']:>8} {c['pairs']:>7} {c['pairs_not_repeated']:>9} "
                     f"{m['mentions']:>8} {m['unmapped']:>8} ({100 * m['unmapped_share']:.1f}%)")
    sources = {split: summary["splits"][split].get("source") for split in SPLITS}
    if any(sources.values()):
        lines.append("read from: " + ", ".join(f"{split} {source}" for split, source in sources.items()))
    lines.append(f"training labels (repeated targets dropped): {summary['train_labels']} "
                 f"(paper: {summary['paper_train_labels']}{', full ReDial' if summary['partial'] else ''})")
    if summary.get("item_sets"):
        lines.append(f"extra item sets for collaborative baselines (KASCRS, valid/test excluded): {summary['item_sets']}")
    return "\n".join(lines)
