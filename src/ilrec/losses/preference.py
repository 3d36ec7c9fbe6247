"""Preference-alignment losses of the DPO family on sequence log-probabilities.

Every function takes *sequence-level* log-probabilities: the sum of an item's response-token
log-probabilities given its prompt, under the policy (``chosen``, ``rejected``) and under the
frozen reference (``ref_*``). The implicit reward of a response is ``r = logp - ref_logp``
(Rafailov et al., 2023). All arithmetic is float32; losses are the mean over the ``N``
prompts; ``N == 0`` gives 0 attached to the graph.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["dpo_loss", "implicit_rewards", "sdpo_loss"]


def implicit_rewards(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``r = logp - ref_logp`` (float32), the DPO implicit reward without its β."""
    if logp.shape != ref_logp.shape:
        raise ValueError(
            f"policy and reference log-probabilities differ in shape: "
            f"{tuple(logp.shape)} vs {tuple(ref_logp.shape)}"
        )
    return logp.float() - ref_logp.float()


def _mean(values: Tensor, anchor: Tensor) -> Tensor:
    return values.mean() if values.numel() else anchor.sum() * 0.0


def dpo_loss(
    chosen: Tensor,
    rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    label_smoothing: float | Tensor = 0.0,
) -> Tensor:
    """DPO with optional (conservative-DPO) label smoothing.

    ``loss = -(1-ε)·log σ(β·m) - ε·log σ(-β·m)``, ``m = (chosen - ref_chosen) -
    (rejected - ref_rejected)``; ``ε = 0`` is the sigmoid loss of Rafailov et al. (TRL's
    ``loss_type="sigmoid"`` with ``label_smoothing``).

    Args:
        chosen, rejected, ref_chosen, ref_rejected: ``[N]`` sequence log-probabilities.
        beta: inverse temperature β > 0.
        label_smoothing: ε in [0, 1), a float or a per-pair ``[N]`` tensor (RosePO's
            personalised smoothing); carries no gradient.

    Returns:
        Scalar mean over the N pairs.
    """
    margin = implicit_rewards(chosen, ref_chosen) - implicit_rewards(rejected, ref_rejected)
    eps = torch.as_tensor(label_smoothing, dtype=torch.float32, device=margin.device).detach()
    if bool(((eps < 0) | (eps >= 1)).any()):
        raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}")
    logits = beta * margin
    losses = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
    return _mean(losses, margin)


def sdpo_loss(
    chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> Tensor:
    """S-DPO (Chen et al., 2024): a softmax over K rejected responses.

    ``loss = -log σ(-logsumexp_j β·(r_j - r_w))`` with ``r = logp - ref_logp``. Computed with
    ``logsumexp`` and ``logsigmoid`` (the official code's exp-then-log overflows for large
    margins); K = 1 is exactly :func:`dpo_loss`.

    Args:
        chosen, ref_chosen: ``[N]``; rejected, ref_rejected: ``[N, K]``.
        beta: inverse temperature β > 0.

    Returns:
        Scalar mean over the N prompts.
    """
    if rejected.dim() != 2 or rejected.shape[0] != chosen.shape[0]:
        raise ValueError(
            f"rejected must be [N, K] with N={chosen.shape[0]}, got {tuple(rejected.shape)}"
        )
    r_w = implicit_rewards(chosen, ref_chosen)  # [N]
    r_l = implicit_rewards(rejected, ref_rejected)  # [N, K]
    lse = torch.logsumexp(beta * (r_l - r_w[:, None]), dim=1)  # [N]
    return _mean(-F.logsigmoid(-lse), r_w)
