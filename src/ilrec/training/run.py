"""``ilrec train``: build everything from a config, train with checkpoints, select the best
validation model and save it with the run's config, environment and logs."""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path

import torch
from torch.utils.data import Dataset
from transformers import EarlyStoppingCallback, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from ilrec.config import Config, save_config
from ilrec.data.encoding import PaddingCollator
from ilrec.data.io import atomic_write_json
from ilrec.evaluation.ranking import evaluate_examples
from ilrec.training.objectives import build_objective
from ilrec.training.runfiles import write_environment
from ilrec.training.setup import build_model, load_setup, make_encoder, set_threads, world_size
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
    """The checkpoint to resume from, or None; refuses to silently reuse a run folder."""
    last = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    if resume:
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


def training_arguments(config: Config, run_dir: Path) -> TrainingArguments:
    t = config.train
    per_epoch = t.eval_every <= 0
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
        metric_for_best_model="ndcg@10",
        greater_is_better=True,
        logging_steps=t.logging_steps,
        report_to=["tensorboard"],
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if world_size() > 1 and not torch.cuda.is_available() else None,
        ddp_find_unused_parameters=False,
        dataloader_num_workers=0,
        bf16=config.model.dtype == "bfloat16" and torch.cuda.is_available(),
        save_only_model=False,
    )


def train(
    config: Config,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, float]:
    """Train a generative recommender; returns the best validation metrics."""
    set_threads(config.train.threads)
    run_dir = Path(config.train.output_dir)
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    args = training_arguments(config, run_dir)  # initialises the process group when distributed
    checkpoint = check_run_dir(run_dir, resume, overwrite)
    _barrier()  # every rank has checked the folder before the main one writes into it
    setup = load_setup(config)
    torch.manual_seed(config.train.seed)
    model, tokenizer = build_model(setup)
    encoder = make_encoder(setup, tokenizer)
    if args.process_index == 0:
        if overwrite and checkpoint is None and run_dir.exists():
            shutil.rmtree(run_dir)  # asked for explicitly with --overwrite
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        write_environment(run_dir)
        tokenizer.save_pretrained(run_dir / "tokenizer")
    _barrier()

    features = encoder.encode_training(
        setup.splits.train_prefixes(), setup.splits.train_windows(), seed=config.train.seed
    )
    valid = validation_subsample(setup.splits.valid, config.data.valid_users, config.train.seed)

    def rank_metrics_fn(m: torch.nn.Module) -> dict[str, float]:
        metrics, _ = evaluate_examples(
            m,
            encoder,
            valid,
            mode="beam",
            beams=config.eval.beams,
            batch_size=config.eval.batch_size,
            ks=tuple(config.eval.ks),
        )
        return metrics

    objective = build_objective(config.objective, model, encoder, config.data.max_history)
    trainer = RecTrainer(
        model=model,
        args=args,
        train_dataset=FeatureDataset(features),
        eval_dataset=valid,  # ranked by rank_metrics_fn, not by the Trainer's loss loop
        data_collator=PaddingCollator(tokenizer.pad_token_id),
        objective=objective,
        rank_metrics_fn=rank_metrics_fn,
        callbacks=[
            JsonlLogger(run_dir / "metrics.jsonl"),
            *stop_callbacks(config),
            *(callbacks or []),
        ],
    )
    output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(run_dir / "model"))
    if trainer.is_world_process_zero():
        tokens = sum(len(f["input_ids"]) for f in features) * trainer.state.epoch
        # train_runtime covers this process's run (after a resume: its remaining part)
        runtime = output.metrics["train_runtime"] - trainer.eval_seconds
        best = {
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "best_valid_ndcg@10": trainer.state.best_metric,
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "train_seconds_without_validation": runtime,
            "validation_seconds": trainer.eval_seconds,
            "resumed_from": checkpoint,
            # throughput only for uninterrupted runs (a resumed process ran part of the epochs)
            "seconds_per_epoch": None if checkpoint else runtime / max(trainer.state.epoch, 1e-9),
            "tokens_per_second": None if checkpoint else tokens / runtime,
        }
        atomic_write_json(run_dir / "train_summary.json", best)
        plot_curves_safely(run_dir)
    _barrier()  # no rank returns (and, e.g., reads model/) before the main one has written it
    return {"ndcg@10": trainer.state.best_metric or 0.0}


def stop_callbacks(config: Config) -> list[TrainerCallback]:
    """Early stopping on validation NDCG@10 when ``train.patience`` > 0."""
    if config.train.patience <= 0:
        return []
    return [EarlyStoppingCallback(early_stopping_patience=config.train.patience)]


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


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
