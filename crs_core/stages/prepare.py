"""Stage `prepare`: raw dataset files -> items.parquet, samples/{train,valid,test}.parquet, counts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from crs_core import __version__
from crs_core.artifacts import RunDir, write_json, write_table
from crs_core.config import Config
from crs_core.data import inspired, jsonl, redial
from crs_core.data.dialogue import Dialogue, MentionStats, build_samples
from crs_core.data.kg import KnowledgeGraph, load_catalog
from crs_core.data.prepared import SPLITS
from crs_core.schema import (
    ITEM_SETS_SCHEMA,
    ITEMS_SCHEMA,
    SAMPLES_SCHEMA,
    Sample,
    items_to_table,
    samples_to_table,
)
from crs_core.stages.base import Stage

OUTPUTS = ("items.parquet", *(f"samples/{s}.parquet" for s in SPLITS), "item_sets.parquet")


def _dataset_files(config: Config, data_dir: Path) -> list[Path]:
    """Every file the dataset's loader may read (its whole folder, plus a JSONL dataset's named files)."""
    root = data_dir / config.dataset
    files = {p for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()
    if config.data.resolved_format(config.dataset) == "jsonl":
        names = [_jsonl_name(config.data.catalog, config.dataset)]
        dialogues = _jsonl_name(config.data.dialogues, config.dataset)
        names += [dialogues.format(split=s) for s in SPLITS] if "{split}" in dialogues else [dialogues]
        files |= {data_dir / name for name in names if (data_dir / name).is_file()}
    return sorted(files)


def _loader_settings(config: Config) -> dict:
    """The `data` settings that change what is read (not the label, note or paper counts)."""
    shown = {"label", "note", "paper_train_labels", "paper_augmented_labels"}
    return {k: v for k, v in config.data.__dict__.items() if k not in shown}


def _jsonl_name(template: str, dataset: str) -> str:
    return template.replace("{dataset}", dataset)


@dataclass
class LoadedDataset:
    items: list
    dialogues: dict[str, list[Dialogue]]
    item_sets: list
    sources: dict[str, str]


def _load_inspired(config: Config, data_dir: Path) -> LoadedDataset:
    kg = KnowledgeGraph.load(data_dir / "inspired" / "kg")
    items, _ = load_catalog(data_dir / "inspired" / "kg" / "id2info_inspired.json", kg)
    dialogues = {split: inspired.load_split(data_dir, split, kg) for split in SPLITS}
    sources = {split: str(inspired.source_file(data_dir, split).relative_to(data_dir)) for split in SPLITS}
    return LoadedDataset(items, dialogues, [], sources)


def _load_redial(config: Config, data_dir: Path) -> LoadedDataset:
    kg = KnowledgeGraph.load(data_dir / "redial" / "kg")
    items, movie_to_item = load_catalog(data_dir / "redial" / "kg" / "id2info.json.gz", kg)
    resolver = redial.MentionResolver(kg, movie_to_item)
    pool = redial.load_train_pool(data_dir, kg, resolver)
    if config.data.redial_valid == "cfcrs":
        valid_ids = {d.dialog_id for d in redial.load_cfcrs(data_dir / "redial" / redial.CFCRS_TRAIN_FILE, kg)}
        train = [d for d in pool if d.dialog_id not in valid_ids]
        valid = [d for d in pool if d.dialog_id in valid_ids]
    else:
        train, valid = redial.split_train_valid(pool, config.data.valid_fraction, config.data.valid_seed)
    test = redial.load_test(data_dir, kg, resolver)
    item_sets = []
    if config.baselines.ease_use_kascrs:
        held_out = {d.dialog_id for d in valid + test}
        item_sets = redial.load_kascrs_item_sets(data_dir, movie_to_item, exclude=held_out)
    return LoadedDataset(items, {"train": train, "valid": valid, "test": test}, item_sets, {})


def _load_jsonl(config: Config, data_dir: Path) -> LoadedDataset:
    data = config.data
    dialogues_name = _jsonl_name(data.dialogues, config.dataset)
    dataset = jsonl.load_dataset(data_dir, _jsonl_name(data.catalog, config.dataset), dialogues_name,
                                 data.valid_fraction, data.test_fraction, data.valid_seed)
    sources = {split: dialogues_name.format(split=split) if "{split}" in dialogues_name else dialogues_name
               for split in SPLITS}
    return LoadedDataset(dataset.items, dataset.dialogues, [], sources)


LOADERS = {"inspired": _load_inspired, "redial": _load_redial, "jsonl": _load_jsonl}


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


class Prepare(Stage):
    """Raw dataset files -> the run directory's data artifacts, with the counts a user checks first."""

    name = "prepare"
    about = "items and dialogue samples of {config.dataset}"

    def inputs(self, config: Config, run: RunDir) -> list[Path]:
        return _dataset_files(config, config.resolved_data_dir())

    def outputs(self, config: Config) -> list[str]:
        return list(OUTPUTS)

    def settings(self, config: Config, run: RunDir) -> dict:
        return {"dataset": config.dataset, "data": _loader_settings(config), "version": __version__,
                "kascrs": config.baselines.ease_use_kascrs}

    def work(self, config: Config, run: RunDir) -> dict:
        loaded = LOADERS[config.data.resolved_format(config.dataset)](config, config.resolved_data_dir())
        items, dialogues, item_sets = loaded.items, loaded.dialogues, loaded.item_sets
        summary: dict = {"dataset": config.dataset, "items": len(items), "splits": {}}
        write_table(run.path("items.parquet"), items_to_table(items), ITEMS_SCHEMA)
        for split in SPLITS:
            samples = build_samples(
                dialogues[split],
                require_context_entity=config.data.require_context_entity,
                drop_repeated_targets=split == "train",
            )
            write_table(run.path("samples", f"{split}.parquet"), samples_to_table(samples), SAMPLES_SCHEMA)
            summary["splits"][split] = _split_counts(dialogues[split], samples)
            if split in loaded.sources:
                summary["splits"][split]["source"] = loaded.sources[split]
        write_table(run.path("item_sets.parquet"),
                    pa.Table.from_pylist([{"dialog_id": d, "items": i} for d, i in item_sets],
                                         schema=ITEM_SETS_SCHEMA),
                    ITEM_SETS_SCHEMA)
        summary["item_sets"] = len(item_sets)
        summary["train_labels"] = summary["splits"]["train"]["pairs"]
        summary["label"] = config.dataset_label()
        summary["paper_train_labels"] = config.data.paper_train_labels
        write_json(run.path("prepare_summary.json"), summary)
        return summary

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        return format_summary(figures).splitlines()


