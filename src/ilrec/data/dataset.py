"""Loading and validating a dataset folder in the LC-Rec format (paper Section 3.1).

A dataset folder ``DIR`` named ``X`` holds:

- ``X.inter.json``: ``{"<user>": [item, item, ...]}``, each history oldest first;
- ``X.index.json``: ``{"<item>": ["<a_1>", "<b_7>", ...]}``, the semantic identifier of
  every item (optional when only titles are used);
- ``X.item.json`` (optional): ``{"<item>": {"title", "description", "brand", "categories"}}``.

Item ids are the integers ``0 .. n_items-1``; the catalogue is the set of items of the index
(or of the item file when there is no index). Every problem found is reported with the file,
the key and what was expected.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_INTERACTIONS = 3
CODE_PATTERN = re.compile(r"^<[a-z]+_\d+>$")
INT_PATTERN = re.compile(r"^\s*-?[0-9]+\s*$")  # ASCII digits only (int() rejects "--5", "²")


class DataError(ValueError):
    """A dataset file is malformed; the message names the file, the key and the expectation."""


@dataclass(frozen=True)
class ItemInfo:
    """Text attributes of one item."""

    title: str
    description: str = ""
    brand: str = ""
    categories: tuple[str, ...] = ()


@dataclass
class InteractionData:
    """A validated dataset: user histories, semantic codes and (optionally) item texts."""

    name: str
    root: Path
    sequences: dict[str, list[int]]
    codes: dict[int, list[str]] = field(default_factory=dict)
    items: dict[int, ItemInfo] | None = None
    n_items: int = 0

    @property
    def n_users(self) -> int:
        return len(self.sequences)

    @property
    def n_interactions(self) -> int:
        return sum(len(seq) for seq in self.sequences.values())

    def titles(self) -> list[str]:
        """Item titles in item-id order (requires the item file)."""
        if self.items is None:
            raise DataError(f"{self.root}/{self.name}.item.json is needed for titles but is absent")
        return [self.items[i].title for i in range(self.n_items)]


def dataset_name(root: Path) -> str:
    """The ``X`` of ``X.inter.json`` in ``root`` (the folder name when it matches)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected a dataset folder with X.inter.json)")
    if (root / f"{root.name}.inter.json").exists():
        return root.name
    found = sorted(p.name[: -len(".inter.json")] for p in root.glob("*.inter.json"))
    if len(found) != 1:
        raise DataError(f"{root}: expected exactly one X.inter.json, found {found or 'none'}")
    return found[0]


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from e


def _item_id(key: Any, path: Path, where: str) -> int:
    """Parse an item id (int or a decimal string) or fail naming ``where``."""
    if isinstance(key, bool):
        raise DataError(f"{path}: {where}: item id {key!r} is not an integer")
    if isinstance(key, int):
        value = key
    elif isinstance(key, str) and INT_PATTERN.match(key):
        value = int(key)
    else:
        raise DataError(f"{path}: {where}: item id {key!r} is not an integer")
    if value < 0:
        raise DataError(f"{path}: {where}: item id {value} is negative")
    return value


def _parse_sequences(path: Path, raw: Any, min_interactions: int) -> dict[str, list[int]]:
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object mapping user id -> list of item ids")
    sequences = {}
    for user, history in raw.items():
        if not isinstance(history, list):
            raise DataError(
                f"{path}: user {user!r}: expected a list of item ids, got {type(history).__name__}"
            )
        if len(history) < min_interactions:
            raise DataError(
                f"{path}: user {user!r} has {len(history)} interactions; leave-one-out needs "
                f"at least {min_interactions}"
            )
        sequences[str(user)] = [_item_id(i, path, f"user {user!r}") for i in history]
    if not sequences:
        raise DataError(f"{path}: no users")
    return sequences


def _parse_codes(path: Path, raw: Any) -> dict[int, list[str]]:
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object mapping item id -> list of code tokens")
    codes = {}
    for key, value in raw.items():
        item = _item_id(key, path, f"key {key!r}")
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(c, str) and CODE_PATTERN.match(c) for c in value)
        ):
            raise DataError(
                f"{path}: item {key!r}: expected a non-empty list of code tokens like "
                f'["<a_12>", "<b_3>"], got {value!r}'
            )
        codes[item] = value
    return codes


def _parse_items(path: Path, raw: Any) -> dict[int, ItemInfo]:
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object mapping item id -> item attributes")
    items = {}
    for key, value in raw.items():
        item = _item_id(key, path, f"key {key!r}")
        if not isinstance(value, dict):
            raise DataError(f"{path}: item {key!r}: expected an object with a 'title'")
        title = value.get("title")
        if not isinstance(title, str) or not title.strip():
            raise DataError(f"{path}: item {key!r}: field 'title' must be a non-empty string")
        categories = value.get("categories", ())
        if isinstance(categories, str):
            categories = tuple(c.strip() for c in categories.split(",") if c.strip())
        items[item] = ItemInfo(
            title=" ".join(title.split()),
            description=_text(value.get("description", "")),
            brand=_text(value.get("brand", "")),
            categories=tuple(str(c) for c in categories),
        )
    return items


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return " ".join(str(value or "").split())


