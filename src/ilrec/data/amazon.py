"""Amazon Review Data (2018) raw files -> an LC-Rec dataset folder (paper Section 3.1).

Inputs are the per-category files of the 2018 release (Ni et al., EMNLP 2019), one JSON object
per line, gzip-compressed or plain (detected by magic bytes):

- ``<Category>.json[.gz]`` reviews: ``reviewerID``, ``asin``, ``unixReviewTime`` are used;
- ``meta_<Category>.json[.gz]`` metadata: ``asin``, ``title``, ``description`` (string or list),
  ``brand``, ``category`` (list).

Rules, applied in this order:

1. Malformed lines (invalid JSON, not an object, a required field missing or of the wrong type,
   ids that are empty or contain whitespace) are skipped and counted per file; with
   ``strict=True`` the first one raises :class:`~ilrec.data.dataset.DataError`. Blank lines are
   ignored. When an ASIN appears on several metadata lines, the first well-formed one is used.
2. Duplicate (user, item) events: the earliest is kept (by time, then line order).
3. Items without a usable title are dropped with their events. After HTML-unescaping and
   whitespace collapsing, a title is unusable when it is empty or looks like HTML/JavaScript
   residue (:data:`JUNK_TITLE`: a tag such as ``<span``, ``var ``, ``getTime``, ``function(``,
   ``document.``, ``window.``). Items absent from the metadata are dropped too.
4. Iterative ``min_count``-core filtering: users and items with fewer than ``min_count``
   events are removed, repeatedly, until stable.
5. Each history is ordered by time; ties keep the order of the lines in the reviews file.
6. Ids: users get ``0..m-1`` in ascending order of ``reviewerID``, items ``0..n-1`` in ascending
   order of ASIN (plain string order), so the numbering does not depend on the line order.

Outputs in ``out/``: ``X.inter.json``, ``X.item.json``, ``X.item2id``, ``X.user2id`` (no
``X.index.json``: build it with ``ilrec index``). Only compact ``(user, item, time)`` integer
arrays are kept in memory, never the raw lines.
"""

from __future__ import annotations

import html
import json
import re
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ilrec.data.dataset import MIN_INTERACTIONS, DataError
from ilrec.data.io import atomic_write_json, atomic_write_text, open_maybe_gzip, refuse_overwrite

__all__ = ["JUNK_TITLE", "FileStats", "PrepareReport", "clean_title", "prepare_amazon"]

JUNK_TITLE = re.compile(r"<\s*/?\s*[a-zA-Z!]|\bvar\s|getTime|function\s*\(|document\.|window\.")
_TAG = re.compile(r"<[^>]*>")
MAX_EXAMPLES = 5


@dataclass
class FileStats:
    """Line counts of one input file.

    Attributes:
        path: the file.
        lines: non-blank lines read.
        malformed: lines skipped as malformed.
        examples: the first few problems, as ``"line N: problem"``.
    """

    path: str
    lines: int = 0
    malformed: int = 0
    examples: list[str] = field(default_factory=list)

    def problem(self, line_no: int, message: str, strict: bool) -> None:
        """Record a malformed line, or raise in strict mode."""
        if strict:
            raise DataError(f"{self.path}: line {line_no}: {message}")
        self.malformed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"line {line_no}: {message}")


