"""Tests of the ranking metrics (HR@k, NDCG@k) and rank helpers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ilrec.metrics import metrics_from_ranks, rank_metrics, ranks_from_scores, target_ranks


def test_rank_metrics_hand():
    # user 0: target first (rank 0); user 1: rank 6; user 2: absent
    ranked = torch.tensor(
        [
            [7, 1, 2, 3, 4, 5, 6, 8, 9, 10],
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            [1, 2, 3, 4, 5, 6, 8, 9, 10, 11],
        ]
    )
    targets = torch.tensor([7, 7, 7])
    assert target_ranks(ranked, targets).tolist() == [0, 6, -1]
    m = rank_metrics(ranked, targets)
    assert list(m) == ["hit@5", "ndcg@5", "hit@10", "ndcg@10"]
    assert m["hit@5"] == pytest.approx(1 / 3)
    assert m["ndcg@5"] == pytest.approx(1 / 3)
    assert m["hit@10"] == pytest.approx(2 / 3)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(8)) / 3)


def test_duplicates_do_not_inflate():
    ranked = torch.tensor([[3, 3, 3, 3, 3, 1, 2, 4, 5, 6], [9, 8, 8, 8, 8, 8, 8, 8, 8, 8]])
    targets = torch.tensor([3, 8])
    assert target_ranks(ranked, targets).tolist() == [0, 1]
    m = rank_metrics(ranked, targets)
    assert m["hit@10"] == pytest.approx(1.0)  # at most 1 per user
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert m["ndcg@5"] <= 1.0


def test_too_few_candidates_raises():
    ranked = torch.arange(16).view(2, 8)
    with pytest.raises(ValueError, match="K=8.*max\\(ks\\)=10"):
        rank_metrics(ranked, torch.tensor([0, 1]))
    # fine with smaller cutoffs
    assert rank_metrics(ranked, torch.tensor([0, 9]), ks=(1, 8)) == pytest.approx(
        {"hit@1": 0.5, "ndcg@1": 0.5, "hit@8": 1.0, "ndcg@8": (1 + 1 / math.log2(3)) / 2}
    )


def test_shape_errors():
    with pytest.raises(ValueError):
        rank_metrics(torch.zeros(3, 10, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        metrics_from_ranks(torch.zeros(0, dtype=torch.long))


def test_ranks_from_scores_ties():
    scores = torch.tensor(
        [
            [0.1, 0.5, 0.5, 0.2, 0.5],  # target 2 ties with 1 and 4
            [1.0, 1.0, 1.0, 1.0, 1.0],  # constant scores, target 3
            [0.0, 3.0, float("-inf"), 2.0, 1.0],  # target 4
        ]
    )
    targets = torch.tensor([2, 3, 4])
    # "id": strictly higher + tied with a smaller id
    assert ranks_from_scores(scores, targets).tolist() == [1, 3, 2]
    assert ranks_from_scores(scores, targets, ties="pessimistic").tolist() == [2, 4, 2]
    with pytest.raises(ValueError):
        ranks_from_scores(scores, targets, ties="random")


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    users=st.integers(1, 6),
    items=st.integers(10, 30),
)
def test_ranks_from_scores_agree_with_stable_sort(seed, users, items):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (users, items), generator=g).float()  # many ties
    targets = torch.randint(0, items, (users,), generator=g)
    ranked = torch.sort(scores, dim=1, descending=True, stable=True).indices
    assert torch.equal(ranks_from_scores(scores, targets), target_ranks(ranked, targets))
    assert rank_metrics(ranked, targets) == pytest.approx(
        metrics_from_ranks(ranks_from_scores(scores, targets))
    )
    assert (
        ranks_from_scores(scores, targets, ties="pessimistic") >= ranks_from_scores(scores, targets)
    ).all()


@settings(max_examples=50, deadline=None)
@given(ranks=st.lists(st.integers(-1, 30), min_size=1, max_size=20))
def test_metrics_from_ranks_reference(ranks):
    m = metrics_from_ranks(torch.tensor(ranks), ks=(1, 5, 10, 20))
    for k in (1, 5, 10, 20):
        hits = [0 <= r < k for r in ranks]
        ndcg = [1 / math.log2(r + 2) if 0 <= r < k else 0.0 for r in ranks]
        assert m[f"hit@{k}"] == pytest.approx(sum(hits) / len(ranks))
        assert m[f"ndcg@{k}"] == pytest.approx(sum(ndcg) / len(ranks))
        assert 0 <= m[f"ndcg@{k}"] <= m[f"hit@{k}"] <= 1
