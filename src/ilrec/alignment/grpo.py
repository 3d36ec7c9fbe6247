"""The GRPO stage (``align.method=grpo``): RLVR from a finished run (paper Appendix A.4).

Rollouts are generated on-policy inside the objective
(:class:`ilrec.training.objectives.grpo.GRPOObjective`), so the reference cannot be cached:
with ``align.beta > 0`` a frozen copy of the starting model is held in memory. Training
prompts are shuffled once with ``align.seed`` and each batch is fed ``align.inner_steps``
times in a row (sequential sampling), which is how the objective reuses one batch of rollouts
for several clipped updates.

Why not TRL's ``GRPOTrainer``: it samples completions with ``generate`` (or vLLM) from text
prompts and scores decoded text; the rollouts here are G *distinct* trie-constrained items from
the project's batched beam search (or constrained sampling), scored on token ids with the
shared packed scorer. MiniOneRec had to subclass TRL and replace its generation for exactly
this; the project's own loop is a small objective on the same Trainer instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from transformers import TrainerCallback

from ilrec.alignment.stage import open_stage, training_examples
from ilrec.config import Config, ConfigError
from ilrec.evaluation.plots import GRPO_PANELS, plot_stage_safely
from ilrec.training.objectives import build_objective
from ilrec.training.run import fit, validation_ranker

__all__ = ["RolloutCollator", "run_grpo"]


@dataclass
class RolloutCollator:
    """Prompts and targets of a batch; the objective generates the rollouts."""

    def __call__(self, features: list[dict]) -> dict:
        return {
            "example": torch.tensor([f["example"] for f in features]),
            "target": torch.tensor([f["target"] for f in features]),
            "prompt": [f["prompt"] for f in features],
            "history": [f["history"] for f in features],
            "user": [f["user"] for f in features],
            "input_ids": torch.zeros(len(features), 1, dtype=torch.long),  # token counting
        }


def rollout_order(n: int, batch_size: int, repeats: int, seed: int) -> list[int]:
    """Example indices shuffled once, batch by batch, each batch repeated ``repeats`` times."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return [i for b in batches for _ in range(repeats) for i in b]


def run_grpo(
    config: Config,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, float]:
    """GRPO from ``align.from_run``; returns the best validation metrics."""
    if config.align.reasoning_tokens and config.data.format == "sequence":
        raise ConfigError(
            "align.reasoning_tokens > 0 needs a text format (data.format=prompt or title): "
            "the sequence format has no words to reason with"
        )
    if config.train.grad_accum != 1:
        raise ConfigError("align.method=grpo: use train.grad_accum=1 (one rollout batch per step)")
    start, setup, model, encoder = open_stage(config, resume, overwrite)
    start.args.train_sampling_strategy = "sequential"  # batches arrive as rollout_order made them
    examples = training_examples(setup, config.align.examples, config.align.seed)
    order = rollout_order(
        len(examples), config.train.batch_size, config.align.inner_steps, config.align.seed
    )
    features = [
        {
            "example": i,
            "prompt": encoder.example_prompt_ids(examples[i]),
            "target": examples[i].target,
            "history": list(examples[i].history),
            "user": examples[i].user,
            "input_ids": [0],
        }
        for i in order
    ]
    objective = build_objective("grpo", config, model, encoder)
    result = fit(
        start,
        config,
        model,
        objective,
        features,
        RolloutCollator(),
        validation_ranker(config, setup.splits.valid, encoder),
        callbacks,
        {
            "method": "grpo",
            "from_run": config.align.from_run,
            "prompts": len(examples),
            "rollouts_per_prompt": config.align.rollouts,
            "inner_steps": config.align.inner_steps,
            "reward": config.align.reward,
            "rollout": "reasoning" if config.align.reasoning_tokens else config.align.rollout,
        },
    )
    if start.is_main:
        plot_stage_safely(start.run_dir, GRPO_PANELS, "grpo.png")
    return result
