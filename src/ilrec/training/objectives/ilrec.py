"""The ILRec training objective (paper Sections 2.2-2.4, Eqs. 2-12).

One forward pass keeps every hidden state; logits are computed only at the supervised
positions (gather first, then the final norm + LM head), never for the whole sequence:

- final logits ``z = P^L``: the model's own head on ``hidden_states[-1]`` (already normed);
- candidate layers ``l``: ``P^l = φ(h^l)`` with ``φ`` = the model's final norm + LM head
  (``objective.head=shared``, logit-lens style, no new parameters) or per-layer trainable copies
  of them attached to the model as ``ilrec_heads`` (``objective.head=separate``);
- negatives (Eqs. 3-5) from the ensemble of the candidate layers, or from the final layer's own
  logits (``objective.negatives_from=final`` or ``k=0``: the "w/o CNS" / "FL+CPO" variants);
  penalty weights (Eq. 6); all without gradient;
- ``loss = CPO (Eq. 7; plain CE with objective.cpo=false) + λ·CPD (Eq. 8) + μ·CRR (Eq. 11)``.

Terms whose weight is 0 are not computed (no CPD logits with gradient when λ = 0, no negatives
when neither CPO with β ≠ 0 nor CRR needs them). All loss math is float32.

Candidate layers: ``objective.layers`` when given (``1..L-1`` index ``hidden_states``; negative
entries count from the end like Python indexing of ``hidden_states``, ``-2`` being layer
``L-1``), else the ``k`` layers directly below the last, ``L-k .. L-1``.

Logged per step: ``cpo`` (or ``ce``), ``cpd`` (whenever candidate logits exist; without
gradient when λ = 0), ``crr`` (μ > 0), ``loss_total``, ``neg_per_pos`` and
``neg_logit_negative_frac`` (when negatives are extracted), and ``ce_layer_{l}``, the
cross-entropy of every candidate layer's own prediction and of the final layer ``ce_layer_{L}``
(paper Figure 2; see :func:`ilrec.evaluation.layer_curves.plot_layer_losses`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ilrec.config import ConfigError, ObjectiveConfig
from ilrec.losses import (
    cpd_loss,
    cpo_loss,
    crr_loss,
    ensemble_logits,
    extract_negatives,
    penalty_weights,
)
from ilrec.models.layers import LMParts, causal_lm, final_logits, gather, lm_parts
from ilrec.training.objectives.base import ForwardResult, ObjectiveOutput, forward_supervised

__all__ = ["HEADS_ATTR", "ILRecObjective", "RewardProvider", "candidate_layers"]

RewardProvider = Callable[[dict[str, Tensor], Tensor, Tensor], Tensor]
"""``(batch, index[N, 2], targets[N]) -> rewards[N, V]`` (Eq. 10), for CRR."""

HEADS_ATTR = "ilrec_heads"
"""Attribute of the causal LM holding the separate per-layer heads (``nn.ModuleDict``)."""


def candidate_layers(cfg: ObjectiveConfig, n_layers: int) -> list[int]:
    """The candidate layers ``l`` (indices into ``hidden_states``), ascending.

    Raises:
        ConfigError: ``k`` or an explicit layer does not fit a model with ``n_layers`` layers.
    """
    top = n_layers - 1
    if cfg.layers is not None:
        resolved = []
        for layer in cfg.layers:
            index = layer if layer > 0 else n_layers + 1 + layer
            if not 1 <= index <= top:
                raise ConfigError(
                    f"objective.layers: {layer} is not an intermediate layer of a model with "
                    f"{n_layers} layers (valid: 1..{top}, or -2..-{n_layers} from the end)"
                )
            resolved.append(index)
        if len(set(resolved)) != len(resolved):
            raise ConfigError(
                f"objective.layers {cfg.layers} name the same layer twice for a model with "
                f"{n_layers} layers (resolved: {resolved})"
            )
        return sorted(resolved)
    if cfg.k > top:
        raise ConfigError(
            f"objective.k={cfg.k} is too large: the model has {n_layers} layers, so at most "
            f"k={top} intermediate layers lie below the last one"
        )
    return list(range(n_layers - cfg.k, n_layers))


def _plain_linear(head: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` behind an LM head (unwrapping PEFT's ``ModulesToSaveWrapper``)."""
    if isinstance(head, nn.Linear):
        return head
    to_save = getattr(head, "modules_to_save", None)
    if isinstance(to_save, nn.ModuleDict) and len(to_save):
        active = getattr(head, "active_adapters", None) or []
        name = next((a for a in active if a in to_save), next(iter(to_save)))
        return _plain_linear(to_save[name])
    for attr in ("original_module", "base_layer"):
        inner = getattr(head, attr, None)
        if isinstance(inner, nn.Module):
            return _plain_linear(inner)
    raise TypeError(f"cannot copy an LM head of type {type(head).__name__}")