@dataclass
class PrepareReport:
    """What :func:`prepare_amazon` read, dropped and wrote.

    Attributes:
        events_read: well-formed review lines.
        duplicates_removed: repeated (user, item) events removed (the earliest is kept).
        meta_duplicates: metadata lines whose ASIN had already been seen (ignored).
        items_dropped_for_title: reviewed items without metadata or a usable title.
        events_dropped_for_title: their (deduplicated) events.
        events_kept: events entering the k-core filter.
        kcore_rounds: filtering passes that removed something (0: already a k-core).
        users, items, interactions: the final dataset.
    """

    name: str
    out: str
    reviews: FileStats
    meta: FileStats
    events_read: int = 0
    duplicates_removed: int = 0
    meta_duplicates: int = 0
    items_dropped_for_title: int = 0
    events_dropped_for_title: int = 0
    events_kept: int = 0
    kcore_rounds: int = 0
    users: int = 0
    items: int = 0
    interactions: int = 0
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [
            f"{self.name}: {self.users} users, {self.items} items, {self.interactions} "
            f"interactions (mean history {self.interactions / max(self.users, 1):.2f}) -> {self.out}",
            f"events read {self.events_read}, duplicates removed {self.duplicates_removed}, "
            f"items dropped for title {self.items_dropped_for_title} "
            f"({self.events_dropped_for_title} events), kept {self.events_kept} before k-core, "
            f"k-core rounds {self.kcore_rounds}",
        ]
        for stats in (self.reviews, self.meta):
            line = f"{stats.path}: {stats.lines} lines, {stats.malformed} malformed"
            if stats.examples:
                line += " (" + "; ".join(stats.examples) + ")"
            lines.append(line)
        return "\n".join(lines)


def clean_title(value: str) -> str | None:
    """The cleaned title, or ``None`` when it is empty or HTML/JavaScript residue."""
    title = " ".join(html.unescape(value).split())
    if not title or JUNK_TITLE.search(title):
        return None
    return title


def _clean_text(value: str) -> str:
    return " ".join(_TAG.sub(" ", html.unescape(value)).split())


