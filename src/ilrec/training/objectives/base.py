"""What every objective shares: its output type and the forward pass that keeps hidden states
at the supervised positions only."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ilrec.models.layers import supervised_positions


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