def attach_separate_heads(model: nn.Module, parts: LMParts, layers: list[int]) -> nn.ModuleDict:
    """Trainable per-layer copies of the final norm + LM head (initialised from them), attached
    to the causal LM as ``ilrec_heads`` so the optimizer, DDP and checkpoints see them."""
    base = causal_lm(model)
    keys = [str(layer) for layer in layers]
    existing = getattr(base, HEADS_ATTR, None)
    if isinstance(existing, nn.ModuleDict) and sorted(existing.keys()) == sorted(keys):
        return existing  # built twice on the same model (e.g. a resumed run)
    linear = _plain_linear(parts.head)
    heads = nn.ModuleDict()
    for key in keys:
        norm = copy.deepcopy(parts.norm)
        head = nn.Linear(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        with torch.no_grad():
            head.weight.copy_(linear.weight)
            if linear.bias is not None:
                head.bias.copy_(linear.bias)
        module = nn.Sequential(norm, head)
        module.requires_grad_(True)
        heads[key] = module
    setattr(base, HEADS_ATTR, heads)
    return heads


def _cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy; 0 (attached to the graph) without positions."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets)


@torch.no_grad()
def _logged_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy for the logs: ``logsumexp - z_y``, no ``[N, V]`` output."""
    if targets.numel() == 0:
        return logits.new_zeros(())
    z_y = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
    return (torch.logsumexp(logits, dim=-1) - z_y).mean()


class ILRecObjective:
    """``OBJECTIVES["ilrec"]``: CPO + λ·CPD + μ·CRR with self-hard negatives from the
    intermediate layers (see the module docstring).

    Args:
        cfg: the ``objective`` section.
        model: the (unwrapped or PEFT-wrapped) causal LM, before the Trainer wraps it; with
            ``head=separate`` the per-layer heads are attached to it here.

    Raises:
        ConfigError: ``k`` / ``layers`` do not fit the model, or ``head=separate`` without
            candidate layers.
    """

    def __init__(self, cfg: ObjectiveConfig, model: nn.Module) -> None:
        self.cfg = cfg
        parts = lm_parts(model)
        self.n_layers = parts.n_layers
        self.layers = candidate_layers(cfg, self.n_layers)
        self.final_negatives = cfg.negatives_from == "final" or not self.layers
        self.reward_provider: RewardProvider | None = None
        if cfg.head == "separate":
            if not self.layers:
                raise ConfigError(
                    "objective.head=separate needs candidate layers (k >= 1 or layers)"
                )
            attach_separate_heads(model, parts, self.layers)

    def set_reward_provider(self, fn: RewardProvider | None) -> ILRecObjective:
        """Set the CRR reward callable ``(batch, index, targets) -> rewards [N, V]``."""
        self.reward_provider = fn
        return self

    # ----------------------------------------------------------------------------------

    def final_logits(self, model: nn.Module, result: ForwardResult) -> Tensor:
        """``z = P^L`` at the supervised positions, float32 ``[N, V]``."""
        return final_logits(model, result.hidden[-1], result.index)

    def layer_logits(self, model: nn.Module, result: ForwardResult) -> Tensor:
        """``P^l = φ(h^l)`` of the candidate layers at the supervised positions, float32
        ``[k, N, V]`` (gather first, then norm + head)."""
        hidden = torch.stack([gather(result.hidden[layer], result.index) for layer in self.layers])
        if self.cfg.head == "separate":
            heads = getattr(causal_lm(model), HEADS_ATTR)
            logits = torch.stack(
                [heads[str(layer)](hidden[i]) for i, layer in enumerate(self.layers)]
            )
        else:
            parts = lm_parts(model)
            logits = parts.head(parts.norm(hidden))
        return logits.float()

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> ObjectiveOutput:
        cfg = self.cfg
        use_cpo = cfg.cpo and cfg.beta != 0
        use_crr = cfg.mu_crr > 0
        need_negatives = use_cpo or use_crr
        use_cpd = cfg.lambda_cpd > 0 and bool(self.layers)
        if use_crr and self.reward_provider is None:
            raise ConfigError(
                f"objective.mu_crr={cfg.mu_crr} > 0 but the ILRec objective has no CRR reward "
                "provider: call ILRecObjective.set_reward_provider(fn) (built from "
                "objective.cf_run), or set objective.mu_crr=0"
            )

        result = forward_supervised(model, batch)
        targets = result.targets
        z = self.final_logits(model, result)

        layer_logits = None
        if self.layers and (
            use_cpd or cfg.layer_logs or (need_negatives and not self.final_negatives)
        ):
            with torch.set_grad_enabled(use_cpd and torch.is_grad_enabled()):
                layer_logits = self.layer_logits(model, result)

        logs: dict[str, Tensor] = {}
        loss_terms: list[Tensor] = []

        neg_mask = weights = None
        if need_negatives:
            with torch.no_grad():
                source = (
                    z.detach()
                    if self.final_negatives
                    else ensemble_logits(layer_logits.detach(), cfg.ensemble)
                )
                probs = source.softmax(-1)
                neg_mask = extract_negatives(probs, targets, cfg.alpha, cfg.max_negatives)
                weights = penalty_weights(probs, neg_mask)
                n_neg = neg_mask.sum()
                logs["neg_per_pos"] = n_neg.float() / max(targets.numel(), 1)
                if int(n_neg) > 0:
                    negative_logit = (z.detach() < 0) & neg_mask
                    logs["neg_logit_negative_frac"] = negative_logit.sum().float() / n_neg

        if use_cpo:
            main = cpo_loss(z, targets, weights, cfg.beta, penalty=cfg.penalty)
            final_ce = _logged_cross_entropy(z.detach(), targets) if cfg.layer_logs else None
        else:
            main = final_ce = _cross_entropy(z, targets)  # CPO with beta 0 is CE
        logs["cpo" if cfg.cpo else "ce"] = main.detach()
        loss_terms.append(main)

        if layer_logits is not None:
            if use_cpd:
                cpd = cpd_loss(layer_logits, z)
                loss_terms.append(cfg.lambda_cpd * cpd)
            else:
                with torch.no_grad():
                    cpd = cpd_loss(layer_logits, z.detach())
            logs["cpd"] = cpd.detach()

        if use_crr:
            rewards = self.reward_provider(batch, result.index, targets)
            rewards = rewards.to(device=z.device, dtype=torch.float32)
            crr = crr_loss(z, targets, neg_mask, rewards)
            loss_terms.append(cfg.mu_crr * crr)
            logs["crr"] = crr.detach()

        loss = loss_terms[0]
        for term in loss_terms[1:]:
            loss = loss + term
        logs["loss_total"] = loss.detach()

        if cfg.layer_logs:
            with torch.no_grad():
                if layer_logits is not None:
                    for i, layer in enumerate(self.layers):
                        logs[f"ce_layer_{layer}"] = _logged_cross_entropy(
                            layer_logits[i].detach(), targets
                        )
                logs[f"ce_layer_{self.n_layers}"] = final_ce.detach()

        # one device sync for all the logged values
        values = torch.stack([v.detach().float().reshape(()) for v in logs.values()]).tolist()
        return ObjectiveOutput(loss, dict(zip(logs, values, strict=True)))
