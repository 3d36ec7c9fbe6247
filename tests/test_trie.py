"""Tests of the identifier prefix trie against hand-written expectations and brute force."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ilrec.identifiers.trie import PrefixTrie, prefix_allowed_tokens_fn

# item 0: 1 2 3 | item 1: 1 2 4 | item 2: 1 5 | item 3: 6 7 8
TABLE = torch.tensor([[1, 2, 3], [1, 2, 4], [1, 5, -1], [6, 7, 8]])


@pytest.fixture
def trie() -> PrefixTrie:
    return PrefixTrie.from_item_tokens(TABLE)


def test_shape_by_hand(trie):
    # nodes level by level, sorted by (parent, token):
    # 0 root | 1 "1", 2 "6" | 3 "1 2", 4 "1 5", 5 "6 7" | 6 "1 2 3", 7 "1 2 4", 8 "6 7 8"
    assert trie.n_nodes == 9 and trie.depth == 3 and trie.n_items == 4
    assert trie.node_parent.tolist() == [-1, 0, 0, 1, 1, 2, 3, 3, 5]
    assert trie.node_token.tolist() == [-1, 1, 6, 2, 5, 7, 3, 4, 8]
    assert trie.child_ptr.tolist() == [0, 2, 4, 5, 7, 7, 8, 8, 8, 8]
    assert trie.child_token.tolist() == [1, 6, 2, 5, 7, 3, 4, 8]
    assert trie.child_node.tolist() == list(range(1, 9))
    assert trie.node_item.tolist() == [-1, -1, -1, -1, 2, -1, 0, 1, 3]
    assert trie.item_node.tolist() == [6, 7, 4, 8]
    assert trie.level_ptr.tolist() == [0, 1, 3, 6, 9]


def test_children(trie):
    assert trie.children([]) == [1, 6]
    assert trie.children([1]) == [2, 5]
    assert trie.children([1, 2]) == [3, 4]
    assert trie.children([6, 7]) == [8]
    assert trie.children([1, 5]) == []  # complete identifier
    assert trie.children([1, 2, 3]) == []
    assert trie.children([9]) == []  # invalid prefix
    assert trie.children([6, 2]) == []


def test_step_and_item_at(trie):
    nodes = torch.tensor([0, 0, 1, 3, 3, 4, -1, 0, 2])
    tokens = torch.tensor([1, 6, 5, 4, 9, 1, 1, 100, -3])
    assert trie.step(nodes, tokens).tolist() == [1, 2, 4, 7, -1, -1, -1, -1, -1]
    assert trie.item_at(torch.tensor([6, 7, 4, 8, 0, 3, -1])).tolist() == [0, 1, 2, 3, -1, -1, -1]


def test_allowed_mask(trie):
    mask = trie.allowed_mask(torch.tensor([0, 3, 4, -1, 5]), vocab_size=10)
    assert mask.shape == (5, 10)
    assert [torch.nonzero(r).flatten().tolist() for r in mask] == [[1, 6], [3, 4], [], [], [8]]
    with pytest.raises(ValueError, match="vocab_size"):
        trie.allowed_mask(torch.tensor([0]), vocab_size=8)


def test_match(trie):
    rows = torch.tensor([[1, 2, 4, 0], [1, 5, 2, 2], [6, 7, 8, 2], [1, 2, 0, 0], [9, 9, 9, 9]])
    assert trie.match(rows).tolist() == [1, 2, 3, -1, -1]


def test_duplicate_rejected():
    with pytest.raises(ValueError, match="items 1 and 3 have the same identifier"):
        PrefixTrie.from_item_tokens(torch.tensor([[1, 2], [3, 4], [5, -1], [3, 4]]))


def test_prefix_rejected():
    with pytest.raises(ValueError, match="item 2 is a proper prefix of .* item 0"):
        PrefixTrie.from_item_tokens(torch.tensor([[1, 2, 3], [4, 5, 6], [1, 2, -1]]))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ([[1, -1, 2]], "padding before a token"),
        ([[-1, -1]], "empty identifier"),
        ([[1, -5]], "negative token"),
    ],
)
def test_bad_padding_rejected(table, message):
    with pytest.raises(ValueError, match=message):
        PrefixTrie.from_item_tokens(torch.tensor(table))


def test_prefix_allowed_tokens_fn(trie):
    fn = prefix_allowed_tokens_fn(trie, prompt_lengths=2, end_token_id=0)
    assert fn(0, torch.tensor([7, 7])) == [1, 6]
    assert fn(0, torch.tensor([7, 7, 1, 2])) == [3, 4]
    assert fn(0, torch.tensor([7, 7, 1, 5])) == [0]  # complete: only the end token
    per_row = prefix_allowed_tokens_fn(trie, prompt_lengths=[1, 3])
    assert per_row(1, torch.tensor([7, 7, 7, 6])) == [7]
    assert per_row(0, torch.tensor([7, 1, 5])) == []


@st.composite
def prefix_free_tables(draw):
    """Random prefix-free identifier sets of lengths 1-4 over tokens 0-5."""
    seqs = draw(
        st.lists(st.lists(st.integers(0, 5), min_size=1, max_size=4), min_size=1, max_size=25)
    )
    kept: list[tuple[int, ...]] = []
    for s in map(tuple, seqs):
        if all(s[: len(k)] != k and k[: len(s)] != s for k in kept):
            kept.append(s)
    table = torch.full((len(kept), 4), -1, dtype=torch.long)
    for i, s in enumerate(kept):
        table[i, : len(s)] = torch.tensor(s)
    return kept, table


@settings(max_examples=60, deadline=None)
@given(prefix_free_tables())
def test_matches_brute_force(data):
    seqs, table = data
    trie = PrefixTrie.from_item_tokens(table)
    prefixes = {s[:d] for s in seqs for d in range(len(s) + 1)}
    assert trie.n_nodes == len(prefixes)
    assert trie.depth == max(len(s) for s in seqs)
    for p in prefixes:
        expected = sorted({s[len(p)] for s in seqs if len(s) > len(p) and s[: len(p)] == p})
        assert trie.children(list(p)) == expected
    # walking each identifier ends at its own item, and allowed_mask agrees with children()
    assert trie.match(table.clamp(min=0)).tolist() == list(range(len(seqs)))
    mask = trie.allowed_mask(torch.arange(trie.n_nodes), vocab_size=6)
    for node in range(trie.n_nodes):
        lo, hi = trie.child_ptr[node], trie.child_ptr[node + 1]
        assert torch.nonzero(mask[node]).flatten().tolist() == trie.child_token[lo:hi].tolist()


def test_large_table_builds_fast():
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 256, (50_000, 3), generator=gen)
    table = torch.cat([codes, torch.arange(50_000)[:, None] + 256], dim=1)  # unique last level
    trie = PrefixTrie.from_item_tokens(table)
    assert trie.n_items == 50_000
    assert trie.match(table[:100]).tolist() == list(range(100))
