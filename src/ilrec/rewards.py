r"""Token-level collaborative rewards (paper Section 2.4, Eq. 10).

A collaborative-filtering model (SASRec by default) gives each user a distribution
:math:`R(i)` over all items. For a supervised position whose target identifier has the prefix
:math:`c_{<t}` (the identifier tokens before the supervised one), the reward of a token ``v``
is the CF mass of the items continuing that prefix with ``v``, relative to the CF mass of all
items sharing the prefix:

.. math:: r_v = \frac{\sum_{i:\, c_{<t} v \text{ prefixes } i} R(i)}
                      {\sum_{i:\, c_{<t} \text{ prefixes } i} R(i)} .

The rewards become the soft labels of the CRR loss (:func:`ilrec.losses.crr_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ilrec.identifiers.trie import PrefixTrie

__all__ = [
    "TrieRewardIndex",
    "item_paths",
    "node_item_ranges",
    "prefix_rewards",
    "trie_prefix_rewards",
]

# Upper bound on the temporary memory of one chunk of positions (match matrix and friends).
_CHUNK_BYTES = 256 * 1024 * 1024


@torch.no_grad()
def prefix_rewards(
    item_probs: Tensor,
    item_tokens: Tensor,
    prefix_len: Tensor,
    prefix_tokens: Tensor,
    vocab_size: int,
) -> Tensor:
    r"""Eq. 10 token rewards for every supervised position and every vocabulary token.

    For position ``n`` with prefix ``c = prefix_tokens[n, :p]``, ``p = prefix_len[n]`` (the
    rest of the row is ignored, e.g. padding), and token ``v``:

    .. math:: r_{n,v} = \frac{\sum_{i:\ \mathrm{tok}[i,:p] = c,\ \mathrm{tok}[i,p] = v} R_n(i)}
                             {\sum_{i:\ \mathrm{tok}[i,:p] = c} R_n(i)}

    - Identifiers may have different lengths: ``item_tokens`` is right-padded with ``-1``.
      An item whose identifier has exactly ``p`` tokens matches the prefix (it counts in the
      denominator) but continues with no token (it contributes to no :math:`r_v`). So the
      rewards of a row sum to 1 when no item's identifier ends at the prefix (prefix-free
      identifiers, e.g. semantic IDs or titles followed by an end token) and to less than 1
      otherwise.
    - Tokens that continue no matching item get 0.
    - If the prefix matches no item, or the matching items have zero total mass, the row is
      all zeros.

    Implementation: for each distinct prefix length ``p`` (at most ``D + 1`` of them), a
    boolean match matrix ``[n, I]`` compares the prefixes with ``item_tokens[:, :p]``; the
    matched CF mass is summed into the vocabulary by ``index_add`` on ``item_tokens[:, p]``.
    Positions are processed in chunks so the temporaries stay under about 256 MB. No
    gradient is recorded.

    Args:
        item_probs: ``[N, I]`` CF item probabilities :math:`R_n(i)` per position (any float
            dtype; rows need not be normalised, only ratios matter).
        item_tokens: ``[I, D]`` token ids of every item's identifier, padded with ``-1``.
        prefix_len: ``[N]`` number of identifier tokens before the supervised one,
            ``0 <= prefix_len <= D``.
        prefix_tokens: ``[N, D]`` the target identifier's tokens (only the first
            ``prefix_len[n]`` of row ``n`` are read).
        vocab_size: ``V``, the size of the returned last dimension; every identifier token
            must be ``< V``.

    Returns:
        ``[N, V]`` float32 rewards.
    """
    if item_probs.dim() != 2 or item_tokens.dim() != 2:
        raise ValueError(
            f"item_probs must be [N, I] and item_tokens [I, D], got {tuple(item_probs.shape)} "
            f"and {tuple(item_tokens.shape)}"
        )
    n_pos, n_items = item_probs.shape
    if item_tokens.shape[0] != n_items:
        raise ValueError(
            f"item_probs has I={n_items} items but item_tokens has {item_tokens.shape[0]} rows"
        )
    depth = item_tokens.shape[1]
    if prefix_len.shape != (n_pos,):
        raise ValueError(f"prefix_len must be [N]=[{n_pos}], got {tuple(prefix_len.shape)}")
    if prefix_tokens.dim() != 2 or prefix_tokens.shape[0] != n_pos:
        raise ValueError(
            f"prefix_tokens must be [N, D] with N={n_pos}, got {tuple(prefix_tokens.shape)}"
        )
    if item_tokens.numel() and int(item_tokens.max()) >= vocab_size:
        raise ValueError(
            f"item_tokens holds token id {int(item_tokens.max())} >= vocab_size={vocab_size}"
        )

    device = item_probs.device
    probs = item_probs.detach().float()
    item_tokens = item_tokens.to(device=device, dtype=torch.long)
    prefix_len = prefix_len.to(device=device, dtype=torch.long)
    prefix_tokens = prefix_tokens.to(device=device, dtype=torch.long)
    out = torch.zeros(n_pos, vocab_size, dtype=torch.float32, device=device)
    if n_pos == 0:
        return out
    if int(prefix_len.min()) < 0 or int(prefix_len.max()) > depth:
        raise ValueError(f"prefix_len must lie in [0, D={depth}]")
    if int(prefix_len.max()) > prefix_tokens.shape[1]:
        raise ValueError(
            f"prefix_len up to {int(prefix_len.max())} but prefix_tokens has only "
            f"{prefix_tokens.shape[1]} columns"
        )

    for p in torch.unique(prefix_len).tolist():
        rows = (prefix_len == p).nonzero().squeeze(1)
        if p < depth:
            next_tok = item_tokens[:, p]
            continuing = (next_tok >= 0).nonzero().squeeze(1)  # items with a token at p
            next_tok = next_tok[continuing]
        else:
            continuing = next_tok = item_tokens.new_zeros(0)
        # bytes per position: p match booleans + 1 flag + float mass (+ slack) per item,
        # and the float numerator row over the vocabulary
        per_row = max(1, n_items * (p + 1 + 8) + vocab_size * 8)
        chunk = max(1, _CHUNK_BYTES // per_row)
        for start in range(0, rows.numel(), chunk):
            idx = rows[start : start + chunk]
            if p == 0:
                mass = probs[idx]  # every item matches the empty prefix
            else:
                match = (item_tokens[None, :, :p] == prefix_tokens[idx, None, :p]).all(-1)
                mass = probs[idx] * match
            denom = mass.sum(1, keepdim=True)  # [n, 1]
            numer = torch.zeros(idx.numel(), vocab_size, dtype=torch.float32, device=device)
            if continuing.numel():
                numer.index_add_(1, next_tok, mass[:, continuing])
            safe = denom > 0
            out[idx] = torch.where(safe, numer / denom.clamp_min(1e-38), torch.zeros_like(numer))
    return out


def item_paths(trie: PrefixTrie, item_tokens: Tensor) -> Tensor:
    """``LongTensor[I, D + 1]``: the trie node of every item's prefix of length ``0..D``
    (column 0 is the root; -1 past the end of a shorter identifier)."""
    n_items, depth = item_tokens.shape
    paths = torch.full((n_items, depth + 1), -1, dtype=torch.long)
    paths[:, 0] = 0
    for d in range(depth):  # a loop over identifier depth, vectorized over items
        token = item_tokens[:, d]
        live = (token >= 0) & (paths[:, d] >= 0)
        paths[live, d + 1] = trie.step(paths[live, d], token[live])
    return paths


def node_item_ranges(paths: Tensor, n_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Items sorted by identifier, so that every trie node covers a contiguous range of them.

    Args:
        paths: :func:`item_paths` ``[I, D + 1]``.
        n_nodes: the trie's node count.

    Returns:
        ``order[I]`` (item ids in identifier order), and ``start[n_nodes]``, ``end[n_nodes]``:
        node ``u`` covers ``order[start[u]:end[u]]``.
    """
    order = torch.arange(paths.shape[0])
    for d in range(paths.shape[1] - 1, 0, -1):  # lexicographic order of the node paths
        order = order[torch.argsort(paths[order, d], stable=True)]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    start = torch.full((n_nodes,), order.numel(), dtype=torch.long)
    end = torch.zeros(n_nodes, dtype=torch.long)
    for d in range(paths.shape[1]):
        live = paths[:, d] >= 0
        start.scatter_reduce_(0, paths[live, d], rank[live], reduce="amin")
        end.scatter_reduce_(0, paths[live, d], rank[live] + 1, reduce="amax")
    return order, start, end


