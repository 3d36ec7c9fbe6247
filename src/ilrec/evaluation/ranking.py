"""Full-ranking evaluation of a generative recommender (paper Section 3.1).

Every item of the catalogue is a candidate: *beam* mode walks the identifier trie with
constrained beam search (fast path); *exact* mode scores every item's identifier (the
correctness oracle); *ground* (title format) generates freely and ranks items by embedding
distance, as BIGRec does. Under ``torchrun`` users are sharded across ranks and gathered, so
every user is evaluated exactly once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ilrec.data.encoding import Encoder
from ilrec.data.split import Example
from ilrec.distributed import rank_and_world
from ilrec.evaluation.beam import constrained_beam_search
from ilrec.evaluation.exact import rank_items, score_all_items
from ilrec.evaluation.grounding import ground_rank
from ilrec.evaluation.reasoning import greedy_reasoning_prompts
from ilrec.identifiers.trie import PrefixTrie
from ilrec.metrics import rank_metrics
from ilrec.models.modes import eval_mode

MODES = ("beam", "exact", "ground")
CHUNK_USERS = 64  # users per chunk of a resumable evaluation (rounded to whole batches)


def shard_rows(fn: Callable[[list], torch.Tensor], items: list) -> torch.Tensor:
    """``fn`` over this rank's share of ``items`` (round-robin), gathered in order: each item
    is computed once across distributed ranks; ``fn`` returns one row per item.

    Every rank's share is padded (with repeats of the first item, dropped afterwards) to the
    same length, so all ranks run the same number of batches: engines that shard parameters
    (FSDP, ZeRO-3) need every rank in every forward.
    """
    rank, world = rank_and_world()
    if world == 1:
        if not items:
            raise ValueError("shard_rows: no items")
        return fn(items).cpu()
    mine = items[rank::world]
    per_rank = -(-len(items) // world)
    padded = mine + [items[0]] * (per_rank - len(mine))
    local = fn(padded)[: len(mine)].cpu() if mine else None
    gathered: list[torch.Tensor | None] = [None] * world
    dist.all_gather_object(gathered, local)
    first = next(part for part in gathered if part is not None)
    out = first.new_empty((len(items), *first.shape[1:]))
    for r, part in enumerate(gathered):
        if part is not None:
            out[r::world] = part
    return out


def rank_sharded(
    rank_fn: Callable[[list[list[int]]], torch.Tensor], prompts: list[list[int]], k: int
) -> torch.Tensor:
    """``LongTensor[U, k]`` from ``rank_fn`` over this rank's users, gathered in order."""
    return shard_rows(lambda mine: rank_fn(mine)[:, :k], prompts)


def rank_in_chunks(
    rank_fn: Callable[[list[list[int]]], torch.Tensor],
    prompts: list[list[int]],
    k: int,
    chunk: int,
    done: torch.Tensor | None = None,
    on_chunk: Callable[[list[torch.Tensor]], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """:func:`rank_sharded` over consecutive chunks of ``prompts``, skipping the first
    ``len(done)`` (rows ranked before) and passing the blocks of rows ranked so far (in order;
    concatenated, every row so far) to ``on_chunk`` after each chunk: a killed evaluation can
    resume from what it saved."""
    parts = [done[:, :k]] if done is not None and len(done) else []
    start = len(parts[0]) if parts else 0
    if start > len(prompts):
        raise ValueError(f"{start} rows already ranked for {len(prompts)} prompts")
    with tqdm(total=len(prompts), initial=start, disable=not progress, unit="user") as bar:
        for lo in range(start, len(prompts), chunk):
            parts.append(rank_sharded(rank_fn, prompts[lo : lo + chunk], k))
            bar.update(len(parts[-1]))
            if on_chunk is not None:
                on_chunk(parts)
    return torch.cat(parts)


def make_ranker(
    model: nn.Module, encoder: Encoder, mode: str, k: int, batch_size: int, progress: bool = False
) -> Callable[[list[list[int]]], torch.Tensor]:
    """A function ranking the whole catalogue for a list of prompts (top ``k`` items)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    pad = encoder.tokenizer.pad_token_id
    if mode == "ground":
        if encoder.fmt != "title":
            raise ValueError("mode 'ground' (BIGRec grounding) needs the title format")
        return lambda prompts: ground_rank(
            model, encoder.tokenizer, prompts, encoder.identifiers, k, batch_size
        )
    trie = PrefixTrie.from_item_tokens(encoder.item_table())
    if mode == "beam":
        return lambda prompts: constrained_beam_search(
            model,
            prompts,
            trie,
            num_beams=k,
            batch_size=batch_size,
            pad_token_id=pad,
            progress=progress,
        )[0]
    return lambda prompts: rank_items(
        score_all_items(
            model, prompts, trie, batch_size=batch_size, pad_token_id=pad, progress=progress
        ),
        k,
    )


def evaluate_examples(
    model: nn.Module,
    encoder: Encoder,
    examples: list[Example],
    mode: str = "beam",
    beams: int = 20,
    batch_size: int = 16,
    ks: tuple[int, ...] = (5, 10),
    progress: bool = False,
    reasoning_tokens: int = 0,
    done: torch.Tensor | None = None,
    on_chunk: Callable[[list[torch.Tensor]], None] | None = None,
) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics and top-``beams`` rankings of a list of examples (prompt paraphrase 0).
    ``reasoning_tokens > 0`` (text formats): each prompt is first extended by the model's greedy
    rationale of up to that many tokens and the separator, as RLVR-reasoning answers.
    ``done`` / ``on_chunk`` (resumable evaluation): the rows of the first users, ranked before,
    and a function given the blocks of rows ranked so far after each chunk of users
    (:func:`rank_in_chunks`)."""
    prompts = [encoder.prompt_ids(e.history) for e in examples]
    if reasoning_tokens > 0:
        if encoder.fmt == "sequence":
            raise ValueError("reasoning needs a text format (data.format=prompt or title)")
        prompts = greedy_reasoning_prompts(
            model, encoder.tokenizer, prompts, reasoning_tokens, batch_size
        )
    resumable = done is not None or on_chunk is not None
    with eval_mode(model):
        ranker = make_ranker(model, encoder, mode, beams, batch_size, progress and not resumable)
        if resumable:
            chunk = batch_size * max(1, CHUNK_USERS // batch_size)
            ranked = rank_in_chunks(ranker, prompts, beams, chunk, done, on_chunk, progress)
        else:
            ranked = rank_sharded(ranker, prompts, beams)
    targets = torch.tensor([e.target for e in examples])
    return rank_metrics(ranked, targets, ks=ks), ranked


def popularity_metrics(
    counts: list[int], examples: list[Example], ks: tuple[int, ...] = (5, 10)
) -> dict[str, float]:
    """The popularity baseline: every user gets the most frequent training items."""
    order = torch.argsort(torch.tensor(counts), descending=True, stable=True)[: max(ks)]
    ranked = order.unsqueeze(0).expand(len(examples), -1)
    return rank_metrics(ranked, torch.tensor([e.target for e in examples]), ks=ks)
