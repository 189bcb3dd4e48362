"""Backbone training: the losses against hand computations, the MiniLM backbone's contract, and the
two-stage Ray Train loop on a tiny catalog with a tiny random BERT (fast on 2 CPUs)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from genre_films import GENRES, TINY_BERT, films
from model_mixin import RecommenderTestMixin

from crs_core.config import TrainConfig
from crs_core.errors import ConfigError, DataError
from crs_core.models import Recommender
from crs_core.models.minilm import MiniLMRecommender
from crs_core.schema import Catalog, Item, Sample
from crs_core.text import render_context
from crs_core.training.data import (
    TrainingData,
    epoch_indices,
    iter_batches,
    labelled,
    with_synthetic_targets,
)
from crs_core.training.loop import (
    METRIC,
    build_optimizer,
    frozen_reference,
    initial_model,
    stage_loss,
    train_stage,
)
from crs_core.training.losses import grouped_cross_entropy, kl_to_reference, stage2_loss

# --- losses -------------------------------------------------------------------------------------------


def test_kl_to_reference_by_hand() -> None:
    """Row 1: model logits (0, 0, 0) -> P = (1/3, 1/3, 1/3); ref logits (0, ln 2, ln 3) -> Q = (1, 2, 3) / 6.
    KL(Q || P) = sum_j Q_j ln(Q_j / P_j) = 1/6 ln(1/2) + 2/6 ln(1) + 3/6 ln(3/2) = -0.1155245 + 0.2027326
    = 0.0872081.
    Row 2: model logits (ln 2, 0, 0) -> P = (1/2, 1/4, 1/4); ref logits (0, 0, 0) -> Q = (1/3, 1/3, 1/3).
    KL = 1/3 [ln(2/3) + ln(4/3) + ln(4/3)] = 1/3 ln(32/27) = 0.0566330.
    "batchmean" averages the rows: (0.0872081 + 0.0566330) / 2 = 0.0719205.
    """
    logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(2), 0.0, 0.0]])
    ref = torch.tensor([[0.0, math.log(2), math.log(3)], [0.0, 0.0, 0.0]])
    row1 = 1 / 6 * math.log(1 / 2) + 3 / 6 * math.log(3 / 2)
    row2 = math.log(32 / 27) / 3
    assert row1 == pytest.approx(0.0872081, abs=1e-7) and row2 == pytest.approx(0.0566330, abs=1e-7)
    assert kl_to_reference(logits, ref).item() == pytest.approx(0.0719205, abs=1e-6)
    assert kl_to_reference(ref, ref).item() == pytest.approx(0.0, abs=1e-7)


LOGITS = torch.tensor([[2.0, -1.0, 0.5, 0.0, 1.5], [0.3, 0.1, -2.0, 1.0, 0.0], [-0.5, 2.5, 0.0, 0.2, -1.0]])
TARGETS = [[0, 2, 4], [3], [1, 4]]


def per_pair_ce(logits: torch.Tensor, target_lists: list[list[int]],
                weights: list[float] | None = None) -> torch.Tensor:
    """The reference formulation: one row per (context, target) pair, CE per pair, weighted mean."""
    rows = [i for i, targets in enumerate(target_lists) for _ in targets]
    cols = [c for targets in target_lists for c in targets]
    losses = F.cross_entropy(logits[rows], torch.tensor(cols), reduction="none")
    w = torch.ones(len(rows)) if weights is None else torch.tensor(weights)
    return (losses * w).sum() / w.sum()


def test_grouped_equals_per_pair_loss() -> None:
    # "pair": every pair one sample, averaged over the 6 pairs.
    assert grouped_cross_entropy(LOGITS, TARGETS, "pair").item() == pytest.approx(per_pair_ce(LOGITS, TARGETS).item())
    # "context": pair weights 1/|P_i| (1/3, 1/3, 1/3, 1, 1/2, 1/2), so each context counts once.
    weights = [1 / len(t) for t in TARGETS for _ in t]
    grouped = grouped_cross_entropy(LOGITS, TARGETS, "context").item()
    assert grouped == pytest.approx(per_pair_ce(LOGITS, TARGETS, weights).item())
    # ...which is the mean over contexts of CE against the uniform distribution on the positives.
    q = torch.zeros_like(LOGITS)
    for i, targets in enumerate(TARGETS):
        q[i, targets] = 1 / len(targets)
    assert grouped == pytest.approx(-(q * torch.log_softmax(LOGITS, -1)).sum(-1).mean().item())
    # The weightings differ whenever contexts have different numbers of positives.
    assert grouped != pytest.approx(grouped_cross_entropy(LOGITS, TARGETS, "pair").item())
    # Gradients agree too (the training signal, not just the value).
    a, b = LOGITS.clone().requires_grad_(), LOGITS.clone().requires_grad_()
    grouped_cross_entropy(a, TARGETS, "pair").backward()
    per_pair_ce(b, TARGETS).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_grouped_loss_edge_cases() -> None:
    single = [[1], [0], [4]]  # one positive each: both weightings are plain CE
    plain = F.cross_entropy(LOGITS, torch.tensor([1, 0, 4])).item()
    for weighting in ("pair", "context"):
        assert grouped_cross_entropy(LOGITS, single, weighting).item() == pytest.approx(plain)
    # A context without positives contributes nothing.
    assert grouped_cross_entropy(LOGITS, [[0, 2, 4], [], [1, 4]]).item() == pytest.approx(
        per_pair_ce(LOGITS, [[0, 2, 4], [], [1, 4]]).item())
    empty = LOGITS.clone().requires_grad_()
    loss = grouped_cross_entropy(empty, [[], [], []])
    assert loss.item() == 0.0 and loss.requires_grad
    with pytest.raises(ValueError, match="weighting"):
        grouped_cross_entropy(LOGITS, TARGETS, "sample")


def test_stage2_loss() -> None:
    single = [[1], [3], [0]]
    plain = F.cross_entropy(LOGITS, torch.tensor([1, 3, 0])).item()
    assert stage2_loss(LOGITS, single, None, alpha=0.0).item() == pytest.approx(plain)
    ref = torch.randn(LOGITS.shape, generator=torch.Generator().manual_seed(0))
    assert stage2_loss(LOGITS, single, ref, alpha=0.0).item() == pytest.approx(plain)
    expected = plain + 0.5 * kl_to_reference(LOGITS, ref).item()
    assert stage2_loss(LOGITS, single, ref, alpha=0.5).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="reference"):
        stage2_loss(LOGITS, single, None, alpha=0.5)


# --- data helpers -------------------------------------------------------------------------------------


def test_epoch_shards_are_equal_and_cover_everything() -> None:
    shards = [epoch_indices(7, epoch=1, seed=3, rank=r, world_size=2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4  # DDP needs the same number of steps on every rank
    assert set(np.concatenate(shards)) == set(range(7))
    np.testing.assert_array_equal(epoch_indices(7, 1, 3, 0, 2), shards[0])
    assert not np.array_equal(epoch_indices(7, 2, 3), epoch_indices(7, 1, 3))


def test_synthetic_targets_replace_the_originals() -> None:
    out = with_synthetic_targets(TRAIN[:2], [{"sample_id": s.sample_id, "targets": [s.targets[0], 999]}
                                             for s in TRAIN[:2]])
    assert [s.targets for s in out] == [(TRAIN[0].targets[0], 999), (TRAIN[1].targets[0], 999)]
    with pytest.raises(DataError, match="synthesize"):
        with_synthetic_targets(TRAIN[:2], [])


# --- the MiniLM backbone --------------------------------------------------------------------------------


class TestMiniLMRecommender(RecommenderTestMixin):
    # The toy contexts say "I liked movie 3" for both genres, so the text cannot tell the genres apart:
    # like Popularity (0.7) the model mostly learns the skew. Head-only training (trainable_layers=0) keeps
    # each fit near 1 s on 2 CPUs; it reaches 0.87 here.
    min_quality = 0.75

    def make_model(self) -> Recommender:
        return MiniLMRecommender(max_length=24, trainable_layers=0, epochs=3, learning_rate=1e-2, batch_size=40)


def test_minilm_head_starts_from_item_embeddings() -> None:
    """Before training, a context that names an item's description ranks that item first."""
    items = [Item(i, f"Movie {i}", text) for i, text in
             enumerate(["a space horror film", "a romantic comedy in paris", "a heist thriller with cops"])]
    catalog = Catalog(items)
    model = MiniLMRecommender(max_length=32)
    model.initialise(catalog)
    ctx = [Sample("s", "d", 1, (f"I want {item.description}",), ("seeker",), ()) for item in items]
    assert model.score(ctx).argmax(axis=1).tolist() == [0, 1, 2]


