"""Stage `teach`: sample train contexts and retrieved candidates, have the teacher rate each pair 0..4.

Reads samples/train.parquet, items.parquet and candidates/train.parquet (from `retrieve`); writes
teacher.parquet (TEACHER_SCHEMA). Per context it labels the gold targets that retrieval found plus a
spread over the candidate ranks, so the labels cover good and bad candidates rather than only the top.
Items already mentioned in the context are never candidates: evaluation removes them anyway.
A pair that fails is a "failed" row (score null) and does not abort the stage; a run with failures is
not marked current, so the next run retries only those (successful LLM answers come from the cache).
More failures than `teacher.max_failure_share` (an endpoint that is down, a wrong model name) fail the
stage with a CRSError before anything is written: the labels would be too few to trust.

With `teacher.kind: recorded` no pairs are selected: every train pair of the recorded judgment files is
imported (crs_core/teacher/recorded.py). `export_batch`/`import_batch` run the LLM teacher's selected
pairs through the OpenAI Batch API instead of live requests (crs_core/teacher/batch.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from crs_core.artifacts import RunDir, atomic_write_bytes, read_table, write_table
from crs_core.config import Config
from crs_core.errors import ConfigError, CRSError, DataError
from crs_core.progress import progress
from crs_core.schema import (
    CANDIDATES_SCHEMA,
    ITEMS_SCHEMA,
    SAMPLES_SCHEMA,
    TEACHER_SCHEMA,
    TEACHER_STATUS_FAILED,
    TEACHER_STATUS_OK,
    Catalog,
    Sample,
    table_to_catalog,
    table_to_samples,
)
from crs_core.stages.base import Stage, Summary, shown
from crs_core.teacher import (
    KG_RUBRIC_VERSION,
    KGTeacher,
    Label,
    LLMTeacher,
    Pair,
    TeacherCache,
    cost_usd,
    fit_calibration,
    load_prompt,
)
from crs_core.teacher.batch import BATCH_PRICE_FACTOR, BatchTeacher, batch_request, read_batch_output
from crs_core.teacher.cache import CACHE_FILE, CachedAnswer, cache_key
from crs_core.teacher.prompt import context_text
from crs_core.teacher.recorded import load_recorded, resolve_files
from crs_core.text import item_text

log = logging.getLogger(__name__)

OUTPUT = "teacher.parquet"
INPUTS = ("samples/train.parquet", "items.parquet", "candidates/train.parquet")
# Knobs that change throughput, not answers, and the name of the key's variable stay out of the fingerprint.
_NOT_FINGERPRINTED = ("api_key_env", "concurrency", "max_failure_share")


def spread_candidates(ranked: list[tuple[int, float]], targets: set[int], k: int,
                      rng: random.Random) -> list[tuple[int, float]]:
    """Up to `k` of `ranked` ((item_id, similarity), best first): the gold targets, then one random
    candidate from each of (k - #gold) equal bands of the remaining ranks, so top and bottom are both seen."""
    gold = [c for c in ranked if c[0] in targets][:k]
    rest = [c for c in ranked if c[0] not in targets]
    m = k - len(gold)
    if m >= len(rest):
        picked = rest
    else:
        picked = [rest[rng.randrange(len(rest) * b // m, len(rest) * (b + 1) // m)] for b in range(m)]
    chosen = {c[0] for c in gold + picked}
    return [c for c in ranked if c[0] in chosen]


def select_pairs(samples: list[Sample], catalog: Catalog, candidates: pa.Table, contexts: int,
                 per_context: int, seed: int) -> list[Pair]:
    """The pairs to label: `contexts` train samples (seeded), `per_context` candidates each."""
    by_id = {s.sample_id: s for s in samples if s.context}
    with_candidates = set(pc.unique(candidates.column("sample_id")).to_pylist())
    eligible = sorted(by_id.keys() & with_candidates)
    rng = random.Random(seed)
    chosen = sorted(rng.sample(eligible, min(contexts, len(eligible))))
    rows = candidates.filter(pc.is_in(candidates.column("sample_id"), pa.array(chosen, pa.string())))
    ranked: dict[str, list[tuple[int, int, float]]] = {}
    for r in rows.to_pylist():
        ranked.setdefault(r["sample_id"], []).append((r["rank"], r["item_id"], r["similarity"]))
    pairs = []
    for sample_id in chosen:
        sample = by_id[sample_id]
        seen: set[int] = set(sample.context_items)
        usable = []
        for _, item_id, similarity in sorted(ranked[sample_id]):
            if item_id in catalog and item_id not in seen:
                seen.add(item_id)
                usable.append((item_id, similarity))
        for item_id, similarity in spread_candidates(usable, set(sample.targets), per_context, rng):
            pairs.append(Pair(sample, catalog.get(item_id), similarity))
    return pairs


def kg_teacher(samples: list[Sample], catalog: Catalog, candidates: pa.Table) -> KGTeacher:
    """The KG rubric calibrated on every retrieved train candidate (see kg_teacher's docstring)."""
    by_id = {s.sample_id: s for s in samples}
    triples = [(by_id[r["sample_id"]], catalog.get(r["item_id"]), r["similarity"])
               for r in candidates.select(["sample_id", "item_id", "similarity"]).to_pylist()
               if r["sample_id"] in by_id and r["item_id"] in catalog
               and r["item_id"] not in by_id[r["sample_id"]].context_items]
    return KGTeacher(catalog, fit_calibration(triples, catalog))


def _prompt_version(config: Config) -> str:
    return KG_RUBRIC_VERSION if config.teacher.kind == "kg" else load_prompt(config.teacher.prompt).version


def recorded_files(config: Config) -> list[Path]:
    return resolve_files(config.teacher.files, config.resolved_data_dir(), config.dataset)


def summarize(labels: list[Label], teacher, config: Config, contexts: int, seconds: float) -> dict:
    """Counts, cost and score histogram; tokens and cost count only what this run asked (not cache hits)."""
    ok = [lab for lab in labels if lab.status == TEACHER_STATUS_OK]
    fresh = [lab for lab in labels if not lab.cached]
    tokens_in = sum(lab.input_tokens for lab in fresh)
    tokens_out = sum(lab.output_tokens for lab in fresh)
    histogram = Counter(int(round(lab.score)) for lab in ok)
    return {
        "contexts": contexts,
        "pairs": len(labels),
        "ok": len(ok),
        "failed": len(labels) - len(ok),
        "failure_share": (len(labels) - len(ok)) / len(labels) if labels else 0.0,
        "cached": sum(lab.cached for lab in labels),
        "requests": sum(lab.requests for lab in labels),
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": round(cost_usd(tokens_in, tokens_out, config.teacher), 6),
        "score_histogram": {str(s): histogram.get(s, 0) for s in range(5)},
        "mean_score": sum(lab.score for lab in ok) / len(ok) if ok else None,
        "seconds": round(seconds, 3),
        "teacher": config.teacher.kind,
        "model": teacher.model,
        "prompt_version": teacher.prompt_version,
    }


def _progress(bar):
    """A thread-safe callback moving `bar` (crs_core.progress: a bar on a terminal, a line a minute elsewhere)
    once per labelled pair."""
    lock = threading.Lock()

    def tick(label: Label) -> None:
        with lock:
            bar.update()

    return tick


def check_failure_share(labels: list[Label], limit: float) -> None:
    """Refuse a labelling in which more than `limit` of the pairs failed, naming the share and the limit."""
    failed = [lab for lab in labels if lab.status != TEACHER_STATUS_OK]
    share = len(failed) / len(labels) if labels else 0.0
    if share > limit:
        error, _ = Counter(lab.error for lab in failed).most_common(1)[0]
        raise CRSError(f"teach: {len(failed)} of {len(labels)} pairs failed, a share of {share:.1%} > "
                       f"teacher.max_failure_share {limit:.1%} (most common error: {str(error)[:200]}); nothing "
                       "written, answers received so far are cached and a rerun asks only for the rest")


def _load_inputs(run: RunDir) -> tuple[list[Sample], Catalog]:
    samples = table_to_samples(read_table(run.path("samples", "train.parquet"), SAMPLES_SCHEMA))
    return samples, table_to_catalog(read_table(run.path("items.parquet"), ITEMS_SCHEMA))


def _selected_pairs(config: Config, run: RunDir, samples: list[Sample],
                    catalog: Catalog) -> tuple[list[Pair], pa.Table]:
    candidates_path = run.path("candidates", "train.parquet")
    candidates = read_table(candidates_path, CANDIDATES_SCHEMA)
    pairs = select_pairs(samples, catalog, candidates, config.teacher.contexts,
                         config.teacher.candidates_per_context, config.seed)
    if not pairs:
        raise DataError(candidates_path, "no candidates for any train sample with a context: run retrieve first")
    return pairs, candidates


def _finish(config: Config, run: RunDir, labels: list[Label], teacher, contexts: int, start: float,
            extra: dict) -> dict:
    """Refuse too many failures, write teacher.parquet and return the stage's figures."""
    check_failure_share(labels, config.teacher.max_failure_share)
    write_table(run.path(OUTPUT), pa.Table.from_pylist([lab.row() for lab in labels], schema=TEACHER_SCHEMA),
                TEACHER_SCHEMA)
    return summarize(labels, teacher, config, contexts, time.perf_counter() - start) | extra


class Teach(Stage):
    """Label the selected pairs (or import every recorded train pair). A run with failed pairs is not reused,
    so the next run retries only those (successful answers come from the cache)."""

    name = "teach"
    about = "teacher {config.teacher.kind} rates (context, item) pairs 0-4"

    def inputs(self, config: Config, run: RunDir) -> list[Path]:
        """Recorded judgments add their files' contents (a new or edited file re-runs teach) and need no
        candidates."""
        if config.teacher.kind == "recorded":
            inputs = [run.path(p) for p in INPUTS[:2]] + recorded_files(config)
        else:
            inputs = [run.path(p) for p in INPUTS]
        return [p for p in inputs if p.exists()]

    def outputs(self, config: Config) -> list[str]:
        return [OUTPUT]

    def settings(self, config: Config, run: RunDir) -> dict:
        """Settings and prompt version; only `files` among the teacher settings matters to recorded judgments."""
        if config.teacher.kind == "recorded":
            return {"teacher": {"kind": "recorded", "files": config.teacher.files}}
        return {
            "teacher": {k: v for k, v in dataclasses.asdict(config.teacher).items()
                        if k not in _NOT_FINGERPRINTED and k != "files"},
            "seed": config.seed,
            "prompt_version": _prompt_version(config),
        }

    def reusable(self, figures: Mapping[str, Any]) -> bool:
        return figures.get("failed", 0) == 0

    def work(self, config: Config, run: RunDir) -> dict:
        samples, catalog = _load_inputs(run)
        start = time.perf_counter()
        if config.teacher.kind == "recorded":
            files = recorded_files(config)
            recorded = load_recorded(files, samples, catalog)
            if not recorded.labels:
                raise DataError(files[0], "no train judgments in the recorded files")
            log.info("teach: %d recorded pairs from %d file(s)", len(recorded.labels), len(files))
            contexts = len({lab.sample_id for lab in recorded.labels})
            return _finish(config, run, recorded.labels, recorded, contexts, start, recorded.describe())

        pairs, candidates = _selected_pairs(config, run, samples, catalog)
        contexts = len({p.sample.sample_id for p in pairs})
        with ExitStack() as stack:
            if config.teacher.kind == "openai":
                cache = stack.enter_context(TeacherCache(run.path(CACHE_FILE)))
                teacher = LLMTeacher(config.teacher, cache=cache)
            else:
                teacher = kg_teacher(samples, catalog, candidates)
            stack.callback(teacher.close)
            log.info("teach: %d pairs from %d contexts with %r", len(pairs), contexts, teacher)
            bar = stack.enter_context(progress(total=len(pairs), desc="teach: pairs labelled"))
            labels = teacher.label_many(pairs, progress=_progress(bar))
        extra = {"kg_calibration": teacher.calibration.describe()} if isinstance(teacher, KGTeacher) else {}
        return _finish(config, run, labels, teacher, contexts, start, extra)

    def describe(self, figures: Mapping[str, Any], config: Config) -> list[str]:
        """Counts, cost and score histogram; for recorded judgments, where they came from and what was skipped."""
        s = figures
        histogram = " ".join(f"{k}:{v}" for k, v in s["score_histogram"].items())
        mean, share = shown(s["mean_score"], ".2f"), shown(s["failure_share"], ".1%")
        lines = [
            f"teacher {s['teacher']} / model {s['model']} / prompt {s['prompt_version']}",
            (f"  {s['pairs']} pairs over {s['contexts']} contexts: {s['ok']} ok, {s['failed']} failed "
             f"({share}), {s['cached']} from cache, {s['requests']} requests"),
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
                      (f"  conversations no longer as recorded: {s['mismatched_conversations']} pairs; item "
                       f"descriptions changed: {s['mismatched_descriptions']} pairs; non-train judgments skipped: "
                       f"{skipped}")]
        return lines


def _require_openai(config: Config, flag: str) -> None:
    if config.teacher.kind != "openai":
        raise ConfigError(f"{flag}: the Batch API serves the LLM teacher, but teacher.kind is "
                          f"{config.teacher.kind!r}; add --set teacher.kind=openai (and teacher.model)")


def _cache_key(prompt_version: str, model: str, pair: Pair) -> str:
    return cache_key(prompt_version, model, context_text(pair.sample), pair.item.item_id, item_text(pair.item))


def export_batch(config: Config, run: RunDir, path: Path) -> dict:
    """Write one Batch API request per selected pair not yet answered in the teacher cache."""
    _require_openai(config, "--export-batch")
    prompt = load_prompt(config.teacher.prompt)
    samples, catalog = _load_inputs(run)
    pairs, _ = _selected_pairs(config, run, samples, catalog)
    with TeacherCache(run.path(CACHE_FILE)) as cache:
        todo = [p for p in pairs if cache.get(_cache_key(prompt.version, config.teacher.model, p)) is None]
    lines = "".join(json.dumps(batch_request(p, prompt, config.teacher)) + "\n" for p in todo)
    atomic_write_bytes(Path(path), lines.encode("utf-8"))
    return {"path": str(path), "requests": len(todo), "pairs": len(pairs), "cached": len(pairs) - len(todo),
            "contexts": len({p.sample.sample_id for p in pairs}), "model": config.teacher.model,
            "prompt_version": prompt.version}


def import_batch(config: Config, run: RunDir, paths: list[Path]) -> Summary:
    """teacher.parquet from Batch API output (and error) files, as a synchronous teach run would write it.

    Pairs the files do not answer come from the teacher cache, else become failed rows; parsed answers go
    into the cache, so a later synchronous run asks only for what failed. Cost carries the batch discount.
    """
    _require_openai(config, "--import-batch")
    prompt = load_prompt(config.teacher.prompt)
    model = config.teacher.model
    samples, catalog = _load_inputs(run)
    pairs, _ = _selected_pairs(config, run, samples, catalog)
    start = time.perf_counter()
    by_key = {(p.sample.sample_id, p.item.item_id): p for p in pairs}
    answered = read_batch_output(paths, by_key, model, prompt.version)
    labels = []
    with TeacherCache(run.path(CACHE_FILE)) as cache:
        for key, pair in by_key.items():
            label, hit = answered.get(key), cache.get(_cache_key(prompt.version, model, pair))
            if hit is not None and (label is None or label.status != TEACHER_STATUS_OK):
                label = Label(key[0], key[1], hit.score, hit.answer, model, prompt.version, TEACHER_STATUS_OK,
                              input_tokens=hit.input_tokens, output_tokens=hit.output_tokens, cached=True)
            elif label is None:
                label = Label(key[0], key[1], None, "", model, prompt.version, TEACHER_STATUS_FAILED,
                              error="no answer in the batch output")
            elif label.status == TEACHER_STATUS_OK:
                cache.put(_cache_key(prompt.version, model, pair), CachedAnswer(
                    label.score, label.rationale, label.input_tokens, label.output_tokens), model, prompt.version)
            labels.append(label)
    teacher = BatchTeacher(model, prompt.version)
    contexts = len({p.sample.sample_id for p in pairs})
    list_price = summarize(labels, teacher, config, contexts, 0.0)["cost_usd"]
    extra = {"batch_files": [str(p) for p in paths], "batch_price_factor": BATCH_PRICE_FACTOR,
             "cost_usd": round(list_price * BATCH_PRICE_FACTOR, 6), "cost_usd_list_price": list_price}
    figures = _finish(config, run, labels, teacher, contexts, start, extra)
    STAGE.record(config, run, STAGE.fingerprint(config, run), figures)
    return STAGE.summarize(config, figures, wall_s=round(time.perf_counter() - start, 1))


STAGE = Teach()
