"""Typed run configuration: dataclasses loaded from YAML with dotted CLI overrides.

``ilrec train -c configs/x.yaml objective.beta=0.1 train.epochs=3``. Unknown keys and values
of the wrong type are errors that name the key and the expected type.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_EXPONENT_FLOAT = re.compile(r"^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


@dataclass
class DataConfig:
    path: str = "data/synthetic"  # dataset folder (LC-Rec format)
    identifier: str = "semantic"  # semantic | title
    format: str = "sequence"  # sequence | prompt | title
    max_history: int = 20
    paraphrases: int = 8  # training draws one of the first N LC-Rec paraphrases per example
    # validation subsample for model selection (0 = all), drawn with train.seed: each seed
    # of a study selects on its own users
    valid_users: int = 500
    task: str = "full"  # full (rank the catalogue) | candidates (pick one of N, S-DPO/LLaRA)
    # candidate files' stem: <stem>.train.jsonl, <stem>.<protocol>.{valid,test}.jsonl
    # (None = <data.path>/<X>.candidates, where `ilrec prepare lastfm` writes them)
    candidates: str | None = None
    protocol: str = "rows"  # rows | last: which candidate evaluation files are read
    domain: str = "items"  # wording of the candidate prompt: items (generic) | music (S-DPO)

    def __post_init__(self) -> None:
        _choice("data.identifier", self.identifier, ("semantic", "title"))
        _choice("data.format", self.format, ("sequence", "prompt", "title"))
        if (self.identifier == "title") != (self.format == "title"):
            raise ConfigError("data.identifier=title goes with data.format=title (and only it)")
        _positive("data.max_history", self.max_history)
        _choice("data.task", self.task, ("full", "candidates"))
        _choice("data.protocol", self.protocol, ("rows", "last"))
        _choice("data.domain", self.domain, ("items", "music"))
        if self.task == "candidates" and self.format == "sequence":
            raise ConfigError(
                "data.task=candidates needs a text format that can list the candidates: "
                "data.format=prompt (semantic IDs) or data.format=title (with data.identifier=title)"
            )


@dataclass
class ModelConfig:
    kind: str = "scratch"  # scratch | hf | smollm2
    preset: str = "small"  # scratch presets: tiny | small | medium | deep | wide
    path: str | None = None  # local Hugging Face folder for kind=hf
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    )
    lora_train_embeddings: bool = True  # also train embed_tokens + lm_head fully (new tokens)
    dtype: str = "float32"  # float32 | bfloat16
    text_vocab_size: int = 2000  # BPE size for scratch models in prompt/title formats

    def __post_init__(self) -> None:
        _choice("model.kind", self.kind, ("scratch", "hf", "smollm2"))
        _choice("model.dtype", self.dtype, ("float32", "bfloat16"))
        if self.kind == "hf" and not self.path:
            raise ConfigError("model.kind=hf needs model.path=<local Hugging Face folder>")


@dataclass
class ObjectiveConfig:
    name: str = "ce"  # ce | ilrec (see ilrec.training.objectives.OBJECTIVES)
    alpha: float = 0.8
    beta: float = 0.1
    lambda_cpd: float = 0.01
    mu_crr: float = 0.0
    k: int = 1  # candidate layers directly below the last
    layers: list[int] | None = None  # explicit candidate layers (overrides k)
    ensemble: str = "mean"  # mean | variance | entropy | max_prob
    head: str = "shared"  # shared (final norm + LM head) | separate (trainable copies)
    negatives_from: str = "intermediate"  # intermediate | final
    max_negatives: int | None = None
    penalty: str = "scale"  # scale (Eq. 7: z*(1+bw)) | sign_aware (z+bw|z|)
    cpo: bool = True  # False: plain cross-entropy in place of CPO ("w/o CPO")
    cf_run: str | None = None  # trained CF run folder for the CRR reward
    layer_logs: bool = True  # log each candidate layer's cross-entropy (ce_layer_{l}, Fig. 2)

    def __post_init__(self) -> None:
        _choice("objective.ensemble", self.ensemble, ("mean", "variance", "entropy", "max_prob"))
        _choice("objective.head", self.head, ("shared", "separate"))
        _choice("objective.penalty", self.penalty, ("scale", "sign_aware"))
        _choice("objective.negatives_from", self.negatives_from, ("intermediate", "final"))
        if self.k < 0:
            raise ConfigError(f"objective.k must be >= 0, got {self.k}")
        if self.layers is not None:
            # 1..L-1 = hidden_states[l]; negatives count from the end like Python indexing of
            # hidden_states (-2 = layer L-1); -1 and 0 (final layer, embeddings) are not
            # intermediate layers. The model's depth is checked when the objective is built.
            if not self.layers:
                raise ConfigError(
                    "objective.layers must list at least one layer, or be null (use k)"
                )
            bad = [layer for layer in self.layers if layer in (0, -1)]
            if bad:
                raise ConfigError(
                    f"objective.layers: {bad[0]} is not an intermediate layer (use 1..L-1, or "
                    "-2..-L counting from the end: -2 is the layer just below the final one)"
                )
            if len(set(self.layers)) != len(self.layers):
                raise ConfigError(f"objective.layers has duplicates: {self.layers}")
        if self.max_negatives is not None and self.max_negatives < 0:
            raise ConfigError(f"objective.max_negatives must be >= 0, got {self.max_negatives}")
        if self.head == "separate" and self.lambda_cpd <= 0:
            raise ConfigError(
                "objective.head=separate: the separate heads are trained by CPD only, so it "
                "needs objective.lambda_cpd > 0"
            )
        if self.mu_crr > 0 and not self.cf_run:
            raise ConfigError("objective.mu_crr > 0 needs a reward provider: objective.cf_run=DIR")


@dataclass
class TrainConfig:
    output_dir: str = "runs/demo"
    epochs: float = 6.0
    batch_size: int = 64
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.02
    scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_every: int = 0  # steps between validations (0 = once per epoch)
    # steps between extra resumable checkpoints (0 = only with each validation): a long epoch
    # interrupted mid-way then loses at most this many steps, not the whole epoch
    save_every: int = 0
    # batches of examples of similar length instead of random ones: far less padding (3x fewer
    # tokens per epoch in the sequence format on Instruments, BENCHMARKS.md); see
    # ilrec.training.sampling
    group_by_length: bool = False
    save_total_limit: int = 3
    logging_steps: int = 10
    threads: int = (
        0  # torch threads per process (0 = all cores alone, 1 per process when distributed)
    )
    max_steps: int = -1
    patience: int = (
        0  # stop after this many validations without a better selection metric (0 = off)
    )
    # recompute each decoder layer's activations in the backward pass (large models): less
    # memory for ~one extra forward per step; under FSDP with the launch config's own
    # activation checkpointing on, FSDP does it instead (see training_arguments)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        _positive("train.batch_size", self.batch_size)
        if self.patience < 0:
            raise ConfigError(f"train.patience must be >= 0, got {self.patience}")
        if self.save_every < 0:
            raise ConfigError(f"train.save_every must be >= 0 (0 = off), got {self.save_every}")
        _positive("train.grad_accum", self.grad_accum)
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")


@dataclass
class EvalConfig:
    mode: str = "beam"  # beam | exact
    beams: int = 20
    batch_size: int = 16
    ks: list[int] = field(default_factory=lambda: [5, 10])

    def __post_init__(self) -> None:
        _choice("eval.mode", self.mode, ("beam", "exact"))
        if self.beams < max(self.ks):
            raise ConfigError(f"eval.beams={self.beams} is below the largest cutoff {max(self.ks)}")


ALIGN_METHODS = ("dpo", "sdpo", "rosepo", "sprec", "grpo", "sft")
NEGATIVE_SAMPLERS = ("random", "popular", "self_hard", "greedy", "candidates")
GRPO_REWARDS = ("rule", "ranking", "cf")


@dataclass
class AlignConfig:
    """A stage that starts from a finished run (``ilrec align --from RUN``): the DPO family,
    SPRec's self-play loop and GRPO. The starting run's model is the policy and, frozen, the
    reference."""

    # dpo | sdpo | rosepo | sprec | grpo | sft (continued SFT on the same prompts: the
    # control that separates a method's preference signal from its extra training)
    method: str = "dpo"
    from_run: str | None = None  # the finished run this stage starts from (set by --from)
    beta: float = 0.1  # DPO-family inverse temperature; GRPO: the KL coefficient
    examples: int = 0  # training prompts used (a seeded subsample; 0 = all)
    seed: int = 0  # negative sampling and subsampling
    # DPO family: rejected items per prompt, by sampler (random | popular | self_hard | greedy)
    negatives: dict[str, int] = field(default_factory=lambda: {"random": 1})
    label_smoothing: float = 0.0  # conservative DPO (dpo)
    oracle_run: str | None = None  # rosepo: a `train-cf` run scoring chosen vs rejected
    epsilon_max: float = 0.5  # rosepo: cap of the personalised smoothing
    # SPRec: iterations of [greedy negatives -> SFT epoch on positives -> DPO epoch]
    iterations: int = 3
    sft_lr: float | None = None  # lr of SPRec's SFT epochs (None = train.lr)
    # GRPO
    rollouts: int = 8  # G per prompt
    rollout: str = "beam"  # beam (G distinct items) | sample (constrained, with temperature)
    temperature: float = 1.0
    reward: str = "rule"  # rule | ranking | cf
    reward_run: str | None = None  # reward=cf: a `train-cf` run
    inner_steps: int = 1  # updates per batch of rollouts (> 1 uses the clipped ratio)
    clip_eps: float = 0.2
    reasoning_tokens: int = 0  # RLVR-reasoning: free tokens before the identifier (0 = off)

    def __post_init__(self) -> None:
        _choice("align.method", self.method, ALIGN_METHODS)
        _choice("align.rollout", self.rollout, ("beam", "sample"))
        _choice("align.reward", self.reward, GRPO_REWARDS)
        if self.beta < 0 or (self.beta == 0 and self.method != "grpo"):
            raise ConfigError(f"align.beta must be > 0 (>= 0 for grpo), got {self.beta}")
        for name, count in self.negatives.items():
            _choice("align.negatives", name, NEGATIVE_SAMPLERS)
            if count < 1:
                raise ConfigError(f"align.negatives.{name} must be >= 1, got {count}")
        if self.method in ("dpo", "sdpo", "rosepo") and not self.negatives:
            raise ConfigError(f"align.method={self.method} needs align.negatives")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(
                f"align.label_smoothing must be in [0, 0.5), got {self.label_smoothing}"
            )
        if not 0 < self.epsilon_max < 1:
            raise ConfigError(f"align.epsilon_max must be in (0, 1), got {self.epsilon_max}")
        if self.method == "rosepo" and not self.oracle_run:
            raise ConfigError(
                "align.method=rosepo needs a CF preference oracle: align.oracle_run=DIR"
            )
        if self.reward == "cf" and self.method == "grpo" and not self.reward_run:
            raise ConfigError("align.reward=cf needs align.reward_run=<train-cf run>")
        _positive("align.iterations", self.iterations)
        _positive("align.rollouts", self.rollouts)
        _positive("align.inner_steps", self.inner_steps)
        if self.examples < 0 or self.reasoning_tokens < 0:
            raise ConfigError("align.examples and align.reasoning_tokens must be >= 0")
        if self.temperature <= 0:
            raise ConfigError(f"align.temperature must be > 0, got {self.temperature}")

    @property
    def n_negatives(self) -> int:
        return sum(self.negatives.values())


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    align: AlignConfig = field(default_factory=AlignConfig)

    @property
    def selection_metric(self) -> str:
        """The validation metric that selects checkpoints and stops training early: NDCG@10 of
        the full ranking, or NDCG@5 over the candidates (``data.task=candidates``)."""
        return "ndcg@5" if self.data.task == "candidates" else "ndcg@10"

    def __post_init__(self) -> None:
        if "candidates" in self.align.negatives and self.data.task != "candidates":
            raise ConfigError(
                "align.negatives.candidates draws from each row's candidate list: it needs "
                "data.task=candidates (a run trained on candidate rows)"
            )


REMOVED_OPTIONS = {
    "objective.weights=hardness": "weights proportional to the negatives' probabilities",
    "objective.penalty=additive": "an additive margin of beta logits per negative",
}
"""Options that were tried and removed: the project's two alternatives to Eqs. 6-7 (issue 11
item 4) did not beat the paper's form on validation (BENCHMARKS.md, "Depth screen" and "The
final test table"); commit 94bbfe2 is the last code with them."""


