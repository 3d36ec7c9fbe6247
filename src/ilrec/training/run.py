"""``ilrec train``: build everything from a config, train with checkpoints, select the best
validation model and save it with the run's config, environment and logs."""

from __future__ import annotations

import logging
import os
import random
import resource
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import EarlyStoppingCallback, TrainerCallback, TrainerState, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ilrec.config import Config, ConfigError, save_config
from ilrec.data.encoding import PaddingCollator
from ilrec.data.io import atomic_write_json
from ilrec.distributed import barrier
from ilrec.evaluation.ranking import evaluate_examples
from ilrec.runs.files import write_environment
from ilrec.runs.setup import build_model, load_setup, make_encoder, set_threads, world_size
from ilrec.training.objectives import SFT_OBJECTIVES, build_objective
from ilrec.training.signals import StopOnSignal
from ilrec.training.trainer import JsonlLogger, RecTrainer

log = logging.getLogger(__name__)


class RunExistsError(FileExistsError):
    """The run folder already holds a run and neither resume nor overwrite was asked."""


class FeatureDataset(Dataset):
    def __init__(self, features: list[dict[str, list[int]]]) -> None:
        self.features = features

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.features[i]


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> str | None:
    """The checkpoint to resume from, or None; refuses to silently reuse a run folder.

    ``resume`` on a run stopped before its first checkpoint (its ``config.yaml`` written, no
    ``checkpoint-*``) starts it again from step 0, reusing what it prepared (an alignment
    stage's negatives and reference log-probabilities); only its log records are redone.
    """
    last = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    if resume:
        if last is None and (run_dir / "config.yaml").exists():
            log.info("%s: no checkpoint yet; starting the run again from step 0", run_dir)
            return None
        if last is None:
            raise RunExistsError(
                f"{run_dir}: --resume given but no checkpoint-* folder to resume from"
            )
        return last
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise RunExistsError(
            f"{run_dir} already holds a run; use --resume to continue it, --overwrite to "
            "replace it, or a new train.output_dir"
        )
    return None