def _check_catalogue(path: Path, ids: set[int], what: str) -> int:
    n_items = len(ids)
    if ids != set(range(n_items)):
        missing = sorted(set(range(max(ids) + 1)) - ids)[:5]
        raise DataError(
            f"{path}: {what} ids must be 0..{n_items - 1} without gaps; "
            f"missing e.g. {missing} (max id {max(ids)})"
        )
    return n_items


def load_dataset(
    root: str | Path, require_index: bool = True, min_interactions: int = MIN_INTERACTIONS
) -> InteractionData:
    """Load and validate an LC-Rec-format dataset folder.

    Args:
        root: the dataset folder.
        require_index: fail when ``X.index.json`` is absent (the semantic-ID paradigm needs it).
        min_interactions: users with fewer interactions are an error (leave-one-out needs 3).

    Raises:
        DataError: naming the file, the key and what was expected.
    """
    root = Path(root)
    name = dataset_name(root)
    inter_path = root / f"{name}.inter.json"
    sequences = _parse_sequences(inter_path, read_json(inter_path), min_interactions)

    index_path, item_path = root / f"{name}.index.json", root / f"{name}.item.json"
    codes = _parse_codes(index_path, read_json(index_path)) if index_path.exists() else {}
    items = _parse_items(item_path, read_json(item_path)) if item_path.exists() else None
    if require_index and not codes:
        raise DataError(f"{index_path}: missing (run `ilrec index --data {root}` to build it)")
    if not codes and items is None:
        raise DataError(f"{root}: needs {name}.index.json or {name}.item.json to define the items")

    catalogue_path, catalogue = (index_path, codes) if codes else (item_path, items)
    n_items = _check_catalogue(catalogue_path, set(catalogue), "item")
    if codes and items is not None and set(items) != set(codes):
        absent = sorted(set(codes) - set(items))[:5]
        if absent:
            raise DataError(f"{item_path}: items {absent} of {index_path.name} have no entry")
        extra = sorted(set(items) - set(codes))[:5]
        raise DataError(f"{item_path}: items {extra} are not in {index_path.name}")
    for user, history in sequences.items():
        unknown = [i for i in history if i >= n_items]
        if unknown:
            raise DataError(
                f"{inter_path}: user {user!r} uses item {unknown[0]} which is missing from "
                f"{catalogue_path.name} (items are 0..{n_items - 1})"
            )
    return InteractionData(name, root, sequences, codes, items, n_items)


def collision_count(codes: dict[int, list[str]]) -> int:
    """Number of items whose full identifier is shared with at least one other item."""
    counts = Counter(tuple(c) for c in codes.values())
    return sum(n for n in counts.values() if n > 1)


def dataset_statistics(data: InteractionData) -> dict[str, float | int]:
    """Users, items, interactions, history lengths, sparsity and identifier collisions."""
    lengths = [len(seq) for seq in data.sequences.values()]
    stats: dict[str, float | int] = {
        "users": data.n_users,
        "items": data.n_items,
        "interactions": data.n_interactions,
        "mean_history": round(sum(lengths) / len(lengths), 3),
        "max_history": max(lengths),
        "sparsity": round(1 - data.n_interactions / (data.n_users * data.n_items), 6),
    }
    if data.codes:
        stats["identifier_levels"] = max(len(c) for c in data.codes.values())
        stats["identifier_collisions"] = collision_count(data.codes)
    stats["has_item_texts"] = int(data.items is not None)
    return stats


def read_item2id(path: str | Path, n_items: int) -> tuple[str, ...]:
    """The original id of every item from an ``X.item2id`` file (``ORIGINAL<TAB>id`` lines).

    Args:
        path: the ``X.item2id`` file.
        n_items: catalogue size; the file must map ``0..n_items-1`` once each.

    Returns:
        ``original_ids[item]`` for every internal item id.

    Raises:
        DataError: naming the file and line of a malformed line, or the ids that are missing,
            repeated or out of the catalogue.
    """
    path = Path(path)
    originals: list[str | None] = [None] * n_items
    seen: dict[str, int] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        original, sep, item = line.rpartition("\t")
        if not sep or not original or not (item.isascii() and item.strip().isdigit()):
            raise DataError(f"{path}:{number}: expected 'ORIGINAL<TAB>id', got {line!r}")
        index = int(item)
        if index >= n_items or originals[index] is not None:
            problem = "is outside the catalogue" if index >= n_items else "appears twice"
            raise DataError(f"{path}:{number}: item id {index} {problem} (items 0..{n_items - 1})")
        if original in seen:
            raise DataError(
                f"{path}:{number}: original id {original!r} repeats item {seen[original]}"
            )
        originals[index], seen[original] = original, index
    missing = [i for i, o in enumerate(originals) if o is None]
    if missing:
        raise DataError(
            f"{path}: no original id for items {missing[:5]} (expected 0..{n_items - 1})"
        )
    return tuple(o for o in originals if o is not None)
