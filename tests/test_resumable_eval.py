"""Resumable evaluation: a killed ``ilrec evaluate`` continues from the rows it saved and ends
with the rankings of an uninterrupted run; saved rows of another evaluation are not reused."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ilrec.evaluation import partial, ranking
from ilrec.evaluation.ranking import rank_in_chunks
from ilrec.evaluation.report import evaluate_run
from ilrec.evaluation.result_files import read_rankings

USERS, CHUNK = 12, 4


def _fake_rank(calls: list[int]):
    """Ranks a prompt by a fixed function of its tokens; records how many prompts it saw."""

    def rank(prompts):
        calls.append(len(prompts))
        return torch.tensor([[sum(p) + j for j in range(5)] for p in prompts])

    return rank


class _Seen(list):
    """What ``on_chunk`` was given, each time concatenated to the rows so far."""

    def append_rows(self, blocks):
        self.append(torch.cat(blocks))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30), chunk=st.integers(1, 8), done_frac=st.floats(0, 1), k=st.integers(1, 5)
)
def test_chunks_resumed_from_any_prefix_equal_one_pass(n, chunk, done_frac, k):
    prompts = [[i, 2 * i] for i in range(n)]
    whole = _fake_rank([])(prompts)[:, :k]
    done = whole[: int(done_frac * n)]
    calls, seen = [], _Seen()
    out = rank_in_chunks(_fake_rank(calls), prompts, k, chunk, done, seen.append_rows)
    assert torch.equal(out, whole)
    assert sum(calls) == n - len(done)  # the saved rows are not ranked again
    assert all(c <= chunk for c in calls)
    assert [len(s) for s in seen] == [min(n, len(done) + chunk * (i + 1)) for i in range(len(seen))]
    assert all(torch.equal(s, whole[: len(s)]) for s in seen)  # every save: the rows so far


def test_more_saved_rows_than_prompts_is_an_error():
    with pytest.raises(ValueError, match="5 rows already ranked for 3 prompts"):
        rank_in_chunks(_fake_rank([]), [[1]] * 3, 5, 2, torch.zeros(5, 5, dtype=torch.long))


@pytest.fixture
def run(sft_runs, tmp_path, monkeypatch):
    """A copy of a tiny trained run (results written here stay out of the shared fixture),
    evaluated in chunks of 4 users that are all saved."""
    monkeypatch.setattr(ranking, "CHUNK_USERS", CHUNK)
    monkeypatch.setattr(partial, "SAVE_EVERY_SECONDS", 0.0)
    return shutil.copytree(sft_runs["sequence"], tmp_path / "run")


def _evaluate(run):
    evaluate_run(run, "test", "exact", batch_size=2, users=USERS, progress=False)
    stem = run / f"eval_test_exact_first{USERS}"
    summary = json.loads(stem.with_suffix(".json").read_text())
    return read_rankings(stem.with_suffix(".rankings.tsv")).ranked, summary


def _kill_after_chunks(monkeypatch, chunks: int):
    """The next evaluation dies (KeyboardInterrupt) when it starts chunk ``chunks + 1``."""
    real, count = ranking.rank_sharded, [0]

    def dying(*args):
        count[0] += 1
        if count[0] > chunks:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(ranking, "rank_sharded", dying)
    return lambda: monkeypatch.setattr(ranking, "rank_sharded", real)


def test_killed_evaluation_resumes_to_the_same_rankings(run, monkeypatch):
    reference, summary = _evaluate(shutil.copytree(run, run.parent / "uninterrupted"))
    assert summary["resumed_after_users"] == 0
    revive = _kill_after_chunks(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(run)
    saved = run / f"eval_test_exact_first{USERS}.partial.pt"
    assert len(torch.load(saved, weights_only=True)["ranked"]) == 2 * CHUNK
    assert not (run / f"eval_test_exact_first{USERS}.json").exists()
    revive()
    ranked, summary = _evaluate(run)
    assert torch.equal(ranked, reference)
    assert summary["resumed_after_users"] == 2 * CHUNK
    assert not saved.exists()  # removed once the results are written


def test_rows_of_a_retrained_model_are_not_reused(run, monkeypatch, caplog):
    revive = _kill_after_chunks(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(run)
    revive()
    weights = next((run / "model").glob("*.safetensors"))
    os.utime(weights, ns=(0, 0))  # the model was saved again
    with caplog.at_level(logging.WARNING):
        _, summary = _evaluate(run)
    assert summary["resumed_after_users"] == 0
    assert "saved for a different ['model']" in caplog.text


def test_unreadable_partial_file_is_reported_and_ignored(run, caplog):
    saved = run / f"eval_test_exact_first{USERS}.partial.pt"
    saved.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING):
        _, summary = _evaluate(run)
    assert summary["resumed_after_users"] == 0
    assert "unreadable" in caplog.text and not saved.exists()
