"""Trie-constrained beam search over item identifiers (spec: Evaluation; LC-Rec uses beam 20).

A batched walk of the :class:`~ilrec.identifiers.trie.PrefixTrie` with the model's KV cache:
the prompts of a batch are left-padded and run once, then every step feeds one token per beam,
masks the logits outside each beam's trie children, and keeps the ``num_beams`` best
candidates per user over (beam x vocabulary). The cache holds one row per user, never a copy
of the prompt per beam: a step's beam tokens are appended to their user's row and a 4-D mask
("tree attention", as in exact scoring) lets each beam attend to the prompt and its own
lineage, so reselecting beams moves no cache. A beam whose prefix is a complete identifier is
finished: it keeps its slot and its score, and competes with the running beams' expansions
(variable-length identifiers). The score of an item is the sum of the full-vocabulary
log-softmax of its tokens (un-renormalised, like Hugging Face beam scores with
``length_penalty=0``), so it equals :func:`ilrec.evaluation.exact.score_all_items`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ilrec.distributed import in_lockstep
from ilrec.identifiers.trie import PrefixTrie
from ilrec.models.modes import eval_mode

__all__ = ["constrained_beam_search", "left_pad"]


def left_pad(
    prompts: Sequence[Sequence[int]], pad_token_id: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """Left-pad token lists.

    Returns:
        ``input_ids[B, P]``, ``attention_mask[B, P]`` (1 on real tokens) and
        ``position_ids[B, P]`` (0 at each prompt's first real token).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token lists")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def last_logits_kwargs(model: nn.Module) -> dict[str, int]:
    """``{"logits_to_keep": 1}`` when the model supports it (skips the LM head on the prompt)."""
    params = inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in params else {}


def constrained_beam_search(
    model: nn.Module,
    prompts: list[list[int]],
    trie: PrefixTrie,
    num_beams: int = 20,
    batch_size: int = 16,
    pad_token_id: int = 0,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Top ``num_beams`` items per prompt by trie-constrained beam search.

    Args:
        model: a Hugging Face causal LM (called with ``cache=``/``use_cache=True``).
        prompts: ``U`` token-id lists (variable lengths, the caller adds any BOS).
        trie: identifier trie; its items are what can be returned.
        num_beams: beams per user, also the number of items returned.
        batch_size: users per forward (``batch_size * num_beams`` rows while decoding).
        pad_token_id: id used for left padding (masked out).
        progress: show a tqdm bar over batches.

    Returns:
        ``items[U, num_beams]`` (distinct item ids) and ``scores[U, num_beams]`` (summed
        log-probabilities), sorted by score descending, ties by lower item id.

    Raises:
        ValueError: if the trie holds fewer than ``num_beams`` items.
    """
    if num_beams > trie.n_items:
        raise ValueError(f"num_beams={num_beams} exceeds the number of items ({trie.n_items})")
    if num_beams < 1 or batch_size < 1:
        raise ValueError(f"num_beams and batch_size must be >= 1, got {num_beams}, {batch_size}")
    device = next(model.parameters()).device
    trie = trie if trie.device == device else trie.to(device)
    items, scores = [], []
    starts = range(0, len(prompts), batch_size)
    with eval_mode(model), torch.inference_mode():
        for start in tqdm(starts, disable=not progress, desc="beam search"):
            batch = prompts[start : start + batch_size]
            out = _search_batch(model, batch, trie, num_beams, pad_token_id, device)
            items.append(out[0].cpu())
            scores.append(out[1].cpu())
    return torch.cat(items), torch.cat(scores)


def _search_batch(
    model: nn.Module,
    prompts: list[list[int]],
    trie: PrefixTrie,
    num_beams: int,
    pad_token_id: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Beam search for one batch of ``U`` users; returns ``items[U, B]``, ``scores[U, B]``.

    The KV cache keeps one row per *user*: the prompt is never copied per beam. Each step
    feeds the B beams' tokens as B new positions of the user's row, with a 4-D mask that
    lets a beam see the prompt, its own ancestors' tokens and itself ("tree attention"), so
    no cache is reordered when beams are reselected; only the beams' lineages (cache
    columns) are.
    """
    ids, prompt_mask, positions = left_pad(prompts, pad_token_id, device)
    n_users, width = ids.shape
    out = model(
        input_ids=ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        use_cache=True,
        **last_logits_kwargs(model),
    )
    cache = out.cache
    log_probs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)[:, None]  # [U, 1, V]
    nodes = torch.zeros(n_users, 1, dtype=torch.long, device=device)  # all beams at the root
    scores = torch.zeros(n_users, 1, device=device)
    next_pos = positions[:, -1] + 1  # [U] position of the first identifier token
    lineage = torch.zeros(n_users, 1, 0, dtype=torch.long, device=device)  # [U, b, steps]
    dtype = next(model.parameters()).dtype
    blocked = torch.finfo(dtype).min
    prompt_part = torch.zeros(n_users, width, dtype=dtype, device=device)
    prompt_part = prompt_part.masked_fill(prompt_mask == 0, blocked)[:, None, None]
    beam_ids = torch.arange(num_beams, device=device)
    step = 0
    # Distributed, every rank runs the same number of forwards (trie depth - 1): ranks that
    # finish early keep their beams (parameter-sharding engines need all ranks in a forward).
    lockstep = in_lockstep()
    while True:
        nodes, scores, src = _select(trie, nodes, scores, log_probs, num_beams)
        finished = (trie.item_at(nodes.reshape(-1)) >= 0) | scores.reshape(-1).isinf()
        if bool(finished.all()) and (not lockstep or step >= trie.depth - 1):
            break
        # the new beams' lineages: their parents' columns, then their own at this step
        parents = lineage.gather(1, src[..., None].expand(-1, -1, lineage.shape[2]))
        own = (step * num_beams + beam_ids).expand(n_users, -1)[..., None]
        lineage = torch.cat([parents, own], dim=2)  # [U, B, step + 1], columns after the prompt
        seen = torch.zeros(
            n_users, num_beams, (step + 1) * num_beams, dtype=torch.bool, device=device
        )
        seen.scatter_(2, lineage, True)
        tree = torch.zeros(seen.shape, dtype=dtype, device=device).masked_fill_(~seen, blocked)
        mask = torch.cat([prompt_part.expand(-1, 1, num_beams, -1), tree[:, None]], dim=-1)
        # Finished and dead beams are fed a dummy token: their logits are never used again.
        tokens = trie.node_token[nodes.clamp(min=0)]
        tokens = torch.where((tokens >= 0) & (nodes >= 0), tokens, pad_token_id)
        out = model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=next_pos[:, None].expand(-1, num_beams),
            cache=cache,
            use_cache=True,
        )
        cache = out.cache
        next_pos = next_pos + 1
        log_probs = torch.log_softmax(out.logits.float(), dim=-1)  # [U, B, V]
        step += 1
    return _finalize(trie, nodes, scores)


