"""Policy-gradient pieces of GRPO (Shao et al., 2024) for RLVR on item identifiers.

Rollouts come in groups of ``G`` per prompt. Advantages are group-normalised rewards; the
per-token objective is the clipped importance ratio times the advantage minus β times the
k3 estimate of KL(π ‖ π_ref); each sequence's tokens are averaged, then the sequences.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["grpo_advantages", "grpo_loss", "k3_kl"]


def grpo_advantages(rewards: Tensor, eps: float = 1e-4) -> Tensor:
    """``(r - mean_g r) / (std_g r + eps)`` per group, with the unbiased std (torch's default).

    Args:
        rewards: ``[N, G]`` rewards of ``G`` rollouts for each of ``N`` prompts.
        eps: added to the standard deviation (a group with equal rewards gets advantage 0).

    Returns:
        ``[N, G]`` float32 advantages, no gradient.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [N, G], got shape {tuple(rewards.shape)}")
    r = rewards.detach().float()
    std = r.std(dim=1, keepdim=True) if r.shape[1] > 1 else torch.zeros_like(r[:, :1])
    return (r - r.mean(dim=1, keepdim=True)) / (std + eps)


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """The k3 estimator of KL(π ‖ π_ref) per token: ``exp(ref - logp) - (ref - logp) - 1``.

    Non-negative, 0 where the two log-probabilities are equal; elementwise, float32.
    """
    delta = ref_logp.float() - logp.float()
    return torch.exp(delta) - delta - 1


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    beta: float,
    clip_eps: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The GRPO loss on token log-probabilities of ``S`` rollouts padded to ``T`` tokens.

    ``-[min(ρ·A, clip(ρ, 1-ε, 1+ε)·A) - β·k3]`` per token with ``ρ = exp(logp - old_logp)``,
    averaged over each rollout's tokens, then over rollouts. With one update per batch of
    rollouts ``old_logp = logp.detach()``: ρ = 1 and the gradient is REINFORCE with the group
    mean as baseline.

    Args:
        logp: ``[S, T]`` policy token log-probabilities (with gradient).
        old_logp: ``[S, T]`` at rollout time (no gradient).
        ref_logp: ``[S, T]`` under the reference, or None when ``beta == 0``.
        advantages: ``[S]`` one per rollout.
        mask: ``[S, T]`` bool, True on real tokens.
        beta: KL coefficient.
        clip_eps: ε of the ratio clip.

    Returns:
        The scalar loss and detached diagnostics: ``kl`` (mean per-token k3) and
        ``clip_frac`` (share of tokens whose ratio was clipped in the objective).
    """
    mask = mask.bool()
    ratio = torch.exp(logp.float() - old_logp.float().detach())
    adv = advantages.detach().float()[:, None]
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    per_token = -torch.minimum(unclipped, clipped)
    kl = torch.zeros_like(per_token)
    if beta != 0:
        if ref_logp is None:
            raise ValueError("grpo_loss: beta != 0 needs ref_logp")
        kl = k3_kl(logp, ref_logp.detach())
        per_token = per_token + beta * kl
    lengths = mask.sum(1).clamp(min=1)
    per_sequence = (per_token * mask).sum(1) / lengths
    loss = per_sequence.mean() if per_sequence.numel() else logp.sum() * 0.0
    n_tokens = mask.sum().clamp(min=1)
    stats = {
        "kl": ((kl * mask).sum() / n_tokens).detach(),
        "clip_frac": (((clipped < unclipped) & mask).sum() / n_tokens).detach().float(),
    }
    return loss, stats
