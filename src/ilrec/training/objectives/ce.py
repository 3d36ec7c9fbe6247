"""Plain SFT cross-entropy on the response tokens (paper Eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ilrec.models.layers import final_logits
from ilrec.training.objectives.base import ObjectiveOutput, forward_supervised


class CrossEntropyObjective:
    """``OBJECTIVES["ce"]``: mean cross-entropy over the supervised tokens."""

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> ObjectiveOutput:
        result = forward_supervised(model, batch)
        logits = final_logits(model, result.hidden[-1], result.index)  # [N, V]
        loss = F.cross_entropy(logits, result.targets)
        return ObjectiveOutput(loss, {"ce": loss.item()})