def upgrade_saved_keys(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the keys older runs saved in today's spelling: the one place that reads
    them, so every saved ``config.yaml`` still loads.

    - ``objective.sign_aware: true|false`` became ``objective.penalty: sign_aware|scale``;
    - ``objective.weights: paper`` (Eq. 6, what the objective computes) is dropped, and a
      removed option (:data:`REMOVED_OPTIONS`) is a ConfigError that says what it was.
    """
    objective = values.get("objective")
    if not isinstance(objective, dict):
        return values
    objective = dict(objective)
    for option, what in REMOVED_OPTIONS.items():
        key, value = option.removeprefix("objective.").split("=")
        if objective.get(key) == value:
            raise ConfigError(
                f"{option} ({what}) was removed: it did not beat the paper's Eqs. 6-7 on "
                "validation (BENCHMARKS.md); commit 94bbfe2 is the last with it"
            )
    if objective.get("weights") == "paper":
        del objective["weights"]
    if "sign_aware" in objective:
        sign_aware = objective.pop("sign_aware")
        if not isinstance(sign_aware, bool):
            raise ConfigError(f"objective.sign_aware must be true or false, got {sign_aware!r}")
        if sign_aware:
            penalty = objective.setdefault("penalty", "sign_aware")
            if penalty != "sign_aware":
                raise ConfigError(
                    "objective.sign_aware=true (the older spelling of objective.penalty) "
                    f"contradicts objective.penalty={penalty}"
                )
    return {**values, "objective": objective}


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")


def _positive(key: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{key} must be >= 1, got {value}")


def coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field annotation (ints widen to floats; ``1e-4`` strings,
    which YAML 1.1 reads as strings, become floats); a ConfigError names ``key``."""
    if annotation is Any:
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(key, value, option)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_name(annotation)}, got {value!r}")
    if origin is dict:
        key_type, value_type = typing.get_args(annotation)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {_name(value_type)}, got {value!r}")
        return {
            coerce(f"{key} key", k, key_type): coerce(f"{key}.{k}", v, value_type)
            for k, v in value.items()
        }
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_name(item_type)}, got {value!r}")
        return [coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and _EXPONENT_FLOAT.match(value):
        return float(value)  # YAML 1.1 (PyYAML) reads 1e-4 as a string
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected int, got {value!r}")
    if not isinstance(value, annotation):
        raise ConfigError(f"{key}: expected {_name(annotation)}, got {value!r}")
    return value


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """``cls(**values)`` with nested dataclass sections; unknown keys and wrong types are
    ConfigErrors naming the dotted key."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (valid: {sorted(known)})")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{name}: expected a mapping, got {value!r}")
            kwargs[name] = build_dataclass(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(f"{prefix}{name}", value, hint)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from e


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML scalars/lists) to nested dicts."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
    return values


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``update`` section by section: a section's fields are replaced one
    by one, and a field's value (even a mapping such as ``align.negatives``) as a whole."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def read_config_values(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw values of a YAML config file, with its ``base:`` chain resolved.

    A top-level ``base: other.yaml`` (relative to the including file) is loaded first and the
    file's own values are deep-merged over it, so a preset only sets what differs.
    """
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"{path}: `base` cycle: {cycle}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML: {e}") from e
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a path to a YAML file, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: {base_path} does not exist")
    return deep_merge(read_config_values(base_path, (*_chain, resolved)), values)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults) and apply dotted overrides.

    The file may name a ``base:`` config to inherit from (see :func:`read_config_values`).
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = read_config_values(path)
    values = apply_overrides(values, overrides or [])
    try:
        return build_dataclass(Config, upgrade_saved_keys(values), "")
    except ConfigError as e:
        raise ConfigError(f"{path or 'config'}: {e}") if path else e from None


