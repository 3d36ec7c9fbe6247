"""One prompt with several responses in one row ("shared-prompt packing").

DPO-family pairs (a chosen and K rejected items), GRPO rollouts and candidate lists all score
R responses after the same prompt. Instead of R rows that repeat the prompt, one row holds the
prompt once followed by every response; a segment id per token lets the attention mask give
each response the prompt and its own earlier tokens only, and positions restart after the
prompt, so each response is scored exactly as if it followed the prompt alone.

Layout of a row (``P`` prompt tokens, responses ``r_0 .. r_{R-1}``)::

    tokens    p_0 .. p_{P-1} | r_0[0] .. r_0[D_0-2] | r_1[0] .. | ...
    segment   0  ..  0       | 1     ..  1           | 2     ..  | ...
    position  0  ..  P-1     | P     ..  P+D_0-2     | P     ..  | ...

The last token of a response is never fed (it predicts nothing); token ``d`` of response
``j`` is predicted at the prompt's last position (``d == 0``) or at the fed token ``d-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

PAD_SEGMENT = -1


def pack_responses(prompt: Sequence[int], responses: Sequence[Sequence[int]]) -> dict[str, list]:
    """Feature of one prompt and its responses (see the module docstring).

    Returns:
        ``input_ids``, ``position_ids``, ``segment`` (per fed token) and, per response,
        ``score_pos`` (the positions predicting each of its tokens) and ``score_tok`` (its
        tokens), as lists.
    """
    if not prompt:
        raise ValueError("pack_responses: empty prompt")
    if not responses or any(len(r) == 0 for r in responses):
        raise ValueError("pack_responses: needs at least one response, none empty")
    n_prompt = len(prompt)
    input_ids, positions, segment = list(prompt), list(range(n_prompt)), [0] * n_prompt
    score_pos, score_tok = [], []
    for j, response in enumerate(responses, start=1):
        start = len(input_ids)
        fed = list(response[:-1])
        input_ids += fed
        positions += range(n_prompt, n_prompt + len(fed))
        segment += [j] * len(fed)
        score_pos.append([n_prompt - 1, *range(start, start + len(fed))])
        score_tok.append(list(response))
    return {
        "input_ids": input_ids,
        "position_ids": positions,
        "segment": segment,
        "score_pos": score_pos,
        "score_tok": score_tok,
    }


@dataclass
class PackedCollator:
    """Right-pads packed features into a batch.

    Batch: ``input_ids``, ``position_ids``, ``segment`` ``[B, T]`` (segment -1 on padding);
    ``score_pos``, ``score_tok`` ``[B, R, D]`` (-1 / 0 beyond a response's end; every row must
    have the same number ``R`` of responses); any other key holding numbers per feature is
    stacked as a tensor (e.g. ``ref_logps`` ``[B, R]``, ``index``).
    """

    pad_token_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        n_rows = len(features)
        n_resp = len(features[0]["score_tok"])
        if any(len(f["score_tok"]) != n_resp for f in features):
            raise ValueError("PackedCollator: every row needs the same number of responses")
        width = max(len(f["input_ids"]) for f in features)
        depth = max(len(t) for f in features for t in f["score_tok"])
        batch = {
            "input_ids": torch.full((n_rows, width), self.pad_token_id, dtype=torch.long),
            "position_ids": torch.zeros((n_rows, width), dtype=torch.long),
            "segment": torch.full((n_rows, width), PAD_SEGMENT, dtype=torch.long),
            "score_pos": torch.full((n_rows, n_resp, depth), -1, dtype=torch.long),
            "score_tok": torch.zeros((n_rows, n_resp, depth), dtype=torch.long),
        }
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            for key in ("input_ids", "position_ids", "segment"):
                batch[key][row, :n] = torch.tensor(f[key])
            for j, (pos, tok) in enumerate(zip(f["score_pos"], f["score_tok"], strict=True)):
                batch["score_pos"][row, j, : len(pos)] = torch.tensor(pos)
                batch["score_tok"][row, j, : len(tok)] = torch.tensor(tok)
        for key in features[0].keys() - batch.keys():
            batch[key] = torch.tensor([f[key] for f in features])
        return batch


def packed_attention_mask(segment: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask ``[B, 1, T, T]``: causal, a response sees the prompt and its own segment;
    padding is seen by nobody (a padding query sees the prompt, so no row is empty)."""
    seg_q, seg_k = segment[:, :, None], segment[:, None, :]
    n = segment.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=segment.device).tril()
    allowed = causal & ((seg_k == 0) | (seg_k == seg_q)) & (seg_k != PAD_SEGMENT)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