class TrieRewardIndex:
    """What :func:`trie_prefix_rewards` needs about an identifier table, built once.

    Args:
        item_tokens: ``[I, D]`` token ids of every item's identifier (-1 padded), distinct
            and prefix-free.
    """

    def __init__(self, item_tokens: Tensor) -> None:
        self.item_tokens = item_tokens.long()
        # one -1 column more, so that "the token after a complete identifier" is -1
        self.next_tokens = F.pad(self.item_tokens, (0, 1), value=-1)
        if bool((self.item_tokens[:, 0] < 0).any()):
            raise ValueError("every identifier needs at least one token (item_tokens[:, 0] < 0)")
        self.first_tokens = self.item_tokens[:, 0].contiguous()
        self.trie = PrefixTrie.from_item_tokens(self.item_tokens)
        self.paths = item_paths(self.trie, self.item_tokens)  # [I, D + 1]
        self.order, self.start, self.end = node_item_ranges(self.paths, self.trie.n_nodes)


@torch.no_grad()
def trie_prefix_rewards(
    item_probs: Tensor,
    index: TrieRewardIndex,
    groups: Tensor,
    prefix_nodes: Tensor,
    vocab_size: int,
) -> Tensor:
    r"""Eq. 10 through the identifier trie: the same values as :func:`prefix_rewards` for
    positions whose prefixes are trie nodes, at a fraction of the cost.

    With items sorted by identifier, the items below a prefix node are a contiguous range of
    that order. A position at the root (first identifier token) sums the CF mass of all items
    by their first token (one ``index_add`` over the distinct distributions); a deeper position
    visits only the items below its prefix node (a few dozen for semantic IDs) and sums their
    mass by their next token. Rewards are those sums over the prefix node's mass.

    Args:
        item_probs: ``[M, I]`` distinct CF distributions ``R``.
        index: the :class:`TrieRewardIndex` of the identifier table.
        groups: ``LongTensor[N]``, the row of ``item_probs`` of each position.
        prefix_nodes: ``LongTensor[N]``, the trie node of each position's prefix ``c_{<t}``.
        vocab_size: ``V``.

    Returns:
        ``[N, V]`` float32 rewards; 0 for tokens continuing no item and rows of zero mass.
    """
    item_probs = item_probs.float()
    sums = torch.zeros(prefix_nodes.numel(), vocab_size)
    at_root = prefix_nodes == 0
    if bool(at_root.any()):
        by_first = item_probs.new_zeros(item_probs.shape[0], vocab_size)
        by_first.index_add_(1, index.first_tokens, item_probs)
        sums[at_root] = by_first[groups[at_root]]
    deep = (prefix_nodes > 0) & (index.trie.node_item[prefix_nodes.clamp(min=0)] < 0)
    deep = deep.nonzero().squeeze(1)  # inner nodes below the root (a leaf continues nothing)
    if deep.numel():
        nodes = prefix_nodes[deep]
        lengths = index.end[nodes] - index.start[nodes]
        # the flat list of (position, item below its prefix node) pairs
        position = torch.repeat_interleave(deep, lengths)
        first_flat = torch.cumsum(lengths, 0) - lengths  # where each position's run starts
        shift = torch.repeat_interleave(index.start[nodes] - first_flat, lengths)
        items = index.order[torch.arange(int(lengths.sum())) + shift]
        depth = index.trie.node_depth[prefix_nodes[position]]
        tokens = index.next_tokens[items, depth]
        keep = tokens >= 0  # prefix-free identifiers: only a leaf's own item stops here
        mass = item_probs[groups[position[keep]], items[keep]]
        sums.index_put_((position[keep], tokens[keep]), mass, accumulate=True)
    # a row of zero mass is all zeros, and stays so
    return sums.div_(sums.sum(1, keepdim=True).clamp_min(1e-38))
