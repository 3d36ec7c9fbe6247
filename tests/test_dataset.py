"""Tests of dataset loading and validation (ilrec.data.dataset)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ilrec.data.dataset import (
    DataError,
    InteractionData,
    ItemInfo,
    collision_count,
    dataset_name,
    dataset_statistics,
    load_dataset,
)
from toy_data import INDEX, SEQUENCES

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# 5 users, 6 items, 21 interactions; items 0 and 3 share their identifier (a collision),
# item 5 has a third level.
ITEMS = {
    "0": {"title": "Guitar Strings", "description": "Nickel wound", "brand": "Ernie"},
    "1": {"title": "Capo"},
    "2": {
        "title": "  Clip   Tuner ",
        "description": ["Clip-on", "chromatic  tuner"],
        "brand": None,
        "categories": "Instruments, Accessories,",
    },
    "3": {"title": "Guitar Strings", "categories": ["Instruments", "Strings"]},
    "4": {"title": "Drum Sticks"},
    "5": {"title": "Capo"},
}
_ABSENT = object()


def write_dataset(
    root: Path,
    name: str = "Tiny",
    inter: object = SEQUENCES,
    index: object = INDEX,
    items: object = ITEMS,
) -> Path:
    """Write ``root/name.{inter,index,item}.json``; ``_ABSENT`` omits a file, a str is raw text."""
    root.mkdir(parents=True, exist_ok=True)
    for suffix, content in (("inter", inter), ("index", index), ("item", items)):
        if content is _ABSENT:
            continue
        text = content if isinstance(content, str) else json.dumps(content, indent=2)
        (root / f"{name}.{suffix}.json").write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "Tiny")


def load_error(root: Path, **kw: object) -> str:
    with pytest.raises(DataError) as info:
        load_dataset(root, **kw)
    return str(info.value)


# -- loading ---------------------------------------------------------------------------------
def test_load_tiny_dataset(tiny: Path) -> None:
    data = load_dataset(tiny)
    assert data.name == "Tiny"
    assert data.root == tiny
    assert data.sequences == SEQUENCES
    assert data.codes == {
        0: ["<a_1>", "<b_2>"],
        1: ["<a_3>", "<b_4>"],
        2: ["<a_2>", "<b_1>"],
        3: ["<a_1>", "<b_2>"],
        4: ["<a_10>", "<b_1>"],
        5: ["<a_3>", "<b_1>", "<c_0>"],
    }
    assert (data.n_users, data.n_items, data.n_interactions) == (5, 6, 21)
    assert data.items is not None
    assert data.items[0] == ItemInfo("Guitar Strings", "Nickel wound", "Ernie", ())
    # whitespace collapsed, description list joined, None brand -> "", categories split
    assert data.items[2] == ItemInfo(
        "Clip Tuner", "Clip-on chromatic tuner", "", ("Instruments", "Accessories")
    )
    assert data.items[3].categories == ("Instruments", "Strings")
    assert data.titles() == [
        "Guitar Strings",
        "Capo",
        "Clip Tuner",
        "Guitar Strings",
        "Drum Sticks",
        "Capo",
    ]


def test_string_item_ids_in_histories_are_parsed(tmp_path: Path) -> None:
    inter = {**SEQUENCES, "4": ["2", " 3", 0]}
    data = load_dataset(write_dataset(tmp_path / "Tiny", inter=inter))
    assert data.sequences["4"] == [2, 3, 0]
    assert all(type(i) is int for i in data.sequences["4"])


def test_index_only_and_item_only(tmp_path: Path) -> None:
    data = load_dataset(write_dataset(tmp_path / "A" / "Tiny", items=_ABSENT))
    assert data.items is None
    assert data.n_items == 6
    with pytest.raises(DataError, match=r"Tiny\.item\.json is needed for titles"):
        data.titles()

    root = write_dataset(tmp_path / "B" / "Tiny", index=_ABSENT)
    message = load_error(root)
    assert f"{root / 'Tiny.index.json'}: missing" in message
    assert "ilrec index" in message
    data = load_dataset(root, require_index=False)
    assert data.codes == {}
    assert data.n_items == 6
    assert data.titles()[2] == "Clip Tuner"


def test_statistics(tiny: Path) -> None:
    stats = dataset_statistics(load_dataset(tiny))
    assert stats == {
        "users": 5,
        "items": 6,
        "interactions": 21,
        "mean_history": 4.2,
        "max_history": 6,
        "sparsity": 0.3,
        "identifier_levels": 3,
        "identifier_collisions": 2,
        "has_item_texts": 1,
    }


def test_statistics_without_index(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "Tiny", index=_ABSENT, items=ITEMS)
    stats = dataset_statistics(load_dataset(root, require_index=False))
    assert stats == {
        "users": 5,
        "items": 6,
        "interactions": 21,
        "mean_history": 4.2,
        "max_history": 6,
        "sparsity": 0.3,
        "has_item_texts": 1,
    }


def test_collision_count() -> None:
    assert collision_count({}) == 0
    assert collision_count({0: ["<a_1>"], 1: ["<a_2>"]}) == 0
    codes = {
        0: ["<a_1>", "<b_1>"],
        1: ["<a_1>", "<b_1>"],
        2: ["<a_1>", "<b_1>"],
        3: ["<a_2>", "<b_1>"],
        4: ["<a_2>", "<b_1>"],
        5: ["<a_1>", "<b_2>"],
        6: ["<a_1>", "<b_1>", "<c_0>"],  # a longer identifier is not a collision
    }
    assert collision_count(codes) == 5


# -- dataset folder name -------------------------------------------------------------------
def test_dataset_name_detection(tmp_path: Path) -> None:
    matching = tmp_path / "Tiny"
    matching.mkdir()
    (matching / "Tiny.inter.json").write_text("{}")
    (matching / "Other.inter.json").write_text("{}")
    assert dataset_name(matching) == "Tiny"  # the folder name wins

    other = tmp_path / "renamed"
    other.mkdir()
    (other / "Games.inter.json").write_text("{}")
    assert dataset_name(other) == "Games"
    data = load_dataset(write_dataset(tmp_path / "copy", name="Instruments"))
    assert data.name == "Instruments"

    two = tmp_path / "two"
    two.mkdir()
    (two / "A.inter.json").write_text("{}")
    (two / "B.inter.json").write_text("{}")
    with pytest.raises(DataError, match=r"expected exactly one X\.inter\.json, found \['A', 'B'\]"):
        dataset_name(two)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="found none"):
        dataset_name(empty)

    with pytest.raises(DataError, match="not a directory"):
        load_dataset(tmp_path / "does-not-exist")
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(matching / "Tiny.inter.json")


# -- bad inputs ------------------------------------------------------------------------------
def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "Tiny", inter='{"0": [0, 1, 2],\n "1": [1 2 3]}')
    message = load_error(root)
    assert message == (
        f"{root / 'Tiny.inter.json'}: malformed JSON at line 2 column 10: Expecting ',' delimiter"
    )

    root = write_dataset(tmp_path / "Bad" / "Tiny", index='{"0": ["<a_1>"],\n}')
    message = load_error(root)
    assert message.startswith(f"{root / 'Tiny.index.json'}: malformed JSON at line 2 column 1")


def test_item_missing_from_index(tmp_path: Path) -> None:
    inter = {**SEQUENCES, "1": [1, 2, 6, 4]}
    root = write_dataset(tmp_path / "Tiny", inter=inter)
    assert load_error(root) == (
        f"{root / 'Tiny.inter.json'}: user '1' uses item 6 which is missing from "
        "Tiny.index.json (items are 0..5)"
    )


def test_item_missing_from_item_file(tmp_path: Path) -> None:
    inter = {**SEQUENCES, "3": [0, 1, 7]}
    root = write_dataset(tmp_path / "Tiny", inter=inter, index=_ABSENT)
    assert load_error(root, require_index=False) == (
        f"{root / 'Tiny.inter.json'}: user '3' uses item 7 which is missing from "
        "Tiny.item.json (items are 0..5)"
    )


def test_index_and_item_file_disagree(tmp_path: Path) -> None:
    items = {k: v for k, v in ITEMS.items() if k != "4"}
    root = write_dataset(tmp_path / "A" / "Tiny", items=items)
    assert load_error(root) == (
        f"{root / 'Tiny.item.json'}: items [4] of Tiny.index.json have no entry"
    )
    items = {**ITEMS, "6": {"title": "Pick"}}
    root = write_dataset(tmp_path / "B" / "Tiny", items=items)
    assert load_error(root) == f"{root / 'Tiny.item.json'}: items [6] are not in Tiny.index.json"


def test_user_with_too_few_interactions(tmp_path: Path) -> None:
    inter = {**SEQUENCES, "2": [5, 4]}
    root = write_dataset(tmp_path / "Tiny", inter=inter)
    assert load_error(root) == (
        f"{root / 'Tiny.inter.json'}: user '2' has 2 interactions; leave-one-out needs at least 3"
    )
    assert load_dataset(root, min_interactions=2).sequences["2"] == [5, 4]


@pytest.mark.parametrize(
    ("history", "type_name"), [("0 1 2", "str"), ({"a": 1}, "dict"), (3, "int"), (None, "NoneType")]
)
def test_history_not_a_list(tmp_path: Path, history: object, type_name: str) -> None:
    root = write_dataset(tmp_path / "Tiny", inter={**SEQUENCES, "1": history})
    assert load_error(root) == (
        f"{root / 'Tiny.inter.json'}: user '1': expected a list of item ids, got {type_name}"
    )


@pytest.mark.parametrize("inter", [[], "users", [[0, 1, 2]]])
def test_interactions_not_an_object(tmp_path: Path, inter: object) -> None:
    root = write_dataset(tmp_path / "Tiny", inter=json.dumps(inter))
    assert load_error(root) == (
        f"{root / 'Tiny.inter.json'}: expected an object mapping user id -> list of item ids"
    )


def test_no_users(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "Tiny", inter={})
    assert load_error(root) == f"{root / 'Tiny.inter.json'}: no users"


@pytest.mark.parametrize(
    "entry",
    [
        "<a_1><b_2>",  # not a list
        [],  # empty
        ["a_1", "b_2"],  # not <x_N>
        ["<A_1>", "<b_2>"],
        ["<a_1>", "<b_x>"],
        ["<a_1>", 2],
        [1, 2],
        None,
    ],
)
def test_bad_index_entry(tmp_path: Path, entry: object) -> None:
    root = write_dataset(tmp_path / "Tiny", index={**INDEX, "2": entry})
    assert load_error(root) == (
        f"{root / 'Tiny.index.json'}: item '2': expected a non-empty list of code tokens like "
        f'["<a_12>", "<b_3>"], got {entry!r}'
    )


def test_index_not_an_object(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "Tiny", index=[["<a_1>"]])
    assert load_error(root) == (
        f"{root / 'Tiny.index.json'}: expected an object mapping item id -> list of code tokens"
    )


@pytest.mark.parametrize("bad", ["x", 1.5, True, "1.0", "--5", "\u00b2", "", [1]])
def test_non_integer_item_id_in_history(tmp_path: Path, bad: object) -> None:
    root = write_dataset(tmp_path / "Tiny", inter={**SEQUENCES, "0": [0, bad, 2]})
    assert load_error(root) == (
        f"{root / 'Tiny.inter.json'}: user '0': item id {bad!r} is not an integer"
    )


def test_negative_item_id(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "Tiny", inter={**SEQUENCES, "0": [0, -1, 2]})
    assert load_error(root) == f"{root / 'Tiny.inter.json'}: user '0': item id -1 is negative"
    index = {**{k: v for k, v in INDEX.items() if k != "5"}, "-5": ["<a_9>"]}
    root = write_dataset(tmp_path / "B" / "Tiny", index=index)
    assert load_error(root) == f"{root / 'Tiny.index.json'}: key '-5': item id -5 is negative"


def test_non_integer_key_in_index_and_item_file(tmp_path: Path) -> None:
    index = {**INDEX, "abc": ["<a_9>"]}
    root = write_dataset(tmp_path / "A" / "Tiny", index=index)
    assert load_error(root) == (
        f"{root / 'Tiny.index.json'}: key 'abc': item id 'abc' is not an integer"
    )
    items = {**ITEMS, "1.5": {"title": "Pick"}}
    root = write_dataset(tmp_path / "B" / "Tiny", items=items)
    assert load_error(root) == (
        f"{root / 'Tiny.item.json'}: key '1.5': item id '1.5' is not an integer"
    )


def test_item_ids_with_gaps(tmp_path: Path) -> None:
    index = {k: v for k, v in INDEX.items() if k != "3"}
    index["7"] = ["<a_7>", "<b_7>"]
    root = write_dataset(tmp_path / "A" / "Tiny", index=index, items=_ABSENT)
    assert load_error(root) == (
        f"{root / 'Tiny.index.json'}: item ids must be 0..5 without gaps; "
        "missing e.g. [3, 6] (max id 7)"
    )
    items = {k: v for k, v in ITEMS.items() if k != "0"}
    root = write_dataset(tmp_path / "B" / "Tiny", index=_ABSENT, items=items)
    assert load_error(root, require_index=False) == (
        f"{root / 'Tiny.item.json'}: item ids must be 0..4 without gaps; "
        "missing e.g. [0] (max id 5)"
    )


@pytest.mark.parametrize(
    "entry", [{"description": "no title"}, {"title": ""}, {"title": "   "}, {"title": 3}]
)
def test_item_without_title(tmp_path: Path, entry: dict) -> None:
    root = write_dataset(tmp_path / "Tiny", items={**ITEMS, "4": entry})
    assert load_error(root) == (
        f"{root / 'Tiny.item.json'}: item '4': field 'title' must be a non-empty string"
    )


def test_item_entry_not_an_object(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "Tiny", items={**ITEMS, "4": "Drum Sticks"})
    assert (
        load_error(root)
        == f"{root / 'Tiny.item.json'}: item '4': expected an object with a 'title'"
    )
    root = write_dataset(tmp_path / "B" / "Tiny", items=["Drum Sticks"])
    assert load_error(root) == (
        f"{root / 'Tiny.item.json'}: expected an object mapping item id -> item attributes"
    )


def test_neither_index_nor_item_file(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "Tiny", index=_ABSENT, items=_ABSENT)
    assert load_error(root, require_index=False) == (
        f"{root}: needs Tiny.index.json or Tiny.item.json to define the items"
    )


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, ValueError)


# -- the real benchmark datasets ---------------------------------------------------------------
def _load_shared(name: str) -> InteractionData:
    root = SHARED_DATA / name
    if not (root / f"{name}.inter.json").exists():
        pytest.skip("../shared/data not present")
    start = time.perf_counter()
    data = load_dataset(root)
    assert time.perf_counter() - start < 15, "loading the real dataset should take seconds"
    return data


def test_real_instruments() -> None:
    data = _load_shared("Instruments")
    assert (data.n_users, data.n_items, data.n_interactions) == (24_772, 9_922, 206_153)
    assert collision_count(data.codes) == 48  # 23 groups; 25 items beyond the first of each
    stats = dataset_statistics(data)
    assert stats["mean_history"] == 8.322
    assert stats["identifier_levels"] == 4
    assert stats["has_item_texts"] == 0
    assert data.codes[0] == ["<a_137>", "<b_112>", "<c_79>", "<d_200>"]
    assert data.sequences["0"][:3] == [0, 1, 2]


def test_real_games() -> None:
    data = _load_shared("Games")
    assert (data.n_users, data.n_items, data.n_interactions) == (50_546, 16_859, 452_989)
    assert collision_count(data.codes) == 262  # 120 groups; 142 items beyond the first of each
    assert dataset_statistics(data)["mean_history"] == 8.962
