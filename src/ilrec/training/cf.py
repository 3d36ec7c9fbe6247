"""Training, evaluation and the item distribution of the classic recommenders.

The CF models are the baselines of Table 1 and the reward models of Table 4; the trained
model's item distribution :math:`R(i)` (:func:`cf_item_probs`) is the reward of the
collaborative reward regularisation (paper Section 2.4, Eq. 10).

- Data: the leave-one-out split (:mod:`ilrec.data.split`); training uses its compact windows
  (``Splits.train_windows``), every training item but each user's first is supervised once
  per epoch; validation and test rank the full item set.
- Losses (:data:`CF_LOSSES`): full-softmax cross-entropy over all items (default) or BPR with
  uniformly sampled negatives. They take the states and targets a model's
  ``supervised_states`` returns, so models hold no loss.
- Runs: ``run_dir`` holds ``config.yaml``, ``run.json``, ``metrics.jsonl`` (one line per
  epoch), ``last.pt`` (resumable: model, optimizer, epoch, best metric, RNG state),
  ``best.pt`` (best validation NDCG@10), ``final.json`` and the best model's per-user full
  rankings ``eval_{valid,test}_exact.rankings.tsv`` (``ilrec compare`` pairs them with the
  language models' exact rankings of the same users). Checkpoints are written
  atomically. Early stopping after ``patience`` epochs without a better validation NDCG@10.
  SIGTERM or SIGINT ends the run after the current epoch, once its ``last.pt`` is saved.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import platform
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor
from tqdm.auto import tqdm

from ilrec.config import ConfigError, apply_overrides, build_dataclass, coerce, read_config_values
from ilrec.data.dataset import load_dataset
from ilrec.data.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ilrec.data.split import Example, Splits, leave_one_out
from ilrec.evaluation.result_files import RANKINGS_SUFFIX, eval_stem, rankings_tsv
from ilrec.metrics import rank_metrics
from ilrec.models.cf import CF_MODELS, SequentialRecommender, build_cf_model, pad_histories
from ilrec.models.cf import model_parameters as _model_parameters
from ilrec.models.modes import eval_mode
from ilrec.runs.files import cpu_model
from ilrec.training.signals import StopOnSignal, TrainingStopped

logger = logging.getLogger(__name__)

__all__ = [
    "CFConfig",
    "CF_LOSSES",
    "bpr_loss",
    "ce_loss",
    "cf_item_probs",
    "evaluate_cf",
    "load_cf_config",
    "load_cf_model",
    "train_cf",
]

# Arguments every model may take, set from the top-level config rather than model_kwargs.
_COMMON_ARGS = ("embedding_size", "max_history", "dropout", "n_users")
# Fields that may change when a run is resumed.
_RESUMABLE_CHANGES = {"epochs", "patience", "device", "progress", "eval_batch_size"}
SELECTION_METRIC = "ndcg@10"


@dataclass
class CFConfig:
    """Settings of one CF training run (flat YAML in ``configs/cf/``)."""

    model: str = field(metadata={"help": f"one of {sorted(CF_MODELS)}"})
    embedding_size: int = 128
    max_history: int = 20
    epochs: int = 200
    batch_size: int = 256
    eval_batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 5
    loss: str = field(default="ce", metadata={"help": "ce (full softmax) | bpr"})
    n_negatives: int = field(default=1, metadata={"help": "negatives per positive for bpr"})
    dropout: float = 0.2
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in CF_MODELS:
            raise ConfigError(f"model must be one of {sorted(CF_MODELS)}, got {self.model!r}")
        if self.loss not in CF_LOSSES:
            raise ConfigError(f"loss must be one of {sorted(CF_LOSSES)}, got {self.loss!r}")
        for key in (
            "embedding_size",
            "max_history",
            "epochs",
            "batch_size",
            "eval_batch_size",
            "patience",
            "n_negatives",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ConfigError(
                f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        self._check_model_kwargs()

    def _check_model_kwargs(self) -> None:
        if not isinstance(self.model_kwargs, dict):
            raise ConfigError(f"model_kwargs: expected a mapping, got {self.model_kwargs!r}")
        accepted = _model_parameters(self.model)
        hints = typing.get_type_hints(CF_MODELS[self.model].__init__)
        specific = sorted(set(accepted) - set(_COMMON_ARGS))
        for key, value in self.model_kwargs.items():
            if key in _COMMON_ARGS:
                raise ConfigError(f"model_kwargs.{key}: set the top-level key {key} instead")
            if key not in accepted:
                raise ConfigError(
                    f"unknown key model_kwargs.{key} for model {self.model} (valid: {specific})"
                )
            self.model_kwargs[key] = coerce(f"model_kwargs.{key}", value, hints[key])


def cf_config_from_dict(values: dict[str, Any]) -> CFConfig:
    """Build a :class:`CFConfig`; unknown keys and wrong types raise ConfigError naming the key."""
    if "model" not in values:
        raise ConfigError(f"missing key 'model' (one of {sorted(CF_MODELS)})")
    return build_dataclass(CFConfig, values)


def load_cf_config(path: str | Path, overrides: Sequence[str] = ()) -> CFConfig:
    """Load a flat YAML CF config (the project's config mechanism: a ``base:`` chain, YAML
    errors naming the file) and apply ``key=value`` overrides.

    Dotted keys reach into ``model_kwargs`` (``model_kwargs.n_layers=3``). Values are parsed as
    YAML scalars.

    Raises:
        ConfigError (a ValueError): unknown key or wrong type, naming the key and the type.
    """
    values = apply_overrides(read_config_values(path), list(overrides))
    try:
        return cf_config_from_dict(values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def build_model(config: CFConfig, n_items: int, n_users: int) -> SequentialRecommender:
    """The model of ``config``; common settings go to the models whose constructor takes them."""
    common = {
        "embedding_size": config.embedding_size,
        "max_history": config.max_history,
        "dropout": config.dropout,
        "n_users": n_users,
    }
    accepted = _model_parameters(config.model)
    kwargs = {k: v for k, v in common.items() if k in accepted} | config.model_kwargs
    model = build_cf_model(config.model, n_items, **kwargs)
    model.max_history = config.max_history
    return model


# ---------------------------------------------------------------------------------------------
# Losses: (model, states [N, d], targets [N], config) -> scalar mean over the N positions.


def ce_loss(
    model: SequentialRecommender, states: Tensor, targets: Tensor, config: CFConfig
) -> Tensor:
    """Full-softmax cross-entropy: ``-mean_n log softmax(score_all(s_n))[target_n]``.

    One ``[N, d] x [d, n_items]`` matmul scores every item; no sampling.
    """
    return F.cross_entropy(model.score_all(states), targets)


def bpr_loss(
    model: SequentialRecommender, states: Tensor, targets: Tensor, config: CFConfig
) -> Tensor:
    """BPR (Rendle et al. 2009, Eq. of BPR-Opt without the prior, which is weight decay here):
    ``-mean_{n,k} log sigmoid(s(n, target_n) - s(n, neg_{n,k}))`` with ``config.n_negatives``
    negatives per position drawn uniformly from the items other than the target.
    """
    n_items = model.n_items
    negatives = torch.randint(
        0, n_items - 1, (len(targets), config.n_negatives), device=states.device
    )
    negatives = negatives + (negatives >= targets.unsqueeze(1)).long()  # skip the target: [N, K]
    positive = model.score_items(states, targets.unsqueeze(1))  # [N, 1]
    return -F.logsigmoid(positive - model.score_items(states, negatives)).mean()


CF_LOSSES: dict[str, Callable[[SequentialRecommender, Tensor, Tensor, CFConfig], Tensor]] = {
    "ce": ce_loss,
    "bpr": bpr_loss,
}


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class WindowTensors:
    """All training windows, right-padded: ``item_seq`` ``[W, max_history + 1]`` (ids + 1)."""

    item_seq: Tensor
    seq_len: Tensor
    supervise_from: Tensor
    users: Tensor

    def __len__(self) -> int:
        return len(self.seq_len)

    def batch(self, index: Tensor, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        seq_len = self.seq_len[index]
        item_seq = self.item_seq[index, : int(seq_len.max())]  # trim padding to the batch
        return (
            item_seq.to(device),
            seq_len.to(device),
            self.supervise_from[index].to(device),
            self.users[index].to(device),
        )


def window_tensors(splits: Splits, user_index: dict[str, int]) -> WindowTensors:
    windows = splits.train_windows()
    if not windows:
        raise ValueError("no training windows: every user has fewer than 2 training items")
    item_seq, seq_len = pad_histories([w.items for w in windows])
    return WindowTensors(
        item_seq,
        seq_len,
        torch.tensor([w.supervise_from for w in windows], dtype=torch.long),
        torch.tensor([user_index[w.user] for w in windows], dtype=torch.long),
    )


def _user_tensor(model: SequentialRecommender, users: Sequence[str] | None) -> Tensor | None:
    if not model.uses_users:
        return None
    if users is None:
        raise ValueError(f"{type(model).__name__} scores users, not histories: pass `users`")
    unknown = [u for u in users if u not in model.user_index]
    if unknown:
        raise ValueError(f"user {unknown[0]!r} was not in the training data of this model")
    return torch.tensor([model.user_index[u] for u in users], dtype=torch.long)


def _device(model: SequentialRecommender) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _logits(
    model: SequentialRecommender, histories: Sequence[Sequence[int]], users: Sequence[str] | None
) -> Tensor:
    device = _device(model)
    item_seq, seq_len = pad_histories(histories, model.max_history)
    user_ids = _user_tensor(model, users)
    return model(
        item_seq.to(device), seq_len.to(device), None if user_ids is None else user_ids.to(device)
    )


# ---------------------------------------------------------------------------------------------
# Evaluation and the reward distribution


def rank_cf(
    model: SequentialRecommender,
    examples: Sequence[Example],
    n_items: int,
    batch_size: int = 1024,
    k: int = 10,
) -> Tensor:
    """Each example's top-``k`` items over the full item set (history items are not excluded).

    Args:
        model: a trained model (put in eval mode here and left so).
        examples: validation or test examples.
        n_items: catalogue size (checked against the model).
        batch_size: examples scored at once.
        k: items per example.

    Returns:
        ``[len(examples), k]`` item ids, best first.
    """
    if n_items != model.n_items:
        raise ValueError(f"n_items={n_items} but the model scores {model.n_items} items")
    model.eval()
    ranked = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        logits = _logits(model, [e.history for e in chunk], [e.user for e in chunk])
        ranked.append(logits.topk(k, dim=1).indices.cpu())
    return torch.cat(ranked)


def evaluate_cf(
    model: SequentialRecommender,
    examples: Sequence[Example],
    n_items: int,
    batch_size: int = 1024,
    ks: Sequence[int] = (5, 10),
) -> dict[str, float]:
    """HR@k / NDCG@k of :func:`rank_cf`'s full ranking.

    Returns:
        ``{"hit@5", "ndcg@5", "hit@10", "ndcg@10"}`` (for the default ``ks``).
    """
    return _metrics(rank_cf(model, examples, n_items, batch_size, max(ks)), examples, ks)


def _metrics(
    ranked: Tensor, examples: Sequence[Example], ks: Sequence[int] = (5, 10)
) -> dict[str, float]:
    targets = torch.tensor([e.target for e in examples], dtype=torch.long)
    return rank_metrics(ranked, targets, ks)


def cf_item_probs(
    model: SequentialRecommender,
    histories: Sequence[Sequence[int]],
    users: Sequence[str] | None = None,
) -> Tensor:
    """:math:`R(i)`: the model's softmax over all items after each history (Section 2.4).

    Args:
        model: a trained CF model (see :func:`load_cf_model`); evaluated without dropout.
        histories: item ids ``0..n_items-1``, oldest first, at least one item each.
        users: user ids (needed by BPR; other models ignore them).

    Returns:
        ``[B, n_items]`` float32 probabilities on the model's device; rows sum to 1.
    """
    with eval_mode(model):
        return torch.softmax(_logits(model, histories, users).float(), dim=-1)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def _save(path: Path, obj: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_cf_model(
    run_dir: str | Path, checkpoint: str = "best"
) -> tuple[SequentialRecommender, CFConfig]:
    """Rebuild a trained model from ``run_dir/{checkpoint}.pt`` (``best`` or ``last``).

    Returns:
        ``(model, config)``, the model in eval mode on ``config.device``, its ``user_index``
        restored.
    """
    path = Path(run_dir) / f"{checkpoint}.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint (train with `train_cf` first)")
    saved = _load(path)
    config = cf_config_from_dict(saved["config"])
    users = saved["users"]
    model = build_model(config, saved["n_items"], len(users))
    model.load_state_dict(saved["model"])
    model.user_index = {u: i for i, u in enumerate(users)}
    return model.to(config.device).eval(), config


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class _Progress:
    epoch: int = 0  # epochs completed
    best_metric: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0


def _train_epoch(
    model: SequentialRecommender,
    optimizer: torch.optim.Optimizer,
    windows: WindowTensors,
    config: CFConfig,
    epoch: int,
) -> float:
    model.train()
    device = _device(model)
    loss_fn = CF_LOSSES[config.loss]
    order = torch.randperm(len(windows))
    batches = range(0, len(windows), config.batch_size)
    total, count = 0.0, 0
    for start in tqdm(
        batches, desc=f"{config.model} epoch {epoch}", disable=not config.progress, leave=False
    ):
        item_seq, seq_len, supervise_from, users = windows.batch(
            order[start : start + config.batch_size], device
        )
        states, targets = model.supervised_states(item_seq, seq_len, supervise_from, users)
        loss = loss_fn(model, states, targets, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(targets)
        count += len(targets)
    return total / max(count, 1)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_resumable(saved: dict[str, Any], config: CFConfig, path: Path) -> None:
    current = dataclasses.asdict(config)
    changed = sorted(
        k for k in current if k not in _RESUMABLE_CHANGES and saved.get(k) != current[k]
    )
    if changed:
        raise ValueError(
            f"{path}: cannot resume with changed settings {changed} "
            f"(saved {[saved.get(k) for k in changed]})"
        )


def _trim_metrics(path: Path, epochs_done: int) -> None:
    """Drop metric lines of epochs after the checkpoint (written before a crash)."""
    if path.exists():
        lines = [
            ln
            for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln)["epoch"] <= epochs_done
        ]
        atomic_write_text(path, "".join(ln + "\n" for ln in lines))


def train_cf(
    config: CFConfig, data_dir: str | Path, run_dir: str | Path, resume: bool = False
) -> dict[str, Any]:
    """Train ``config.model`` on a dataset folder with early stopping on validation NDCG@10.

    Args:
        config: the run settings.
        data_dir: an LC-Rec dataset folder (``X.inter.json`` and the item catalogue).
        run_dir: output folder (created); holds the files listed in the module docstring.
        resume: continue from ``run_dir/last.pt`` when it exists (same settings required,
            except epochs, patience, device, progress and eval_batch_size). Without it an
            existing checkpoint is an error.

    Returns:
        ``{"valid": metrics, "test": metrics, "best_epoch": int, "epochs": int}`` of the best
        checkpoint (metrics as :func:`evaluate_cf`).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path, metrics_path = (
        run_dir / "last.pt",
        run_dir / "best.pt",
        run_dir / "metrics.jsonl",
    )
    if last_path.exists() and not resume:
        raise FileExistsError(f"{last_path} exists: pass resume=True or choose another run_dir")

    data = load_dataset(data_dir, require_index=False)
    splits = leave_one_out(data, config.max_history)
    users = list(data.sequences)
    user_index = {u: i for i, u in enumerate(users)}
    windows = window_tensors(splits, user_index)

    torch.manual_seed(config.seed)
    model = build_model(config, data.n_items, len(users)).to(config.device)
    model.user_index = user_index
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    if resume and last_path.exists():
        progress = _restore(last_path, config, model, optimizer)
        _trim_metrics(metrics_path, progress.epoch)
        logger.info("resuming %s after epoch %d", run_dir, progress.epoch)
    else:
        progress = _Progress()
        metrics_path.unlink(missing_ok=True)
    _write_run_info(run_dir, config, data_dir, data.name, data.n_items, len(users), len(windows))
    saved_fields = {"config": dataclasses.asdict(config), "n_items": data.n_items, "users": users}
    # SIGTERM/SIGINT: stop after the current epoch, once its last.pt is saved
    with StopOnSignal() as stopper:
        while progress.epoch < config.epochs and progress.bad_epochs < config.patience:
            started = time.perf_counter()
            train_loss = _train_epoch(model, optimizer, windows, config, progress.epoch + 1)
            seconds = time.perf_counter() - started
            valid = evaluate_cf(model, splits.valid, data.n_items, config.eval_batch_size)
            progress.epoch += 1
            if valid[SELECTION_METRIC] > progress.best_metric:
                progress = _Progress(progress.epoch, valid[SELECTION_METRIC], progress.epoch, 0)
                best = {"model": model.state_dict(), "epoch": progress.epoch, "valid": valid}
                _save(best_path, saved_fields | best)
            else:
                progress.bad_epochs += 1
            line = {"epoch": progress.epoch, "train_loss": train_loss, "train_seconds": seconds}
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(line | {"valid": valid}) + "\n")
            last = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "progress": dataclasses.asdict(progress),
                "rng": _rng_state(),
            }
            _save(last_path, saved_fields | last)
            logger.info(
                "%s epoch %d loss %.4f valid %s", config.model, progress.epoch, train_loss, valid
            )
            if stopper.received is not None:
                raise TrainingStopped(stopper.received, progress.epoch, str(last_path), "epoch")

    return _final_evaluation(run_dir, config, splits, data.n_items, progress)


