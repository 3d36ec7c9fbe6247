"""Tests of the LastFM (LLaRA / S-DPO) conversion (ilrec.data.lastfm).

Tests on the real files read them from ``../shared/data/LastFM`` and skip when it is absent;
the others use a tiny source folder written in ``tmp_path`` in the same format.
"""

from __future__ import annotations

import json
import pickle
import random
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from ilrec.cli import main
from ilrec.data.dataset import DataError, load_dataset
from ilrec.data.lastfm import (
    SOURCE_FILES,
    candidate_file,
    judge_answer,
    load_candidates,
    match_candidates,
    prepare_lastfm,
    protocol_rows,
    read_frame,
    read_id2name,
    read_split,
    sdpo_candidates,
    user_blocks,
)
from ilrec.data.split import leave_one_out

pd = pytest.importorskip("pandas")

LASTFM = SHARED_DATA / "LastFM"
SDPO_JSON = {"valid": "lastfm-val.json", "test": "lastfm-test.json"}


def _need_real_data() -> Path:
    if not (LASTFM / "Val_data.df").exists():
        pytest.skip(f"real LastFM data not found at {LASTFM}")
    return LASTFM


@pytest.fixture(scope="module")
def real() -> dict:
    """Names and the user blocks of the real val/test files."""
    src = _need_real_data()
    names = read_id2name(src / "id2name.txt")
    blocks = {
        s: user_blocks(read_split(src / SOURCE_FILES[s], len(names))) for s in ("valid", "test")
    }
    return {"src": src, "names": names, "blocks": blocks}


# ------------------------------------------------------------------ a tiny source folder

N_TINY = 30
TINY_USERS = {  # per source file: complete sequences (no repeats, like the real data)
    "train": [[0, 1, 2, 3, 4], list(range(5, 20)), [20, 21, 3, 22]],
    "valid": [[23, 24, 0, 25], [26, 27, 28, 29, 1, 2]],
    "test": [[4, 5, 6, 7], list(range(10, 25))],
}


def _frame(sequences: list[list[int]], pad: int):
    """LLaRA rows of complete sequences: one per position, last 10 items, right-padded."""
    rows = []
    for seq in sequences:
        for k, target in enumerate(seq):
            history = seq[:k][-10:]
            rows.append((history + [pad] * (10 - len(history)), max(1, len(history)), target))
    return pd.DataFrame(rows, columns=["seq", "len_seq", "next"])


@pytest.fixture
def tiny_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    names = "".join(f"{i}::Artist {i}\n" for i in range(N_TINY))
    (src / "id2name.txt").write_text(names, encoding="utf-8")
    for split, file in SOURCE_FILES.items():
        _frame(TINY_USERS[split], N_TINY).to_pickle(src / file)
    return src


# -------------------------------------------------------------------------- the sampler


@pytest.mark.parametrize("split", ["valid", "test"])
def test_sampler_reproduces_sdpo_json(real: dict, split: str) -> None:
    """Every S-DPO row: same history, target and 20 candidates in the same order."""
    names = real["names"]
    reference = json.loads((real["src"] / "sdpo_json" / SDPO_JSON[split]).read_text("utf-8"))
    rows = protocol_rows(real["blocks"][split], "rows")
    assert len(rows) == len(reference) == {"valid": 2767, "test": 2495}[split]
    for (_, row), ref in zip(rows, reference, strict=True):
        assert "::".join(names[i] for i in row.history) == ref["historyList"]
        assert names[row.target] == ref["trueSelection"]
        candidates = sdpo_candidates(row.history, row.target, len(names))
        assert [names[c] for c in candidates] == ref["itemList"]


def test_sampler_properties() -> None:
    state = random.getstate()
    cans = sdpo_candidates([3, 1, 4], 5, 40)
    assert random.getstate() == state  # the global generator is untouched
    assert len(cans) == len(set(cans)) == 20 and cans.count(5) == 1
    assert not {3, 1, 4} & set(cans)
    assert cans == sdpo_candidates((4, 3, 1), 5, 40)  # depends on the history as a set
    # the same computation as S-DPO's LastfmData.negative_sampling
    pool = [i for i in range(40) if i not in [3, 1, 4] and i != 5]
    random.seed(5)
    expected = random.sample(pool, 19) + [5]
    random.seed(5)
    random.shuffle(expected)
    random.setstate(state)
    assert cans == expected
    with pytest.raises(ValueError, match="negatives"):
        sdpo_candidates(list(range(10)), 10, 25)
    with pytest.raises(ValueError, match="target"):
        sdpo_candidates([], 40, 40)


