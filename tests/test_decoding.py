"""Tests of trie-constrained beam search and exact item scoring on a tiny random Llama."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ilrec.evaluation.beam import constrained_beam_search
from ilrec.evaluation.exact import internal_positions, rank_items, score_all_items
from ilrec.identifiers.trie import PrefixTrie, prefix_allowed_tokens_fn

PAD, EOS = 0, 2


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=PAD,
        eos_token_id=EOS,
    )
    return LlamaForCausalLM(config).eval()


def _table(rows: list[list[int]]) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [-1] * (width - len(r)) for r in rows])


def _random_ids(n_items: int, seed: int, lengths: tuple[int, ...]) -> list[list[int]]:
    """Distinct prefix-free identifiers over tokens 5..12 (few symbols: many shared prefixes)."""
    gen = torch.Generator().manual_seed(seed)
    kept: list[list[int]] = []
    while len(kept) < n_items:
        length = lengths[int(torch.randint(len(lengths), (1,), generator=gen))]
        s = torch.randint(5, 13, (length,), generator=gen).tolist()
        if all(s[: len(k)] != k and k[: len(s)] != s for k in kept):
            kept.append(s)
    return kept


@pytest.fixture(scope="module")
def table() -> torch.Tensor:
    """30 items with 3- and 4-token identifiers."""
    return _table(_random_ids(30, seed=1, lengths=(3, 3, 4)))


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    gen = torch.Generator().manual_seed(2)
    return [torch.randint(3, 40, (n,), generator=gen).tolist() for n in (2, 9, 5, 1, 12, 7, 3)]


def _reference(model, prompts, table) -> torch.Tensor:
    """Slow oracle ``[U, I]``: one full forward per (user, item)."""
    out = torch.zeros(len(prompts), table.shape[0])
    with torch.no_grad():
        for u, prompt in enumerate(prompts):
            for i, row in enumerate(table.tolist()):
                item = [t for t in row if t >= 0]
                logits = model(torch.tensor([prompt + item])).logits[0]
                lp = torch.log_softmax(logits.float(), -1)[len(prompt) - 1 : -1]
                out[u, i] = lp[torch.arange(len(item)), torch.tensor(item)].sum()
    return out


@pytest.fixture(scope="module")
def exact(model, prompts, table) -> torch.Tensor:
    return score_all_items(model, prompts, PrefixTrie.from_item_tokens(table), batch_size=3)


def test_table_shares_prefixes(table):
    trie = PrefixTrie.from_item_tokens(table)
    assert trie.n_nodes < 1 + int((table >= 0).sum())  # some items share prefixes
    assert set((table >= 0).sum(1).tolist()) == {3, 4}


def test_exact_matches_reference(model, prompts, table, exact):
    torch.testing.assert_close(exact, _reference(model, prompts, table), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("batch_size", "node_chunk"), [(1, 1), (7, 4), (2, 1000)])
def test_exact_independent_of_batching(model, prompts, table, exact, batch_size, node_chunk):
    trie = PrefixTrie.from_item_tokens(table)
    scores = score_all_items(model, prompts, trie, batch_size=batch_size, node_chunk=node_chunk)
    torch.testing.assert_close(scores, exact, atol=1e-5, rtol=0)


def test_internal_positions():
    trie = PrefixTrie.from_item_tokens(torch.tensor([[1, 2, 3], [1, 2, 4], [1, 5, -1], [6, 7, 8]]))
    assert internal_positions(trie) == 4  # "1", "6", "1 2", "6 7"


def test_rank_items_ties_by_lower_id():
    scores = torch.tensor([[0.0, 1.0, 1.0, -1.0, 1.0], [2.0, 2.0, 2.0, 2.0, 3.0]])
    assert rank_items(scores, 3).tolist() == [[1, 2, 4], [4, 0, 1]]


def test_beam_all_items_is_exact_ranking(model, prompts, table, exact):
    trie = PrefixTrie.from_item_tokens(table)
    n_items = table.shape[0]
    items, scores = constrained_beam_search(model, prompts, trie, num_beams=n_items, batch_size=4)
    assert torch.equal(items, rank_items(exact, n_items))
    torch.testing.assert_close(scores, exact.gather(1, items), atol=1e-4, rtol=0)


def test_beam_items_valid_unique_and_exact_scored(model, prompts, table, exact):
    trie = PrefixTrie.from_item_tokens(table)
    items, scores = constrained_beam_search(model, prompts, trie, num_beams=5, batch_size=4)
    assert items.shape == scores.shape == (len(prompts), 5)
    assert bool(((items >= 0) & (items < table.shape[0])).all())
    assert all(len(set(row)) == 5 for row in items.tolist())
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    torch.testing.assert_close(scores, exact.gather(1, items), atol=1e-4, rtol=0)
    top1_agree = (items[:, 0] == exact.argmax(1)).float().mean()
    assert top1_agree >= 0.7


def test_batched_equals_unbatched(model, prompts, table):
    trie = PrefixTrie.from_item_tokens(table)
    batched = constrained_beam_search(model, prompts, trie, num_beams=6, batch_size=3)
    single = constrained_beam_search(model, prompts, trie, num_beams=6, batch_size=1)
    assert torch.equal(batched[0], single[0])
    torch.testing.assert_close(batched[1], single[1], atol=1e-5, rtol=0)


def test_few_root_children_padded_not_duplicated(model, prompts):
    # root has 2 children, 9 items of variable length: beams must not duplicate early on
    rows = [
        [5, 6],
        [5, 7, 8],
        [5, 7, 9],
        [5, 8],
        [9, 5, 5, 5],
        [9, 5, 5, 6],
        [9, 6],
        [9, 7],
        [5, 9],
    ]
    trie = PrefixTrie.from_item_tokens(_table(rows))
    exact = score_all_items(model, prompts, trie)
    items, scores = constrained_beam_search(model, prompts, trie, num_beams=9)
    assert torch.equal(items, rank_items(exact, 9))
    items, scores = constrained_beam_search(model, prompts, trie, num_beams=4)
    assert all(len(set(row)) == 4 for row in items.tolist())
    torch.testing.assert_close(scores, exact.gather(1, items), atol=1e-4, rtol=0)


def test_too_many_beams_raises(model, prompts, table):
    trie = PrefixTrie.from_item_tokens(table)
    with pytest.raises(ValueError, match="exceeds the number of items"):
        constrained_beam_search(model, prompts, trie, num_beams=table.shape[0] + 1)


def test_beam_matches_hf_generate(model, prompts):
    # fixed-length identifiers (3 codes + EOS), so every HF beam finishes at the same step
    codes = _random_ids(24, seed=3, lengths=(3,))
    table = torch.tensor([c + [EOS] for c in codes])
    trie = PrefixTrie.from_item_tokens(table)
    n_beams = 8
    ours, our_scores = constrained_beam_search(
        model, prompts, trie, num_beams=n_beams, pad_token_id=PAD, batch_size=3
    )
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    mask = (
        torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]
    ).long()
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        num_beams=n_beams,
        num_return_sequences=n_beams,
        do_sample=False,
        length_penalty=0.0,
        early_stopping=True,
        max_new_tokens=table.shape[1],
        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(trie, width, end_token_id=EOS),
        pad_token_id=PAD,
        eos_token_id=EOS,
        return_dict_in_generate=True,
        output_scores=True,
    )
    theirs = trie.match(out.sequences[:, width:]).reshape(len(prompts), n_beams)
    their_scores = out.sequences_scores.reshape(len(prompts), n_beams)
    assert torch.equal(ours, theirs)
    torch.testing.assert_close(our_scores, their_scores, atol=1e-4, rtol=0)
