"""ILRec loss functions (paper Sections 2.2-2.4, Appendix A.3 and A.6).

Every function here is pure and works on the *flattened supervised positions* of a batch:
``N`` positions (the identifier tokens of target items, labels != -100), a vocabulary of size
``V`` and ``k`` candidate intermediate layers. Conventions shared by all functions:

- Inputs of any floating dtype (e.g. bf16) are upcast; all arithmetic is float32 and the
  results are float32.
- Softmaxes are computed with ``log_softmax`` / ``logsumexp`` (numerically stable).
- Everything is vectorized over positions, tokens and the vocabulary.
- Negatives (Eqs. 4-5), penalty weights (Eq. 6), ensemble layer weights (Appendix A.6),
  the CPD teacher (Eq. 8) and the CRR soft labels (Eq. 11) carry no gradient.
- Loss reductions are the mean over the ``N`` positions; with ``N == 0`` a loss is ``0``
  (still attached to the graph, so ``backward()`` works).

Pipeline of one training step (Eqs. 3-12)::

    P_hat = ensemble_logits(layer_logits)                      # Eq. 3
    p_hat = P_hat.softmax(-1)
    neg = extract_negatives(p_hat, y, alpha)                   # Eqs. 4-5
    w = penalty_weights(p_hat, neg)                            # Eq. 6
    loss = (cpo_loss(z, y, w, beta)                            # Eq. 7
            + lam * cpd_loss(layer_logits, z)                  # Eq. 8
            + mu * crr_loss(z, y, neg, rewards))               # Eqs. 11-12
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "ENSEMBLE_STRATEGIES",
    "PENALTIES",
    "cpd_loss",
    "cpo_loss",
    "crr_loss",
    "ensemble_logits",
    "extract_negatives",
    "penalty_weights",
]


def _check_positions(logits: Tensor, targets: Tensor, name: str = "logits") -> None:
    if logits.dim() != 2:
        raise ValueError(f"{name} must be [N, V], got shape {tuple(logits.shape)}")
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
        raise ValueError(
            f"targets must be [N] with N={logits.shape[0]}, got shape {tuple(targets.shape)}"
        )


def _check_same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )


def _mean_over_positions(per_position: Tensor, anchor: Tensor) -> Tensor:
    """Mean over the last dim; an empty set of positions gives 0 attached to ``anchor``."""
    if per_position.shape[-1] == 0:
        return anchor.sum() * 0.0
    return per_position.mean(-1)


# --------------------------------------------------------------------------------------
# Eq. 3 and Appendix A.6: ensembling the intermediate layers
# --------------------------------------------------------------------------------------


def _uniform_weights(logits: Tensor) -> Tensor:
    k, n, _ = logits.shape
    return logits.new_full((k, n), 1.0 / k)


def _variance_weights(logits: Tensor) -> Tensor:
    probs = logits.softmax(-1)
    var = probs.var(-1, unbiased=False)  # [k, N]
    total = var.sum(0, keepdim=True)
    # All layers uniform (zero variance everywhere): fall back to the plain mean.
    return torch.where(
        total > 0, var / total.clamp_min(torch.finfo(var.dtype).tiny), 1.0 / var.shape[0]
    )


def _entropy_weights(logits: Tensor) -> Tensor:
    logp = logits.log_softmax(-1)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    entropy = -plogp.sum(-1)  # [k, N]
    return (-entropy).softmax(0)


def _max_prob_weights(logits: Tensor) -> Tensor:
    max_p = logits.softmax(-1).amax(-1)  # [k, N], each >= 1/V > 0
    return max_p / max_p.sum(0, keepdim=True)


ENSEMBLE_STRATEGIES: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": _uniform_weights,
    "variance": _variance_weights,
    "entropy": _entropy_weights,
    "max_prob": _max_prob_weights,
}
"""Registry of layer-weighting functions: float32 logits ``[k, N, V]`` -> weights ``[k, N]``
that are non-negative and sum to 1 over the layers."""


def ensemble_logits(layer_logits: Tensor, strategy: str = "mean") -> Tensor:
    r"""Ensemble logits of the candidate intermediate layers (Eq. 3, Appendix A.6).

    Eq. 3: :math:`\hat P = \frac{1}{k}\sum_{l} P^l`. The other strategies replace the uniform
    ``1/k`` by per-position layer weights :math:`\omega_l(n)` (non-negative, summing to 1 over
    the layers) and return :math:`\hat P_n = \sum_l \omega_l(n) P^l_n`. With
    :math:`p^l = \mathrm{softmax}(P^l_n)` over the vocabulary:

    - ``"mean"``: :math:`\omega_l = 1/k` (the paper's default; plain average).
    - ``"variance"``: :math:`\omega_l \propto \mathrm{Var}_v[p^l_v]` (population variance of
      the layer's distribution over ``V``), normalised over the layers; if every layer is
      exactly uniform (all variances 0) the weights fall back to ``1/k``.
    - ``"entropy"``: :math:`\omega = \mathrm{softmax}_l(-H(p^l))`, with
      :math:`H(p) = -\sum_v p_v \log p_v` -- more confident layers weigh more.
    - ``"max_prob"``: :math:`\omega_l \propto \max_v p^l_v`, normalised over the layers.

    The weights are computed without gradient; the result is differentiable with respect to
    ``layer_logits`` through the weighted sum only.

    Args:
        layer_logits: ``[k, N, V]`` logits of the ``k >= 1`` candidate layers (any float dtype).
        strategy: one of :data:`ENSEMBLE_STRATEGIES`.

    Returns:
        ``[N, V]`` float32 ensemble logits :math:`\hat P`.

    Raises:
        ValueError: unknown ``strategy``, wrong rank or ``k == 0``.
    """
    if strategy not in ENSEMBLE_STRATEGIES:
        raise ValueError(
            f"unknown ensemble strategy {strategy!r}; valid: {sorted(ENSEMBLE_STRATEGIES)}"
        )
    if layer_logits.dim() != 3:
        raise ValueError(f"layer_logits must be [k, N, V], got shape {tuple(layer_logits.shape)}")
    if layer_logits.shape[0] == 0:
        raise ValueError("ensemble_logits needs at least one layer (k >= 1), got k = 0")
    logits = layer_logits.float()
    if logits.shape[0] == 1:  # one layer: every strategy's weight is 1
        return logits[0]
    if strategy == "mean":
        return logits.mean(0)
    with torch.no_grad():
        weights = ENSEMBLE_STRATEGIES[strategy](logits.detach())
    return (weights.unsqueeze(-1) * logits).sum(0)


# --------------------------------------------------------------------------------------
# Eqs. 4-6: self-hard negatives and their penalty weights
# --------------------------------------------------------------------------------------


@torch.no_grad()
def extract_negatives(
    ens_probs: Tensor, targets: Tensor, alpha: float, max_negatives: int | None = None
) -> Tensor:
    r"""Self-hard negative tokens from the ensemble distribution (Eqs. 4-5).

    :math:`\tau = \alpha\,\hat p(y)` (Eq. 4) and
    :math:`V_N = \{v \ne y : \hat p(v) \ge \tau\}` (Eq. 5), per position. The target is never
    a negative. With ``max_negatives`` set, only the ``max_negatives`` negatives with the
    highest :math:`\hat p` are kept per position (ties at the cut broken arbitrarily);
    ``max_negatives <= 0`` keeps none.

    Args:
        ens_probs: ``[N, V]`` ensemble probabilities :math:`\hat p = \mathrm{softmax}(\hat P)`.
        targets: ``[N]`` target token ids.
        alpha: threshold factor :math:`\alpha`.
        max_negatives: optional per-position cap on the number of negatives.

    Returns:
        ``[N, V]`` boolean mask of :math:`V_N` (no gradient).
    """
    _check_positions(ens_probs, targets, "ens_probs")
    probs = ens_probs.detach().float()
    targets = targets.long()
    p_y = probs.gather(1, targets.unsqueeze(1))  # [N, 1]
    mask = probs >= alpha * p_y
    mask.scatter_(1, targets.unsqueeze(1), False)
    if max_negatives is not None:
        n_keep = min(int(max_negatives), probs.shape[1])
        if n_keep <= 0:
            return torch.zeros_like(mask)
        if n_keep < probs.shape[1]:
            ranked = probs.masked_fill(~mask, float("-inf"))
            top = ranked.topk(n_keep, dim=1).indices
            keep = torch.zeros_like(mask)
            keep.scatter_(1, top, True)
            mask &= keep
    return mask


@torch.no_grad()
def penalty_weights(ens_probs: Tensor, neg_mask: Tensor) -> Tensor:
    r"""Penalty weight of each negative token (Eq. 6).

    :math:`w_v = \exp(\hat p(v)) / \sum_{u\in V_N}\exp(\hat p(u))` for :math:`v \in V_N`,
    else 0 -- a softmax of the *probabilities* (as the paper writes it) restricted to the
    negative set. A position without negatives gets an all-zero row (no NaN).

    Args:
        ens_probs: ``[N, V]`` ensemble probabilities :math:`\hat p`.
        neg_mask: ``[N, V]`` boolean mask of :math:`V_N` (from :func:`extract_negatives`).

    Returns:
        ``[N, V]`` float32 weights (no gradient); each non-empty row sums to 1.
    """
    _check_same_shape(ens_probs, neg_mask, "ens_probs", "neg_mask")
    if ens_probs.dim() != 2:
        raise ValueError(f"ens_probs must be [N, V], got shape {tuple(ens_probs.shape)}")
    # probabilities lie in [0, 1], so exp needs no max-shift; each negative adds exp(p) >= 1,
    # so the clamp only turns an empty row's 0 / 0 into 0
    scores = ens_probs.detach().float().exp() * neg_mask
    return scores / scores.sum(-1, keepdim=True).clamp_min(1.0)


PENALTIES = ("scale", "sign_aware")
"""``objective.penalty``: how a weight moves a negative's logit (see :func:`cpo_loss`)."""


# --------------------------------------------------------------------------------------
# Eq. 7: cross-layer preference optimization
# --------------------------------------------------------------------------------------


def cpo_loss(
    final_logits: Tensor,
    targets: Tensor,
    weights: Tensor,
    beta: float,
    penalty: str = "scale",
) -> Tensor:
    r"""Cross-layer preference optimization loss (Eq. 7).

    .. math:: L_{CPO} = -\log \frac{\exp(z_y)}{\sum_{v\in V}\exp(z'_v)},\qquad
              z'_v = z_v\,(1 + \beta w_v)

    with :math:`z` the final-layer logits (``P^L``) and :math:`w` the Eq. 6 weights (treated
    as constants). The numerator uses the unmodified :math:`z_y` (:math:`w_y = 0` anyway).
    The gradient (Appendix A.3) is
    :math:`\partial L/\partial z_v = \mathrm{softmax}(z')_v (1+\beta w_v) - [v = y]`.
    With all-zero weights (no negatives) it equals ``F.cross_entropy(final_logits, targets)``.

    ``penalty`` (``objective.penalty``) picks how a weight moves a negative's logit:

    - ``scale`` (the paper): :math:`z'_v = z_v (1 + \beta w_v)`;
    - ``sign_aware``: :math:`z'_v = z_v + \beta w_v |z_v|`, identical for positive logits; for
      a negative logit the paper's form pushes it further *down* (it rewards the negative's rank
      relative to the partition), while this form moves it up, so the negative is penalized
      whatever its sign.

    Args:
        final_logits: ``[N, V]`` final-layer logits (any float dtype).
        targets: ``[N]`` target token ids.
        weights: ``[N, V]`` penalty weights (detached inside).
        beta: penalization strength :math:`\beta`.
        penalty: ``scale`` or ``sign_aware``.

    Returns:
        Scalar float32 loss, mean over the ``N`` positions.
    """
    _check_positions(final_logits, targets, "final_logits")
    _check_same_shape(final_logits, weights, "final_logits", "weights")
    z = final_logits.float()
    w = weights.detach().float()
    if penalty == "scale":
        z_pen = z * (1.0 + beta * w)
    elif penalty == "sign_aware":
        z_pen = z + beta * w * z.abs()
    else:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    z_y = z.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    per_position = torch.logsumexp(z_pen, dim=-1) - z_y
    return _mean_over_positions(per_position, z)


# --------------------------------------------------------------------------------------
# Eq. 8: cross-layer preference distillation
# --------------------------------------------------------------------------------------


def cpd_loss(layer_logits: Tensor, final_logits: Tensor) -> Tensor:
    r"""Cross-layer preference distillation loss (Eq. 8).

    .. math:: L_{CPD} = \sum_{l} \mathrm{KL}\big(g(P^l)\,\|\,g(P^L)\big)
              = \sum_l \sum_v g(P^l)_v \big(\log g(P^l)_v - \log g(P^L)_v\big)

    with :math:`g` the softmax over the vocabulary, the student (intermediate layer)
    distribution first as the paper writes it, and the teacher :math:`P^L` = ``final_logits``
    detached inside this function: gradients reach the intermediate layers only.
    Each layer's KL is averaged over the ``N`` positions; the layers are summed.
    ``k == 0`` gives 0.

    Args:
        layer_logits: ``[k, N, V]`` logits of the candidate layers (students).
        final_logits: ``[N, V]`` final-layer logits (teacher).

    Returns:
        Scalar float32 loss.
    """
    if layer_logits.dim() != 3:
        raise ValueError(f"layer_logits must be [k, N, V], got shape {tuple(layer_logits.shape)}")
    if layer_logits.shape[1:] != final_logits.shape:
        raise ValueError(
            f"layer_logits [k, N, V] = {tuple(layer_logits.shape)} does not match "
            f"final_logits [N, V] = {tuple(final_logits.shape)}"
        )
    student_logp = layer_logits.float().log_softmax(-1)  # [k, N, V]
    teacher_logp = final_logits.detach().float().log_softmax(-1)  # [N, V]
    student_p = student_logp.exp()
    kl = (student_p * (student_logp - teacher_logp.unsqueeze(0))).sum(-1)  # [k, N]
    return _mean_over_positions(kl, student_logp).sum()


# --------------------------------------------------------------------------------------
# Eq. 11: collaborative reward regularization
# --------------------------------------------------------------------------------------


def crr_loss(final_logits: Tensor, targets: Tensor, neg_mask: Tensor, rewards: Tensor) -> Tensor:
    r"""Collaborative reward regularization loss (Eq. 11).

    With :math:`H = V_N \cup \{y\}` per position and soft labels
    :math:`q_v = \exp(r_v) / \sum_{u\in H}\exp(r_u)` for :math:`v \in H` (0 elsewhere;
    computed without gradient),

    .. math:: L_{CRR} = -\sum_{v\in H} q_v \,\log \mathrm{softmax}_V(z)_v .

    A position without negatives has :math:`H = \{y\}`, i.e. plain cross-entropy.

    Args:
        final_logits: ``[N, V]`` final-layer logits :math:`z`.
        targets: ``[N]`` target token ids.
        neg_mask: ``[N, V]`` boolean mask of :math:`V_N`.
        rewards: ``[N, V]`` token rewards :math:`r \in [0, 1]` (Eq. 10, see
            :func:`ilrec.rewards.prefix_rewards`); only entries in ``H`` are used.

    Returns:
        Scalar float32 loss, mean over the ``N`` positions.
    """
    _check_positions(final_logits, targets, "final_logits")
    _check_same_shape(final_logits, neg_mask, "final_logits", "neg_mask")
    _check_same_shape(final_logits, rewards, "final_logits", "rewards")
    z = final_logits.float()
    with torch.no_grad():
        in_h = neg_mask.bool().clone()
        in_h.scatter_(1, targets.long().unsqueeze(1), True)
        # softmax over H without a max-shift: rewards lie in [0, 1]
        labels = rewards.detach().float().exp() * in_h
        labels /= labels.sum(-1, keepdim=True)  # >= 1: the target is always in H
    # -sum_v q_v log softmax(z)_v = logsumexp(z) - sum_v q_v z_v, since sum_v q_v = 1
    per_position = torch.logsumexp(z, dim=-1) - (labels * z).sum(-1)
    return _mean_over_positions(per_position, z)