def test_protocols_on_real_data(real: dict) -> None:
    """Row counts of both protocols; `last` equals LLaRA's later release (llara_hf_v2)."""
    counts = {s: len(b) for s, b in real["blocks"].items()}
    assert counts == {"valid": 122, "test": 122}
    v2 = real["src"] / "llara_hf_v2"
    for split in ("valid", "test"):
        last = [row for _, row in protocol_rows(real["blocks"][split], "last")]
        assert len(last) == 122 and min(len(r.history) for r in last) >= 3
        if v2.exists():
            release = read_split(v2 / SOURCE_FILES[split], len(real["names"]))
            assert [(r.history, r.target) for r in release] == [(r.history, r.target) for r in last]


# ------------------------------------------------------------------ matching answers


def test_match_candidates_exact_and_substring() -> None:
    names = ["Beck", "Jeff Beck", "Royce da 5'9\"", "The Kings of Nuthin'", "Can"]
    assert match_candidates("Jeff Beck", names, "exact") == [1]
    assert match_candidates("Jeff Beck", names, "substring") == [0, 1]
    assert match_candidates('  "Beck"\n', names, "exact") == [0]
    assert match_candidates("Royce da 5'9\"", names, "exact") == [2]
    assert match_candidates("'The Kings of Nuthin''", names, "exact") == [3]
    assert match_candidates("beck", names, "exact") == []  # case-sensitive
    assert match_candidates("I pick Can", names, "exact") == []
    assert match_candidates("I pick Can", names, "substring") == [4]
    with pytest.raises(ValueError):
        match_candidates("x", names, "fuzzy")


def test_invalid_answers() -> None:
    names = ["Beck", "Jeff Beck", "Muse"]
    for mode in ("exact", "substring"):
        assert judge_answer("Radiohead", names, 2, mode) == (False, False)  # no candidate
        assert judge_answer("Muse", names, 2, mode) == (True, True)
        assert judge_answer("Beck", names, 2, mode) == (True, False)
    assert judge_answer("Muse, Beck", names, 2, "substring") == (False, False)  # two
    assert judge_answer("Muse, Beck", names, 2, "exact") == (False, False)  # no exact name
    assert judge_answer("Jeff Beck", names, 1, "substring") == (False, False)  # two
    assert judge_answer("Jeff Beck", names, 1, "exact") == (True, True)


@pytest.mark.parametrize("split", ["valid", "test"])
def test_exact_and_substring_differ_only_on_nested_names(real: dict, split: str) -> None:
    """Answering each candidate's name: the modes differ exactly on rows with nested names."""
    reference = json.loads((real["src"] / "sdpo_json" / SDPO_JSON[split]).read_text("utf-8"))
    nested, differ, target_unanswerable = set(), set(), set()
    for k, row in enumerate(reference):
        items = row["itemList"]
        if any(a != b and a in b for a in items for b in items):
            nested.add(k)
        for name in items:
            exact = match_candidates(name, items, "exact")
            assert exact == [items.index(name)]
            if match_candidates(name, items, "substring") != exact:
                differ.add(k)
        if not judge_answer(
            row["trueSelection"], items, items.index(row["trueSelection"]), "substring"
        )[0]:
            target_unanswerable.add(k)
    assert differ == nested
    assert len(nested) == {"valid": 34, "test": 25}[split]  # as counted in SOURCE.md
    # the exact target name is "invalid" for S-DPO's rule when it contains another candidate
    assert len(target_unanswerable) == {"valid": 1, "test": 3}[split]


# ------------------------------------------------------------------ converting, errors


