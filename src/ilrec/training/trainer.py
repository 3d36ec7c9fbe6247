"""A thin ``transformers.Trainer`` subclass: the loss comes from a pluggable objective and
``evaluate`` computes full-ranking HR/NDCG on a validation subsample (model selection)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from ilrec.runs.files import append_jsonl
from ilrec.training.sampling import LengthGroupedSampler


class RecTrainer(Trainer):
    """Trainer whose ``compute_loss`` calls ``objective(model, batch)``.

    Args:
        objective: maps ``(model, batch)`` to an ``ObjectiveOutput`` (loss + floats to log).
        rank_metrics_fn: maps the model to validation ranking metrics (``{"ndcg@10": ...}``).
        group_by_length: train on batches of examples of similar length
            (:class:`~ilrec.training.sampling.LengthGroupedSampler`) instead of random ones.
    """

    def __init__(
        self,
        *args,
        objective: Callable,
        rank_metrics_fn: Callable[[torch.nn.Module], dict[str, float]],
        group_by_length: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.group_by_length = group_by_length
        self.objective = objective
        self.rank_metrics_fn = rank_metrics_fn
        self._objective_logs: dict[str, list[float]] = defaultdict(list)
        self.eval_seconds = 0.0  # time spent in validation ranking (part of train_runtime)

    def _get_train_sampler(self, train_dataset=None):
        # replaces only the random order: a stage that feeds its batches in a fixed order
        # (GRPO's repeated rollout batches, ``train_sampling_strategy="sequential"``) keeps it
        if not self.group_by_length or self.args.train_sampling_strategy != "random":
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset
        lengths = [len(example["input_ids"]) for example in dataset]
        seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
        return LengthGroupedSampler(lengths, self.args.train_batch_size, seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = self.objective(model, inputs)
        if model.training:
            for key, value in out.logs.items():
                self._objective_logs[key].append(value)
        return (out.loss, None) if return_outputs else out.loss

    def _issue_warnings_after_load(self, load_result) -> None:
        """Tied weights (the LM head of tied-embedding models) are not saved separately, so
        they are "missing" from every checkpoint by design: not worth a warning."""
        tied = tied_parameter_names(self.model)
        missing = [k for k in load_result.missing_keys if k not in tied]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=missing))

    def training_step(self, model, inputs, num_items_in_batch=None):
        start = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._objective_logs["step_seconds"].append(time.perf_counter() - start)
        return loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._objective_logs:
            for key, values in self._objective_logs.items():
                logs[key] = round(sum(values) / len(values), 6)
            self._objective_logs.clear()
        super().log(logs, start_time)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        start = time.perf_counter()
        metrics = self.rank_metrics_fn(self.model)
        self.eval_seconds += time.perf_counter() - start
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        metrics["epoch"] = self.state.epoch
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics


def tied_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of parameters that share their tensor with another parameter."""
    by_tensor: dict[int, list[str]] = defaultdict(list)
    for name, param in model.named_parameters(remove_duplicate=False):
        by_tensor[id(param)].append(name)
    return {name for names in by_tensor.values() if len(names) > 1 for name in names}


class JsonlLogger(TrainerCallback):
    """Appends every log record (with step and epoch) to ``metrics.jsonl`` on the main process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        # After a resume (or a restart from step 0), drop records past the starting step.
        if state.is_world_process_zero and self.path.exists():
            lines = self.path.read_text().splitlines() if state.global_step > 0 else []
            keep = [
                line
                for line in lines
                if line and json.loads(line).get("step", 0) <= state.global_step
            ]
            self.path.write_text("".join(f"{line}\n" for line in keep))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            append_jsonl(self.path, {"step": state.global_step, **logs})
