"""Tests of run comparison: rankings files, paired bootstrap, the compare table and CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ilrec.cli import main
from ilrec.data.split import Example
from ilrec.evaluation.compare import (
    _load_rankings,
    compare_groups,
    compare_runs,
    paired_bootstrap_ci,
    seed_t_interval,
)
from ilrec.evaluation.plots import validation_curve
from ilrec.evaluation.result_files import rankings_tsv, read_rankings
from ilrec.metrics import user_metrics

TARGETS = [7, 8, 9, 10]


def _write_run(folder: Path, ranked: list[list[int]], users=("a", "b", "c", "d")) -> Path:
    folder.mkdir(parents=True)
    examples = [Example(u, (1, 2), t) for u, t in zip(users, TARGETS, strict=True)]
    text = rankings_tsv(examples, torch.tensor(ranked))
    (folder / "eval_test_exact.rankings.tsv").write_text(text)
    return folder


def _ranked_with_target_at(ranks: list[int]) -> list[list[int]]:
    """Lists of 10 items putting each user's target at the given rank (-1: absent)."""
    lists = []
    for target, rank in zip(TARGETS, ranks, strict=True):
        items = [100 + i for i in range(10)]
        if rank >= 0:
            items[rank] = target
        lists.append(items)
    return lists


def test_rankings_round_trip(tmp_path):
    ranked = _ranked_with_target_at([0, 3, -1, 9])
    run = _write_run(tmp_path / "r", ranked)
    r = read_rankings(run / "eval_test_exact.rankings.tsv")
    assert r.users == ("a", "b", "c", "d")
    assert r.targets.tolist() == TARGETS
    assert r.ranked.tolist() == ranked


def test_read_rankings_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "x.tsv"
    bad.write_text("user\ttarget\tranked\na\t7\t1 2 3\nb\tseven\t1 2 3\n")
    with pytest.raises(ValueError, match=r"x\.tsv:3"):
        read_rankings(bad)
    bad.write_text("something else\n")
    with pytest.raises(ValueError, match="header"):
        read_rankings(bad)
    with pytest.raises(FileNotFoundError, match="ilrec evaluate"):
        read_rankings(tmp_path / "missing.tsv")


def test_user_metrics_hand():
    m = user_metrics(torch.tensor([0, 3, -1, 9]), ks=(5, 10))
    assert m["hit@5"].tolist() == [1, 1, 0, 0]
    assert m["hit@10"].tolist() == [1, 1, 0, 1]
    assert m["ndcg@10"].tolist() == pytest.approx([1.0, 1 / math.log2(5), 0.0, 1 / math.log2(11)])


def test_paired_bootstrap_ci():
    assert paired_bootstrap_ci(torch.full((50,), 0.25)) == pytest.approx((0.25, 0.25))
    diff = torch.randn(400, generator=torch.Generator().manual_seed(0)) + 0.1
    lo, hi = paired_bootstrap_ci(diff, n_boot=2000)
    assert lo < diff.mean().item() < hi
    # roughly mean ± 1.96 standard errors
    se = diff.std().item() / math.sqrt(diff.numel())
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert paired_bootstrap_ci(diff, n_boot=2000) == (lo, hi)  # seeded
    with pytest.raises(ValueError):
        paired_bootstrap_ci(torch.zeros(0))


def _two_seeds_each(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    """SFT: both seeds hit users a (rank 0) and b (rank 3); New: seed 0 moves b to rank 0,
    seed 1 adds c at rank 0."""
    base = [
        _write_run(tmp_path / f"sft{s}", _ranked_with_target_at([0, 3, -1, -1])) for s in (0, 1)
    ]
    better = [
        _write_run(tmp_path / "new0", _ranked_with_target_at([0, 0, -1, -1])),
        _write_run(tmp_path / "new1", _ranked_with_target_at([0, 3, 0, -1])),
    ]
    return base, better


def test_compare_groups_table(tmp_path):
    base, better = _two_seeds_each(tmp_path)
    table = compare_groups({"SFT": base, "New": better}, n_boot=500)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines()}
    assert "4 users" in table
    assert "0.5000 ± 0.0000" in rows["SFT"]  # HR@5 of both SFT seeds
    # New: NDCG@10 per seed (1 + 1) / 4 = 0.5 and (1 + 1/log2(5) + 1) / 4; SFT (1 + 1/log2(5)) / 4
    sft = (1 + 1 / math.log2(5)) / 4
    new = [0.5, (2 + 1 / math.log2(5)) / 4]
    assert f"{sum(new) / 2 - sft:+.4f}" in rows["New"]
    assert rows["SFT"].rstrip().endswith("| — |")