def format_summary(summary: Mapping[str, Any]) -> str:
    """The counts `crs prepare` prints, next to the paper's training label count."""
    lines = [f"dataset: {summary.get('label', summary['dataset'])}",
             f"catalog items: {summary['items']}",
             f"{'split':<6} {'dialogues':>9} {'samples':>8} {'pairs':>7} {'new pairs':>9} "
             f"{'mentions':>8} {'unmapped':>8}"]
    for split in SPLITS:
        c = summary["splits"][split]
        m = c["mentions"]
        lines.append(f"{split:<6} {c['dialogues']:>9} {c['samples']:>8} {c['pairs']:>7} {c['pairs_not_repeated']:>9} "
                     f"{m['mentions']:>8} {m['unmapped']:>8} ({100 * m['unmapped_share']:.1f}%)")
    sources = {split: summary["splits"][split].get("source") for split in SPLITS}
    if any(sources.values()):
        lines.append("read from: " + ", ".join(f"{split} {source}" for split, source in sources.items()))
    paper = summary.get("paper_train_labels")
    lines.append(f"training labels (repeated targets dropped): {summary['train_labels']}"
                 + (f" (paper: {paper})" if paper is not None else ""))
    if summary.get("item_sets"):
        lines.append("extra item sets for collaborative baselines (KASCRS, valid/test excluded): "
                     f"{summary['item_sets']}")
    return "\n".join(lines)


STAGE = Prepare()
