"""Tests of the leave-one-out split and the training examples (ilrec.data.split)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilrec.data.dataset import InteractionData
from ilrec.data.split import (
    Example,
    Window,
    leave_one_out,
    popularity_counts,
    window_bounds,
)

SEQUENCES = {
    "0": [0, 1, 2, 3],
    "1": [1, 2, 3, 4, 5],
    "2": [5, 4, 3],
    "3": [0, 2, 4, 1, 3, 5],
    "4": [2, 3, 0],
}


@pytest.fixture
def data() -> InteractionData:
    return InteractionData(
        "Tiny", Path("Tiny"), {u: list(s) for u, s in SEQUENCES.items()}, n_items=6
    )


def test_leave_one_out(data: InteractionData) -> None:
    splits = leave_one_out(data)
    assert splits.max_history == 20
    assert splits.train_sequences == {
        "0": [0, 1],
        "1": [1, 2, 3],
        "2": [5],
        "3": [0, 2, 4, 1],
        "4": [2],
    }
    assert splits.valid == [
        Example("0", (0, 1), 2),
        Example("1", (1, 2, 3), 4),
        Example("2", (5,), 4),
        Example("3", (0, 2, 4, 1), 3),
        Example("4", (2,), 3),
    ]
    assert splits.test == [
        Example("0", (0, 1, 2), 3),
        Example("1", (1, 2, 3, 4), 5),
        Example("2", (5, 4), 3),
        Example("3", (0, 2, 4, 1, 3), 5),
        Example("4", (2, 3), 0),
    ]
    assert splits.examples("valid") is splits.valid
    assert splits.examples("test") is splits.test
    with pytest.raises(ValueError, match="'valid' or 'test'"):
        splits.examples("train")
    # the dataset itself is left untouched
    assert data.sequences == SEQUENCES


def test_history_is_cut_to_max_history(data: InteractionData) -> None:
    splits = leave_one_out(data, max_history=2)
    assert splits.valid == [
        Example("0", (0, 1), 2),
        Example("1", (2, 3), 4),
        Example("2", (5,), 4),
        Example("3", (4, 1), 3),
        Example("4", (2,), 3),
    ]
    assert splits.test == [
        Example("0", (1, 2), 3),
        Example("1", (3, 4), 5),
        Example("2", (5, 4), 3),
        Example("3", (1, 3), 5),
        Example("4", (2, 3), 0),
    ]
    # the training part is not cut
    assert splits.train_sequences["3"] == [0, 2, 4, 1]
    with pytest.raises(ValueError, match="max_history must be >= 1, got 0"):
        leave_one_out(data, max_history=0)


def test_train_prefixes(data: InteractionData) -> None:
    assert leave_one_out(data).train_prefixes() == [
        Example("0", (0,), 1),
        Example("1", (1,), 2),
        Example("1", (1, 2), 3),
        Example("3", (0,), 2),
        Example("3", (0, 2), 4),
        Example("3", (0, 2, 4), 1),
    ]
    assert leave_one_out(data, max_history=2).train_prefixes() == [
        Example("0", (0,), 1),
        Example("1", (1,), 2),
        Example("1", (1, 2), 3),
        Example("3", (0,), 2),
        Example("3", (0, 2), 4),
        Example("3", (2, 4), 1),
    ]


def test_train_windows(data: InteractionData) -> None:
    assert leave_one_out(data, max_history=2).train_windows() == [
        Window("0", (0, 1), 1),
        Window("1", (1, 2, 3), 1),
        Window("3", (0, 2, 4), 1),
        Window("3", (2, 4, 1), 2),
    ]
    assert leave_one_out(data, max_history=1).train_windows() == [
        Window("0", (0, 1), 1),
        Window("1", (1, 2), 1),
        Window("1", (2, 3), 1),
        Window("3", (0, 2), 1),
        Window("3", (2, 4), 1),
        Window("3", (4, 1), 1),
    ]


def test_window_bounds_hand_example() -> None:
    # span 5, stride 2: windows end at 5, 7, 9 and at the sequence end 10
    assert window_bounds(10, 4) == [(0, 5, 1), (2, 7, 3), (4, 9, 3), (5, 10, 4)]
    assert window_bounds(11, 4) == [(0, 5, 1), (2, 7, 3), (4, 9, 3), (6, 11, 3)]
    assert window_bounds(3, 4) == [(0, 3, 1)]
    assert window_bounds(5, 4) == [(0, 5, 1)]
    assert window_bounds(6, 4) == [(0, 5, 1), (1, 6, 4)]
    assert window_bounds(4, 1) == [(0, 2, 1), (1, 3, 1), (2, 4, 1)]
    assert window_bounds(2, 1) == [(0, 2, 1)]
    assert window_bounds(1, 4) == []
    assert window_bounds(0, 4) == []


@settings(max_examples=300, deadline=None)
@given(length=st.integers(2, 80), max_history=st.integers(1, 25))
def test_every_item_but_the_first_is_supervised_once(length: int, max_history: int) -> None:
    supervised: list[int] = []
    for start, end, supervise_from in window_bounds(length, max_history):
        assert 0 <= start < end <= length
        assert end - start <= max_history + 1
        assert 1 <= supervise_from < end - start
        for position in range(start + supervise_from, end):
            supervised.append(position)
            # the context of a supervised item: everything before it, up to max_history // 2
            assert position - start >= min(position, max_history // 2)
    assert supervised == list(range(1, length))


def test_popularity_counts(data: InteractionData) -> None:
    # training parts: [0, 1], [1, 2, 3], [5], [0, 2, 4, 1], [2]
    assert popularity_counts(leave_one_out(data), 6) == [2, 3, 3, 1, 1, 1]
    assert popularity_counts(leave_one_out(data), 8) == [2, 3, 3, 1, 1, 1, 0, 0]
