"""BIGRec's grounding step (Bao et al., 2023): free generation, then every item ranked by the
L2 distance between embeddings of the generated text and of each item's title.

Embedding = the last layer's (normed) hidden state of the text's last token, as in BIGRec.
BIGRec embeds with the base model; here the evaluated model embeds (for a model trained from
scratch there is no other). Used with ``data.format=title``; the trie-constrained modes are
exact alternatives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import GenerationConfig, PreTrainedTokenizerBase

from ilrec.distributed import in_lockstep
from ilrec.evaluation.beam import left_pad
from ilrec.models.modes import eval_mode


@torch.inference_mode()
def embed_texts(
    model: nn.Module, token_lists: list[list[int]], pad_token_id: int, batch_size: int = 64
) -> Tensor:
    """``[n, H]``: the final hidden state at each text's last token (left padding)."""
    device = next(model.parameters()).device
    parts = []
    for start in range(0, len(token_lists), batch_size):
        ids, mask, positions = left_pad(
            token_lists[start : start + batch_size], pad_token_id, device
        )
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            output_hidden_states=True,
            logits_to_keep=1,
            use_cache=False,
        )
        parts.append(out.hidden_states[-1][:, -1].float().cpu())
    return torch.cat(parts)


@torch.inference_mode()
def generate_free(
    model: nn.Module,
    prompts: list[list[int]],
    tokenizer: PreTrainedTokenizerBase,
    num_beams: int = 4,
    max_new_tokens: int = 64,
    batch_size: int = 16,
) -> list[str]:
    """Unconstrained beam search (BIGRec: 4 beams, the first kept); returns decoded texts."""
    device = next(model.parameters()).device
    config = GenerationConfig(
        do_sample=False,
        num_beams=num_beams,
        num_return_sequences=1,
        max_new_tokens=max_new_tokens,
        early_stopping=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    texts = []
    for start in range(0, len(prompts), batch_size):
        ids, mask, _ = left_pad(prompts[start : start + batch_size], tokenizer.pad_token_id, device)
        out = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=config, synced_gpus=in_lockstep()
        )
        new = out[:, ids.shape[1] :]
        texts += tokenizer.batch_decode(new, skip_special_tokens=True)
    return texts


def strip_quotes(text: str) -> str:
    text = text.strip()
    if text.startswith('"'):
        text = text[1:]
    return text.split('"', 1)[0].strip()


def ground_rank(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    titles: list[str],
    k: int,
    batch_size: int = 16,
) -> Tensor:
    """``LongTensor[U, k]``: items nearest (L2) to each free generation."""

    def encode(strings: list[str]) -> list[list[int]]:
        return [tokenizer.encode(s or " ", add_special_tokens=False) for s in strings]

    with eval_mode(model):
        texts = generate_free(model, prompts, tokenizer, batch_size=batch_size)
        generated = [strip_quotes(t) for t in texts]
        items = embed_texts(model, encode(titles), tokenizer.pad_token_id)
        queries = embed_texts(model, encode(generated), tokenizer.pad_token_id)
    distances = torch.cdist(queries, items)  # [U, I]
    return torch.topk(distances, k, dim=1, largest=False).indices
