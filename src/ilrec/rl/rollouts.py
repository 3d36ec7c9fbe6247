"""GRPO rollouts: G valid items per prompt from trie-constrained decoding, without gradient.

- ``beam``: the G best distinct items by constrained beam search (MiniOneRec's recipe; the
  project's batched trie walk, :func:`ilrec.evaluation.beam.constrained_beam_search`);
- ``sample``: G independent trie-constrained samples at a temperature (items may repeat);
- reasoning (RLVR-reasoning): up to N free tokens of rationale sampled by Hugging Face
  ``generate``, then a fixed separator, then a trie-constrained sampled identifier. The
  reward reads only the identifier; the rationale is part of the response that is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ilrec.evaluation.beam import constrained_beam_search, last_logits_kwargs, left_pad
from ilrec.evaluation.reasoning import REASONING_SEPARATOR, generate_rationales
from ilrec.identifiers.trie import PrefixTrie
from ilrec.models.modes import eval_mode

__all__ = ["Rollouts", "beam_rollouts", "reasoning_rollouts", "sampled_rollouts"]


@dataclass
class Rollouts:
    """``items[U, G]`` valid item ids; ``prefixes[U][G]`` token ids generated before each
    identifier (rationale + separator; empty lists without reasoning)."""

    items: Tensor
    prefixes: list[list[list[int]]]


def _no_prefixes(n_users: int, g: int) -> list[list[list[int]]]:
    return [[[] for _ in range(g)] for _ in range(n_users)]


def beam_rollouts(
    model: nn.Module, prompts: list[list[int]], trie: PrefixTrie, g: int, pad: int, batch: int
) -> Rollouts:
    """The G best distinct items per prompt, in beam (score) order."""
    items, _ = constrained_beam_search(
        model, prompts, trie, num_beams=g, batch_size=batch, pad_token_id=pad
    )
    return Rollouts(items, _no_prefixes(len(prompts), g))


@torch.inference_mode()
def constrained_sample(
    model: nn.Module,
    prompts: list[list[int]],
    trie: PrefixTrie,
    n: int,
    temperature: float,
    generator: torch.Generator,
    pad: int,
) -> Tensor:
    """``[U, n]`` items sampled token by token from the model restricted to the trie.

    The prompts run once; their KV cache is repeated ``n`` times; each step samples from
    ``softmax(logits / temperature)`` over the children of the row's trie node.
    """
    with eval_mode(model):
        device = next(model.parameters()).device
        trie = trie if trie.device == device else trie.to(device)
        ids, mask, positions = left_pad(prompts, pad, device)
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            **last_logits_kwargs(model),
        )
        rows = torch.arange(len(prompts), device=device).repeat_interleave(n)
        cache = out.cache
        cache.reorder_cache(rows)
        mask = mask[rows]
        logits = out.logits[:, -1][rows]
        nodes = torch.zeros(rows.numel(), dtype=torch.long, device=device)
        next_pos = positions[rows, -1] + 1
        while True:
            allowed = trie.allowed_mask(nodes, logits.shape[-1])
            done = ~allowed.any(1)  # leaves (complete identifiers)
            if bool(done.all()):
                break
            scaled = (logits.float() / temperature).masked_fill(~allowed, float("-inf"))
            scaled[done] = 0.0  # finished rows draw a dummy token that is never used
            probs = torch.softmax(scaled, dim=-1)
            token = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
            nodes = torch.where(done, nodes, trie.step(nodes, token))
            token = torch.where(done, torch.full_like(token, pad), token)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                cache=cache,
                use_cache=True,
            )
            cache, logits, next_pos = out.cache, out.logits[:, -1], next_pos + 1
        items = trie.item_at(nodes)
        if bool((items < 0).any()):
            raise RuntimeError("constrained sampling ended outside an item (empty trie node)")
        return items.reshape(len(prompts), n).cpu()


def sampled_rollouts(
    model: nn.Module,
    prompts: list[list[int]],
    trie: PrefixTrie,
    g: int,
    pad: int,
    temperature: float,
    generator: torch.Generator,
) -> Rollouts:
    items = constrained_sample(model, prompts, trie, g, temperature, generator, pad)
    return Rollouts(items, _no_prefixes(len(prompts), g))


@torch.inference_mode()
def reasoning_rollouts(
    model: nn.Module,
    tokenizer,
    prompts: list[list[int]],
    trie: PrefixTrie,
    g: int,
    n_tokens: int,
    temperature: float,
    generator: torch.Generator,
) -> Rollouts:
    """Up to ``n_tokens`` sampled rationale tokens (stopping at EOS), the separator, then a
    constrained sampled identifier, for G rollouts per prompt."""
    separator = tokenizer.encode(REASONING_SEPARATOR, add_special_tokens=False)
    device = next(model.parameters()).device
    with eval_mode(model):
        repeated = [p for p in prompts for _ in range(g)]
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # generate samples from the global RNG
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            rationales = generate_rationales(
                model,
                tokenizer,
                repeated,
                n_tokens,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
            )
    prefixes = [r + separator for r in rationales]
    full = [p + x for p, x in zip(repeated, prefixes, strict=True)]
    items = constrained_sample(model, full, trie, 1, temperature, generator, tokenizer.pad_token_id)
    grouped = [prefixes[u * g : (u + 1) * g] for u in range(len(prompts))]
    return Rollouts(items.reshape(len(prompts), g), grouped)