def _select(
    trie: PrefixTrie, nodes: Tensor, scores: Tensor, log_probs: Tensor, num_beams: int
) -> tuple[Tensor, Tensor, Tensor]:
    """One beam step.

    Args:
        nodes: ``[U, b]`` trie node of each current beam (-1 for an empty slot).
        scores: ``[U, b]`` beam scores (-inf for an empty slot).
        log_probs: ``[U, b, V]`` next-token log-probabilities of each beam.

    Returns:
        New ``nodes[U, B]``, ``scores[U, B]`` and ``src[U, B]`` (index of the parent beam in
        ``0..b-1``). Slots that no candidate fills get node -1 and score -inf.
    """
    n_users, n_beams, vocab = log_probs.shape
    allowed = trie.allowed_mask(nodes.reshape(-1), vocab).reshape(n_users, n_beams, vocab)
    grown = (scores[..., None] + log_probs).masked_fill(~allowed, float("-inf"))
    finished = trie.item_at(nodes.reshape(-1)).reshape(n_users, n_beams) >= 0
    stay = scores.masked_fill(~finished, float("-inf"))  # finished beams compete as they are
    candidates = torch.cat([grown.reshape(n_users, -1), stay], dim=1)  # [U, b*V + b]
    if candidates.shape[1] < num_beams:
        pad = candidates.new_full((n_users, num_beams - candidates.shape[1]), float("-inf"))
        candidates = torch.cat([candidates, pad], dim=1)
    top, idx = candidates.topk(num_beams, dim=1)
    n_grown = n_beams * vocab
    is_stay = idx >= n_grown
    src = torch.where(is_stay, idx - n_grown, idx // vocab).clamp(max=n_beams - 1)
    parent = nodes.gather(1, src)
    child = trie.step(parent.reshape(-1), (idx % vocab).reshape(-1)).reshape(n_users, num_beams)
    new_nodes = torch.where(is_stay, parent, child)
    new_nodes = torch.where(top.isinf(), torch.full_like(new_nodes, -1), new_nodes)
    return new_nodes, top, src


def _finalize(trie: PrefixTrie, nodes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """Map final beams to items, sorted by score descending with ties by lower item id."""
    items = trie.item_at(nodes.reshape(-1)).reshape(nodes.shape)
    if bool((items < 0).any()):
        # Only possible when the model puts -inf log-probability on valid identifier tokens.
        raise RuntimeError("beam search ended with empty beams: the model gives -inf to items")
    by_item = items.argsort(dim=1)
    items, scores = items.gather(1, by_item), scores.gather(1, by_item)
    order = scores.argsort(dim=1, descending=True, stable=True)
    return items.gather(1, order), scores.gather(1, order)
