"""Exact scoring of every item for every user (spec: Evaluation, the correctness oracle).

The score of item i is ``sum_t log_softmax(logits_t)[token_t]`` over its identifier tokens,
the same quantity beam search ranks by. Items sharing a prefix share its forward passes: the
prompt is run once, then the trie's internal nodes are fed level by level as *tree attention*
- each chunk of nodes of one depth is one forward over the prompt's KV cache plus the cached
keys/values of the chunk's distinct ancestors, with a custom 4-D mask letting every node see
the prompt, its own ancestors and itself, at position ``prompt_len + depth - 1``.

FLOP floor: one token-forward per internal trie node per user (the root's forward is the
prompt's last position), i.e. ``internal_positions(trie)`` token-forwards plus the prompt;
each also computes the full-vocabulary log-softmax. Above the floor we only pay attention
over masked-out keys (the chunk's other nodes and ancestors), bounded by ``node_chunk``.
Memory per user batch: keys/values of all internal nodes, ``batch_size * internal_positions
* n_layers * 2 * kv_dim`` floats. Models must use full attention (no sliding window).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import DynamicCache

from ilrec.evaluation.beam import last_logits_kwargs, left_pad
from ilrec.identifiers.trie import PrefixTrie
from ilrec.models.modes import eval_mode

__all__ = ["internal_positions", "rank_items", "score_all_items"]


def internal_positions(trie: PrefixTrie) -> int:
    """Token-forwards per user beyond the prompt: internal (non-leaf) nodes except the root."""
    return int((trie.child_ptr[1:] > trie.child_ptr[:-1]).sum()) - 1


def rank_items(scores: Tensor, k: int) -> Tensor:
    """Top-``k`` item ids per row of ``scores[U, I]`` -> ``LongTensor[U, k]``, ties by lower id."""
    return scores.argsort(dim=1, descending=True, stable=True)[:, :k]


def score_all_items(
    model: nn.Module,
    prompts: list[list[int]],
    trie: PrefixTrie,
    batch_size: int = 4,
    node_chunk: int = 128,
    pad_token_id: int = 0,
    progress: bool = False,
) -> Tensor:
    """Exact log-probability of every item's identifier after every prompt.

    Args:
        model: a Hugging Face causal LM with full attention.
        prompts: ``U`` token-id lists (variable lengths).
        trie: identifier trie over ``I`` items.
        batch_size: users per forward.
        node_chunk: trie nodes per forward (bounds the masked-attention overhead and memory).
        pad_token_id: id used for left padding (masked out).
        progress: show a tqdm bar over user batches.

    Returns:
        ``scores[U, I]`` (float32, on the CPU).
    """
    if batch_size < 1 or node_chunk < 1:
        raise ValueError(f"batch_size and node_chunk must be >= 1, got {batch_size}, {node_chunk}")
    device = next(model.parameters()).device
    trie = trie if trie.device == device else trie.to(device)
    out = []
    with eval_mode(model), torch.inference_mode():
        starts = range(0, len(prompts), batch_size)
        for start in tqdm(starts, disable=not progress, desc="exact scoring"):
            batch = prompts[start : start + batch_size]
            node_lp = _TreeScorer(model, trie, batch, pad_token_id, node_chunk).run()
            out.append(node_lp[:, trie.item_node].cpu())
    return torch.cat(out)


class _TreeScorer:
    """Log-probability of every trie node for one batch of users (``node_lp[U, n_nodes]``)."""

    def __init__(
        self,
        model: nn.Module,
        trie: PrefixTrie,
        prompts: Sequence[Sequence[int]],
        pad_token_id: int,
        node_chunk: int,
    ) -> None:
        self.model, self.trie, self.node_chunk = model, trie, node_chunk
        device = trie.device
        ids, self.prompt_mask, positions = left_pad(prompts, pad_token_id, device)
        out = model(
            input_ids=ids,
            attention_mask=self.prompt_mask,
            position_ids=positions,
            use_cache=True,
            **last_logits_kwargs(model),
        )
        if any(getattr(layer, "is_sliding", False) for layer in out.cache.layers):
            raise NotImplementedError("exact scoring needs full attention (no sliding window)")
        self.prompt_kv = [(layer.keys, layer.values) for layer in out.cache.layers]
        self.prompt_len = self.prompt_mask.sum(1)  # [U] real prompt tokens
        self.node_lp = torch.zeros(ids.shape[0], trie.n_nodes, device=device)
        root_lp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [U, V]
        self._add_children(torch.zeros(1, dtype=torch.long, device=device), root_lp[:, None])
        # Keys/values are kept only for nodes that are ancestors of a fed node (slot >= 0).
        internal = trie.child_ptr[1:] > trie.child_ptr[:-1]  # [n_nodes]
        internal[0] = False
        keep = torch.zeros_like(internal)
        keep[trie.node_parent[internal]] = True
        keep[0] = False  # the root's "keys" are the prompt's
        self.slot = torch.cumsum(keep, 0) - 1
        self.slot[~keep] = -1
        n_store = int(keep.sum())
        self.store = [
            (
                k.new_empty(*k.shape[:2], n_store, k.shape[3]),
                v.new_empty(*v.shape[:2], n_store, v.shape[3]),
            )
            for k, v in self.prompt_kv
        ]

    def run(self) -> Tensor:
        trie = self.trie
        internal = trie.child_ptr[1:] > trie.child_ptr[:-1]  # [n_nodes]
        for depth in range(1, trie.depth):
            lo, hi = int(trie.level_ptr[depth]), int(trie.level_ptr[depth + 1])
            nodes = torch.nonzero(internal[lo:hi]).squeeze(1) + lo
            for chunk in nodes.split(self.node_chunk):
                self._forward_chunk(chunk, depth)
        return self.node_lp

    def _add_children(self, nodes: Tensor, log_probs: Tensor) -> None:
        """Extend ``node_lp`` from ``nodes[n]`` to their children; ``log_probs[U, n, V]``."""
        rows, edges = self.trie.edge_slices(nodes)
        child, token = self.trie.child_node[edges], self.trie.child_token[edges]
        parent_lp = self.node_lp[:, nodes[rows]]
        self.node_lp[:, child] = parent_lp + log_probs[:, rows, token]

    def _forward_chunk(self, nodes: Tensor, depth: int) -> None:
        """Feed ``nodes[n]`` (all at ``depth``, sorted) as one tree-attention forward."""
        trie, n = self.trie, nodes.numel()
        # Distinct ancestors per level (sorted since node ids are sorted by parent).
        anc_ids, anc_cols, offset = [], [], 0
        current = nodes
        for _ in range(depth - 1):
            current = trie.node_parent[current]
            uniq, inverse = torch.unique_consecutive(current, return_inverse=True)
            anc_ids.append(uniq)
            anc_cols.append(inverse + offset)
            offset += uniq.numel()
        anc = self.slot[torch.cat(anc_ids)] if anc_ids else nodes.new_zeros(0)
        cache = DynamicCache(
            [
                (torch.cat([pk, sk[:, :, anc]], 2), torch.cat([pv, sv[:, :, anc]], 2))
                for (pk, pv), (sk, sv) in zip(self.prompt_kv, self.store, strict=True)
            ]
        )
        mask = self._tree_mask(anc_cols, offset, n)
        n_users = self.prompt_len.shape[0]
        out = self.model(
            input_ids=trie.node_token[nodes].expand(n_users, n),
            attention_mask=mask,
            position_ids=(self.prompt_len + depth - 1)[:, None].expand(n_users, n),
            cache=cache,
            use_cache=True,
        )
        slots = self.slot[nodes]
        kept = slots >= 0
        if bool(kept.any()):
            cols = kept.nonzero().squeeze(1) + (mask.shape[-1] - n)  # new keys come last
            for (sk, sv), layer in zip(self.store, out.cache.layers, strict=True):
                sk[:, :, slots[kept]] = layer.keys[:, :, cols]
                sv[:, :, slots[kept]] = layer.values[:, :, cols]
        self._add_children(nodes, torch.log_softmax(out.logits.float(), dim=-1))

    def _tree_mask(self, anc_cols: list[Tensor], n_anc: int, n: int) -> Tensor:
        """Additive mask ``[U, 1, n, P + n_anc + n]``: prompt, own ancestors, self."""
        dtype = self.prompt_kv[0][0].dtype
        device = self.prompt_mask.device
        blocked = torch.finfo(dtype).min
        rows = torch.arange(n, device=device)
        tree = torch.full((n, n_anc + n), blocked, dtype=dtype, device=device)
        for cols in anc_cols:
            tree[rows, cols] = 0.0
        tree[rows, n_anc + rows] = 0.0
        prompt = torch.zeros(self.prompt_mask.shape, dtype=dtype, device=device)
        prompt = prompt.masked_fill(self.prompt_mask == 0, blocked)  # [U, P]
        n_users, width = prompt.shape
        return torch.cat(
            [prompt[:, None, None, :].expand(n_users, 1, n, width), tree.expand(n_users, 1, n, -1)],
            dim=-1,
        )