# --- Ray Train ------------------------------------------------------------------------------------------

ITEMS = films(12)
CATALOG = Catalog(ITEMS)


def _sample(sid: str, k: int) -> Sample:
    genre = k % 3
    return Sample(sid, f"d{sid}", 1, (f"I love {GENRES[genre]} films",), ("seeker",), (),
                  targets=(ITEMS[(genre + 3 * k) % 12].item_id,))


TRAIN = [_sample(f"t{k}", k) for k in range(10)]
VALID = [_sample(f"v{k}", k + 10) for k in range(4)]
# Stage 1 learns every item of the context's genre (the synthetic positives).
SYNTHETIC = [{"sample_id": s.sample_id, "targets": [i.item_id for i in ITEMS if GENRES[int(s.sample_id[1:]) % 3]
                                                     in i.description]} for s in TRAIN]
PRETRAIN = TrainingData(CATALOG, with_synthetic_targets(TRAIN, SYNTHETIC), VALID)
FINETUNE = TrainingData(CATALOG, TRAIN, VALID)


def tiny_config(tmp_path: Path, **changes) -> TrainConfig:
    return TrainConfig(**{"epochs_stage1": 2, "epochs_stage2": 1, "learning_rate": 1e-3, "batch_size": 4,
                          "max_length": 16, "num_workers": 2, "cpus_per_worker": 0.5,
                          "storage_path": str(tmp_path / "ray_results"), **changes})


