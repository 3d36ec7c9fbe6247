"""``ilrec recommend`` and :class:`ilrec.serving.Recommender`: rankings identical to
``ilrec evaluate``'s for the same histories, original ids, bad input lines, overwrite refusal
and the error for a folder that is not a run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ilrec.cli import main
from ilrec.config import load_config
from ilrec.data.dataset import DataError, load_dataset
from ilrec.evaluation.report import evaluate_run
from ilrec.evaluation.result_files import read_rankings
from ilrec.runs.setup import load_setup
from ilrec.serving import Catalogue, Recommender, read_histories, read_item2id
from ilrec.training.run import train

USERS, K, MAX_HISTORY = 8, 10, 5
FORMATS = {
    "sequence": [],
    "prompt": ["data.format=prompt"],
    "title": ["data.format=title", "data.identifier=title"],
}


@pytest.fixture(scope="module")
def runs(synthetic_dir, tmp_path_factory):
    """A 3-step tiny run per format, its first 8 test users evaluated in beam and exact mode.

    ``data.max_history=5`` so that the users' full histories must be cut like evaluation's.
    """
    from conftest import _tiny_overrides

    root = tmp_path_factory.mktemp("recommend")
    out = {}
    for fmt, extra in FORMATS.items():
        run = root / fmt
        overrides = _tiny_overrides(
            synthetic_dir, run, "train.max_steps=3", f"data.max_history={MAX_HISTORY}", *extra
        )
        train(load_config(None, overrides))
        for mode in ("beam", "exact"):
            evaluate_run(run, "test", mode=mode, users=USERS, progress=False)
        out[fmt] = run
    return out


def _evaluated(run: Path, mode: str) -> list[list[int]]:
    return read_rankings(run / f"eval_test_{mode}_first{USERS}.rankings.tsv").ranked[:, :K].tolist()


def _test_users(run: Path):
    """The first test users' examples and their full histories (longer than max_history)."""
    setup = load_setup(load_config(run / "config.yaml"))
    examples = setup.splits.test[:USERS]
    full = [setup.data.sequences[e.user][:-1] for e in examples]
    return setup, examples, full


