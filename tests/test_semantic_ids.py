"""Tests for semantic-ID utilities: make_unique, validation, index writing, embeddings I/O."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ilrec.identifiers.embeddings import item_text, load_embeddings
from ilrec.identifiers.semantic import (
    code_token,
    collision_groups,
    collision_rate,
    level_letters,
    make_unique,
    prefix_conflicts,
    validate_codes,
    write_index,
)

P = ["<a_1>", "<b_2>", "<c_3>", "<d_4>"]
Q = ["<a_7>", "<b_0>", "<c_0>", "<d_0>"]
R = ["<a_1>", "<b_2>", "<c_3>", "<d_5>"]

# Inserted out of id order on purpose: numbering must follow item ids, not dict order.
SIX = {12: P, 3: P, 10: Q, 5: R, 1: Q, 7: Q}


def test_make_unique_six_items():
    out = make_unique(SIX)
    assert out == {
        1: ["<a_7>", "<b_0>", "<c_0>", "<d_0>", "<e_0>"],
        3: ["<a_1>", "<b_2>", "<c_3>", "<d_4>", "<e_0>"],
        5: ["<a_1>", "<b_2>", "<c_3>", "<d_5>"],
        7: ["<a_7>", "<b_0>", "<c_0>", "<d_0>", "<e_1>"],
        10: ["<a_7>", "<b_0>", "<c_0>", "<d_0>", "<e_2>"],
        12: ["<a_1>", "<b_2>", "<c_3>", "<d_4>", "<e_1>"],
    }
    assert list(out) == [1, 3, 5, 7, 10, 12]
    # Deterministic, does not touch its input, idempotent, prefix-free.
    assert make_unique(dict(reversed(list(SIX.items())))) == out
    assert SIX[12] == P and len(SIX[1]) == 4
    assert make_unique(out) == out
    assert prefix_conflicts(out) == []
    assert collision_groups(out) == []


def test_collision_groups_rate_and_letters():
    assert collision_groups(SIX) == [[1, 7, 10], [3, 12]]
    assert collision_rate(SIX) == pytest.approx(5 / 6)
    assert level_letters(SIX) == ["a", "b", "c", "d"]
    assert level_letters(make_unique(SIX)) == ["a", "b", "c", "d", "e"]
    assert level_letters({}) == []
    assert make_unique({}) == {}


def test_make_unique_three_levels_uses_d():
    codes = {0: ["<a_0>", "<b_1>", "<c_2>"], 1: ["<a_0>", "<b_1>", "<c_2>"]}
    assert make_unique(codes) == {
        0: ["<a_0>", "<b_1>", "<c_2>", "<d_0>"],
        1: ["<a_0>", "<b_1>", "<c_2>", "<d_1>"],
    }


def test_no_collisions_unchanged():
    codes = {0: P, 1: Q, 2: R}
    assert make_unique(codes) == {0: P, 1: Q, 2: R}


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("<a_1><b_2>", "list of code tokens"),
        ([], "non-empty"),
        (["<a_1>", "b_2"], "position 1"),
        (["<a_1>", "<c_2>"], "level letter 'b'"),
        (["<a_-1>"], "position 0"),
        (["<a_01>"], "position 0"),
        (["<a_1>", 2], "string token"),
        (None, "list of code tokens"),
    ],
)
def test_malformed_entries_name_the_item(entry, fragment):
    codes = {0: P, 41: entry}
    for fn in (make_unique, collision_groups, validate_codes):
        with pytest.raises(ValueError, match="item 41") as exc:
            fn(codes)
        assert fragment in str(exc.value)


def test_string_key_rejected():
    with pytest.raises(ValueError, match="'5'"):
        make_unique({"5": P})


def test_prefix_conflicts_detects_mixed_lengths():
    codes = {0: ["<a_1>", "<b_2>"], 1: ["<a_1>", "<b_2>", "<c_0>"], 2: ["<a_3>", "<b_2>"]}
    assert prefix_conflicts(codes) == [(0, 1)]


def test_code_token():
    assert code_token(0, 137) == "<a_137>"
    assert code_token(4, 0) == "<e_0>"
    with pytest.raises(ValueError):
        code_token(26, 0)


def test_write_index_roundtrip(tmp_path):
    codes = make_unique(SIX)
    path = write_index(tmp_path / "X.index.json", codes)
    data = json.loads(path.read_text())
    assert list(data) == ["1", "3", "5", "7", "10", "12"]
    assert {int(k): v for k, v in data.items()} == codes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.index.json"]
    # Overwrites atomically and refuses malformed input without touching the old file.
    with pytest.raises(ValueError, match="item 2"):
        write_index(path, {2: ["<b_1>"]})
    assert json.loads(path.read_text()) == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.index.json"]


def test_item_text():
    info = {
        "title": " Yamaha Guitar Strings ",
        "brand": "Yamaha",
        "categories": ["Musical Instruments", "Strings"],
        "description": "Bright tone.",
    }
    assert item_text(info) == (
        "Yamaha Guitar Strings. Yamaha. Musical Instruments, Strings. Bright tone."
    )
    assert item_text({"title": "Only title", "brand": "", "description": None}) == "Only title."
    assert item_text({}) == ""


def test_load_embeddings(tmp_path):
    good = tmp_path / "emb.npy"
    np.save(good, np.ones((5, 8), dtype=np.float64))
    arr = load_embeddings(good, 5)
    assert arr.shape == (5, 8) and arr.dtype == np.float32

    with pytest.raises(ValueError) as exc:
        load_embeddings(good, 6)
    msg = str(exc.value)
    assert "emb.npy" in msg and "(6, dim)" in msg and "(5, 8)" in msg

    flat = tmp_path / "flat.npy"
    np.save(flat, np.ones(5, dtype=np.float32))
    with pytest.raises(ValueError, match=r"flat\.npy.*\(5,\)"):
        load_embeddings(flat, 5)

    bad = tmp_path / "nan.npy"
    np.save(bad, np.full((2, 3), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="nan.npy"):
        load_embeddings(bad, 2)

    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_embeddings(tmp_path / "missing.npy", 2)