def _restore(
    last_path: Path,
    config: CFConfig,
    model: SequentialRecommender,
    optimizer: torch.optim.Optimizer,
) -> _Progress:
    """Load ``last.pt`` into the model and optimizer (and the RNGs); its progress."""
    saved = _load(last_path)
    _check_resumable(saved["config"], config, last_path)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    _set_rng_state(saved["rng"])
    return _Progress(**saved["progress"])


def _write_run_info(
    run_dir: Path,
    config: CFConfig,
    data_dir: str | Path,
    dataset: str,
    n_items: int,
    n_users: int,
    n_windows: int,
) -> None:
    atomic_write_text(
        run_dir / "config.yaml", yaml.safe_dump(dataclasses.asdict(config), sort_keys=False)
    )
    info = {
        "data_dir": str(data_dir),
        "dataset": dataset,
        "n_items": n_items,
        "n_users": n_users,
        "train_windows": n_windows,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
    }
    atomic_write_json(run_dir / "run.json", info)


RANKED_ITEMS = 20
"""Items per user in the rankings files (as many as the language models' beam width)."""


def _final_evaluation(
    run_dir: Path, config: CFConfig, splits: Splits, n_items: int, progress: _Progress
) -> dict[str, Any]:
    """Validation and test metrics of the best checkpoint, written to ``final.json``, and its
    per-user rankings (``eval_<split>_exact.rankings.tsv``)."""
    best, _ = load_cf_model(run_dir, "best")
    best.to(config.device)
    result: dict[str, Any] = {}
    for split in ("valid", "test"):
        examples = splits.examples(split)
        ranked = rank_cf(best, examples, n_items, config.eval_batch_size, RANKED_ITEMS)
        result[split] = _metrics(ranked, examples)
        atomic_write_text(
            run_dir / (eval_stem(split, "exact") + RANKINGS_SUFFIX), rankings_tsv(examples, ranked)
        )
    result |= {"best_epoch": progress.best_epoch, "epochs": progress.epoch}
    atomic_write_json(run_dir / "final.json", result, one_entry_per_line=False)
    return result