def test_seed_t_interval_hand():
    # mean 0.0021, std 0.001, t_0.975(2) = 4.303: half-width 4.303 * 0.001 / sqrt(3)
    lo, hi = seed_t_interval([0.0011, 0.0031, 0.0021])
    half = 4.303 * 0.001 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((0.0021 - half, 0.0021 + half))
    assert seed_t_interval([0.5, 0.5]) == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError, match="at least 2"):
        seed_t_interval([0.1])


def test_compare_groups_pairs_runs_by_position_when_groups_match(tmp_path):
    base, better = _two_seeds_each(tmp_path)
    rows = compare_groups({"SFT": base, "New": better}, n_boot=200).splitlines()
    assert rows[2].endswith("| Δ ndcg@10 | Δ per run [t interval] |")
    sft = (1 + 1 / math.log2(5)) / 4
    per_run = [0.5 - sft, (2 + 1 / math.log2(5)) / 4 - sft]
    lo, hi = seed_t_interval(per_run)
    expected = f"{per_run[0]:+.4f}, {per_run[1]:+.4f} [{lo:+.4f}, {hi:+.4f}] |"
    assert rows[-1].endswith(expected)
    assert rows[-2].endswith("| — | — |")
    # one run per group, or unequal groups: no per-run column
    single = compare_groups({"SFT": base[:1], "New": better[:1]}, n_boot=200)
    unequal = compare_groups({"SFT": base, "New": better[:1]}, n_boot=200)
    assert "per run" not in single and "per run" not in unequal
    # ...and a note that a single run's interval leaves out training noise
    assert "Note: one run of SFT, New:" in single
    assert "Note: one run of New:" in unequal
    assert "Note" not in "\n".join(rows)


def test_compare_groups_rejects_other_users(tmp_path):
    a = _write_run(tmp_path / "a", _ranked_with_target_at([0, 1, 2, 3]))
    b = _write_run(tmp_path / "b", _ranked_with_target_at([0, 1, 2, 3]), users=("a", "b", "c", "e"))
    with pytest.raises(ValueError, match="other users"):
        compare_groups({"A": [a], "B": [b]})


def test_users_n_takes_the_first_rows_of_a_whole_split_evaluation(tmp_path):
    """A classic model ranks every user; a language model's exact ranking covers the first N."""
    whole = _write_run(tmp_path / "cf", _ranked_with_target_at([0, 0, 5, -1]))
    subset = tmp_path / "lm"
    subset.mkdir()
    examples = [Example(u, (1, 2), t) for u, t in zip("ab", TARGETS, strict=False)]
    ranked = torch.tensor(_ranked_with_target_at([1, 0, 0, 0])[:2])
    (subset / "eval_test_exact_first2.rankings.tsv").write_text(rankings_tsv(examples, ranked))
    comparison = compare_runs({"LM": [subset], "CF": [whole]}, users=2, n_boot=200)
    cf = comparison.groups[1]
    assert comparison.n_users == 2 and cf.values["hit@10"] == [1.0]
    assert cf.delta[0] == pytest.approx((1 - 1 / math.log2(3)) / 2)  # user a: rank 1 -> 0
    with pytest.raises(ValueError, match="4 users, fewer than --users 5"):
        compare_runs({"CF": [whole]}, users=5)
    with pytest.raises(FileNotFoundError, match="first3"):
        compare_runs({"LM": [subset]}, users=3)  # no whole-split file to fall back on


def test_users_n_takes_the_first_rows_of_the_smallest_larger_subset(tmp_path):
    """An exact ranking of the first 4 (or 3) users also answers --users 2; a smaller one not."""
    lm = tmp_path / "lm"
    lm.mkdir()
    examples = [Example(u, (1, 2), t) for u, t in zip("abcd", TARGETS, strict=True)]
    ranked = torch.tensor(_ranked_with_target_at([1, 0, 5, -1]))
    for n in (1, 3, 4):
        rows = ranked.clone()
        rows[:, 0] += 1000 * n  # tells the files apart by user a's first item
        name = f"eval_test_exact_first{n}.rankings.tsv"
        (lm / name).write_text(rankings_tsv(examples[:n], rows[:n]))
    (lm / "eval_test_exact_first30.rankings.tsv.bak").write_text("not a rankings file")
    loaded = _load_rankings(lm, "test", "exact", 2, 0)
    assert loaded.users == ("a", "b") and loaded.ranked[0, 0] == 3100
    comparison = compare_runs({"LM": [lm]}, users=2, n_boot=50)
    assert comparison.n_users == 2
    with pytest.raises(FileNotFoundError, match="first5"):
        compare_runs({"LM": [lm]}, users=5)


