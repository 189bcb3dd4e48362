"""The MiniLM ID-head, BARCOR (BART) and Llama (LoRA) backbones: the Recommender contract (tiny random configs
for BART and Llama), the ID head's text-free seeded start, what
their rows look like, which parameters train, what a checkpoint holds, the real SmolLM2 weights, and
both Ray Train stages (DDP with 2 workers, then stage 2 with the frozen stage-1 reference)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from genre_films import GENRES, films
from model_mixin import RecommenderTestMixin
from safetensors import safe_open

from crs_core.config import TrainConfig
from crs_core.models import Recommender, load_model
from crs_core.models.barcor import BarcorRecommender
from crs_core.models.hf_backbone import MODULE_DIR
from crs_core.models.llama import LORA_ALPHA, LORA_R, LlamaRecommender
from crs_core.models.minilm import MiniLMIDRecommender, MiniLMRecommender
from crs_core.schema import Catalog, Item, Sample
from crs_core.training.data import TrainingData, iter_batches, labelled
from crs_core.training.loop import initial_model, train_stage
from crs_core.training.steps import (
    METRIC,
    build_optimizer,
    frozen_reference,
    stage_loss,
)

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

TINY_BART = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
             "decoder_attention_heads": 2, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}
TINY_LLAMA = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "head_dim": 16}

ITEMS = films(6)
CATALOG = Catalog(ITEMS)


def _sample(sid: str, k: int) -> Sample:
    genre = k % 3
    return Sample(sid, f"d{sid}", 1, (f"I love {GENRES[genre]} films", "Any favourite actor?", "Not really"),
                  ("seeker", "recommender", "seeker"), (), targets=(ITEMS[(genre + 3 * k) % 6].item_id,))


TRAIN = [_sample(f"t{k}", k) for k in range(8)]
VALID = [_sample(f"v{k}", k + 8) for k in range(4)]


# --- the Recommender contract -------------------------------------------------------------------------


class TestBarcorRecommender(RecommenderTestMixin):
    # The toy contexts say "I liked movie 3" in both genres, so the text cannot separate them and a model
    # mostly learns the popularity skew: Popularity itself scores 0.70 (MiniLM 0.87 with a pretrained
    # encoder). This BART is random, tiny and trained from scratch for 32 steps (hence the large learning
    # rate): 0.70-0.77 over 8 seeds, so the floor sits just under the popularity level. Random scores
    # give about 0.5, constant ones 0.
    min_quality = 0.65

    def make_model(self) -> Recommender:
        return BarcorRecommender(TINY_BART, max_length=24, epochs=8, learning_rate=0.1, batch_size=10)


class TestLlamaRecommender(RecommenderTestMixin):
    # As for BARCOR (same toy contexts); only the LoRA adapters and the head train: 0.77-0.80 over seeds.
    min_quality = 0.7

    def make_model(self) -> Recommender:
        return LlamaRecommender(TINY_LLAMA, max_length=24, epochs=5, learning_rate=1e-2, batch_size=40)


class TestMiniLMIDRecommender(RecommenderTestMixin):
    # The frozen MiniLM encoder with a random item head: as for BARCOR the toy text cannot separate the
    # genres, so the head mostly learns the popularity skew (Popularity: 0.70). From random item vectors it
    # needs more steps than the text head (batches of 10, not 40): 0.80-0.97 over seeds 0-5 and 42.
    min_quality = 0.75

    def make_model(self) -> Recommender:
        return MiniLMIDRecommender(max_length=24, trainable_layers=0, epochs=10, learning_rate=5e-2, batch_size=10)


def test_minilm_id_head_ignores_item_text_and_is_seeded() -> None:
    """The ID head starts from the seed alone: other descriptions give the same seeded unit rows, another seed
    other rows; the text head of the same encoder does read the descriptions."""
    renamed = Catalog([Item(item.item_id, f"Other {i}", f"a documentary about topic {i}")
                       for i, item in enumerate(ITEMS)])

    def head(model_class, catalog: Catalog, seed: int = 42) -> torch.Tensor:
        model = model_class(max_length=32, trainable_layers=0, seed=seed)
        model.initialise(catalog)
        return model.module.item_matrix.detach().clone()

    first = head(MiniLMIDRecommender, CATALOG)
    torch.testing.assert_close(first, head(MiniLMIDRecommender, renamed), rtol=0, atol=0)
    torch.testing.assert_close(first.norm(dim=1), torch.ones(len(ITEMS)))
    assert not torch.allclose(first, head(MiniLMIDRecommender, CATALOG, seed=7))
    assert not torch.allclose(head(MiniLMRecommender, CATALOG), head(MiniLMRecommender, renamed))


# --- rows ---------------------------------------------------------------------------------------------


def test_barcor_rows_keep_the_newest_tokens_between_bos_and_one_eos() -> None:
    """"User: one two three\\nSystem: four five" is 10 MiniLM word pieces (user : one two three system :
    four five); max_length 8 leaves 6 after [CLS] (bos) and [SEP] (eos), so the oldest 4 are cut."""
    model = BarcorRecommender(TINY_BART, max_length=8)
    model.initialise(CATALOG)
    sample = Sample("s", "d", 1, ("one two three", "four five"), ("seeker", "recommender"), ())
    smuggled = Sample("x", "d", 1, ("a [SEP] b",), ("seeker",), ())
    batch = model.tokenize([sample, smuggled])
    assert model.tokenizer.decode(batch["input_ids"][0]) == "[CLS] two three system : four five [SEP]"
    assert batch["attention_mask"][0].tolist() == [1] * 8
    # Dialogue text never adds an EOS: BART's head needs exactly one per row.
    assert (batch["input_ids"] == model.tokenizer.sep_token_id).sum(dim=1).tolist() == [1, 1]
    assert model.tokenizer.decode(batch["input_ids"][1]) == "[CLS] : a [ sep ] b [SEP]"


def test_llama_rows_end_with_the_system_tag_and_empty_dialogues_still_have_one() -> None:
    model = LlamaRecommender(TINY_LLAMA, max_length=16)
    model.initialise(CATALOG)
    batch = model.tokenize([TRAIN[0], Sample("e", "d", 1, (), (), ())])
    tail = model.tokenizer("\nSystem:", add_special_tokens=False)["input_ids"]
    for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
        assert ids[sum(mask) - len(tail):sum(mask)] == tail
    assert sum(batch["attention_mask"][0].tolist()) == 16  # the long dialogue fills the row (cut on the left)
    assert model.tokenizer.decode(batch["input_ids"][0]).endswith("Not really\nSystem:")
    assert sum(batch["attention_mask"][1].tolist()) == len(tail)


@pytest.mark.parametrize("cls, config", [(BarcorRecommender, TINY_BART), (LlamaRecommender, TINY_LLAMA)])
def test_padding_does_not_change_scores(cls, config) -> None:
    """Same weights, rows padded to 24 or to 48: the head pools a real token and padding is masked."""
    short, long = cls(config, max_length=24), cls(config, max_length=48)
    short.initialise(CATALOG)
    long.initialise(CATALOG)
    one = Sample("s", "d", 1, ("a heist please",), ("seeker",), ())
    np.testing.assert_allclose(short.score([one]), long.score([one]), atol=1e-5)


def test_barcor_offline_default_is_a_small_bart_on_the_minilm_vocabulary() -> None:
    model = BarcorRecommender()
    model.initialise(CATALOG)
    config = model.module.model.config
    assert (config.d_model, config.encoder_layers, config.vocab_size, config.num_labels) == (256, 2, 30522, 6)
    # [CLS] = 101, [SEP] = 102, [PAD] = 0 in the MiniLM (BERT uncased) vocabulary.
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id, config.decoder_start_token_id) == (
        101, 102, 0, 102)
    assert np.isfinite(model.score(VALID)).all()


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="trainable_layers"):
        LlamaRecommender(TINY_LLAMA, trainable_layers=0)
    with pytest.raises(ValueError, match="vocab_size"):
        BarcorRecommender({**TINY_BART, "vocab_size": 1000}).initialise(CATALOG)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        BarcorRecommender({**TINY_BART, "max_position_embeddings": 16}, max_length=24).initialise(CATALOG)


# --- what trains --------------------------------------------------------------------------------------


def backward_on_a_batch(model) -> tuple[float, dict[str, torch.nn.Parameter]]:
    """One CE forward/backward on 2 labelled contexts, as the training loop does it."""
    samples, columns = labelled(TRAIN[:2], CATALOG)
    batch = next(iter_batches(model.tokenize, samples, columns, np.arange(2), 2))
    model.module.train()
    loss = stage_loss("pretrain")(model.module(**batch.inputs), batch)
    loss.backward()
    return loss.detach().item(), dict(model.module.named_parameters())


def test_barcor_top_layers_and_head_train_and_nothing_else() -> None:
    two_layers = {**TINY_BART, "encoder_layers": 2, "decoder_layers": 2}
    model = BarcorRecommender(two_layers, max_length=24, trainable_layers=1)
    model.initialise(CATALOG)
    loss, params = backward_on_a_batch(model)
    assert np.isfinite(loss)
    trained = {k for k, p in params.items() if p.requires_grad}
    assert trained and all(k.startswith(("model.classification_head.", "model.model.encoder.layers.1.",
                                         "model.model.decoder.layers.1.")) for k in trained)
    assert any(".decoder.layers.1." in k for k in trained) and any(".encoder.layers.1." in k for k in trained)
    # DDP fails on a parameter that requires grad but gets none: every trained one gets a gradient.
    assert all(params[k].grad is not None and params[k].grad.abs().sum() > 0 for k in trained)
    assert all(p.grad is None for k, p in params.items() if k not in trained)
    full = BarcorRecommender(TINY_BART, max_length=24)
    full.initialise(CATALOG)
    _, params = backward_on_a_batch(full)
    assert all(p.requires_grad and p.grad is not None for p in params.values())


def test_llama_trains_lora_and_head_only() -> None:
    model = LlamaRecommender(TINY_LLAMA, max_length=24)
    model.initialise(CATALOG)
    with torch.no_grad():  # B starts at 0, which zeroes A's gradient: give B a value to see A's too
        for name, p in model.module.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    loss, params = backward_on_a_batch(model)
    assert np.isfinite(loss)
    trained = {k for k, p in params.items() if p.requires_grad}
    # Per layer q_proj (32 -> 32) and v_proj (32 -> 16, one KV head of 16): A is r x in, B is out x r.
    lora = 2 * LORA_R * ((32 + 32) + (32 + 16))
    head = 32 * len(CATALOG)
    assert sum(params[k].numel() for k in trained) == lora + head
    assert all("lora_" in k or "modules_to_save" in k for k in trained)
    assert {k.split(".")[-2] for k in trained if "lora_" in k} == {"default"}
    assert {k.split(".")[-4] for k in trained if "lora_" in k} == {"q_proj", "v_proj"}
    assert all(params[k].grad is not None and params[k].grad.abs().sum() > 0 for k in trained)
    assert all(p.grad is None for k, p in params.items() if k not in trained)


def test_llama_checkpoint_holds_the_adapter_and_head_not_the_base(tmp_path: Path) -> None:
    model = LlamaRecommender(TINY_LLAMA, max_length=24, epochs=1, learning_rate=1e-2, batch_size=4).fit(TRAIN, CATALOG)
    model.save(tmp_path / "m")
    folder = tmp_path / "m" / MODULE_DIR
    assert not (folder / "model.safetensors").exists()
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys and all("lora_" in k or ".score." in k for k in keys)
    adapter = json.loads((folder / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], adapter["lora_dropout"]) == (LORA_R, LORA_ALPHA, 0.01)
    loaded = load_model(tmp_path / "m", catalog=CATALOG)
    np.testing.assert_array_equal(loaded.score(VALID), model.score(VALID))
    assert {k for k, p in loaded.module.named_parameters() if p.requires_grad} == {
        k for k, p in model.module.named_parameters() if p.requires_grad}


def test_llama_smollm2_real_weights_forward_backward() -> None:
    """The offline default: SmolLM2-135M (30 layers, hidden 576, q 576 -> 576, v 576 -> 192) with LoRA."""
    model = LlamaRecommender(max_length=32)
    model.initialise(CATALOG)
    loss, params = backward_on_a_batch(model)
    assert np.isfinite(loss)
    trained = {k for k, p in params.items() if p.requires_grad}
    lora = 30 * LORA_R * ((576 + 576) + (576 + 192))
    assert sum(params[k].numel() for k in trained) == lora + 576 * len(CATALOG)
    assert all(params[k].grad is not None for k in trained)
    assert all(p.grad is None for k, p in params.items() if k not in trained)
    assert params["model.base_model.model.model.embed_tokens.weight"].shape == (49152, 576)


# --- Ray Train ----------------------------------------------------------------------------------------

PRETRAIN = TrainingData(CATALOG, TRAIN, VALID)


def ray_config(tmp_path: Path, **changes) -> TrainConfig:
    return TrainConfig(**{"backbone": "llama", "epochs_stage1": 1, "epochs_stage2": 1, "learning_rate": 1e-2,
                          "batch_size": 2, "max_length": 24, "alpha": 0.5, "num_workers": 2, "cpus_per_worker": 0.5,
                          "storage_path": str(tmp_path / "ray_results"), **changes})


def test_llama_stage2_reference_is_frozen_and_separate(tmp_path: Path) -> None:
    """What a stage-2 worker builds from a stage-1 checkpoint: a trainable model and a frozen reference
    that shares no storage with it and does not move when the model takes a step."""
    stage1 = LlamaRecommender(TINY_LLAMA, max_length=24, epochs=1, learning_rate=1e-2, batch_size=4)
    stage1.fit(TRAIN, CATALOG).save(tmp_path / "model")  # the layout of a Ray checkpoint folder
    model, _ = initial_model({}, CATALOG, resume=None, init=tmp_path)
    reference = frozen_reference(tmp_path / "model")
    assert not any(p.requires_grad for p in reference.parameters()) and not reference.training
    assert not {p.data_ptr() for p in model.module.parameters()} & {p.data_ptr() for p in reference.parameters()}
    before = {k: v.detach().clone() for k, v in reference.named_parameters()}
    trained = {k: v.detach().clone() for k, v in model.module.named_parameters() if v.requires_grad}
    optimizer = build_optimizer(model.module, 1e-2)
    samples, columns = labelled(TRAIN, CATALOG)
    batch = next(iter_batches(model.tokenize, samples, columns, np.arange(4), 4))
    model.module.train()
    stage_loss("finetune", alpha=0.5, reference=reference)(model.module(**batch.inputs), batch).backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in reference.named_parameters())
    changed = {k for k, v in model.module.named_parameters() if k in trained and not torch.equal(trained[k], v)}
    assert any("lora_A" in k for k in changed) and any("modules_to_save" in k for k in changed)


@pytest.mark.slow
def test_ray_llama_stage1_on_two_ddp_workers_then_stage2_with_alpha(ray_local, tmp_path) -> None:
    """Stage 1 on 2 DDP workers, 2 steps each (the peft model under prepare_model; DDP fails at the second
    step if a trainable parameter got no gradient in the first), then stage 2 with alpha > 0 from its best
    checkpoint (the frozen-reference path)."""
    model, first = train_stage(ray_config(tmp_path), PRETRAIN, "pretrain", run_dir=tmp_path,
                               backbone_params={"model_name_or_config": TINY_LLAMA})
    assert isinstance(model, LlamaRecommender) and model.params()["model_name_or_config"] == TINY_LLAMA
    assert [h["epoch"] for h in first["history"]] == [1] and np.isfinite(first["history"][0]["train_loss"])
    assert first["best"]["valid_n"] == 4
    config = ray_config(tmp_path, num_workers=1, cpus_per_worker=1.0)
    second, run = train_stage(config, PRETRAIN, "finetune", init_checkpoint=first["best_checkpoint"],
                              backbone_params={"model_name_or_config": TINY_LLAMA})
    assert run["stage"] == "finetune" and run["run_name"].startswith("stage2-")
    assert np.isfinite(run["history"][0]["train_loss"]) and METRIC in run["best"]
    assert second.score(VALID).shape == (4, len(CATALOG))