def _write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("mode", ["beam", "exact"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_api_matches_evaluation(runs, fmt, mode):
    run = runs[fmt]
    setup, examples, full = _test_users(run)
    assert any(len(h) > MAX_HISTORY for h in full)  # the cut is exercised
    recommender = Recommender.from_run(run, mode=mode)
    expected = _evaluated(run, mode)
    for histories in ([e.history for e in examples], full):
        recs = recommender.recommend(histories, k=K)
        assert [[r.item for r in row] for row in recs] == expected
    originals = read_item2id(synthetic_item2id(setup), setup.data.n_items)
    for row in recs:
        scores = [r.score for r in row]
        assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
        for r in row:
            assert r.original_id == originals[r.item]
            assert r.title == setup.data.items[r.item].title
    # beam scores are the exact log-probabilities of the same items
    if mode == "beam":
        exact = Recommender.from_run(run, mode="exact").recommend(full, k=K)
        assert [[r.item for r in row] for row in exact] == _evaluated(run, "exact")
        by_item = {(u, r.item): r.score for u, row in enumerate(exact) for r in row}
        for u, row in enumerate(recs):
            for r in row:
                if (u, r.item) in by_item:
                    assert r.score == pytest.approx(by_item[(u, r.item)], abs=1e-4)


def synthetic_item2id(setup) -> Path:
    return Path(setup.data.root) / f"{setup.data.name}.item2id"


def test_api_rejects_bad_histories(runs):
    recommender = Recommender.from_run(runs["sequence"], mode="exact")
    n_items = recommender.catalogue.n_items
    with pytest.raises(ValueError, match=r"histories\[1\]: empty history"):
        recommender.recommend([[1, 2], []])
    with pytest.raises(ValueError, match=rf"histories\[0\]: unknown item ids \[{n_items}\]"):
        recommender.recommend([[1, n_items]])
    with pytest.raises(ValueError, match="k must be in"):
        recommender.recommend([[1]], k=n_items + 1)
    assert len(recommender.recommend([[3]], k=n_items)[0]) == n_items


@pytest.mark.parametrize("mode", ["beam", "exact"])
def test_cli_matches_evaluation(runs, tmp_path, capsys, mode):
    run = runs["sequence"]
    setup, examples, full = _test_users(run)
    lines = [{"user": e.user, "history": h} for e, h in zip(examples, full, strict=True)]
    source = _write_jsonl(tmp_path / "histories.jsonl", lines)
    out = tmp_path / "out.jsonl"
    argv = ["recommend", "--run", str(run), "--input", str(source), "--output", str(out)]
    assert main([*argv, "--mode", mode, "--k", str(K)]) == 0
    records = _read_jsonl(out.read_text())
    assert [r["user"] for r in records] == [e.user for e in examples]
    assert [[x["item"] for x in r["items"]] for r in records] == _evaluated(run, mode)
    assert set(records[0]["items"][0]) == {"item", "original_id", "title", "score"}
    assert capsys.readouterr().out == ""  # the recommendations went to the file only


def test_cli_threads_default_to_the_runs_and_can_be_overridden(runs, tmp_path, monkeypatch):
    from ilrec.runs import setup

    seen: list[int] = []
    monkeypatch.setattr(setup, "set_threads", seen.append)
    source = _write_jsonl(tmp_path / "histories.jsonl", [{"user": 0, "history": [1, 2]}])
    argv = ["recommend", "--run", str(runs["sequence"]), "--input", str(source)]
    for i, extra in enumerate(([], ["--threads", "2"])):
        assert main([*argv, "--output", str(tmp_path / f"out{i}.jsonl"), *extra]) == 0
    assert seen == [1, 2]  # the run was trained with train.threads=1


def test_cli_original_ids_round_trip(runs, tmp_path, capsys):
    run = runs["sequence"]
    setup, examples, full = _test_users(run)
    originals = read_item2id(synthetic_item2id(setup), setup.data.n_items)
    lines = [{"history": [originals[i] for i in h]} for h in full]  # no "user": null
    source = _write_jsonl(tmp_path / "original.jsonl", lines)
    argv = ["recommend", "--run", str(run), "--input", str(source), "--id-type", "original"]
    assert main([*argv, "--mode", "exact"]) == 0
    records = _read_jsonl(capsys.readouterr().out)
    assert [[x["item"] for x in r["items"]] for r in records] == _evaluated(run, "exact")
    assert all(r["user"] is None for r in records)
    assert all(x["original_id"] == originals[x["item"]] for r in records for x in r["items"])
    # internal ids are rejected in original mode, with the line number
    _write_jsonl(source, [{"history": [originals[0]]}, {"history": [3]}])
    assert main(argv) == 2
    assert f"{source}:2: original item ids must be strings" in capsys.readouterr().err


BAD_LINES = [
    '{"user": "ok1", "history": [1, 2, 3]}',
    '{"user": "empty", "history": []}',
    '{"user": "unknown", "history": [1, 99999]}',
    '{"user": "broken", "history": [1, 2',
    '{"user": "nokey", "items": [1, 2]}',
    "",
    '{"user": "ok2", "history": [4]}',
]


def test_cli_bad_lines(runs, tmp_path, capsys):
    run = runs["sequence"]
    source = _write_jsonl(tmp_path / "bad.jsonl", BAD_LINES)
    out = tmp_path / "out.jsonl"
    argv = ["recommend", "--run", str(run), "--input", str(source), "--output", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "4 bad line(s); nothing was processed" in err
    assert f"{source}:2: 'history' is an empty list" in err
    assert f"{source}:3: unknown item ids [99999]; expected internal ids 0..79" in err
    assert f"{source}:4: malformed JSON" in err and "expected one JSON object per line" in err
    assert f"{source}:5: missing key 'history'" in err
    assert not out.exists()

    assert main([*argv, "--skip-bad-lines", "--k", "3"]) == 0
    err = capsys.readouterr().err
    assert "skipped 4 bad line(s)" in err and f"{source}:5:" in err
    records = _read_jsonl(out.read_text())
    assert [r["user"] for r in records] == ["ok1", "ok2"]
    assert all(len(r["items"]) == 3 for r in records)


def test_cli_refuses_to_overwrite(runs, tmp_path, capsys):
    source = _write_jsonl(tmp_path / "in.jsonl", ['{"history": [1, 2]}'])
    out = tmp_path / "out.jsonl"
    out.write_text("keep\n")
    argv = ["recommend", "--run", str(runs["sequence"]), "--input", str(source)]
    assert main([*argv, "--output", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "keep\n"
    assert main([*argv, "--output", str(out), "--force", "--k", "2"]) == 0
    assert len(_read_jsonl(out.read_text())[0]["items"]) == 2


def test_not_a_run_folder(tmp_path, capsys):
    source = _write_jsonl(tmp_path / "in.jsonl", ['{"history": [1]}'])
    for argv in (
        ["recommend", "--run", str(tmp_path), "--input", str(source)],
        ["evaluate", "--run", str(tmp_path)],
        ["evaluate", "--run", str(tmp_path / "missing")],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{argv[2]}: not a run folder" in err and "Errno" not in err
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        evaluate_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        Recommender.from_run(tmp_path)


# -- input parsing and item2id without a model ----------------------------------------------
def test_without_item2id(synthetic_dir, tmp_path):
    copy = tmp_path / "Synthetic"
    shutil.copytree(synthetic_dir, copy)
    (copy / "Synthetic.item2id").unlink()
    catalogue = Catalogue.from_data(load_dataset(copy))
    assert catalogue.original_ids is None and catalogue.titles is not None
    source = _write_jsonl(tmp_path / "in.jsonl", ['{"history": ["B0X"]}'])
    with pytest.raises(DataError, match=r"Synthetic\.item2id: missing"):
        read_histories(source, catalogue, id_type="original")
    assert read_histories(_write_jsonl(source, ['{"history": [2]}']), catalogue)[0].history == (2,)


def test_item2id_errors(tmp_path):
    path = tmp_path / "X.item2id"
    path.write_text("A\t0\nB\t1\n")
    assert read_item2id(path, 2) == ("A", "B")
    for text, message in (
        ("A\t0\nB\n", r"X\.item2id:2: expected 'ORIGINAL<TAB>id'"),
        ("A\t0\nB\t0\n", r"X\.item2id:2: item id 0 appears twice"),
        ("A\t0\nA\t1\n", r"X\.item2id:2: original id 'A' repeats item 0"),
        ("A\t0\n", r"no original id for items \[1\]"),
    ):
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            read_item2id(path, 2)


def test_many_bad_lines_listed_up_to_20(tmp_path):
    catalogue = Catalogue(5, ("a", "b", "c", "d", "e"), None, tmp_path / "X.item2id")
    source = _write_jsonl(tmp_path / "in.jsonl", ['{"history": [7]}'] * 25 + ["[1]"])
    with pytest.raises(DataError) as info:
        read_histories(source, catalogue)
    message = str(info.value)
    assert "26 bad line(s)" in message and "... and 6 more" in message
    assert f"{source}:20:" in message and f"{source}:21:" not in message
    warnings: list[str] = []
    _write_jsonl(source, ['{"history": [7]}', '{"user": 3, "history": ["c", "a"]}'])
    requests = read_histories(
        source, catalogue, "original", skip_bad_lines=True, warn=warnings.append
    )
    assert [(r.line, r.user, r.history) for r in requests] == [(2, 3, (2, 0))]
    assert len(warnings) == 1 and f"{source}:1: original item ids must be strings" in warnings[0]
    with pytest.raises(DataError, match="no valid histories"):
        read_histories(_write_jsonl(source, ['"x"']), catalogue, skip_bad_lines=True, warn=print)
