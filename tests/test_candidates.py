"""The candidate-ranking task (S-DPO / LLaRA; paper Figure 6): candidate files, prompts,
exact ranking and greedy generation metrics, SFT / S-DPO on candidate rows, bad files.

Uses the session's synthetic dataset; the LastFM test reads ``../shared/data/LastFM`` and
skips when it is absent.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA
from ilrec.alignment.negatives import NegativeContext, sample_negatives
from ilrec.alignment.pairs import PairSet
from ilrec.alignment.stage import align, training_examples
from ilrec.cli import main
from ilrec.config import ConfigError, load_config, load_stage_config
from ilrec.data.candidates import (
    CandidateExample,
    candidate_path,
    load_candidate_splits,
    prepare_candidates,
    read_candidate_file,
)
from ilrec.data.dataset import DataError, load_dataset
from ilrec.data.encoding import Encoder
from ilrec.data.lastfm import load_candidates, sdpo_candidates
from ilrec.data.split import leave_one_out, popularity_counts
from ilrec.evaluation import candidates as cand_eval
from ilrec.evaluation.candidates import generate_answers, generation_metrics, rank_candidates
from ilrec.evaluation.result_files import read_rankings
from ilrec.identifiers.vocab import build_text_tokenizer
from ilrec.metrics import rank_metrics
from ilrec.runs.setup import load_setup, load_trained, make_encoder
from ilrec.training.run import train

FORMATS = {
    "title": ["data.format=title", "data.identifier=title"],
    "prompt": ["data.format=prompt"],
}


@pytest.fixture(scope="module")
def stem(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Candidate files of the synthetic dataset (``prepare candidates``)."""
    out = tmp_path_factory.mktemp("cands")
    return Path(prepare_candidates(synthetic_dir, out).stem)


def _overrides(data: Path, stem: Path, run: Path, *extra: str) -> list[str]:
    from conftest import _tiny_overrides

    return _tiny_overrides(
        data, run, "data.task=candidates", f"data.candidates={stem}", "train.max_steps=2", *extra
    )


