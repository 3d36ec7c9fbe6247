"""Top-K ranking metrics for leave-one-out evaluation with one relevant item per user.

Ranks count from 0 (the first position). With rank ``r`` of the held-out item:

- ``HR@k = mean_u [r_u < k]``
- ``NDCG@k = mean_u (1 / log2(r_u + 2) if r_u < k else 0)``

Users whose item is absent from their ranked list (rank ``-1``) count as misses. Means are
over *all* users.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "metrics_from_ranks",
    "rank_metrics",
    "ranks_from_scores",
    "target_ranks",
    "user_metrics",
]

TIE_RULES = ("id", "pessimistic")


def _check_users(a: Tensor, targets: Tensor, name: str) -> None:
    if a.dim() != 2:
        raise ValueError(f"{name} must be [U, K], got shape {tuple(a.shape)}")
    if targets.dim() != 1 or targets.shape[0] != a.shape[0]:
        raise ValueError(
            f"targets must be [U] with U={a.shape[0]}, got shape {tuple(targets.shape)}"
        )


def target_ranks(ranked: Tensor, targets: Tensor) -> Tensor:
    """Position of each user's target in their ranked list.

    Args:
        ranked: ``[U, K]`` item ids, best first (may hold duplicates or padding like ``-1``).
        targets: ``[U]`` held-out item id per user.

    Returns:
        ``[U]`` long ranks from 0: the *first* position where ``ranked == target``
        (later duplicates are ignored), ``-1`` when the target is absent.
    """
    _check_users(ranked, targets, "ranked")
    hits = ranked == targets.to(ranked.device).unsqueeze(1)
    if ranked.shape[1] == 0:
        return torch.full((ranked.shape[0],), -1, dtype=torch.long, device=ranked.device)
    # argmax returns the index of the first maximal value.
    first = hits.to(torch.uint8).argmax(dim=1)
    return torch.where(hits.any(dim=1), first, torch.full_like(first, -1)).long()


def ranks_from_scores(scores: Tensor, targets: Tensor, ties: str = "id") -> Tensor:
    """Rank of each user's target in a full score vector over all items (full ranking).

    Higher score = better. Tie rules:

    - ``"id"`` (default): ``rank = #{i : s_i > s_t} + #{i < t : s_i == s_t}`` -- the target's
      position when items are sorted by score descending, ties by ascending item id (the
      order a stable descending sort produces). Tied items with a smaller id than the target
      count ahead of it; tied items with a larger id do not.
    - ``"pessimistic"``: ``rank = #{i != t : s_i >= s_t}`` -- every tied item counts ahead
      (a constant scorer gets the worst rank ``I - 1``).

    Exclude items (e.g. padding id 0 or already-seen items) beforehand by setting their
    scores to ``-inf``. NaN scores never count ahead of the target; a NaN target score gets
    the worst rank ``I - 1``.

    Args:
        scores: ``[U, I]`` scores of every item.
        targets: ``[U]`` held-out item id per user.
        ties: ``"id"`` or ``"pessimistic"``.

    Returns:
        ``[U]`` long ranks from 0.
    """
    _check_users(scores, targets, "scores")
    if ties not in TIE_RULES:
        raise ValueError(f"unknown tie rule {ties!r}; valid: {list(TIE_RULES)}")
    targets = targets.to(scores.device).long()
    s_t = scores.gather(1, targets.unsqueeze(1))  # [U, 1]
    higher = (scores > s_t).sum(1)
    tied = scores == s_t
    if ties == "id":
        ids = torch.arange(scores.shape[1], device=scores.device)
        tied_ahead = (tied & (ids.unsqueeze(0) < targets.unsqueeze(1))).sum(1)
    else:
        tied_ahead = tied.sum(1) - 1  # minus the target itself
    rank = higher + tied_ahead
    # A NaN target score cannot be ordered: count it as the worst rank.
    worst = torch.full_like(rank, scores.shape[1] - 1)
    return torch.where(torch.isnan(s_t.squeeze(1)), worst, rank).long()


def user_metrics(ranks: Tensor, ks: Sequence[int] = (5, 10)) -> dict[str, Tensor]:
    """Per-user HR@k and NDCG@k from 0-based target ranks (``-1`` = absent, a miss).

    Returns:
        ``{"hit@k": [U], "ndcg@k": [U]}`` (float64, CPU) for each ``k`` in ``ks``, in order.
    """
    if ranks.dim() != 1:
        raise ValueError(f"ranks must be [U], got shape {tuple(ranks.shape)}")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cutoffs, got {ks}")
    r = ranks.long().cpu()
    found = r >= 0
    gain = torch.where(found, 1.0 / torch.log2(r.clamp_min(0).double() + 2.0), 0.0)
    out: dict[str, Tensor] = {}
    for k in ks:
        hit = found & (r < k)
        out[f"hit@{k}"] = hit.double()
        out[f"ndcg@{k}"] = torch.where(hit, gain, 0.0)
    return out


def metrics_from_ranks(ranks: Tensor, ks: Sequence[int] = (5, 10)) -> dict[str, float]:
    """HR@k and NDCG@k from 0-based target ranks (``-1`` = absent, a miss).

    Returns:
        ``{"hit@k": ..., "ndcg@k": ...}`` for each ``k`` in ``ks`` (in that order), means over
        all ``U`` users as Python floats.
    """
    if ranks.dim() == 1 and ranks.numel() == 0:
        raise ValueError("metrics need at least one user, got U = 0")
    return {name: values.mean().item() for name, values in user_metrics(ranks, ks).items()}


def rank_metrics(ranked: Tensor, targets: Tensor, ks: Sequence[int] = (5, 10)) -> dict[str, float]:
    """HR@k and NDCG@k of top-K recommendation lists, one relevant item per user.

    Args:
        ranked: ``[U, K]`` recommended item ids, best first. Only the first occurrence of the
            target counts, so duplicates cannot inflate the metrics.
        targets: ``[U]`` held-out item id per user.
        ks: cutoffs; ``K`` must be at least ``max(ks)``.

    Returns:
        ``{"hit@5", "ndcg@5", "hit@10", "ndcg@10"}`` for the default ``ks`` (generally
        ``hit@k``/``ndcg@k`` for each ``k``), means over all ``U`` users.

    Raises:
        ValueError: when the lists are shorter than ``max(ks)`` (never evaluates silently with
            fewer candidates), or on shape mismatch.
    """
    _check_users(ranked, targets, "ranked")
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("ks must hold at least one cutoff")
    if ranked.shape[1] < max(ks):
        raise ValueError(
            f"ranked lists have K={ranked.shape[1]} items but max(ks)={max(ks)}: "
            "need at least max(ks) candidates per user"
        )
    return metrics_from_ranks(target_ranks(ranked, targets), ks)