STAGE_INHERITED = ("data", "model", "objective", "eval")
"""Sections a stage (``ilrec align``) takes from the run it starts from."""


def load_stage_config(
    from_run: str | Path, path: str | Path | None = None, overrides: list[str] | None = None
) -> Config:
    """The config of a stage that starts from the finished run ``from_run``.

    ``data``, ``model`` and ``eval`` come from the run's ``config.yaml`` (so do ``objective``,
    recording how the start was trained); ``train`` and ``align`` start from the defaults; the
    stage's YAML file and the overrides apply on top. ``model`` cannot change: the stage
    continues the saved model.
    """
    from ilrec.runs.files import require_run_dir

    try:
        from_run = require_run_dir(from_run)
    except FileNotFoundError as e:
        raise ConfigError(f"--from {e}") from None
    start = yaml.safe_load((from_run / "config.yaml").read_text()) or {}
    values = {key: start[key] for key in STAGE_INHERITED if key in start}
    stage = read_config_values(path) if path is not None else {}
    stage = apply_overrides(stage, overrides or [])
    if "model" in stage:
        raise ConfigError(
            f"{path or 'overrides'}: a stage continues the model of {from_run}; "
            "model.* cannot be set here"
        )
    values = deep_merge(values, stage)
    values.setdefault("align", {})["from_run"] = str(from_run)
    try:
        return build_dataclass(Config, upgrade_saved_keys(values), "")
    except ConfigError as e:
        raise ConfigError(f"{path or 'config'}: {e}") from None


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config: Config, path: Path) -> None:
    from ilrec.data.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))
