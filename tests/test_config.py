"""Tests of the typed run configuration (ilrec.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ilrec.config import (
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    ObjectiveConfig,
    TrainConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    save_config,
)

REPO = Path(__file__).resolve().parents[1]


def test_defaults() -> None:
    config = load_config()
    assert config == Config()
    assert config.data == DataConfig()
    assert (config.data.format, config.data.max_history, config.data.paraphrases) == (
        "sequence",
        20,
        8,
    )
    assert (config.model.kind, config.model.path, config.model.lora_r) == ("scratch", None, 8)
    assert config.objective.name == "ce"
    assert (config.objective.alpha, config.objective.beta, config.objective.k) == (0.8, 0.1, 1)
    assert config.objective.layers is None
    assert (config.train.lr, config.train.batch_size, config.train.epochs) == (1e-3, 64, 6.0)
    assert (config.eval.beams, config.eval.ks) == (20, [5, 10])


def test_demo_config_loads() -> None:
    config = load_config(REPO / "configs" / "demo.yaml")
    assert config.data.path == "data/synthetic/Synthetic"
    assert config.train.epochs == 8.0
    assert isinstance(config.train.epochs, float)
    assert (config.train.batch_size, config.train.lr) == (32, 0.002)


def test_yaml_and_dotted_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(
        "data:\n  format: prompt\n  max_history: 10\n"
        "model:\n  kind: hf\n  path: /models/qwen\n"
        "train:\n  lr: 0.01\n  batch_size: 8\n"
    )
    config = load_config(
        path,
        [
            "train.lr=0.001",
            "objective.layers=[1,2]",
            "objective.name=ilrec",
            "model.kind=scratch",
            "model.path=null",
            "eval.ks=[1, 5]",
            "train.output_dir=runs/a=b",
        ],
    )
    assert config.data.format == "prompt"
    assert config.data.max_history == 10
    assert config.train.lr == 0.001
    assert config.train.batch_size == 8  # from the YAML file
    assert config.objective.layers == [1, 2]
    assert config.objective.name == "ilrec"
    assert config.model.path is None
    assert config.model.kind == "scratch"
    assert config.eval.ks == [1, 5]
    assert config.train.output_dir == "runs/a=b"  # only the first "=" splits
    assert load_config(overrides=["model.path="]).model.path is None


def test_exponent_floats_are_floats() -> None:
    # PyYAML (YAML 1.1) reads "1e-4" as a string; float fields accept it all the same
    config = load_config(overrides=["train.lr=1e-4", "objective.beta=5E-1"])
    assert config.train.lr == 0.0001
    assert config.objective.beta == 0.5
    with pytest.raises(ConfigError, match=r"train\.lr: expected float, got '1e'"):
        load_config(overrides=["train.lr=1e"])


def test_int_widens_to_float() -> None:
    config = load_config(overrides=["train.lr=1", "train.epochs=3", "objective.alpha=0"])
    assert config.train.lr == 1.0 and type(config.train.lr) is float
    assert config.train.epochs == 3.0 and type(config.train.epochs) is float
    assert type(config.objective.alpha) is float


def test_unknown_key() -> None:
    with pytest.raises(ConfigError, match=r"^unknown key train\.lrr \(valid: \[") as info:
        load_config(overrides=["train.lrr=0.1"])
    assert "'lr'" in str(info.value)
    with pytest.raises(
        ConfigError, match=r"^unknown key optimizer \(valid: \['align', 'data', 'eval'"
    ):
        load_config(overrides=["optimizer.name=adam"])


def test_unknown_key_in_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("objective:\n  betta: 0.2\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: unknown key objective.betta (valid: ")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=abc", "train.batch_size: expected int, got 'abc'"),
        ("train.batch_size=2.5", "train.batch_size: expected int, got 2.5"),
        ("train.seed=true", "train.seed: expected int, got True"),
        ("train.lr=[1]", "train.lr: expected float, got [1]"),
        ("train.lr=abc", "train.lr: expected float, got 'abc'"),
        ("data.path=[a]", "data.path: expected str, got ['a']"),
        ("model.lora=yes please", "model.lora: expected bool, got 'yes please'"),
        ("eval.ks=5", "eval.ks: expected a list of int, got 5"),
        ("eval.ks=[5, x]", "eval.ks[1]: expected int, got 'x'"),
        ("objective.layers=[1, a]", "objective.layers: expected list[int] | None, got [1, 'a']"),
        ("train=3", "train: expected a mapping, got 3"),
    ],
)
def test_wrong_type(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "data.format=foo",
            "data.format must be one of ['sequence', 'prompt', 'title'], got 'foo'",
        ),
        ("data.identifier=id", "data.identifier must be one of ['semantic', 'title'], got 'id'"),
        ("model.kind=gpt", "model.kind must be one of ['scratch', 'hf', 'smollm2'], got 'gpt'"),
        ("model.dtype=fp16", "model.dtype must be one of ['float32', 'bfloat16'], got 'fp16'"),
        ("eval.mode=greedy", "eval.mode must be one of ['beam', 'exact'], got 'greedy'"),
        (
            "objective.ensemble=median",
            "objective.ensemble must be one of ['mean', 'variance', 'entropy', 'max_prob'], "
            "got 'median'",
        ),
        ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
        ("train.lr=0", "train.lr must be > 0, got 0.0"),
        ("objective.k=-1", "objective.k must be >= 0, got -1"),
        ("data.max_history=0", "data.max_history must be >= 1, got 0"),
        ("eval.beams=5", "eval.beams=5 is below the largest cutoff 10"),
        ("model.kind=hf", "model.kind=hf needs model.path=<local Hugging Face folder>"),
        ("data.format=title", "data.identifier=title goes with data.format=title (and only it)"),
    ],
)
def test_invalid_values(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert str(info.value) == message


def test_title_identifier_goes_with_title_format() -> None:
    config = load_config(overrides=["data.identifier=title", "data.format=title"])
    assert (config.data.identifier, config.data.format) == ("title", "title")


def test_mu_crr_needs_cf_run() -> None:
    with pytest.raises(ConfigError, match=r"objective\.mu_crr > 0 needs .*objective\.cf_run"):
        load_config(overrides=["objective.mu_crr=0.1"])
    config = load_config(overrides=["objective.mu_crr=0.1", "objective.cf_run=runs/sasrec"])
    assert (config.objective.mu_crr, config.objective.cf_run) == (0.1, "runs/sasrec")


def test_bad_overrides_and_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="override 'train.lr' is not of the form key=value"):
        load_config(overrides=["train.lr"])
    with pytest.raises(ConfigError, match="override 'train.lr': train is not a section"):
        apply_overrides({"train": 3}, ["train.lr=0.1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1,\n")
    with pytest.raises(ConfigError, match=f"^{bad}: malformed YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- train\n- eval\n")
    with pytest.raises(ConfigError, match=f"^{listing}: expected a mapping of sections$"):
        load_config(listing)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()


def test_save_config_round_trip(tmp_path: Path) -> None:
    config = load_config(
        overrides=[
            "data.format=prompt",
            "model.kind=hf",
            "model.path=/models/x",
            "model.lora=true",
            "model.lora_targets=[q_proj, v_proj]",
            "objective.name=ilrec",
            "objective.layers=[3, 5]",
            "objective.mu_crr=0.05",
            "objective.cf_run=runs/cf",
            "objective.max_negatives=4",
            "train.lr=2.5e-05",
            "train.epochs=1.5",
            "eval.ks=[1, 5, 10]",
        ]
    )
    path = tmp_path / "config.yaml"
    save_config(config, path)
    loaded = load_config(path)
    assert loaded == config
    assert config_to_dict(loaded)["objective"]["layers"] == [3, 5]
    assert loaded.train.lr == 2.5e-05
    assert loaded.model.lora_targets == ["q_proj", "v_proj"]
    assert loaded.objective.max_negatives == 4
    assert loaded.model.path == "/models/x"
    assert isinstance(loaded, Config)
    assert isinstance(loaded.train, TrainConfig)
    assert isinstance(loaded.model, ModelConfig)
    assert isinstance(loaded.objective, ObjectiveConfig)
    assert isinstance(loaded.eval, EvalConfig)

    defaults = tmp_path / "defaults.yaml"
    save_config(Config(), defaults)
    assert load_config(defaults) == Config()


def test_runs_saved_with_sign_aware_still_load(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("objective:\n  name: ilrec\n  sign_aware: true\n")
    assert load_config(path).objective.penalty == "sign_aware"
    path.write_text("objective:\n  name: ilrec\n  sign_aware: false\n")
    assert load_config(path).objective.penalty == "scale"
    path.write_text("objective:\n  name: ilrec\n  sign_aware: true\n  penalty: sign_aware\n")
    assert load_config(path).objective.penalty == "sign_aware"
    assert "sign_aware" not in config_to_dict(load_config(path))["objective"]
    path.write_text("objective:\n  name: ilrec\n  sign_aware: true\n  penalty: scale\n")
    with pytest.raises(ConfigError, match="contradicts objective.penalty=scale"):
        load_config(path)
    with pytest.raises(ConfigError, match="objective.sign_aware must be true or false"):
        load_config(None, ["objective.sign_aware=maybe"])


def test_runs_saved_before_item_4_options_were_removed(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("objective:\n  name: ilrec\n  weights: paper\n  penalty: scale\n")
    assert load_config(path).objective == ObjectiveConfig(name="ilrec")
    for option in ("weights: hardness", "penalty: additive"):
        path.write_text(f"objective:\n  name: ilrec\n  {option}\n")
        with pytest.raises(
            ConfigError, match=rf"config.yaml: objective.{option.replace(': ', '=')} .* removed"
        ):
            load_config(path)
    with pytest.raises(ConfigError, match="unknown key objective.weights"):
        load_config(None, ["objective.weights=other"])


@pytest.mark.parametrize("key", ["train.patience", "train.save_every"])
def test_negative_step_counts_are_rejected(key) -> None:
    with pytest.raises(ConfigError, match=rf"{key} must be >= 0"):
        load_config(overrides=[f"{key}=-1"])