@pytest.fixture(scope="module")
def stage1(ray_local, tmp_path_factory):
    """One 2-worker stage-1 run shared by the Ray tests (the expensive part)."""
    run_dir = tmp_path_factory.mktemp("run")
    model, metrics = train_stage(tiny_config(run_dir), PRETRAIN, "pretrain", run_dir=run_dir,
                                 backbone_params={"model_name_or_config": TINY_BERT})
    return run_dir, model, metrics


def test_ray_stage1_reports_every_epoch_and_returns_the_best(stage1) -> None:
    run_dir, model, metrics = stage1
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for h in metrics["history"]:
        assert {"train_loss", METRIC, "valid_recall@1", "valid_n"} <= h.keys()
        assert h["valid_n"] == 4 and np.isfinite(h["train_loss"])
    best = max(metrics["history"], key=lambda h: h[METRIC])[METRIC]
    assert metrics["best"][METRIC] == best and metrics["best_epoch"] in (1, 2)
    run = Path(metrics["run_path"])
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("epoch_")) == ["epoch_001", "epoch_002"]
    assert {"model", "progress.json", "train_state.pt"} <= {p.name for p in Path(metrics["best_checkpoint"]).iterdir()}
    # The returned model is the best checkpoint, also saved into the run directory.
    assert isinstance(model, MiniLMRecommender) and model.params()["model_name_or_config"] == TINY_BERT
    saved = MiniLMRecommender.load(run_dir / "checkpoints" / "stage1", catalog=CATALOG)
    np.testing.assert_array_equal(saved.score(VALID), model.score(VALID))
    assert json.loads((run_dir / "checkpoints" / "stage1.json").read_text())["best_epoch"] == metrics["best_epoch"]


