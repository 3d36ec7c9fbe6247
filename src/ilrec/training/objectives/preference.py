"""DPO, S-DPO and RosePO on packed pairs (a prompt, its chosen item and K rejected items).

The batch comes from :func:`ilrec.alignment.pairs.pair_features`: response 0 of a row is
the chosen item, responses 1..K the rejected ones, ``ref_logps[B, 1+K]`` the cached frozen
reference. The policy's sequence log-probabilities come from one packed forward.

- ``dpo``: the sigmoid loss averaged over the K (chosen, rejected) pairs of a prompt, with
  ``align.label_smoothing`` (conservative DPO);
- ``sdpo``: the softmax over the K rejected items (K = 1 is DPO);
- ``rosepo``: DPO with the per-pair smoothing ``ε`` of the batch (``smoothing[B, K]``,
  from the CF preference oracle).

Logged per step: ``reward_chosen`` / ``reward_rejected`` (β·(logπ − logπ_ref), means),
``reward_margin`` (chosen − rejected, over pairs), ``reward_accuracy`` (share of pairs with
a positive margin), ``logp_chosen``, and ``smoothing`` (RosePO).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ilrec.config import AlignConfig
from ilrec.losses import dpo_loss, implicit_rewards, sdpo_loss
from ilrec.models.scoring import sequence_logprobs
from ilrec.training.objectives.base import ObjectiveOutput


class PreferenceObjective:
    """``OBJECTIVES["dpo" | "sdpo" | "rosepo"]`` (see the module docstring)."""

    def __init__(self, cfg: AlignConfig, method: str) -> None:
        if method not in ("dpo", "sdpo", "rosepo"):
            raise ValueError(f"PreferenceObjective: unknown method {method!r}")
        self.cfg, self.method = cfg, method

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> ObjectiveOutput:
        beta = self.cfg.beta
        logp = sequence_logprobs(model, batch)  # [B, 1+K]
        ref = batch["ref_logps"].to(logp)
        chosen, rejected = logp[:, 0], logp[:, 1:]
        if self.method == "sdpo":
            loss = sdpo_loss(chosen, rejected, ref[:, 0], ref[:, 1:], beta)
        else:
            k = rejected.shape[1]
            smoothing = (
                batch["smoothing"].to(logp).reshape(-1)
                if self.method == "rosepo"
                else self.cfg.label_smoothing
            )
            loss = dpo_loss(
                chosen.repeat_interleave(k),
                rejected.reshape(-1),
                ref[:, 0].repeat_interleave(k),
                ref[:, 1:].reshape(-1),
                beta,
                label_smoothing=smoothing,
            )
        with torch.no_grad():
            r_w = beta * implicit_rewards(chosen, ref[:, 0])  # [B]
            r_l = beta * implicit_rewards(rejected, ref[:, 1:])  # [B, K]
            margin = r_w[:, None] - r_l
            logs = {
                "reward_chosen": r_w.mean(),
                "reward_rejected": r_l.mean(),
                "reward_margin": margin.mean(),
                "reward_accuracy": (margin > 0).float().mean(),
                "logp_chosen": chosen.mean(),
            }
            if self.method == "rosepo":
                logs["smoothing"] = batch["smoothing"].float().mean()
            values = torch.stack([v.float() for v in logs.values()]).tolist()
        return ObjectiveOutput(loss, dict(zip(logs, values, strict=True)))
