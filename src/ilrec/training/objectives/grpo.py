"""GRPO with verifiable rewards on trie-constrained rollouts (RLVR; paper Appendix A.4).

Per batch of prompts: G rollouts each (:mod:`ilrec.rl.rollouts`, no gradient),
rewards (:mod:`ilrec.rl.rewards`), group-normalised advantages, then the clipped
policy-ratio loss with a k3 KL to the frozen reference (:func:`ilrec.losses.grpo_loss`), token
means per rollout then the mean over rollouts. A batch of rollouts is reused for
``align.inner_steps`` consecutive optimizer steps (the stage feeds each batch that many
times); the first of them has ratio 1 (REINFORCE with the group mean as baseline).

Logged per step: ``reward_mean``, ``group_hit_rate`` (share of prompts with a rollout equal to
the target), ``kl``, ``clip_frac``, ``rollout_seconds`` (next to the Trainer's
``step_seconds``), ``rationale_tokens`` with reasoning.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ilrec.config import AlignConfig
from ilrec.data.encoding import Encoder
from ilrec.data.packing import PackedCollator, pack_responses
from ilrec.identifiers.trie import PrefixTrie
from ilrec.losses import grpo_advantages, grpo_loss
from ilrec.models.modes import eval_mode
from ilrec.models.scoring import response_token_logprobs
from ilrec.rl import rollouts as ro
from ilrec.rl.rewards import build_reward
from ilrec.training.objectives.base import ObjectiveOutput

__all__ = ["GRPOObjective"]


@dataclass
class _Rollout:
    key: tuple[int, ...]
    batch: dict[str, Tensor]  # packed prompt + G responses per row
    old_logp: Tensor | None  # [U, G, D] at rollout time (None: ratio 1)
    ref_logp: Tensor | None  # [U, G, D]
    advantages: Tensor  # [U * G]
    rewards: Tensor  # [U, G]
    hits: Tensor  # [U] bool
    rationale_tokens: float
    uses: int = 0


class GRPOObjective:
    """``OBJECTIVES["grpo"]`` (see the module docstring).

    Args:
        cfg: the ``align`` section.
        model: the policy (its frozen copy is the reference when ``cfg.beta > 0``).
        encoder: the run's encoder (prompts, identifier responses, the item trie).
    """

    def __init__(self, cfg: AlignConfig, model: nn.Module, encoder: Encoder) -> None:
        self.cfg, self.encoder = cfg, encoder
        self.trie = PrefixTrie.from_item_tokens(encoder.item_table())
        self.reward = build_reward(cfg.reward, cfg.reward_run)
        self.reference = None
        if cfg.beta > 0:
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.collate = PackedCollator(encoder.tokenizer.pad_token_id)
        self._rollout: _Rollout | None = None

    def __call__(self, model: nn.Module, batch: dict) -> ObjectiveOutput:
        key = tuple(batch["example"].tolist())
        start = time.perf_counter()
        current = self._rollout
        if current is None or current.key != key or current.uses >= self.cfg.inner_steps:
            current = self._rollout = self._roll_out(model, batch, key)
        rollout_seconds = time.perf_counter() - start
        current.uses += 1
        logp, mask = response_token_logprobs(model, current.batch)  # [U, G, D]
        flat = logp.shape[0] * logp.shape[1], logp.shape[2]
        old = current.old_logp if current.old_logp is not None else logp.detach()
        loss, stats = grpo_loss(
            logp.reshape(flat),
            old.reshape(flat),
            None if current.ref_logp is None else current.ref_logp.reshape(flat),
            current.advantages,
            mask.reshape(flat),
            self.cfg.beta,
            self.cfg.clip_eps,
        )
        logs = {
            "reward_mean": current.rewards.mean().item(),
            "group_hit_rate": current.hits.float().mean().item(),
            "kl": stats["kl"].item(),
            "clip_frac": stats["clip_frac"].item(),
            "rollout_seconds": rollout_seconds,
        }
        if self.cfg.reasoning_tokens:
            logs["rationale_tokens"] = current.rationale_tokens
        return ObjectiveOutput(loss, logs)

    @torch.no_grad()
    def _roll_out(self, model: nn.Module, batch: dict, key: tuple[int, ...]) -> _Rollout:
        cfg, encoder = self.cfg, self.encoder
        prompts, targets = batch["prompt"], batch["target"].cpu()
        # seeded by the batch, so a resumed run draws the same rollouts
        generator = torch.Generator().manual_seed(hash((cfg.seed, *key)) % 2**62)
        pad = encoder.tokenizer.pad_token_id
        if cfg.reasoning_tokens:
            result = ro.reasoning_rollouts(
                model,
                encoder.tokenizer,
                prompts,
                self.trie,
                cfg.rollouts,
                cfg.reasoning_tokens,
                cfg.temperature,
                generator,
            )
        elif cfg.rollout == "beam":
            result = ro.beam_rollouts(model, prompts, self.trie, cfg.rollouts, pad, len(prompts))
        else:
            result = ro.sampled_rollouts(
                model, prompts, self.trie, cfg.rollouts, pad, cfg.temperature, generator
            )
        items = result.items
        features = [
            pack_responses(
                prompt,
                [prefix + encoder.response_ids(i) for prefix, i in zip(pre, row, strict=True)],
            )
            for prompt, pre, row in zip(prompts, result.prefixes, items.tolist(), strict=True)
        ]
        device = next(model.parameters()).device
        packed = {k: v.to(device) for k, v in self.collate(features).items()}
        needs_old = cfg.inner_steps > 1 or (cfg.reward == "ranking" and cfg.rollout == "sample")
        old = _eval_logprobs(model, packed) if needs_old else None
        if cfg.reward == "ranking" and cfg.rollout == "sample":
            order = old.sum(-1).argsort(dim=1, descending=True, stable=True).cpu()
            items = items.gather(1, order)  # rank order for the rank-aware penalty
            packed, old = _reorder(packed, order.to(device)), old.gather(1, _expand(order, old))
        rewards = self.reward(
            items, targets, histories=batch.get("history"), users=batch.get("user")
        ).float()
        ref = _eval_logprobs(self.reference, packed) if self.reference is not None else None
        lengths = [len(p) for group in result.prefixes for p in group]
        return _Rollout(
            key=key,
            batch=packed,
            old_logp=old,
            ref_logp=ref,
            advantages=grpo_advantages(rewards).reshape(-1).to(device),
            rewards=rewards,
            hits=(items == targets[:, None]).any(1),
            rationale_tokens=sum(lengths) / max(len(lengths), 1),
        )


def _eval_logprobs(model: nn.Module, packed: dict[str, Tensor]) -> Tensor:
    with eval_mode(model):
        return response_token_logprobs(model, packed)[0]


def _expand(order: Tensor, like: Tensor) -> Tensor:
    return order.to(like.device)[..., None].expand(-1, -1, like.shape[-1])


def _reorder(packed: dict[str, Tensor], order: Tensor) -> dict[str, Tensor]:
    """Permute the responses of each row (only the scoring indices move)."""
    out = dict(packed)
    for key in ("score_pos", "score_tok"):
        out[key] = packed[key].gather(1, _expand(order, packed[key]))
    return out