def fsdp_checkpoints_activations() -> bool:
    """Whether ``accelerate launch`` runs FSDP with its own activation checkpointing
    (``fsdp_activation_checkpointing: true`` in the launch config), which the Trainer refuses
    to combine with its own."""
    flag = os.environ.get
    return (
        flag("ACCELERATE_USE_FSDP", "false").lower() == "true"
        and flag("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() == "true"
    )


def training_arguments(config: Config, run_dir: Path) -> TrainingArguments:
    t = config.train
    per_epoch = t.eval_every <= 0
    # Non-reentrant checkpointing: works with frozen inputs (LoRA) and with the hidden states
    # every objective asks for (output_hidden_states=True). Transformers 5 names the option
    # activation_checkpointing (gradient_checkpointing is its deprecated alias).
    checkpointing = t.gradient_checkpointing and not fsdp_checkpoints_activations()
    return TrainingArguments(
        output_dir=str(run_dir),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.scheduler,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        eval_strategy="epoch" if per_epoch else "steps",
        save_strategy="epoch" if per_epoch else "steps",
        eval_steps=None if per_epoch else t.eval_every,
        save_steps=None if per_epoch else t.eval_every,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=config.selection_metric,
        greater_is_better=True,
        logging_steps=t.logging_steps,
        report_to=["tensorboard"],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if world_size() > 1 and not torch.cuda.is_available() else None,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        bf16=config.model.dtype == "bfloat16" and torch.cuda.is_available(),
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        save_only_model=False,
    )


@dataclass
class RunStart:
    """A run folder checked for reuse, with its Trainer arguments."""

    run_dir: Path
    args: TrainingArguments
    checkpoint: str | None  # the checkpoint to resume from
    overwrite: bool

    @property
    def is_main(self) -> bool:
        return self.args.process_index == 0


def start_run(config: Config, resume: bool, overwrite: bool) -> RunStart:
    """Threads, Trainer arguments (which start the process group when distributed) and the
    run folder check; every rank has checked the folder before any writes into it."""
    set_threads(config.train.threads)
    run_dir = Path(config.train.output_dir)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    args = training_arguments(config, run_dir)
    checkpoint = check_run_dir(run_dir, resume, overwrite)
    barrier()
    return RunStart(run_dir, args, checkpoint, overwrite)


def write_run_files(start: RunStart, config: Config, tokenizer) -> None:
    """The main process (re)creates the folder and writes config, environment and tokenizer."""
    run_dir = start.run_dir
    if start.is_main:
        if start.overwrite and start.checkpoint is None and run_dir.exists():
            shutil.rmtree(run_dir)  # asked for explicitly with --overwrite
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        write_environment(run_dir)
        tokenizer.save_pretrained(run_dir / "tokenizer")
    barrier()


def validation_ranker(
    config: Config, examples: list, encoder
) -> Callable[[torch.nn.Module], dict[str, float]]:
    """Model selection: beam-search HR/NDCG of a fixed validation subsample; with
    ``data.task=candidates`` the exact candidate ranking of the subsample's rows
    (:func:`ilrec.evaluation.candidates.candidate_ranker`)."""
    valid = validation_subsample(examples, config.data.valid_users, config.train.seed)
    if config.data.task == "candidates":
        from ilrec.evaluation.candidates import candidate_ranker

        return candidate_ranker(valid, encoder, config.eval.batch_size)

    def rank_metrics_fn(model: torch.nn.Module) -> dict[str, float]:
        metrics, _ = evaluate_examples(
            model,
            encoder,
            valid,
            mode="beam",
            beams=config.eval.beams,
            batch_size=config.eval.batch_size,
            ks=tuple(config.eval.ks),
        )
        return metrics

    return rank_metrics_fn


def checkpoint_epoch(checkpoint: str | None) -> float:
    """The epoch a run resumes from (0 when it starts fresh)."""
    if checkpoint is None:
        return 0.0
    return TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json")).epoch or 0.0


def fit(
    start: RunStart,
    config: Config,
    model: torch.nn.Module,
    objective: Callable,
    features: list[dict],
    collator: Callable,
    rank_metrics_fn: Callable[[torch.nn.Module], dict[str, float]],
    callbacks: list[TrainerCallback] | None = None,
    summary: dict | None = None,
) -> dict[str, float]:
    """Train ``model`` on ``features`` with ``objective`` (checkpoints, resume, validation
    selection, logs), save the selected model and ``train_summary.json`` (plus ``summary``).

    A SIGTERM or SIGINT during training saves a checkpoint after the current step and raises
    :class:`~ilrec.training.signals.TrainingStopped` (nothing else is written)."""
    run_dir = start.run_dir
    stopper = StopOnSignal()
    trainer = RecTrainer(
        model=model,
        args=start.args,
        train_dataset=FeatureDataset(features),
        eval_dataset=[],  # validation ranks users through rank_metrics_fn, not this dataset
        data_collator=collator,
        objective=objective,
        rank_metrics_fn=rank_metrics_fn,
        group_by_length=config.train.group_by_length,
        callbacks=[
            JsonlLogger(run_dir / "metrics.jsonl"),
            *stop_callbacks(config),
            *save_callbacks(config),
            *(callbacks or []),
            stopper,
        ],
    )
    # read before training: checkpoint rotation may delete the start checkpoint meanwhile
    start_epoch = checkpoint_epoch(start.checkpoint)
    with stopper:
        output = trainer.train(resume_from_checkpoint=start.checkpoint)
    trainer.save_model(str(run_dir / "model"))
    if trainer.is_world_process_zero():
        # train_runtime covers this process's run (after a resume: its remaining part), so
        # the throughput is that part's: its seconds over the epochs it ran
        runtime = output.metrics["train_runtime"] - trainer.eval_seconds
        epochs_run = trainer.state.epoch - start_epoch
        tokens = sum(len(f["input_ids"]) for f in features) * epochs_run
        record = {
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "selection_metric": config.selection_metric,
            f"best_valid_{config.selection_metric}": trainer.state.best_metric,
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "train_seconds_without_validation": runtime,
            "validation_seconds": trainer.eval_seconds,
            "resumed_from": start.checkpoint,
            "epochs_in_this_process": epochs_run,
            "seconds_per_epoch": runtime / max(epochs_run, 1e-9),
            "tokens_per_second": tokens / max(runtime, 1e-9),
            "peak_memory_mb": peak_memory_mb(),
            **(summary or {}),
        }
        atomic_write_json(run_dir / "train_summary.json", record)
        plot_curves_safely(run_dir)
    barrier()  # no rank returns (and, e.g., reads model/) before the main one has written it
    return {config.selection_metric: trainer.state.best_metric or 0.0}


def train(
    config: Config,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, float]:
    """Train a generative recommender (SFT with ``objective.name``); returns the best
    validation metrics."""
    if config.objective.name not in SFT_OBJECTIVES:
        raise ConfigError(
            f"objective.name must be one of {list(SFT_OBJECTIVES)} for `ilrec train`, got "
            f"{config.objective.name!r} (alignment methods run with `ilrec align`)"
        )
    start = start_run(config, resume, overwrite)
    setup = load_setup(config)
    torch.manual_seed(config.train.seed)
    model, tokenizer = build_model(setup)
    encoder = make_encoder(setup, tokenizer)
    write_run_files(start, config, tokenizer)
    features = encoder.encode_training(
        setup.splits.train_prefixes(), setup.splits.train_windows(), seed=config.train.seed
    )
    objective = build_objective(config.objective.name, config, model, encoder)
    return fit(
        start,
        config,
        model,
        objective,
        features,
        PaddingCollator(tokenizer.pad_token_id),
        validation_ranker(config, setup.splits.valid, encoder),
        callbacks,
    )


def peak_memory_mb() -> dict[str, float]:
    """Peak resident memory of this process (and of the GPU, when one is used), in MiB."""
    peak = {"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        peak["cuda"] = torch.cuda.max_memory_allocated() / 2**20
    return peak


def stop_callbacks(config: Config) -> list[TrainerCallback]:
    """Early stopping on validation NDCG@10 when ``train.patience`` > 0."""
    if config.train.patience <= 0:
        return []
    return [EarlyStoppingCallback(early_stopping_patience=config.train.patience)]


class SaveEvery(TrainerCallback):
    """A resumable checkpoint every ``steps`` optimizer steps, between validations.

    TrainingArguments ties ``save_steps`` to ``eval_steps`` when the best model is loaded at
    the end, so the extra saves are requested here; the rotation keeps the best checkpoint."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.steps == 0:
            control.should_save = True
        return control


def save_callbacks(config: Config) -> list[TrainerCallback]:
    """Extra checkpoints when ``train.save_every`` > 0."""
    return [SaveEvery(config.train.save_every)] if config.train.save_every > 0 else []


def validation_subsample(examples: list, n: int, seed: int) -> list:
    """A fixed random subsample of validation users (all when ``n`` is 0 or too large)."""
    if n <= 0 or n >= len(examples):
        return examples
    return random.Random(seed).sample(examples, n)


def plot_curves_safely(run_dir: Path) -> None:
    from ilrec.evaluation.layer_curves import layer_loss_series, plot_layer_losses
    from ilrec.evaluation.plots import plot_training_curves

    metrics = run_dir / "metrics.jsonl"
    try:
        plot_training_curves(metrics, run_dir / "curves.png")
        if layer_loss_series(metrics):  # ILRec runs: per-layer losses (paper Figure 2)
            plot_layer_losses(metrics, run_dir / "layer_losses.png")
    except Exception as e:  # a plot must never lose a finished run
        log.warning("could not plot training curves: %s", e)
