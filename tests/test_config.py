"""Typed configuration: layering, overrides, and refusals that name the key and the file."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from crs_core.config import Config, SimulateConfig, ZeroShotConfig, load_config, parse_override, save_config
from crs_core.errors import ConfigError
from crs_core.titles import FUZZY_CUTOFF
from rayjobs.common import load_layers, resolve_config
from rayjobs.pipeline import build_parser


def test_layering_defaults_then_base_then_files_then_overrides(tmp_path):
    first = tmp_path / "a.yaml"
    second = tmp_path / "b.yaml"
    first.write_text("dataset: redial\nbaselines:\n  ease_l2: 100\nseed: 1\n")
    second.write_text("seed: 2\n")
    config = load_config([first, second], ["seed=3", "evaluation.ks=[1, 10]"], base={"run_id": "x"})
    assert (config.dataset, config.seed, config.run_id) == ("redial", 3, "x")
    assert config.baselines.ease_l2 == 100.0 and isinstance(config.baselines.ease_l2, float)
    assert config.evaluation.ks == [1, 10]
    assert config.encoder.pool.actors == Config().encoder.pool.actors


@pytest.mark.parametrize(
    "override, message",
    [
        ("nope=1", "unknown key 'nope'"),
        ("baselines.l2=1", "unknown key 'baselines.l2'"),
        ("seed=abc", "seed: expected int"),
        ("ray.num_cpus=true", "ray.num_cpus: expected int"),
        ("baselines.ease_l2=-1", "must be > 0"),
        ("synthesize.threshold=5", "synthesize.threshold"),
        ("dataset=Movie Lens", "not a valid name"),
        ("data.format=csv", "data.format: 'csv' is not one of inspired, redial, jsonl"),
        ("evaluation.ks=[0]", "evaluation.ks"),
        ("seed", "expected key=value"),
        ("ray=3", "expected a mapping"),
        ("zero_shot.titles=0", "zero_shot.titles: 0 must be >= 1"),
        ("zero_shot.fuzzy_cutoff=1.5", "zero_shot.fuzzy_cutoff: 1.5 must be in (0, 1]"),
        ("zero_shot.temperature=-1", "zero_shot.temperature: -1.0 must be >= 0"),
        ("zero_shot.enabled=maybe", "zero_shot.enabled: expected bool"),
        ("zero_shot.modle=x", "unknown key 'zero_shot.modle'"),
        ("simulate.turns=-1", "simulate.turns: -1 must be >= 0"),
        ("simulate.dialogues=0", "simulate.dialogues: 0 must be >= 1"),
        ("simulate.concurrency=0", "simulate.concurrency: 0 must be >= 1"),
        ("simulate.leak_retries=-2", "simulate.leak_retries: -2 must be >= 0"),
        ("simulate.turns=three", "simulate.turns: expected int"),
        ("zero_shot.enabled=true", "zero_shot.enabled: true needs an LLM endpoint: set zero_shot.base_url"),
        ("simulate.enabled=true", "simulate.enabled: true needs an LLM endpoint: set simulate.base_url"),
        ("train.backbone=resnet", "train.backbone: 'resnet' is not a trainable backbone (minilm, minilm-id"),
        ("train.backbone=ease", "train.backbone: 'ease' is not a trainable backbone"),
        ("train.max_length=4", "train.max_length: 4 must be >= 8"),
        ("train.strategy=fsdp", "train.strategy: 'fsdp' is not one of ddp, deepspeed"),
        ("train.epochs_stage1=0", "train.epochs_stage1: 0 must be >= 1"),
        ("student.kind=llm", "student.model: student.kind 'llm' needs an HF causal LM"),
        ("student.pool.actors=0", "student.pool: actors (0) and batch_size (50) must be >= 1"),
        ("encoder.pool.batch_size=0", "encoder.pool: actors (1) and batch_size (0) must be >= 1"),
    ],
)
def test_bad_overrides_are_refused_with_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert message in str(info.value)


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("teacher:\n  modle: gpt-4o\n")
    with pytest.raises(ConfigError) as info:
        load_config([path])
    assert str(path) in str(info.value) and "teacher.modle" in str(info.value)


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([bad])
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "missing.yaml"])


def test_saved_config_round_trips(tmp_path):
    config = load_config(overrides=["teacher.contexts=7", "data_dir=somewhere"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config([tmp_path / "config.yaml"])
    assert again == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["teacher"]["contexts"] == 7


def test_parse_override_nests_and_parses_yaml_values():
    assert parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    assert parse_override("x=null") == {"x": None}
    assert load_config(overrides=["student.learning_rate=1e-4"]).student.learning_rate == 1e-4


def test_data_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CRS_DATA_DIR", str(tmp_path))
    assert load_config().resolved_data_dir() == tmp_path
    monkeypatch.delenv("CRS_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no fetched data there either
    with pytest.raises(ConfigError, match="run `crs data fetch inspired`.*CRS_DATA_DIR"):
        load_config().resolved_data_dir()
    with pytest.raises(ConfigError, match="no data directory: set CRS_DATA_DIR"):  # own data: nothing to fetch
        load_config(overrides=["dataset=books"]).resolved_data_dir()


# ------------------------------------------------------------------- the LLM sections: zero_shot, simulate
def test_llm_sections_default_off_with_the_teachers_endpoint():
    config = load_config()
    assert config.zero_shot == ZeroShotConfig() and config.simulate == SimulateConfig()
    assert not config.zero_shot.enabled and not config.simulate.enabled
    assert (config.zero_shot.base_url, config.zero_shot.model, config.zero_shot.api_key_env) == (None, None, None)
    assert (config.zero_shot.prompt, config.zero_shot.titles, config.simulate.prompt, config.simulate.turns) == (
        "zero_shot_v1", 20, "seeker_v1", 3)
    assert config.zero_shot.fuzzy_cutoff == FUZZY_CUTOFF


def test_llm_sections_from_yaml_and_set(tmp_path):
    path = tmp_path / "llm.yaml"
    path.write_text("zero_shot:\n  enabled: true\n  base_url: http://127.0.0.1:8000/v1\n  titles: 10\n"
                    "simulate:\n  turns: 2\n  temperature: 1\n")
    config = load_config([path], ["simulate.turns=5", "zero_shot.model=qwen"])
    assert (config.zero_shot.enabled, config.zero_shot.titles, config.zero_shot.model) == (True, 10, "qwen")
    assert config.simulate.turns == 5 and config.simulate.temperature == 1.0
    teacher_endpoint = load_config(overrides=["simulate.enabled=true", "teacher.base_url=http://127.0.0.1:9/v1"])
    assert teacher_endpoint.simulate.enabled and teacher_endpoint.simulate.base_url is None


def test_enabled_without_endpoint_names_the_file_that_switched_it_on(tmp_path):
    path = tmp_path / "on.yaml"
    path.write_text("simulate:\n  enabled: true\n")
    with pytest.raises(ConfigError) as info:
        load_layers([path], [], {})
    assert str(info.value).startswith(f"{path}: simulate.enabled")


def test_saved_run_config_has_the_llm_sections_without_secrets(tmp_path):
    secret = "sk-test-SECRETVALUE-0123456789abcdef"
    args = build_parser().parse_args(["--runs-dir", str(tmp_path), "--set", "zero_shot.enabled=true", "--set",
                                      f"zero_shot.base_url=https://user:{secret}@llm.example.invalid/v1",
                                      "--set", "simulate.turns=4"])
    config = resolve_config(args)
    text = (config.run_dir() / "config.yaml").read_text()
    saved = yaml.safe_load(text)
    assert "SECRETVALUE" not in text and saved["zero_shot"]["base_url"] == "https://***@llm.example.invalid/v1"
    assert saved["zero_shot"]["enabled"] is True and saved["simulate"]["turns"] == 4
    assert set(saved["simulate"]) == {f.name for f in dataclasses.fields(SimulateConfig)}


@pytest.mark.parametrize("overrides, message", [
    (["train.backbone_params={n_prefix: 4}"], "train.backbone_params.n_prefix: minilm takes no such argument"),
    (["train.backbone=unicrs", "train.backbone_params={n_prefix: four}"],
     "train.backbone_params.n_prefix: expected int"),
    (["train.backbone=unicrs", "train.backbone_params.max_length=64"], "set train.max_length instead"),
    (["train.backbone_params=[1]"], "train.backbone_params: expected a mapping"),
    (["train.backbone=unicrs", "train.backbone_params.num_bases=0"],
     "train.backbone_params: unicrs refuses {'num_bases': 0}: need n_prefix >= 0, max_entities >= 1, num_bases >= 1"),
    (["train.backbone=llama", "train.trainable_layers=2"],
     "train.trainable_layers: llama trains LoRA adapters and the item head only, its encoder stays frozen"),
])
def test_backbone_params_are_checked_against_the_constructor_at_load(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(overrides=overrides)


def test_backbone_params_reach_the_backbone_and_layers_add_keys(tmp_path):
    from crs_core.stages.train import backbone_params

    layer = tmp_path / "unicrs.yaml"
    layer.write_text("train:\n  backbone: unicrs\n  backbone_params:\n    n_prefix: 4\n")
    config = load_config([layer], overrides=["train.backbone_params.num_bases=2", f"data_dir={tmp_path}"])
    assert config.train.backbone_params == {"n_prefix": 4, "num_bases": 2}
    assert backbone_params(config) == {"n_prefix": 4, "num_bases": 2}  # no kg/ folder: the catalog's graph
    (tmp_path / config.dataset / "kg").mkdir(parents=True)
    assert backbone_params(config)["kg_dir"] == str((tmp_path / config.dataset / "kg").resolve())


@pytest.mark.parametrize("actors, num_cpus, cluster_cpus, fits", [
    (2, 0.5, 2.0, True),  # the packaged profiles on a 2-CPU machine: one CPU left for the read step
    (1, 0.5, 1.0, False),  # measured: this waited 300 s without a row
    (2, 1.0, 2.0, False),
    (4, 1.0, 16.0, True),
])
def test_an_actor_pool_must_leave_a_cpu_for_the_read_step(actors, num_cpus, cluster_cpus, fits):
    from crs_core.config import ActorPoolConfig

    pool = ActorPoolConfig(actors=actors, num_cpus=num_cpus)
    if fits:
        pool.check_fits("encoder.pool", cluster_cpus)
    else:
        with pytest.raises(ConfigError, match=r"^encoder.pool: .* leaving less than the 1 CPU"):
            pool.check_fits("encoder.pool", cluster_cpus)
