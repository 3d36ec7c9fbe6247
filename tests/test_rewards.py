"""Tests of the Eq. 10 token rewards against a slow, obvious reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ilrec.rewards as rewards_mod
from ilrec.rewards import prefix_rewards


def slow_prefix_rewards(item_probs, item_tokens, prefix_len, prefix_tokens, vocab_size):
    """Eq. 10 by loops over positions, items and tokens."""
    n_pos, n_items = item_probs.shape
    out = torch.zeros(n_pos, vocab_size, dtype=torch.float64)
    idents = [[t for t in row if t >= 0] for row in item_tokens.tolist()]
    for n in range(n_pos):
        p = int(prefix_len[n])
        prefix = prefix_tokens[n, :p].tolist()
        denom = 0.0
        numer = [0.0] * vocab_size
        for i in range(n_items):
            ident = idents[i]
            if len(ident) >= p and ident[:p] == prefix:
                mass = float(item_probs[n, i])
                denom += mass
                if len(ident) > p:
                    numer[ident[p]] += mass
        if denom > 0:
            out[n] = torch.tensor(numer, dtype=torch.float64) / denom
    return out.float()


def _pad(idents, depth):
    return torch.tensor([list(x) + [-1] * (depth - len(x)) for x in idents], dtype=torch.long)


def test_hand_example():
    # items: 0 = (1, 2), 1 = (1, 3), 2 = (1, 3, 0), 3 = (2, 0); V = 4, D = 3
    item_tokens = _pad([(1, 2), (1, 3), (1, 3, 0), (2, 0)], 3)
    item_probs = torch.tensor([[0.1, 0.2, 0.3, 0.4]] * 4)
    prefix_len = torch.tensor([0, 1, 2, 1])
    prefix_tokens = torch.tensor([[9, 9, 9], [1, 9, 9], [1, 3, 9], [3, 9, 9]])
    out = prefix_rewards(item_probs, item_tokens, prefix_len, prefix_tokens, 4)
    expected = torch.tensor(
        [
            [0.0, 0.6, 0.4, 0.0],  # first token: 1 -> items 0,1,2 ; 2 -> item 3
            [0.0, 0.0, 0.1 / 0.6, 0.5 / 0.6],  # after (1,): 2 -> item 0 ; 3 -> items 1, 2
            [0.3 / 0.5, 0.0, 0.0, 0.0],  # after (1,3): item 1 ends there (denominator only)
            [0.0, 0.0, 0.0, 0.0],  # prefix (3,) matches no item
        ]
    )
    torch.testing.assert_close(out, expected)
    assert out.dtype == torch.float32


@st.composite
def reward_problem(draw):
    vocab = draw(st.integers(2, 6))
    depth = draw(st.integers(1, 4))
    n_items = draw(st.integers(1, 12))
    ident = st.lists(st.integers(0, vocab - 1), min_size=1, max_size=depth)
    idents = draw(st.lists(ident, min_size=n_items, max_size=n_items))
    n_pos = draw(st.integers(1, 8))
    prefix_len, rows = [], []
    for _ in range(n_pos):
        if draw(st.booleans()):  # a prefix of a real item (usually matches)
            src = idents[draw(st.integers(0, n_items - 1))]
            p = draw(st.integers(0, len(src)))
            row = list(src[:p])
        else:  # a random prefix (may match nothing)
            p = draw(st.integers(0, depth))
            row = draw(st.lists(st.integers(0, vocab - 1), min_size=p, max_size=p))
        # garbage after the prefix must be ignored
        row += draw(st.lists(st.integers(-1, vocab - 1), min_size=depth - p, max_size=depth - p))
        prefix_len.append(p)
        rows.append(row)
    probs = draw(
        st.lists(
            st.lists(
                st.sampled_from([0.0, 0.05, 0.1, 0.3, 1.0, 2.5]), min_size=n_items, max_size=n_items
            ),
            min_size=n_pos,
            max_size=n_pos,
        )
    )
    return (
        torch.tensor(probs),
        _pad(idents, depth),
        torch.tensor(prefix_len),
        torch.tensor(rows, dtype=torch.long),
        vocab,
    )


@settings(max_examples=80, deadline=None)
@given(problem=reward_problem())
def test_matches_slow_reference(problem):
    out = prefix_rewards(*problem)
    torch.testing.assert_close(out, slow_prefix_rewards(*problem))


@settings(max_examples=40, deadline=None)
@given(problem=reward_problem())
def test_chunked_equals_unchunked(problem):
    full = prefix_rewards(*problem)
    old = rewards_mod._CHUNK_BYTES
    rewards_mod._CHUNK_BYTES = 1  # one position per chunk
    try:
        chunked = prefix_rewards(*problem)
    finally:
        rewards_mod._CHUNK_BYTES = old
    torch.testing.assert_close(chunked, full)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n_items=st.integers(1, 30),
    depth=st.integers(1, 4),
    vocab=st.integers(2, 7),
)
def test_prefix_free_rows_sum_to_one_and_dead_tokens_zero(seed, n_items, depth, vocab):
    g = torch.Generator().manual_seed(seed)
    # fixed-length codes are prefix-free: no identifier ends before depth
    item_tokens = torch.randint(0, vocab, (n_items, depth), generator=g)
    n_pos = 10
    src = torch.randint(0, n_items, (n_pos,), generator=g)
    prefix_len = torch.randint(0, depth, (n_pos,), generator=g)
    prefix_tokens = item_tokens[src]
    item_probs = torch.rand(n_pos, n_items, generator=g) + 0.01
    out = prefix_rewards(item_probs, item_tokens, prefix_len, prefix_tokens, vocab)
    torch.testing.assert_close(out.sum(1), torch.ones(n_pos))
    for n in range(n_pos):
        p = int(prefix_len[n])
        match = (item_tokens[:, :p] == prefix_tokens[n, :p]).all(1)
        continuing = set(item_tokens[match, p].tolist())
        for v in range(vocab):
            if v not in continuing:
                assert out[n, v] == 0
            else:
                assert out[n, v] > 0
        # the target's own next token is among the continuations
        assert out[n, int(prefix_tokens[n, p])] > 0


def test_zero_mass_and_full_length_rows_are_zero():
    item_tokens = torch.tensor([[0, 1], [1, 0]])
    probs = torch.tensor([[0.0, 0.0], [0.5, 0.5]])
    out = prefix_rewards(
        probs, item_tokens, torch.tensor([0, 2]), torch.tensor([[0, 1], [0, 1]]), vocab_size=3
    )
    assert torch.equal(out, torch.zeros(2, 3))


def test_bf16_probs_and_no_grad():
    item_tokens = torch.tensor([[0, 1], [0, 2], [1, 2]])
    probs = torch.tensor([[0.2, 0.3, 0.5]], requires_grad=True)
    out = prefix_rewards(
        probs.bfloat16(), item_tokens, torch.tensor([1]), torch.tensor([[0, 0]]), 3
    )
    assert out.dtype == torch.float32 and not out.requires_grad
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.4, 0.6]]), atol=1e-2, rtol=1e-2)


def test_validation():
    item_tokens = torch.tensor([[0, 1], [1, 5]])
    probs = torch.ones(1, 2)
    with pytest.raises(ValueError, match="vocab_size"):
        prefix_rewards(
            probs, item_tokens, torch.tensor([0]), torch.zeros(1, 2, dtype=torch.long), 4
        )
    with pytest.raises(ValueError):
        prefix_rewards(
            probs, item_tokens, torch.tensor([3]), torch.zeros(1, 2, dtype=torch.long), 6
        )
    with pytest.raises(ValueError):
        prefix_rewards(torch.ones(1, 3), item_tokens, torch.tensor([0]), torch.zeros(1, 2), 6)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_trie_prefix_rewards_equal_the_reference(seed):
    """The trie path gives exactly Eq. 10 as computed by prefix_rewards."""
    from ilrec.rewards import TrieRewardIndex, trie_prefix_rewards

    gen = torch.Generator().manual_seed(seed)
    n_items, depth, vocab = 25, 4, 12
    codes = torch.randint(0, 3, (n_items, depth - 1), generator=gen) + 3 * torch.arange(depth - 1)
    table = torch.cat([codes, torch.arange(n_items).unsqueeze(1) % 2 + 9], dim=1)
    short = torch.rand(n_items, generator=gen) < 0.3  # variable length: [code, 11], -1 padded
    table[short, 1] = 11
    table[short, 2:] = -1
    table = torch.unique(table, dim=0)  # distinct, prefix-free identifiers
    n_items = table.shape[0]
    index = TrieRewardIndex(table)
    m = 3
    probs = torch.softmax(torch.randn(m, n_items, generator=gen), dim=-1)
    n = 10
    groups = torch.randint(0, m, (n,), generator=gen)
    targets = torch.randint(0, n_items, (n,), generator=gen)
    prefix_len = torch.randint(0, depth + 1, (n,), generator=gen)  # D: a complete identifier
    nodes = index.paths[targets, prefix_len]
    fast = trie_prefix_rewards(probs, index, groups, nodes, vocab)
    slow = prefix_rewards(probs[groups], table, prefix_len, table[targets], vocab)
    torch.testing.assert_close(fast, slow)


def test_trie_reward_index_rejects_empty_identifiers():
    from ilrec.rewards import TrieRewardIndex

    with pytest.raises(ValueError, match="at least one token"):
        TrieRewardIndex(torch.tensor([[0, 1], [-1, -1]]))
