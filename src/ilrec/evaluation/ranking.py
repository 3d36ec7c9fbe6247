"""Full-ranking evaluation of a generative recommender (paper Section 3.1).

Every item of the catalogue is a candidate: *beam* mode walks the identifier trie with
constrained beam search (fast path); *exact* mode scores every item's identifier (the
correctness oracle). Under ``torchrun`` users are sharded across ranks and gathered, so
every user is evaluated exactly once.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ilrec.data.encoding import Encoder
from ilrec.data.split import Example
from ilrec.evaluation.beam import constrained_beam_search
from ilrec.evaluation.exact import rank_items, score_all_items
from ilrec.identifiers.trie import PrefixTrie
from ilrec.metrics import rank_metrics


def _shard(n: int) -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_prompts(
    model: nn.Module,
    prompts: list[list[int]],
    trie: PrefixTrie,
    mode: str,
    k: int,
    batch_size: int,
    pad_token_id: int,
    progress: bool = False,
) -> torch.Tensor:
    """``LongTensor[U, k]``: the top-k items of every prompt, best first.

    Users are split round-robin over distributed ranks and gathered back in order.
    """
    rank, world = _shard(len(prompts))
    mine = prompts[rank::world]
    was_training = model.training
    model.eval()
    if not mine:
        local = torch.empty(0, k, dtype=torch.long)
    elif mode == "beam":
        local, _ = constrained_beam_search(
            model,
            mine,
            trie,
            num_beams=k,
            batch_size=batch_size,
            pad_token_id=pad_token_id,
            progress=progress,
        )
    elif mode == "exact":
        scores = score_all_items(model, mine, trie, batch_size=batch_size, progress=progress)
        local = rank_items(scores, k)
    else:
        raise ValueError(f"mode must be 'beam' or 'exact', got {mode!r}")
    model.train(was_training)
    local = local[:, :k].cpu()
    if world == 1:
        return local
    gathered: list[torch.Tensor | None] = [None] * world
    dist.all_gather_object(gathered, local)
    ranked = torch.empty(len(prompts), k, dtype=torch.long)
    for r, part in enumerate(gathered):
        ranked[r::world] = part
    return ranked


def evaluate_examples(
    model: nn.Module,
    encoder: Encoder,
    examples: list[Example],
    mode: str = "beam",
    beams: int = 20,
    batch_size: int = 16,
    ks: tuple[int, ...] = (5, 10),
    progress: bool = False,
) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics and top-``beams`` rankings of a list of examples (prompt paraphrase 0)."""
    trie = PrefixTrie.from_item_tokens(encoder.item_table())
    prompts = [encoder.prompt_ids(e.history) for e in examples]
    ranked = rank_prompts(
        model, prompts, trie, mode, beams, batch_size, encoder.tokenizer.pad_token_id, progress
    )
    targets = torch.tensor([e.target for e in examples])
    return rank_metrics(ranked, targets, ks=ks), ranked


def popularity_metrics(
    counts: list[int], examples: list[Example], ks: tuple[int, ...] = (5, 10)
) -> dict[str, float]:
    """The popularity baseline: every user gets the most frequent training items."""
    order = torch.argsort(torch.tensor(counts), descending=True, stable=True)[: max(ks)]
    ranked = order.unsqueeze(0).expand(len(examples), -1)
    return rank_metrics(ranked, torch.tensor([e.target for e in examples]), ks=ks)