def test_stage2_reference_is_an_independent_frozen_copy(stage1) -> None:
    """What every stage-2 worker builds: the model from the stage-1 checkpoint, trained, and the
    reference loaded separately, frozen, and unchanged by a training step."""
    _, _, metrics = stage1
    init = Path(metrics["best_checkpoint"])
    model, start = initial_model({}, CATALOG, resume=None, init=init)
    reference = frozen_reference(init / "model")
    trained = dict(model.module.named_parameters())
    frozen = dict(reference.named_parameters())
    assert start == 0 and trained.keys() == frozen.keys()
    assert all(not p.requires_grad for p in frozen.values()) and not reference.training
    assert all(p.requires_grad for p in trained.values())
    assert not {p.data_ptr() for p in trained.values()} & {p.data_ptr() for p in frozen.values()}
    before_frozen = {k: v.detach().clone() for k, v in frozen.items()}
    before_trained = {k: v.detach().clone() for k, v in trained.items()}
    optimizer = build_optimizer(model.module, 1e-2)
    loss_fn = stage_loss("finetune", alpha=0.5, reference=reference)
    samples, columns = labelled(TRAIN, CATALOG)
    batch = next(iter_batches(model.tokenize, samples, columns, np.arange(4), 4))
    model.module.train()
    loss = loss_fn(model.module(**batch.inputs), batch)
    loss.backward()
    optimizer.step()
    assert all(torch.equal(before_frozen[k], v) for k, v in frozen.items())
    assert all(v.grad is None for v in frozen.values())
    changed = [k for k, v in trained.items() if not torch.equal(before_trained[k], v)]
    assert "item_matrix" in changed and any(k.startswith("encoder.") for k in changed)


def test_ray_stage2_starts_from_stage1(stage1, tmp_path) -> None:
    """Stage 2 (CE + alpha * KL) starts from the stage-1 checkpoint: its first epoch is scored on valid."""
    _, _, metrics = stage1
    config = tiny_config(tmp_path, num_workers=1, cpus_per_worker=1.0)
    model, second = train_stage(config, FINETUNE, "finetune", init_checkpoint=metrics["best_checkpoint"])
    assert [h["epoch"] for h in second["history"]] == [1] and second["stage"] == "finetune"
    assert second["run_name"].startswith("stage2-") and np.isfinite(second["history"][0]["train_loss"])
    assert model.score(VALID).shape == (4, len(CATALOG))
    with pytest.raises(ValueError, match="stage-1 checkpoint"):
        train_stage(config, FINETUNE, "finetune")


def test_local_runner_trains_as_one_ray_worker_does(stage1, tmp_path) -> None:
    """`train.runner: local` runs the same steps and seeds in-process: stage 2 from the same stage-1 checkpoint
    gives the same per-epoch valid metrics and the same best model as a one-worker TorchTrainer run."""
    _, _, metrics = stage1
    init = metrics["best_checkpoint"]
    ray_config = tiny_config(tmp_path / "ray", num_workers=1, cpus_per_worker=1.0, epochs_stage2=2)
    local_config = tiny_config(tmp_path / "local", num_workers=1, epochs_stage2=2, runner="local")
    ray_model, on_ray = train_stage(ray_config, FINETUNE, "finetune", init_checkpoint=init)
    local_model, local = train_stage(local_config, FINETUNE, "finetune", init_checkpoint=init, run_dir=tmp_path / "run")
    keys = ("train_loss", METRIC, "valid_recall@1", "valid_n")
    np.testing.assert_allclose([[h[k] for k in keys] for h in local["history"]],
                               [[h[k] for k in keys] for h in on_ray["history"]], atol=1e-6)
    assert local["best_epoch"] == on_ray["best_epoch"]
    np.testing.assert_allclose(local_model.score(VALID), ray_model.score(VALID), atol=1e-5)
    assert (tmp_path / "run" / "checkpoints" / "stage2" / "model.json").exists()
    with pytest.raises(ConfigError, match="runner"):
        train_stage(tiny_config(tmp_path, runner="local", num_workers=2), FINETUNE, "finetune")


