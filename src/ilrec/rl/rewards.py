"""Verifiable rewards of GRPO rollouts (``align.reward``; baselines digest §6).

Every reward maps ``items[U, G]`` (rollouts in rank order: beam order, or policy
log-probability order for samples) and ``targets[U]`` to ``[U, G]`` floats:

- ``rule``: 1 for the target, else 0 (RLVR);
- ``ranking``: ``rule`` plus, in a group with at least one hit, ``-w_i`` for a wrong rollout at
  rank ``i`` with ``w_i = (1/log2(i+2)) / Σ_{j<G} 1/log2(j+2)`` (MiniOneRec); groups without a
  hit get 0 everywhere;
- ``cf``: the probability a trained CF model (``align.reward_run``) gives each rollout after
  the user's history, renormalised within the group.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ranking_reward", "rule_reward", "CFReward", "build_reward"]


def rule_reward(items: Tensor, targets: Tensor, **_) -> Tensor:
    return (items == targets[:, None]).float()


def ranking_reward(items: Tensor, targets: Tensor, **_) -> Tensor:
    hits = rule_reward(items, targets)
    g = items.shape[1]
    discount = 1.0 / torch.log2(torch.arange(g, dtype=torch.float32) + 2)
    weights = discount / discount.sum()  # [G]
    any_hit = hits.any(1, keepdim=True)
    penalty = torch.where(any_hit & (hits == 0), -weights, torch.zeros_like(hits))
    return hits + penalty


class CFReward:
    """``R(i)`` of a trained CF model after the user's history, renormalised per group."""

    def __init__(self, cf_run: str) -> None:
        from ilrec.training.cf import load_cf_model

        self.model, _ = load_cf_model(cf_run)
        self.model.requires_grad_(False)

    def __call__(self, items: Tensor, targets: Tensor, histories=None, users=None) -> Tensor:
        from ilrec.training.cf import cf_item_probs

        histories = [list(h) or [int(t)] for h, t in zip(histories, targets.tolist(), strict=True)]
        with torch.no_grad():
            probs = cf_item_probs(self.model, histories, users).cpu()
        scores = probs.gather(1, items)
        return scores / scores.sum(1, keepdim=True).clamp(min=1e-30)


def build_reward(name: str, reward_run: str | None = None) -> Callable[..., Tensor]:
    if name == "rule":
        return rule_reward
    if name == "ranking":
        return ranking_reward
    if name == "cf":
        if not reward_run:
            raise ValueError("align.reward=cf needs align.reward_run=<train-cf run>")
        return CFReward(reward_run)
    raise ValueError(f"align.reward must be rule, ranking or cf, got {name!r}")