def _load_line(line: str) -> dict[str, Any] | str:
    """The JSON object of a line, or a problem description."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return f"invalid JSON ({e.msg} at column {e.colno})"
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    return obj


def _id_field(obj: dict[str, Any], key: str) -> str:
    """A required id: a non-empty string without whitespace (the id files are tab-separated)."""
    value = obj.get(key)
    if value is None:
        raise ValueError(f"missing field {key!r}")
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        raise ValueError(
            f"field {key!r} must be a non-empty string without whitespace, got {value!r}"
        )
    return value


def _parse_review(line: str) -> tuple[str, str, int] | str:
    obj = _load_line(line)
    if isinstance(obj, str):
        return obj
    try:
        user, asin = _id_field(obj, "reviewerID"), _id_field(obj, "asin")
    except ValueError as e:
        return str(e)
    time = obj.get("unixReviewTime")
    if time is None:
        return "missing field 'unixReviewTime'"
    if isinstance(time, bool) or not isinstance(time, int):
        return f"field 'unixReviewTime' must be an integer, got {time!r}"
    return user, asin, time


def _parse_meta(line: str) -> tuple[str, dict[str, Any] | None] | str:
    """``(asin, item attributes)``, with ``None`` attributes for an unusable title."""
    obj = _load_line(line)
    if isinstance(obj, str):
        return obj
    try:
        asin = _id_field(obj, "asin")
    except ValueError as e:
        return str(e)
    title, desc = obj.get("title"), obj.get("description", "")
    brand, cats = obj.get("brand", ""), obj.get("category", [])
    if title is not None and not isinstance(title, str):
        return f"field 'title' must be a string, got {type(title).__name__}"
    if isinstance(desc, list) and all(isinstance(d, str) for d in desc):
        desc = " ".join(desc)
    if not isinstance(desc, str):
        return "field 'description' must be a string or a list of strings"
    if brand is not None and not isinstance(brand, str):
        return f"field 'brand' must be a string, got {type(brand).__name__}"
    if cats is not None and not (isinstance(cats, list) and all(isinstance(c, str) for c in cats)):
        return "field 'category' must be a list of strings"
    clean = clean_title(title) if title else None
    if clean is None:
        return asin, None
    categories = [c for c in (_clean_text(c) for c in cats or []) if c]
    info = {
        "title": clean,
        "description": _clean_text(desc),
        "brand": _clean_text(brand or ""),
        "categories": categories,
    }
    return asin, info


def _lines(path: Path, progress: bool):
    """``(line number, line)`` of the non-blank lines of a plain or gzip file."""
    line_no = 0
    try:
        with open_maybe_gzip(path) as f:
            bar = tqdm(f, desc=f"reading {path.name}", unit=" lines", disable=not progress)
            for line_no, line in enumerate(bar, start=1):
                if line.strip():
                    yield line_no, line
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable after line {line_no}: {e}") from e


@dataclass
class _Events:
    """Interned review events in file order."""

    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray
    items: np.ndarray
    times: np.ndarray


def _read_reviews(path: Path, stats: FileStats, strict: bool, progress: bool) -> _Events:
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    users, items, times = array("q"), array("q"), array("q")
    for line_no, line in _lines(path, progress):
        stats.lines += 1
        parsed = _parse_review(line)
        if isinstance(parsed, str):
            stats.problem(line_no, parsed, strict)
            continue
        user, asin, time = parsed
        users.append(user_index.setdefault(user, len(user_index)))
        items.append(item_index.setdefault(asin, len(item_index)))
        times.append(time)
    return _Events(
        list(user_index),
        list(item_index),
        np.frombuffer(users, dtype=np.int64),
        np.frombuffer(items, dtype=np.int64),
        np.frombuffer(times, dtype=np.int64),
    )


def _read_meta(
    path: Path, wanted: dict[str, int], stats: FileStats, strict: bool, progress: bool
) -> tuple[dict[int, dict[str, Any]], int]:
    """Attributes of the wanted items that have a usable title, and the duplicate-ASIN count."""
    infos: dict[int, dict[str, Any]] = {}
    seen: set[int] = set()
    duplicates = 0
    for line_no, line in _lines(path, progress):
        stats.lines += 1
        parsed = _parse_meta(line)
        if isinstance(parsed, str):
            stats.problem(line_no, parsed, strict)
            continue
        item = wanted.get(parsed[0])
        if item is None:
            continue
        if item in seen:
            duplicates += 1
            continue
        seen.add(item)
        if parsed[1] is not None:
            infos[item] = parsed[1]
    return infos, duplicates


def _deduplicate(ev: _Events) -> np.ndarray:
    """Indices (ascending) of the earliest event of every (user, item) pair."""
    order = np.lexsort((ev.times, ev.items, ev.users))  # stable: ties keep line order
    u, i = ev.users[order], ev.items[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    return np.sort(order[first])


def kcore(users: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    """Iterative k-core filter of an event list.

    Args:
        users, items: integer arrays, one entry per event.
        k: minimum number of events per user and per item.

    Returns:
        ``(mask of kept events, number of passes that removed something)``.
    """
    keep = np.ones(len(users), dtype=bool)
    n_users = int(users.max()) + 1 if len(users) else 0
    n_items = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while True:
        user_counts = np.bincount(users[keep], minlength=n_users)
        item_counts = np.bincount(items[keep], minlength=n_items)
        new = keep & (user_counts[users] >= k) & (item_counts[items] >= k)
        if new.sum() == keep.sum():
            return keep, rounds
        keep, rounds = new, rounds + 1


def _rank_by_name(ids: np.ndarray, names: list[str]) -> np.ndarray:
    """Map internal ids -> new ids ``0..`` in ascending order of their original names."""
    present = np.unique(ids)
    ordered = sorted(present.tolist(), key=names.__getitem__)
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[ordered] = np.arange(len(ordered))
    return remap


def _default_name(reviews: Path) -> str:
    name = reviews.name
    for suffix in (".gz", ".json", ".jsonl"):
        name = name.removesuffix(suffix)
    if not name:
        raise ValueError(f"cannot derive a dataset name from {reviews}; pass name=")
    return name


def _write(out: Path, name: str, ev: _Events, sel: np.ndarray, infos: dict) -> list[str]:
    """Write the four LC-Rec files for the selected events; returns the paths written."""
    user_map = _rank_by_name(ev.users[sel], ev.user_ids)
    item_map = _rank_by_name(ev.items[sel], ev.item_ids)
    users, items, times = user_map[ev.users[sel]], item_map[ev.items[sel]], ev.times[sel]
    order = np.lexsort((sel, times, users))  # sel ascending = line order: the final tie-break
    users, items = users[order], items[order]
    cuts = np.flatnonzero(np.diff(users)) + 1
    inter = {str(k): seq.tolist() for k, seq in enumerate(np.split(items, cuts))}
    item_new_to_old = {int(item_map[o]): o for o in np.unique(ev.items[sel]).tolist()}
    user_new_to_old = {int(user_map[o]): o for o in np.unique(ev.users[sel]).tolist()}
    item_json = {str(k): infos[item_new_to_old[k]] for k in range(len(item_new_to_old))}
    paths = [out / f"{name}.{s}" for s in ("inter.json", "item.json", "item2id", "user2id")]
    atomic_write_json(paths[0], inter)
    atomic_write_json(paths[1], item_json)
    for path, new_to_old, names in (
        (paths[2], item_new_to_old, ev.item_ids),
        (paths[3], user_new_to_old, ev.user_ids),
    ):
        text = "".join(f"{names[new_to_old[k]]}\t{k}\n" for k in range(len(new_to_old)))
        atomic_write_text(path, text)
    return [str(p) for p in paths]


def prepare_amazon(
    reviews: str | Path,
    meta: str | Path,
    out: str | Path,
    name: str | None = None,
    min_count: int = 5,
    strict: bool = False,
    progress: bool = True,
    force: bool = False,
) -> PrepareReport:
    """Turn Amazon 2018 review + metadata files into an LC-Rec dataset folder.

    See the module docstring for the exact rules.

    Args:
        reviews: ``<Category>.json[.gz]``.
        meta: ``meta_<Category>.json[.gz]``.
        out: output folder (created if needed).
        name: dataset name ``X`` of the output files; default: the reviews file name without
            ``.json``/``.jsonl``/``.gz`` (``Musical_Instruments.json.gz`` -> ``Musical_Instruments``).
        min_count: the k of the k-core filter (at least 3: leave-one-out needs 3 events).
        strict: raise :class:`DataError` (file, line, problem) on the first malformed line.
        progress: show tqdm progress bars.
        force: overwrite existing output files (a stale ``X.index.json`` is then removed).

    Returns:
        A :class:`PrepareReport`.

    Raises:
        FileExistsError: an output file exists and ``force`` is not set.
        DataError: malformed input in strict mode, an unreadable file, or nothing left.
    """
    reviews, meta, out = Path(reviews), Path(meta), Path(out)
    name = name or _default_name(reviews)
    if "/" in name or "\\" in name:
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    if min_count < MIN_INTERACTIONS:
        raise ValueError(
            f"min_count must be >= {MIN_INTERACTIONS} (leave-one-out), got {min_count}"
        )
    outputs = [f"{name}.{s}" for s in ("inter.json", "item.json", "item2id", "user2id")]
    refuse_overwrite(out, [*outputs, f"{name}.index.json"], force)

    report = PrepareReport(name, str(out), FileStats(str(reviews)), FileStats(str(meta)))
    ev = _read_reviews(reviews, report.reviews, strict, progress)
    report.events_read = len(ev.users)
    if not report.events_read:
        raise DataError(
            f"{reviews}: no well-formed review lines ({report.reviews.malformed} malformed)"
        )
    wanted = {asin: k for k, asin in enumerate(ev.item_ids)}
    infos, report.meta_duplicates = _read_meta(meta, wanted, report.meta, strict, progress)
    del wanted

    sel = _deduplicate(ev)
    report.duplicates_removed = report.events_read - len(sel)
    titled = np.zeros(len(ev.item_ids), dtype=bool)
    titled[list(infos)] = True
    has_title = titled[ev.items[sel]]
    report.items_dropped_for_title = len(np.unique(ev.items[sel][~has_title]))
    report.events_dropped_for_title = int((~has_title).sum())
    sel = sel[has_title]
    report.events_kept = len(sel)

    keep, report.kcore_rounds = kcore(ev.users[sel], ev.items[sel], min_count)
    sel = sel[keep]
    if not len(sel):
        raise DataError(
            f"{reviews}: nothing is left after the {min_count}-core filter "
            f"({report.events_kept} events with a titled item entered it)"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.index.json").unlink(missing_ok=True)  # stale after force; absent otherwise
    report.files = _write(out, name, ev, sel, infos)
    report.users = len(np.unique(ev.users[sel]))
    report.items = len(np.unique(ev.items[sel]))
    report.interactions = len(sel)
    return report