@pytest.mark.slow
def test_ray_rerun_resumes_after_the_last_epoch(ray_local, tmp_path) -> None:
    """A rerun of the same Ray run (same name and storage) continues from its latest checkpoint."""
    first = tiny_config(tmp_path, num_workers=1, cpus_per_worker=1.0, alpha=0.0)
    _, one = train_stage(first, FINETUNE, "finetune", name="baseline")  # alpha = 0, no stage 1: the baseline
    assert [h["epoch"] for h in one["history"]] == [1]
    longer = tiny_config(tmp_path, num_workers=1, cpus_per_worker=1.0, alpha=0.0, epochs_stage2=2)
    _, two = train_stage(longer, FINETUNE, "finetune", name="baseline")
    assert [h["epoch"] for h in two["history"]] == [2]  # epoch 1 came from the checkpoint
    saved = {p.name for p in Path(two["run_path"]).iterdir() if p.name.startswith("epoch_")}
    assert saved == {"epoch_001", "epoch_002"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_deepspeed_zero2(ray_local, tmp_path) -> None:
    """DeepSpeed ZeRO-2 on CPU under TorchTrainer (2 workers, gloo); needs `pip install deepspeed` (CPU)."""
    pytest.importorskip("deepspeed")
    config = tiny_config(tmp_path, strategy="deepspeed", epochs_stage1=2)
    params = {"model_name_or_config": TINY_BERT}
    model, metrics = train_stage(config, PRETRAIN, "pretrain", name="zero2", backbone_params=params)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    shards = {p.name for p in (Path(metrics["run_path"]) / "epoch_002" / "deepspeed" / "state").iterdir()}
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= shards
    assert model.score(VALID).shape == (4, len(CATALOG))
    # Resuming restores every rank's ZeRO optimizer shard (engine.load_checkpoint) and runs epoch 3 only.
    longer = tiny_config(tmp_path, strategy="deepspeed", epochs_stage1=3)
    _, resumed = train_stage(longer, PRETRAIN, "pretrain", name="zero2", backbone_params=params)
    assert [h["epoch"] for h in resumed["history"]] == [3]


def test_frozen_encoder_vectors_are_cached_and_equal_the_encoder_output() -> None:
    """trainable_layers=0: tokenize hands the module cached eval-mode vectors; the logits are the same as
    from tokens, and training moves the head only."""
    model = MiniLMRecommender(TINY_BERT, max_length=16, trainable_layers=0, epochs=2, learning_rate=1e-2, batch_size=4)
    model.fit(TRAIN, CATALOG)
    inputs = model.tokenize(VALID)
    assert set(inputs) == {"context_vectors"} and inputs["context_vectors"].shape == (4, 32)
    model.module.eval()
    tokens = model._tokens([render_context(s) for s in VALID])
    with torch.no_grad():
        torch.testing.assert_close(model.module(**inputs), model.module(**tokens))
    cached = len(model._vectors)
    model.score(VALID + TRAIN[:2])
    assert len(model._vectors) == cached  # nothing encoded twice
    fresh = MiniLMRecommender(TINY_BERT, max_length=16, trainable_layers=0)
    fresh.initialise(CATALOG)
    for name, param in fresh.module.encoder.named_parameters():
        torch.testing.assert_close(param, dict(model.module.encoder.named_parameters())[name])
    assert not torch.equal(fresh.module.item_matrix, model.module.item_matrix)


def test_frozen_vectors_are_shared_through_the_disk_cache(tmp_path, monkeypatch) -> None:
    """A second process (here: a second model with the same weights) reads the vectors another one encoded;
    different weights never hit them."""
    monkeypatch.setenv("CRS_CACHE_DIR", str(tmp_path))
    first = MiniLMRecommender(TINY_BERT, max_length=16, trainable_layers=0)
    first.initialise(CATALOG)
    expected = first.tokenize(VALID)["context_vectors"]

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded although the vectors were cached")

    with monkeypatch.context() as items_cached:  # the initial item matrix too
        items_cached.setattr(MiniLMRecommender, "_encode_items", no_encoding)
        second = MiniLMRecommender(TINY_BERT, max_length=16, trainable_layers=0)
        second.initialise(CATALOG)
    assert torch.equal(second.module.item_matrix, first.module.item_matrix)
    monkeypatch.setattr(second.module, "embed", no_encoding)
    torch.testing.assert_close(second.tokenize(VALID)["context_vectors"], expected)
    other = MiniLMRecommender(TINY_BERT, max_length=16, trainable_layers=0, seed=7)  # other random weights
    other.initialise(CATALOG)
    assert other._encoder_identity() != first._encoder_identity()
    assert not torch.allclose(other.tokenize(VALID)["context_vectors"], expected)