@pytest.fixture(scope="module")
def runs(synthetic_dir: Path, stem: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 2-step SFT run on candidate rows per text format."""
    root = tmp_path_factory.mktemp("cand_runs")
    out = {}
    for fmt, extra in FORMATS.items():
        out[fmt] = root / fmt
        train(load_config(None, _overrides(synthetic_dir, stem, out[fmt], *extra)))
    return out


def _title_encoder(titles: list[str]) -> Encoder:
    tokenizer = build_text_tokenizer(['"' + t + '"' for t in titles] + ["Answer:"], 300)
    return Encoder.for_titles(tokenizer, titles)


# -- files -----------------------------------------------------------------------------------


def test_prepare_candidates_reproduces_sdpo_sampler(synthetic_dir, stem, tmp_path, capsys):
    data = load_dataset(synthetic_dir)
    splits = leave_one_out(data, 20)
    expected = {"train": splits.train_prefixes(), "valid": splits.valid, "test": splits.test}
    for split, examples in expected.items():
        records = load_candidates(candidate_path(stem, split, "rows"))
        assert [(r["user"], tuple(r["history"]), r["target"]) for r in records] == [
            (e.user, e.history, e.target) for e in examples
        ]
        for r in records:
            cans = r["candidates"]
            assert len(set(cans)) == 20 and r["target"] in cans
            assert not set(cans) & set(r["history"])
            assert cans == sdpo_candidates(r["history"], r["target"], data.n_items)
        if split != "train":  # one row per user: both protocols are the same rows
            last = candidate_path(stem, split, "last")
            assert last.read_text() == candidate_path(stem, split, "rows").read_text()
    with pytest.raises(FileExistsError, match="--force"):
        prepare_candidates(synthetic_dir, stem.parent)
    with pytest.raises(ValueError, match="inside the dataset folder"):
        prepare_candidates(synthetic_dir, synthetic_dir / "cands")
    out = tmp_path / "cli"
    assert main(["prepare", "candidates", "--data", str(synthetic_dir), "--out", str(out)]) == 0
    assert "Synthetic.candidates.rows.test.jsonl: 300 rows" in capsys.readouterr().out
    assert (out / "Synthetic.candidates.train.jsonl").read_text() == (
        candidate_path(stem, "train").read_text()
    )


ROW = {"user": "u", "history": [1, 2, 3], "target": 4, "candidates": [*range(4, 23)] + [0]}


@pytest.mark.parametrize(
    "change, message",
    [
        ("not json", "malformed JSON"),
        ("no history", "expected an object with user, history, target"),
        ({"target": 23}, "the target 23 is not among the candidates"),
        ({"candidates": [4, 4, *range(6, 24)]}, "repeat an item"),
        ({"candidates": [*range(4, 23), 80]}, "'candidates' must be item ids in 0..79"),
        ({"history": [1, 99]}, "'history' must be a list of item ids in 0..79"),
        ({"candidates": [*range(4, 23)]}, "19 candidates, expected 20"),
        ({"target": "4"}, "'target' must be an item id"),
    ],
)
def test_bad_candidate_rows_are_rejected_with_file_and_line(tmp_path, change, message):
    path = tmp_path / "x.jsonl"
    if change == "no history":
        bad = json.dumps({k: v for k, v in ROW.items() if k != "history"})
    else:
        bad = change if isinstance(change, str) else json.dumps({**ROW, **change})
    path.write_text(json.dumps(ROW) + "\n" + bad + "\n")
    with pytest.raises(DataError, match="line 2") as error:
        read_candidate_file(path, n_items=80)
    assert str(path) in str(error.value) and message in str(error.value)


def test_a_bad_file_stops_training_with_its_line(synthetic_dir, stem, tmp_path, capsys):
    broken = tmp_path / "Broken.candidates"
    for split, protocol in (("train", "rows"), ("valid", "rows"), ("test", "rows")):
        text = candidate_path(stem, split, protocol).read_text()
        candidate_path(broken, split, protocol).write_text(text)
    lines = candidate_path(broken, "test").read_text().splitlines()
    record = json.loads(lines[6])
    record["candidates"] = [c for c in record["candidates"] if c != record["target"]] + [79]
    if record["target"] == 79:
        record["candidates"][-1] = 78
    lines[6] = json.dumps(record)
    candidate_path(broken, "test").write_text("\n".join(lines) + "\n")
    argv = ["train", *_overrides(synthetic_dir, broken, tmp_path / "run", *FORMATS["prompt"])]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{candidate_path(broken, 'test')}: line 7: the target" in err
    with pytest.raises(DataError, match="missing candidate file"):
        load_candidate_splits(tmp_path / "Absent.candidates", "rows", 80, 20)


def test_config_checks_the_candidate_keys(stem):
    with pytest.raises(ConfigError, match="data.task=candidates needs a text format"):
        load_config(None, ["data.task=candidates"])
    with pytest.raises(ConfigError, match="data.protocol"):
        load_config(None, ["data.protocol=all"])
    with pytest.raises(ConfigError, match="data.task must be one of"):
        load_config(None, ["data.task=pairs"])
    with pytest.raises(ConfigError, match="align.negatives.candidates .* data.task=candidates"):
        load_config(None, ["align.negatives={candidates: 3}"])


# -- prompts and metrics ---------------------------------------------------------------------


def test_candidate_prompt_lists_history_and_candidates():
    titles = ["Beck", "Jeff Beck", "Muse", "Can", "Cansei de Ser Sexy"]
    encoder = _title_encoder(titles)
    text = encoder.tokenizer.decode(encoder.prompt_ids((2, 3), candidates=[4, 0, 1]))
    assert text.endswith(
        'these items "Muse", "Can" recently. Please predict the next item this user will '
        'interact with. Choose the answer from the following 3 items: "Cansei de Ser Sexy", '
        '"Beck", "Jeff Beck". Answer:'
    )
    encoder.candidate_domain = "music"
    text = encoder.tokenizer.decode(encoder.prompt_ids((2,), candidates=[4, 0]))
    assert 'from these bands "Muse" recently' in text and "2 band names:" in text
    row = CandidateExample("u", (2, 3), 1, (4, 0, 1))
    assert encoder.encode_example(row)["input_ids"] == (
        encoder.prompt_ids((2, 3), candidates=[4, 0, 1]) + encoder.response_ids(1)
    )


def test_exact_ranking_metrics_match_hand_computed_values(monkeypatch):
    titles = [f"Artist {i}" for i in range(8)]
    encoder = _title_encoder(titles)
    rows = [
        CandidateExample("a", (7,), 0, (0, 1, 2, 3, 4, 5)),  # target best: rank 0
        CandidateExample("b", (7,), 2, (1, 2, 3, 4, 5, 6)),  # tied with 1, after it: rank 1
        CandidateExample("c", (7,), 3, (3, 4, 5, 6, 0, 1)),  # tied with 4, before it: rank 0
        CandidateExample("d", (7,), 6, (0, 1, 2, 3, 4, 6)),  # worst: rank 5
    ]
    item_score = {0: -1.0, 1: -2.0, 2: -2.0, 3: -3.0, 4: -3.0, 5: -4.0, 6: -9.0}
    scores = {"a": {0: 0.0}, "b": {}, "c": {3: 5.0, 4: 5.0}, "d": {}}  # per-row overrides

    def fake_score(model, prompts, responses, pad, batch_size=16, progress=None):
        out = []
        for prompt, resp in zip(prompts, responses, strict=True):
            row = next(r for r in rows if encoder.example_prompt_ids(r) == prompt)
            assert resp == [encoder.response_ids(c) for c in row.candidates]
            out.append([scores[row.user].get(c, item_score[c]) for c in row.candidates])
        return torch.tensor(out)

    monkeypatch.setattr(cand_eval, "score_responses", fake_score)
    metrics, ranked = rank_candidates(None, encoder, rows, batch_size=3)
    assert ranked[1].tolist() == [1, 2, 3, 4, 5, 6] and ranked[2].tolist()[:2] == [3, 4]
    assert metrics["hit@1"] == pytest.approx(2 / 4)
    assert metrics["hit@5"] == pytest.approx(3 / 4)
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 + 0) / 4)
    # popularity: counts decide, ties keep the candidate order
    pop, pop_ranked = cand_eval.popularity_ranking([0, 5, 5, 1, 0, 0, 9, 0], rows)
    assert pop_ranked[0].tolist() == [1, 2, 3, 0, 4, 5] and pop["hit@1"] == pytest.approx(1 / 4)


def test_exact_and_substring_matching_and_invalid_answers():
    titles = ["Beck", "Jeff Beck", "Muse", "Can", "Cansei de Ser Sexy", "Radiohead"]
    encoder = _title_encoder(titles)
    row = {t: CandidateExample("u", (5,), titles.index(t), (0, 1, 2, 3, 4)) for t in titles}
    cases = [  # answer, target: (exact valid, hit), (substring valid, hit)
        ('"Jeff Beck"', "Jeff Beck", (1, 1), (0, 0)),  # substring also names "Beck"
        ('"Muse"', "Muse", (1, 1), (1, 1)),
        ("Radiohead", "Muse", (0, 0), (0, 0)),  # names no candidate
        ('"Muse", "Beck"', "Muse", (0, 0), (0, 0)),  # names two
        ('"Can"', "Cansei de Ser Sexy", (1, 0), (1, 0)),  # valid, wrong
        ("I pick Muse", "Muse", (0, 0), (1, 1)),  # only the substring rule accepts prose
    ]
    for answer, target, exact, substring in cases:
        metrics, details = generation_metrics([answer], [row[target]], encoder)
        assert (metrics["exact"]["valid"], metrics["exact"]["hit@1"]) == exact, answer
        assert (metrics["substring"]["valid"], metrics["substring"]["hit@1"]) == substring, answer
    metrics, details = generation_metrics(
        [c[0] for c in cases], [row[c[1]] for c in cases], encoder
    )
    assert metrics["exact"] == {"hit@1": 2 / 6, "valid": 3 / 6}
    assert metrics["substring"] == {"hit@1": 2 / 6, "valid": 3 / 6}
    assert details[0]["substring"] == [0, 1] and details[0]["exact"] == [1]


def test_semantic_ids_match_their_code_string():
    tokenizer = build_text_tokenizer(
        ["Answer:"], 300, codes={0: ["<a_1>", "<b_2>"], 1: ["<a_1>", "<b_3>"]}
    )
    encoder = Encoder.for_codes("prompt", tokenizer, {0: ["<a_1>", "<b_2>"], 1: ["<a_1>", "<b_3>"]})
    row = CandidateExample("u", (0,), 1, (0, 1))
    answers = ["<a_1><b_3>", " <a_1><b_3>\n", "<a_1><b_3><a_1>", "<a_1>"]
    metrics, details = generation_metrics(answers, [row] * 4, encoder)
    assert [d["exact"] for d in details] == [[1], [1], [], []]
    assert metrics["exact"]["hit@1"] == 0.5
    ids = encoder.response_ids(1)[:-1]  # the code tokens decode to the identifier string
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<a_1><b_3>"


def test_greedy_generation_is_argmax_whatever_the_model_defaults(runs):
    run = runs["title"]
    setup = load_setup(load_config(run / "config.yaml"))
    model, tokenizer = load_trained(run)
    encoder = make_encoder(setup, tokenizer)
    rows = setup.splits.test[:3]
    # defaults that would change the output if they leaked into greedy decoding
    model.generation_config.update(
        do_sample=True, temperature=0.05, top_k=2, repetition_penalty=3.0
    )
    answers = generate_answers(model, encoder, rows, batch_size=2, max_new_tokens=6)
    for row, answer in zip(rows, answers, strict=True):
        ids = encoder.example_prompt_ids(row)
        new = []
        with torch.no_grad():
            for _ in range(6):
                token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
                if token == tokenizer.eos_token_id:
                    break
                new.append(token)
        assert answer == tokenizer.decode(new, skip_special_tokens=True)


# -- training, evaluation, alignment ------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_sft_on_candidates_trains_and_evaluate_writes_both_metric_sets(runs, fmt, capsys):
    run = runs[fmt]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "loss" in r and "eval_hit@1" not in r]) == 2
    valid = [r for r in records if "eval_ndcg@5" in r]
    assert valid and "eval_ndcg@10" not in valid[-1]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["selection_metric"] == "ndcg@5"
    assert summary["best_valid_ndcg@5"] == max(r["eval_ndcg@5"] for r in valid)
    assert (run / "curves.png").exists()
    argv = ["evaluate", "--run", str(run), "--mode", "candidates", "--users", "12"]
    assert main([*argv, "--batch-size", "5"]) == 0
    assert "greedy, substring match" in capsys.readouterr().out
    stem = run / "eval_test_candidates_first12"
    result = json.loads(stem.with_suffix(".json").read_text())
    assert result["candidates"] == 20 and result["users"] == 12
    assert set(result["metrics"]) == {"popularity", "model (ranking)"}
    assert set(result["generation"]) == {"exact", "substring"}
    for metrics in result["generation"].values():
        assert set(metrics) == {"hit@1", "valid"} and metrics["hit@1"] <= metrics["valid"]
    rankings = read_rankings(stem.with_suffix(".rankings.tsv"))
    assert rankings.ranked.shape == (12, 20)
    expected = rank_metrics(rankings.ranked, rankings.targets, ks=(1, 5))
    assert result["metrics"]["model (ranking)"]["ndcg@5"] == pytest.approx(expected["ndcg@5"])
    answers = stem.with_suffix(".answers.jsonl").read_text().splitlines()
    assert len(answers) == 12 and set(json.loads(answers[0])) >= {"answer", "exact", "substring"}
    assert main(["evaluate", "--run", str(run), "--mode", "beam", "--users", "2"]) == 2
    assert "--mode candidates" in capsys.readouterr().err


def test_compare_reads_candidate_rankings(runs, capsys):
    for run in runs.values():
        assert main(["evaluate", "--run", str(run), "--mode", "candidates", "--users", "12"]) == 0
    capsys.readouterr()
    groups = ["--group", "T", str(runs["title"]), "--group", "P", str(runs["prompt"])]
    argv = ["compare", "--mode", "candidates", "--users", "12", "--bootstrap", "100", *groups]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| hit@1 |" in out and "| Δ ndcg@5 |" in out and "12 users" in out


def test_evaluate_threads_default_to_the_runs_and_can_be_overridden(runs, sft_runs, monkeypatch):
    from ilrec.runs import setup

    seen: list[int] = []
    monkeypatch.setattr(setup, "set_threads", seen.append)
    candidates = ["evaluate", "--run", str(runs["prompt"]), "--mode", "candidates"]
    full = ["evaluate", "--run", str(sft_runs["prompt"]), "--mode", "beam"]
    for argv in (candidates, full):
        assert main([*argv, "--users", "2"]) == 0
        assert main([*argv, "--users", "2", "--threads", "2"]) == 0
    assert seen == [1, 2, 1, 2]  # the runs were trained with train.threads=1


def test_ilrec_objective_trains_on_candidate_rows(synthetic_dir, stem, tmp_path):
    run = tmp_path / "ilrec"
    extra = (*FORMATS["prompt"], "objective.name=ilrec")
    result = train(load_config(None, _overrides(synthetic_dir, stem, run, *extra)))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["cpo"] for r in records if "cpo" in r] and 0 <= result["ndcg@5"] <= 1


def test_candidates_sampler_draws_only_non_target_candidates(runs):
    setup = load_setup(load_config(runs["prompt"] / "config.yaml"))
    examples = training_examples(setup, 300, seed=0)
    ctx = NegativeContext(setup.data.n_items, popularity_counts(setup.splits, setup.data.n_items))
    ctx.chunk = 64  # several chunks
    a = sample_negatives(examples, {"candidates": 3}, ctx, seed=1)
    assert torch.equal(a, sample_negatives(examples, {"candidates": 3}, ctx, seed=1))
    assert not torch.equal(a, sample_negatives(examples, {"candidates": 3}, ctx, seed=2))
    for e, row in zip(examples, a.tolist(), strict=True):
        assert len(set(row)) == 3 and set(row) <= set(e.candidates) - {e.target}
    full = leave_one_out(setup.data, 20).train_prefixes()[:5]
    with pytest.raises(ValueError, match="data.task=candidates"):
        sample_negatives(full, {"candidates": 1}, ctx, seed=0)


def test_sdpo_with_three_candidate_negatives_trains_two_steps(runs, tmp_path):
    start, out = runs["title"], tmp_path / "sdpo"
    overrides = [
        f"train.output_dir={out}",
        "train.batch_size=8",
        "train.threads=1",
        "train.logging_steps=1",
        "train.max_steps=2",
        "align.examples=32",
    ]
    config = load_stage_config(
        start, Path(__file__).parents[1] / "configs" / "align" / "sdpo_candidates.yaml", overrides
    )
    assert config.align.negatives == {"candidates": 3} and config.data.task == "candidates"
    align(config)
    pairs = PairSet.load(out / "pairs.pt")
    examples = training_examples(load_setup(config), 32, config.align.seed)
    for i, chosen, rejected in zip(
        pairs.example_ids.tolist(), pairs.chosen.tolist(), pairs.rejected.tolist(), strict=True
    ):
        assert chosen == examples[i].target and len(rejected) == 3
        assert set(rejected) <= set(examples[i].candidates) - {chosen}
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "reward_accuracy" in r]) == 2
    assert any("eval_ndcg@5" in r for r in records) and (out / "model").exists()


# -- the real LastFM files ------------------------------------------------------------------------


def test_lastfm_rows_in_the_title_format(tmp_path):
    src = SHARED_DATA / "LastFM"
    if not (src / "Val_data.df").exists():
        pytest.skip(f"real LastFM data not found at {src}")
    pytest.importorskip("pandas")
    assert main(["prepare", "lastfm", "--src", str(src), "--out", str(tmp_path)]) == 0
    folder = tmp_path / "LastFM"
    config = load_config(
        None,
        [f"data.path={folder}", *FORMATS["title"], "data.task=candidates", "data.domain=music"],
    )
    setup = load_setup(config)
    splits = setup.splits
    assert (len(splits.train_prefixes()), len(splits.valid), len(splits.test)) == (
        47872,
        2767,
        2495,
    )
    tokenizer = build_text_tokenizer(['"Glee Cast"', "Answer:"], 300)
    encoder = make_encoder(setup, tokenizer)
    first = splits.test[0]
    text = tokenizer.decode(encoder.example_prompt_ids(first))
    assert text.startswith(
        'This person has listened some musics from these bands "Kylie Minogue", '
        '"Avril Lavigne", "Ke$ha" recently.'
    )
    assert '20 band names: "James Blunt", "Tinariwen",' in text and '"Glee Cast"' in text
    # answering each row's exact target name: exact matching accepts every row, S-DPO's
    # substring rule rejects the 3 test rows whose target contains another candidate
    answers = [f'"{encoder.identifiers[e.target]}"' for e in splits.test]
    metrics, _ = generation_metrics(answers, splits.test, encoder)
    assert metrics["exact"] == {"hit@1": 1.0, "valid": 1.0}
    assert metrics["substring"]["hit@1"] == pytest.approx((2495 - 3) / 2495)
