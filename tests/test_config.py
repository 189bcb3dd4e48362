"""Typed configuration: layering, overrides, and refusals that name the key and the file."""

from __future__ import annotations

import pytest
import yaml

from crs_core.config import Config, load_config, parse_override, save_config
from crs_core.errors import ConfigError


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
        ("dataset=movielens", "not one of inspired, redial"),
        ("evaluation.ks=[0]", "evaluation.ks"),
        ("seed", "expected key=value"),
        ("ray=3", "expected a mapping"),
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
    with pytest.raises(ConfigError, match="CRS_DATA_DIR"):
        load_config().resolved_data_dir()
