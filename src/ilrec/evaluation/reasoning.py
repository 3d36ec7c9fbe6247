"""Reasoning before the answer (RLVR-reasoning, paper Appendix A.4): the model writes up to N
free tokens of rationale, then the fixed separator, then the identifier. Shared by GRPO's
rollouts (sampled) and evaluation (greedy), so a reasoning-trained model is ranked the way it
was trained to answer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ilrec.evaluation.beam import left_pad
from ilrec.models.modes import eval_mode

__all__ = ["REASONING_SEPARATOR", "generate_rationales", "greedy_reasoning_prompts"]

REASONING_SEPARATOR = " Answer: "


def generate_rationales(
    model: nn.Module, tokenizer, prompts: list[list[int]], n_tokens: int, **generate_kwargs
) -> list[list[int]]:
    """Up to ``n_tokens`` new tokens after each prompt (Hugging Face ``generate``), cut at the
    first EOS, padding removed."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    ids, mask, _ = left_pad(prompts, pad, next(model.parameters()).device)
    generated: Tensor = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=n_tokens,
        min_new_tokens=0,
        pad_token_id=pad,
        eos_token_id=eos,
        **generate_kwargs,
    )[:, ids.shape[1] :]
    rationales = []
    for row in generated.tolist():
        cut = row.index(eos) if eos in row else len(row)
        rationales.append([t for t in row[:cut] if t != pad])
    return rationales


@torch.inference_mode()
def greedy_reasoning_prompts(
    model: nn.Module, tokenizer, prompts: list[list[int]], n_tokens: int, batch_size: int = 16
) -> list[list[int]]:
    """Each prompt extended by its greedy rationale (up to ``n_tokens``) and the separator:
    the context in which a reasoning-trained model names its item."""
    separator = tokenizer.encode(REASONING_SEPARATOR, add_special_tokens=False)
    out = []
    with eval_mode(model):
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            rationales = generate_rationales(model, tokenizer, batch, n_tokens, do_sample=False)
            out += [p + r + separator for p, r in zip(batch, rationales, strict=True)]
    return out
