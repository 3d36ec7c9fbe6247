"""Log-probabilities of responses given their prompt, for R responses per prompt in one pass.

The shared helper of the DPO family (a chosen and K rejected items), GRPO (G rollouts) and
candidate ranking (20 candidates): batches come from :class:`ilrec.data.packing.PackedCollator`
(one row = the prompt once + every response). The LM head runs only at the positions that
predict a response token, never over the whole row.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ilrec.data.packing import PackedCollator, pack_responses, packed_attention_mask
from ilrec.models.layers import lm_parts
from ilrec.models.modes import eval_mode

__all__ = ["response_token_logprobs", "score_responses", "sequence_logprobs"]


def response_token_logprobs(
    model: nn.Module, batch: dict[str, Tensor], chunk: int = 4096
) -> tuple[Tensor, Tensor]:
    """Token log-probabilities of every response of a packed batch.

    Args:
        model: a (possibly DDP- or PEFT-wrapped) Hugging Face causal LM that accepts a 4-D
            attention mask.
        batch: ``input_ids``, ``position_ids``, ``segment`` ``[B, T]``; ``score_pos``,
            ``score_tok`` ``[B, R, D]``.
        chunk: positions per log-softmax slice when no gradient is needed (bounds memory to
            ``chunk x V`` floats).

    Returns:
        ``logp[B, R, D]`` (float32; 0 beyond each response's end) and ``mask[B, R, D]`` (bool).
    """
    input_ids = batch["input_ids"]
    dtype = next(model.parameters()).dtype
    out = model(
        input_ids=input_ids,
        attention_mask=packed_attention_mask(batch["segment"], dtype),
        position_ids=batch["position_ids"],
        output_hidden_states=True,
        logits_to_keep=1,
        use_cache=False,
    )
    last = out.hidden_states[-1]  # [B, T, H], after the final norm
    score_pos, score_tok = batch["score_pos"], batch["score_tok"]
    mask = score_pos >= 0
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None, None]
    where = mask.nonzero(as_tuple=True)
    hidden = last[rows.expand_as(score_pos)[where], score_pos[where]]  # [M, H]
    targets = score_tok[where]  # [M]
    head = lm_parts(model).head
    if torch.is_grad_enabled():
        values = _target_logprobs(head(hidden).float(), targets)
    else:
        values = (
            torch.cat(
                [
                    _target_logprobs(head(h).float(), t)
                    for h, t in zip(hidden.split(chunk), targets.split(chunk), strict=True)
                ]
            )
            if targets.numel()
            else hidden.new_zeros(0)
        )
    logp = torch.zeros(score_pos.shape, dtype=torch.float32, device=input_ids.device)
    logp[where] = values
    return logp, mask


def _target_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """``log_softmax(logits)[targets]`` without materialising the full log-softmax."""
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


def sequence_logprobs(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """``[B, R]``: the sum of each response's token log-probabilities given its prompt."""
    logp, _ = response_token_logprobs(model, batch)
    return logp.sum(-1)


@torch.no_grad()
def score_responses(
    model: nn.Module,
    prompts: list[list[int]],
    responses: list[list[list[int]]],
    pad_token_id: int,
    batch_size: int = 16,
    progress: Iterable | None = None,
) -> Tensor:
    """``[U, R]`` sequence log-probabilities of ``responses[u]`` after ``prompts[u]``, in eval
    mode without gradient (reference caches, candidate ranking)."""
    collate = PackedCollator(pad_token_id)
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(prompts), batch_size)
    with eval_mode(model):
        for start in progress(starts) if progress else starts:
            features = [
                pack_responses(p, r)
                for p, r in zip(
                    prompts[start : start + batch_size],
                    responses[start : start + batch_size],
                    strict=True,
                )
            ]
            batch = {k: v.to(device) for k, v in collate(features).items()}
            out.append(sequence_logprobs(model, batch).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)
