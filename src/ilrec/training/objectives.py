"""Training objectives, dispatched through a plain registry (``OBJECTIVES``).

An objective maps ``(model, batch)`` to a scalar loss plus floats to log. Logits are only
computed at supervised positions (the identifier tokens of the response).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ilrec.config import ObjectiveConfig
from ilrec.models.layers import final_logits, supervised_positions
from ilrec.training.ilrec_objective import ILRecObjective


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


@dataclass
class ForwardResult:
    """Hidden states of one batch, gathered at the supervised positions."""

    hidden: tuple[torch.Tensor, ...]  # per layer, [B, T, H]; the last one is normed
    index: torch.Tensor  # [N, 2]
    targets: torch.Tensor  # [N]


def forward_supervised(model: nn.Module, batch: dict[str, torch.Tensor]) -> ForwardResult:
    """One forward through the (possibly DDP-wrapped) model, keeping every hidden state.

    The model's own head runs on one position only (``logits_to_keep=1``); the objective
    applies the head to the supervised positions itself, so no ``[B, T, V]`` tensor exists.
    """
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch.get("attention_mask"),
        output_hidden_states=True,
        logits_to_keep=1,
        use_cache=False,
    )
    index, targets = supervised_positions(batch["labels"])
    return ForwardResult(out.hidden_states, index, targets)


class CrossEntropyObjective:
    """Plain SFT cross-entropy on the response tokens (paper Eq. 1)."""

    def __init__(self, cfg: ObjectiveConfig, model: nn.Module) -> None:
        self.cfg = cfg

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        result = forward_supervised(model, batch)
        logits = final_logits(model, result.hidden[-1], result.index)  # [N, V]
        loss = F.cross_entropy(logits, result.targets)
        return ObjectiveOutput(loss, {"ce": loss.item()})


def build_objective(
    cfg: ObjectiveConfig, model: nn.Module, encoder=None, max_history: int = 20
) -> Callable:
    """The objective named by ``cfg.name``; with ``mu_crr > 0`` its CRR reward provider is
    built from the CF run ``cfg.cf_run`` (needs the ``encoder``'s identifier table and the
    LM's history length, so the CF model sees the same histories)."""
    if cfg.name not in OBJECTIVES:
        raise ValueError(f"objective.name must be one of {sorted(OBJECTIVES)}, got {cfg.name!r}")
    objective = OBJECTIVES[cfg.name](cfg, model)
    if cfg.mu_crr > 0 and hasattr(objective, "set_reward_provider"):
        if encoder is None:
            raise ValueError("objective.mu_crr > 0: build_objective needs the encoder")
        from ilrec.training.crr import CFRewardProvider

        vocab_size = model.get_output_embeddings().weight.shape[0]
        objective.set_reward_provider(
            CFRewardProvider(cfg.cf_run, encoder.item_table(), vocab_size, max_history)
        )
    return objective


OBJECTIVES: dict[str, type] = {"ce": CrossEntropyObjective, "ilrec": ILRecObjective}
