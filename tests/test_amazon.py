"""Tests of the Amazon 2018 preprocessing (ilrec.data.amazon)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ilrec.data.amazon import clean_title, kcore, prepare_amazon
from ilrec.data.dataset import DataError, load_dataset

# Items: core I1..I5 (sorted ASINs give ids I3=0, I5=1, I2=2, I4=3, I1=4), I6 (removed by the
# 5-core), T (blank title), J (junk title), M (no metadata).
I1, I2, I3, I4, I5, I6 = "B0005", "B0003", "B0001", "B0004", "B0002", "B0006"
T, J, M = "B000T", "B000J", "B000M"
EVENTS = [  # (reviewerID, asin, time) in line order
    ("A3USER", I1, 300), ("A3USER", I2, 200), ("A3USER", I3, 400),
    ("A3USER", I1, 50),  # duplicate of line 1 with an earlier time: this one is kept
    ("A3USER", I4, 500), ("A3USER", I5, 600), ("A3USER", T, 700),
    ("A1USER", I4, 100), ("A1USER", I3, 100),  # timestamp tie: line order decides
    ("A1USER", I5, 90), ("A1USER", I1, 300), ("A1USER", I2, 200), ("A1USER", J, 150),
    ("A1USER", T, 1),
    ("A5USER", I2, 10), ("A5USER", I1, 20), ("A5USER", I3, 30), ("A5USER", I5, 40),
    ("A5USER", I4, 50), ("A5USER", M, 60), ("A5USER", T, 70),
    ("A2USER", I3, 1), ("A2USER", I1, 2), ("A2USER", I5, 3), ("A2USER", I2, 4),
    ("A2USER", I4, 5), ("A2USER", T, 0), ("A2USER", J, 6),
    ("A4USER", I5, 1000), ("A4USER", I4, 2000), ("A4USER", I3, 3000), ("A4USER", I2, 4000),
    ("A4USER", I1, 5000), ("A4USER", T, 1500),
    # round 1 removes A0DROP (4 events) and I6 (2 events); round 2 then removes A6DROP
    ("A6DROP", I1, 10), ("A6DROP", I2, 20), ("A6DROP", I3, 30), ("A6DROP", I4, 40),
    ("A6DROP", I6, 50),
    ("A0DROP", I1, 10), ("A0DROP", I2, 20), ("A0DROP", I3, 30), ("A0DROP", I6, 40),
]  # fmt: skip
BAD_REVIEW_LINES = [
    '{"reviewerID": "A1USER", "asin": ',
    '{"reviewerID": "A1USER", "unixReviewTime": 5}',
    '{"reviewerID": "A1USER", "asin": "B0001", "unixReviewTime": "5"}',
    "[1, 2]",
]
META = [
    {"asin": I1, "title": "Fender-ish Guitar", "brand": "Fendi", "category": ["Instruments"]},
    {"asin": I2, "title": "Strings &amp; Picks  Set", "description": ["<b>Great</b> strings", "for  guitar"],
     "category": ["Musical Instruments", "Guitar &amp; Bass"]},
    {"asin": I3, "title": "Plain Tuner"},
    {"asin": I4, "title": "Amp", "description": "Loud.", "brand": None},
    {"asin": I5, "title": "Cable"},
    {"asin": I6, "title": "Strap"},
    {"asin": T, "title": "   "},
    {"asin": J, "title": '<span class="a">var t = new Date().getTime();</span>'},
    {"asin": I1, "title": "A later duplicate, ignored"},
]  # fmt: skip
BAD_META_LINES = ["not json", '{"asin": "B0009", "title": ["x"]}']

EXPECTED_INTER = {
    "0": [1, 3, 0, 2, 4],  # A1USER: I5@90, I4@100, I3@100 (tie: line order), I2, I1
    "1": [0, 4, 1, 2, 3],  # A2USER
    "2": [4, 2, 0, 3, 1],  # A3USER: the duplicate I1@50 comes first
    "3": [1, 3, 0, 2, 4],  # A4USER
    "4": [2, 4, 0, 1, 3],  # A5USER
}
EXPECTED_ITEMS = {
    "0": {"title": "Plain Tuner", "description": "", "brand": "", "categories": []},
    "1": {"title": "Cable", "description": "", "brand": "", "categories": []},
    "2": {"title": "Strings & Picks Set", "description": "Great strings for guitar", "brand": "",
          "categories": ["Musical Instruments", "Guitar & Bass"]},
    "3": {"title": "Amp", "description": "Loud.", "brand": "", "categories": []},
    "4": {"title": "Fender-ish Guitar", "description": "", "brand": "Fendi",
          "categories": ["Instruments"]},
}  # fmt: skip
EXPECTED_ITEM2ID = f"{I3}\t0\n{I5}\t1\n{I2}\t2\n{I4}\t3\n{I1}\t4\n"
EXPECTED_USER2ID = "A1USER\t0\nA2USER\t1\nA3USER\t2\nA4USER\t3\nA5USER\t4\n"


def _review_lines(bad: bool) -> list[str]:
    lines = [
        json.dumps({"reviewerID": u, "asin": a, "unixReviewTime": t, "overall": 5.0})
        for u, a, t in EVENTS
    ]
    if bad:
        lines[3:3] = BAD_REVIEW_LINES  # lines 4-7
        lines.insert(10, "")  # blank lines are ignored
    return lines


def _write(path: Path, lines: list[str], gz: bool) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


@pytest.fixture
def raw(tmp_path: Path) -> tuple[Path, Path]:
    """Gzip reviews with the usual suffix; plain metadata, both with malformed lines."""
    reviews = _write(tmp_path / "Musical_Instruments.json.gz", _review_lines(True), gz=True)
    meta_lines = [json.dumps(m) for m in META]
    meta_lines[1:1] = BAD_META_LINES  # lines 2-3
    meta = _write(tmp_path / "meta_Musical_Instruments.json", meta_lines, gz=False)
    return reviews, meta


def test_exact_output(raw: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = prepare_amazon(*raw, out, progress=False)
    name = "Musical_Instruments"
    assert report.name == name
    assert json.loads((out / f"{name}.inter.json").read_text()) == EXPECTED_INTER
    assert json.loads((out / f"{name}.item.json").read_text()) == EXPECTED_ITEMS
    assert (out / f"{name}.item2id").read_text() == EXPECTED_ITEM2ID
    assert (out / f"{name}.user2id").read_text() == EXPECTED_USER2ID
    assert not (out / f"{name}.index.json").exists()
    assert sorted(Path(f).name for f in report.files) == sorted(
        f"{name}.{s}" for s in ("inter.json", "item.json", "item2id", "user2id")
    )

    assert (report.reviews.lines, report.reviews.malformed) == (len(EVENTS) + 4, 4)
    assert [e.split(":")[0] for e in report.reviews.examples] == [f"line {n}" for n in (4, 5, 6, 7)]
    assert "missing field 'asin'" in report.reviews.examples[1]
    assert "unixReviewTime" in report.reviews.examples[2]
    assert (report.meta.lines, report.meta.malformed, report.meta_duplicates) == (11, 2, 1)
    assert report.meta.examples[0].startswith("line 2: invalid JSON")
    assert report.meta.examples[1].startswith("line 3: field 'title'")
    assert report.events_read == len(EVENTS)
    assert report.duplicates_removed == 1
    assert (report.items_dropped_for_title, report.events_dropped_for_title) == (3, 8)
    assert report.events_kept == 34
    assert report.kcore_rounds == 2
    assert (report.users, report.items, report.interactions) == (5, 5, 25)
    assert "malformed" in report.summary()


def test_loads_with_load_dataset(raw: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "Instruments"
    prepare_amazon(*raw, out, name="Instruments", progress=False)
    data = load_dataset(out, require_index=False)
    assert (data.name, data.n_users, data.n_items, data.n_interactions) == ("Instruments", 5, 5, 25)
    assert data.titles()[2] == "Strings & Picks Set"


def test_gzip_detected_by_magic_bytes(tmp_path: Path) -> None:
    reviews = _write(tmp_path / "Cat.json", _review_lines(False), gz=True)  # gzip, plain suffix
    meta = _write(tmp_path / "meta_Cat.json.gz", [json.dumps(m) for m in META], gz=False)
    report = prepare_amazon(reviews, meta, tmp_path / "out", progress=False)
    assert report.name == "Cat"
    assert (report.reviews.malformed, report.meta.malformed) == (0, 0)
    inter = json.loads((tmp_path / "out" / "Cat.inter.json").read_text())
    assert inter == EXPECTED_INTER


@pytest.mark.parametrize("which", ["reviews", "meta"])
def test_strict_names_file_and_line(raw: tuple[Path, Path], tmp_path: Path, which: str) -> None:
    reviews, meta = raw
    if which == "meta":
        reviews = _write(tmp_path / "clean.json", _review_lines(False), gz=False)
    line = 4 if which == "reviews" else 2
    bad = reviews if which == "reviews" else meta
    with pytest.raises(DataError, match=rf"{bad.name}: line {line}: invalid JSON"):
        prepare_amazon(reviews, meta, tmp_path / "out", strict=True, progress=False)


def test_refuses_to_overwrite(raw: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_amazon(*raw, out, progress=False)
    stale = out / "Musical_Instruments.index.json"
    with pytest.raises(FileExistsError, match=r"Musical_Instruments\.inter\.json.*force"):
        prepare_amazon(*raw, out, progress=False)
    stale.write_text("{}")
    prepare_amazon(*raw, out, progress=False, force=True)
    assert not stale.exists()  # an index of the old data must not survive
    assert json.loads((out / "Musical_Instruments.inter.json").read_text()) == EXPECTED_INTER


def test_nothing_left_and_bad_arguments(raw: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing is left"):
        prepare_amazon(*raw, tmp_path / "out", min_count=6, progress=False)
    with pytest.raises(ValueError, match="min_count"):
        prepare_amazon(*raw, tmp_path / "out", min_count=2, progress=False)
    empty = _write(tmp_path / "Empty.json", BAD_REVIEW_LINES, gz=False)
    with pytest.raises(DataError, match="no well-formed review lines"):
        prepare_amazon(empty, raw[1], tmp_path / "out", progress=False)


def test_clean_title() -> None:
    assert clean_title("  Fender &amp; Co\n Strat ") == "Fender & Co Strat"
    for junk in [
        "",
        "  ",
        "<span>x</span>",
        "var a = 1",
        "x.getTime()",
        "&lt;div&gt;",
        "function (){}",
    ]:
        assert clean_title(junk) is None
    assert clean_title("Various Strings") == "Various Strings"  # 'var' only as a word + space


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 7)), max_size=60),
    st.integers(1, 4),
)
def test_kcore_is_the_maximal_core(pairs: list[tuple[int, int]], k: int) -> None:
    users = np.array([u for u, _ in pairs], dtype=np.int64)
    items = np.array([i for _, i in pairs], dtype=np.int64)
    keep, _ = kcore(users, items, k)
    for ids in (users[keep], items[keep]):
        assert (np.bincount(ids)[np.unique(ids)] >= k).all()
    alt = np.ones(len(pairs), dtype=bool)
    while True:  # the same fixed point, reached by removing users first, then items
        uc = np.bincount(users[alt], minlength=8)
        alt &= uc[users] >= k
        ic = np.bincount(items[alt], minlength=8)
        new = alt & (ic[items] >= k)
        if (new == alt).all():
            break
        alt = new
    assert (keep == alt).all()


def test_truncated_gzip_is_reported(raw: tuple[Path, Path], tmp_path: Path) -> None:
    data = gzip.compress(("\n".join(_review_lines(False)) + "\n").encode(), mtime=0)
    cut = tmp_path / "Cut.json.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"Cut\.json\.gz: unreadable after line \d+"):
        prepare_amazon(cut, raw[1], tmp_path / "out", progress=False)