def _cli_runs(tmp_path: Path) -> tuple[Path, Path]:
    """Run a hits every user at its rank 0..3; run b moves user a from rank 0 to rank 1."""
    a = _write_run(tmp_path / "a", _ranked_with_target_at([0, 1, 2, 3]))
    b = _write_run(tmp_path / "b", _ranked_with_target_at([1, 1, 2, 3]))
    return a, b


def test_compare_cli(tmp_path, capsys):
    a, b = _cli_runs(tmp_path)
    out = tmp_path / "table.md"
    args = ["compare", "--group", "A", str(a), "--group", "B", str(b), "--out", str(out)]
    assert main(args + ["--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    assert out.read_text() == printed and "| B | 1 |" in printed
    assert main(args) == 2  # --out exists: no silent overwrite
    assert "exists" in capsys.readouterr().err
    assert (
        "| B | 1 | 1.0000 | " in printed and "±" not in printed.splitlines()[-1]
    )  # one run: no std
    assert main(["compare", "--group", "A"]) == 2  # a method without runs
    assert main(["compare", "--users", "5", "--group", "A", str(a)]) == 2  # 4 users ranked
    assert "eval_test_exact.rankings.tsv: 4 users, fewer than --users 5" in capsys.readouterr().err


def test_compare_cli_plot(tmp_path, capsys):
    a, b = _cli_runs(tmp_path)
    plot = tmp_path / "compare.png"
    args = ["compare", "--group", "A", str(a), "--group", "B", str(b), "--plot", str(plot)]
    assert main(args + ["--bootstrap", "200"]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(args) == 2  # the plot exists: no silent overwrite
    assert "compare.png exists" in capsys.readouterr().err


def test_compare_cli_validation_curves(tmp_path, capsys):
    a, b = _cli_runs(tmp_path)
    log = [
        {"step": 10, "loss": 2.0, "epoch": 0.5},  # a training record: not a curve point
        {"step": 20, "eval_ndcg@10": 0.05, "eval_hit@10": 0.1, "epoch": 1.0},
        {"step": 40, "eval_ndcg@10": 0.07, "eval_hit@10": 0.2, "epoch": 2.0},
    ]
    (a / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    assert validation_curve(a / "metrics.jsonl", "ndcg@10") == ([1.0, 2.0], [0.05, 0.07])
    curves = tmp_path / "curves.png"
    args = ["compare", "--bootstrap", "200", "--group", "A", str(a), "--group", "B", str(b)]
    assert main(args + ["--curves", str(curves)]) == 2  # b has no training log
    assert f"{b / 'metrics.jsonl'}: no training log" in capsys.readouterr().err
    (b / "metrics.jsonl").write_text(json.dumps(log[0]) + "\n")
    assert main(args + ["--curves", str(curves)]) == 2
    assert "no validation ndcg@10 logged" in capsys.readouterr().err
    (b / "metrics.jsonl").write_text((a / "metrics.jsonl").read_text())
    assert main(args + ["--curves", str(curves)]) == 0
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(args + ["--curves", str(curves)]) == 2  # no silent overwrite


def test_compare_runs_structured_result(tmp_path):
    base = [_write_run(tmp_path / "s", _ranked_with_target_at([0, 3, -1, -1]))]
    new = [_write_run(tmp_path / "n", _ranked_with_target_at([0, 0, -1, -1]))]
    c = compare_runs({"SFT": base, "New": new}, n_boot=200)
    assert [g.name for g in c.groups] == ["SFT", "New"] and c.n_users == 4
    assert c.groups[0].delta is None and not c.by_seed
    mean, lo, hi = c.groups[1].delta
    assert mean == pytest.approx((1 - 1 / math.log2(5)) / 4)  # user b: rank 3 -> rank 0
    assert lo <= mean <= hi
    assert c.groups[1].values["hit@5"] == [0.5]