def test_prepare_tiny(tiny_src: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = prepare_lastfm(tiny_src, out, protocol="both")
    folder = out / "LastFM"
    data = load_dataset(folder, require_index=False)
    assert data.n_items == N_TINY and data.titles()[7] == "Artist 7"
    expected = [s for split in ("train", "valid", "test") for s in TINY_USERS[split]]
    assert list(data.sequences.values()) == expected
    assert list(data.sequences) == [str(u) for u in range(len(expected))]
    users = json.loads((folder / "LastFM.users.json").read_text("utf-8"))
    assert users == {"train": ["0", "1", "2"], "valid": ["3", "4"], "test": ["5", "6"]}
    assert report.rows[candidate_file("test", "last")] == 2
    assert report.rows[candidate_file("train")] == sum(len(s) - 3 for s in TINY_USERS["train"])
    for record in load_candidates(folder / candidate_file("valid", "rows")):
        seq = data.sequences[record["user"]]
        position = seq.index(record["target"])
        assert record["history"] == seq[:position][-10:] and len(record["history"]) >= 3
        assert record["candidates"] == sdpo_candidates(record["history"], record["target"], N_TINY)

    with pytest.raises(FileExistsError, match="--force"):
        prepare_lastfm(tiny_src, out, protocol="last")
    (folder / "LastFM.index.json").write_text("{}", encoding="utf-8")
    prepare_lastfm(tiny_src, out, protocol="last", force=True)
    assert not (folder / candidate_file("test", "rows")).exists()  # stale protocol removed
    assert not (folder / "LastFM.index.json").exists()
    assert (folder / candidate_file("test", "last")).exists()


def _cli_error(src: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["prepare", "lastfm", "--src", str(src), "--out", str(out)]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", "truncated or corrupt"),
        ("garbage", "truncated or corrupt"),
        ("not_frame", "expected a pickled pandas DataFrame, got dict"),
        ("no_column", "missing column(s) ['next']"),
        ("missing", "missing (expected a pickled pandas DataFrame"),
        ("bad_history", "is not the last 10 targets"),
        ("short_user", "fewer than 3 rows"),
    ],
)
def test_prepare_rejects_bad_pickles(
    tiny_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
) -> None:
    path = tiny_src / "Val_data.df"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"this is not a pickle\n")
    elif damage == "not_frame":
        path.write_bytes(pickle.dumps({"seq": [], "next": []}))
    elif damage == "no_column":
        _frame(TINY_USERS["valid"], N_TINY).drop(columns="next").to_pickle(path)
    elif damage == "missing":
        path.unlink()
    elif damage == "short_user":
        _frame([[1, 2], *TINY_USERS["valid"]], N_TINY).to_pickle(path)
    else:
        frame = _frame(TINY_USERS["valid"], N_TINY)
        frame.at[3, "seq"] = [23, 0, 24] + [N_TINY] * 7
        frame.to_pickle(path)
    err = _cli_error(tiny_src, tmp_path / "out", capsys)
    assert str(path) in err and message in err
    assert not (tmp_path / "out" / "LastFM" / "LastFM.inter.json").exists()


def test_prepare_rejects_truncated_real_pickle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _need_real_data()
    copy = tmp_path / "src"
    copy.mkdir()
    (copy / "id2name.txt").write_bytes((src / "id2name.txt").read_bytes())
    (copy / "train_data.df").write_bytes((src / "train_data.df").read_bytes()[:100_000])
    err = _cli_error(copy, tmp_path / "out", capsys)
    assert str(copy / "train_data.df") in err and "truncated or corrupt" in err


def test_pandas_missing(tiny_src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        read_frame(tiny_src / "Val_data.df")


def test_read_id2name_errors(tmp_path: Path) -> None:
    path = tmp_path / "id2name.txt"
    path.write_text("0::A\n2::B\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"id2name.txt: line 2: expected '1::"):
        read_id2name(path)
    path.write_text("0::A\n1::\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        read_id2name(path)
    with pytest.raises(DataError, match="missing"):
        read_id2name(tmp_path / "absent.txt")


# ------------------------------------------------------------------- the real folder


def test_prepare_real_leave_one_out_matches_last_protocol(
    real: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Leave-one-out over inter.json reproduces LLaRA's `last` val/test rows (see the module)."""
    out = tmp_path / "out"
    argv = ["prepare", "lastfm", "--src", str(real["src"]), "--out", str(out)]
    assert main([*argv, "--protocol", "last"]) == 0
    printed = capsys.readouterr().out
    assert "1220 users" in printed and "4606 items" in printed and "122 rows" in printed
    folder = out / "LastFM"
    data = load_dataset(folder, require_index=False)
    assert (data.n_users, data.n_items, data.n_interactions) == (1220, 4606, 56794)
    assert data.titles()[614] == "Florence and the Machine"
    users = json.loads((folder / "LastFM.users.json").read_text("utf-8"))
    assert [len(users[s]) for s in ("train", "valid", "test")] == [976, 122, 122]

    splits = leave_one_out(data, max_history=10)
    loo_test = {e.user: (e.history, e.target) for e in splits.test}
    loo_valid = {e.user: (e.history, e.target) for e in splits.valid}
    for split in ("valid", "test"):
        records = load_candidates(folder / candidate_file(split, "last"))
        assert [r["user"] for r in records] == users[split]
        for record, block in zip(records, real["blocks"][split], strict=True):
            seq = data.sequences[record["user"]]
            assert seq == [row.target for row in block]
            # the protocol's row is the user's last item with the 10 items before it ...
            assert record["target"] == seq[-1] == block[-1].target
            assert loo_test[record["user"]] == (tuple(record["history"]), record["target"])
            # ... and the leave-one-out validation target is the second-to-last row
            assert loo_valid[record["user"]] == (block[-2].history, block[-2].target)
    assert len(load_candidates(folder / candidate_file("train"))) == 47872
    assert not (folder / candidate_file("test", "rows")).exists()
