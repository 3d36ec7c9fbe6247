"""Prefix trie over item identifiers, stored as flat tensors (spec: Evaluation).

Constrained decoding (beam mode) and exact scoring both walk this trie. Items are rows of an
identifier table ``item_tokens[I, D]`` (token ids right-padded with -1, variable lengths).
Nodes are numbered level by level (root 0, then all depth-1 nodes, ...); inside a level they
are sorted by (parent id, token). Hence:

- the children of a node are one contiguous, token-sorted slice of the CSR arrays;
- the non-root node ``e + 1`` is the target of edge ``e`` (``child_node == arange(1, n)``);
- the nodes of one depth form a contiguous id range, and the ancestors at a fixed depth of a
  contiguous range of nodes also form a contiguous range (used by exact scoring).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["PrefixTrie", "prefix_allowed_tokens_fn"]


class PrefixTrie:
    """Flat-tensor prefix trie over prefix-free token identifiers.

    Attributes (all LongTensor):
        child_ptr: ``[n_nodes + 1]`` CSR offsets; the children of node n are edges
            ``child_ptr[n]:child_ptr[n + 1]``.
        child_token: ``[E]`` token of each edge (sorted inside a node's slice).
        child_node: ``[E]`` node each edge leads to (``E = n_nodes - 1``).
        node_item: ``[n_nodes]`` item id whose identifier ends at the node, else -1.
        node_parent: ``[n_nodes]`` parent node (-1 for the root).
        node_token: ``[n_nodes]`` token on the edge into the node (-1 for the root).
        node_depth: ``[n_nodes]`` number of tokens from the root.
        level_ptr: ``[depth + 2]`` nodes of depth d are ``level_ptr[d]:level_ptr[d + 1]``.
        item_node: ``[I]`` final node of each item.
    """

    def __init__(self, node_parent: Tensor, node_token: Tensor, level_ptr: Tensor) -> None:
        self.node_parent = node_parent
        self.node_token = node_token
        self.level_ptr = level_ptr
        n = node_parent.numel()
        counts = torch.bincount(node_parent[1:], minlength=n)  # children per node
        self.child_ptr = torch.zeros(n + 1, dtype=torch.long)
        self.child_ptr[1:] = torch.cumsum(counts, 0)
        self.child_token = node_token[1:].clone()
        self.child_node = torch.arange(1, n, dtype=torch.long)
        depth_sizes = level_ptr[1:] - level_ptr[:-1]
        self.node_depth = torch.repeat_interleave(torch.arange(depth_sizes.numel()), depth_sizes)
        self.node_item = torch.full((n,), -1, dtype=torch.long)
        self.item_node = torch.empty(0, dtype=torch.long)
        # Sorted edge keys parent * key_base + token allow a vectorized step() by binary search.
        self._key_base = int(self.child_token.max().item()) + 1 if n > 1 else 1
        self._edge_key = node_parent[1:] * self._key_base + self.child_token

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_item_tokens(cls, item_tokens: Tensor) -> PrefixTrie:
        """Build the trie from ``item_tokens[I, D]`` (right-padded with -1).

        Raises:
            ValueError: on an empty row, a gap in the padding, a negative token, a duplicate
                identifier, or an identifier that is a proper prefix of another (the message
                names the item ids involved).
        """
        tokens = torch.as_tensor(item_tokens, dtype=torch.long)
        lengths = _validate_table(tokens)
        n_items, max_len = tokens.shape[0], int(lengths.max())
        key_base = int(tokens.max().item()) + 1
        parents = [torch.full((1,), -1, dtype=torch.long)]
        node_tokens = [torch.full((1,), -1, dtype=torch.long)]
        level_ptr = [0, 1]
        cur = torch.zeros(n_items, dtype=torch.long)  # node of each item at the current depth
        item_path = torch.full((n_items, max_len + 1), -1, dtype=torch.long)
        item_path[:, 0] = 0
        for d in range(max_len):
            alive = lengths > d
            keys = cur[alive] * key_base + tokens[alive, d]
            uniq, inverse = torch.unique(keys, sorted=True, return_inverse=True)
            parents.append(uniq // key_base)
            node_tokens.append(uniq % key_base)
            cur = cur.clone()
            cur[alive] = level_ptr[-1] + inverse
            item_path[alive, d + 1] = cur[alive]
            level_ptr.append(level_ptr[-1] + uniq.numel())
        trie = cls(torch.cat(parents), torch.cat(node_tokens), torch.tensor(level_ptr))
        trie._attach_items(cur, item_path)
        return trie

    def _attach_items(self, item_node: Tensor, item_path: Tensor) -> None:
        n_items = item_node.numel()
        ids = torch.arange(n_items)
        order = torch.argsort(item_node, stable=True)
        same = item_node[order][1:] == item_node[order][:-1]
        if bool(same.any()):
            j = int(torch.nonzero(same)[0, 0])
            a, b = sorted((int(order[j]), int(order[j + 1])))
            raise ValueError(f"items {a} and {b} have the same identifier")
        has_children = self.child_ptr[item_node + 1] > self.child_ptr[item_node]
        if bool(has_children.any()):
            short = int(torch.nonzero(has_children)[0, 0])
            through = (item_path == item_node[short]).any(1) & (ids != short)
            longer = int(torch.nonzero(through)[0, 0])
            raise ValueError(
                f"identifier of item {short} is a proper prefix of the identifier of item {longer}"
            )
        self.node_item[item_node] = ids
        self.item_node = item_node

    def to(self, device: torch.device | str) -> PrefixTrie:
        """A copy whose tensors live on ``device`` (queries must then pass tensors there)."""
        out = PrefixTrie.__new__(PrefixTrie)
        for name, value in vars(self).items():
            setattr(out, name, value.to(device) if isinstance(value, Tensor) else value)
        return out

    @property
    def device(self) -> torch.device:
        return self.child_ptr.device

    # ------------------------------------------------------------------ properties
    @property
    def n_nodes(self) -> int:
        return self.node_parent.numel()

    @property
    def n_items(self) -> int:
        return self.item_node.numel()

    @property
    def depth(self) -> int:
        """Length of the longest identifier."""
        return self.level_ptr.numel() - 2

    @property
    def max_token(self) -> int:
        """Largest token id used by any identifier (-1 for an empty trie)."""
        return self._key_base - 1 if self.n_nodes > 1 else -1

    # ------------------------------------------------------------------ queries
    def children(self, prefix: Sequence[int]) -> list[int]:
        """Valid next tokens after ``prefix`` (token-sorted); [] for an invalid prefix."""
        node = 0
        for tok in prefix:
            node = int(self.step(torch.tensor([node]), torch.tensor([int(tok)]))[0])
            if node < 0:
                return []
        lo, hi = int(self.child_ptr[node]), int(self.child_ptr[node + 1])
        return self.child_token[lo:hi].tolist()

    def step(self, nodes: Tensor, tokens: Tensor) -> Tensor:
        """Follow one edge: ``nodes[B]``, ``tokens[B]`` -> next nodes ``[B]`` (-1 if invalid)."""
        nodes, tokens = nodes.long(), tokens.long()
        ok = (nodes >= 0) & (tokens >= 0) & (tokens < self._key_base)
        query = nodes.clamp(min=0) * self._key_base + tokens.clamp(0, self._key_base - 1)
        if self._edge_key.numel() == 0:
            return torch.full_like(nodes, -1)
        pos = torch.searchsorted(self._edge_key, query).clamp(max=self._edge_key.numel() - 1)
        found = ok & (self._edge_key[pos] == query)
        return torch.where(found, self.child_node[pos], torch.full_like(nodes, -1))

    def allowed_mask(self, nodes: Tensor, vocab_size: int) -> Tensor:
        """Boolean ``[B, vocab_size]`` mask of the valid next tokens from each of ``nodes[B]``.

        Invalid nodes (-1) and complete identifiers (leaves) allow nothing.
        """
        if self.max_token >= vocab_size:
            raise ValueError(f"trie uses token {self.max_token} >= vocab_size {vocab_size}")
        rows, edges = self.edge_slices(nodes)
        mask = torch.zeros(nodes.numel(), vocab_size, dtype=torch.bool, device=self.device)
        mask[rows, self.child_token[edges]] = True
        return mask

    def item_at(self, nodes: Tensor) -> Tensor:
        """Item id completed at each of ``nodes[B]`` (-1 if none or invalid node)."""
        nodes = nodes.long()
        items = self.node_item[nodes.clamp(min=0)]
        return torch.where(nodes >= 0, items, torch.full_like(items, -1))

    def match(self, tokens: Tensor) -> Tensor:
        """Item whose identifier starts each row of ``tokens[B, T]`` (e.g. generated
        continuations; anything after the identifier is ignored) -> ``[B]``, -1 if none."""
        tokens = tokens.to(self.device, torch.long)
        nodes = torch.zeros(tokens.shape[0], dtype=torch.long, device=self.device)
        found = torch.full_like(nodes, -1)
        for t in range(tokens.shape[1]):
            nodes = torch.where(found >= 0, -1, self.step(nodes, tokens[:, t]))
            found = torch.where(found >= 0, found, self.item_at(nodes))
        return found

    def edge_slices(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """Flattened (row, edge) pairs for all children of ``nodes[B]`` (vectorized CSR read)."""
        nodes = nodes.to(self.device, torch.long).reshape(-1)
        valid = nodes >= 0
        safe = nodes.clamp(min=0)
        start = self.child_ptr[safe]
        counts = torch.where(valid, self.child_ptr[safe + 1] - start, torch.zeros_like(start))
        dev = self.device
        rows = torch.repeat_interleave(torch.arange(nodes.numel(), device=dev), counts)
        first = torch.cumsum(counts, 0) - counts  # position of each row's first pair
        edges = start[rows] + torch.arange(rows.numel(), device=dev) - first[rows]
        return rows, edges


def _validate_table(tokens: Tensor) -> Tensor:
    """Check the -1 padding of ``tokens[I, D]``; return identifier lengths ``[I]``."""
    if tokens.dim() != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(
            f"item_tokens must be a non-empty [I, D] tensor, got {tuple(tokens.shape)}"
        )
    valid = tokens != -1
    lengths = valid.sum(1)
    if bool((tokens < -1).any()):
        item = int(torch.nonzero((tokens < -1).any(1))[0, 0])
        raise ValueError(f"item {item} has a negative token id other than the -1 padding")
    empty = lengths == 0
    if bool(empty.any()):
        raise ValueError(f"item {int(torch.nonzero(empty)[0, 0])} has an empty identifier")
    contiguous = valid == (torch.arange(tokens.shape[1]) < lengths[:, None])
    if not bool(contiguous.all()):
        item = int(torch.nonzero(~contiguous.all(1))[0, 0])
        raise ValueError(f"item {item} has -1 padding before a token (pad on the right only)")
    return lengths


def prefix_allowed_tokens_fn(
    trie: PrefixTrie,
    prompt_lengths: int | Sequence[int],
    end_token_id: int | None = None,
) -> Callable[[int, Tensor], list[int]]:
    """Constraint for Hugging Face ``generate(prefix_allowed_tokens_fn=...)``.

    Args:
        trie: the identifier trie (identifiers usually end with EOS so that beams finish).
        prompt_lengths: number of input positions (padding included) before generation, one
            int for a left-padded batch or one per batch row.
        end_token_id: token allowed after a complete identifier or an invalid prefix (HF
            raises on an empty allowed set); None allows no token there.

    Returns:
        ``fn(batch_id, input_ids[T]) -> list[int]`` of allowed next tokens.
    """

    def fn(batch_id: int, input_ids: Tensor) -> list[int]:
        start = prompt_lengths if isinstance(prompt_lengths, int) else prompt_lengths[batch_id]
        allowed = trie.children(input_ids[start:].tolist())
        if not allowed and end_token_id is not None:
            return [end_token_id]
        return allowed

    return fn
