"""Tests of ``ilrec archive``: a run's results without its weights, read back by compare."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
import yaml

from ilrec.cli import main
from ilrec.data.split import Example
from ilrec.evaluation.archive import archive_run, archive_runs
from ilrec.evaluation.compare import compare_runs
from ilrec.evaluation.result_files import rankings_tsv, read_rankings

STEM = "eval_test_exact"


def _run(folder, targets=(3, 40, 12), ranked=None):
    """A run folder with weights, a tokenizer folder, results and 30-item rankings."""
    folder.mkdir(parents=True)
    (folder / "model").mkdir()
    (folder / "model" / "model.safetensors").write_bytes(b"\0" * 100)
    (folder / "last.pt").write_bytes(b"\0" * 100)
    (folder / "config.yaml").write_text(f"train:\n  seed: 0\n  output_dir: {folder.resolve()}\n")
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (folder / f"{STEM}.json").write_text(json.dumps({"metrics": {"ndcg@10": 0.5}}))
    (folder / f"{STEM}.md").write_text("| table |\n")
    examples = [Example(f"u{i}", (1,), t) for i, t in enumerate(targets)]
    if ranked is None:  # user i's target at rank 0, 7 and 20
        ranked = [list(range(100, 130)) for _ in targets]
        for row, t, rank in zip(ranked, targets, (0, 7, 20), strict=True):
            row[rank] = t
    (folder / f"{STEM}.rankings.tsv").write_text(rankings_tsv(examples, torch.tensor(ranked)))
    return folder


def test_archive_keeps_results_and_drops_weights(tmp_path):
    run = _run(tmp_path / "runs" / "sft_s0")
    written = archive_run(run, tmp_path / "archive" / "sft_s0")
    assert sorted(p.name for p in written) == [
        "config.yaml",
        f"{STEM}.json",
        f"{STEM}.md",
        f"{STEM}.rankings.tsv.gz",
        "metrics.jsonl",
    ]
    archived = tmp_path / "archive" / "sft_s0"
    # the machine's folders are written as in the study files, quoted so the file stays YAML
    assert (
        archived / "config.yaml"
    ).read_text() == "train:\n  seed: 0\n  output_dir: '{root}/sft_s0'\n"
    lines = gzip.decompress((archived / f"{STEM}.rankings.tsv.gz").read_bytes()).decode()
    assert [len(line.split("\t")[2].split()) for line in lines.splitlines()[1:]] == [10] * 3


def test_archive_writes_the_given_study_root_as_root(tmp_path):
    run = _run(tmp_path / "runs" / "depth" / "ilrec_k2")
    # the run names a sibling of its own folder's parent: the CRR reward
    config = run / "config.yaml"
    config.write_text(
        config.read_text() + f"objective:\n  cf_run: {tmp_path.resolve()}/runs/cf/sasrec\n"
    )
    archive_run(run, tmp_path / "archive" / "ilrec_k2", root=tmp_path / "runs")
    text = (tmp_path / "archive" / "ilrec_k2" / "config.yaml").read_text()
    assert str(tmp_path) not in text
    archived = yaml.safe_load(text)  # still YAML: the placeholders are quoted strings
    assert archived["train"]["output_dir"] == "{root}/depth/ilrec_k2"
    assert archived["objective"]["cf_run"] == "{root}/cf/sasrec"
    with pytest.raises(ValueError, match="not inside the root folder"):
        archive_run(run, tmp_path / "archive2", root=tmp_path / "elsewhere")


def test_archived_rankings_give_the_same_metrics_at_k_up_to_top(tmp_path):
    run = _run(tmp_path / "runs" / "sft_s0")
    other = _run(tmp_path / "runs" / "ilrec_s0", ranked=[list(range(100, 130))] * 3)
    archive_runs([run, other], tmp_path / "archive")
    original = compare_runs({"SFT": [run], "ILRec": [other]}, n_boot=100)
    archived = compare_runs(
        {"SFT": [tmp_path / "archive" / "sft_s0"], "ILRec": [tmp_path / "archive" / "ilrec_s0"]},
        n_boot=100,
    )
    assert original.groups == archived.groups
    # the hand values: SFT hits user 0 at rank 1 and user 1 at rank 8 (the rank-21 hit is cut)
    assert archived.groups[0].values["hit@10"] == [pytest.approx(2 / 3)]
    r = read_rankings(tmp_path / "archive" / "sft_s0" / f"{STEM}.rankings.tsv")
    assert r.targets.tolist() == [3, 40, 12] and r.ranked.shape == (3, 10)


def test_archive_refuses_to_overwrite_and_names_clashing_runs(tmp_path):
    run = _run(tmp_path / "runs" / "sft_s0")
    archive_run(run, tmp_path / "archive")
    with pytest.raises(FileExistsError, match="config.yaml"):
        archive_run(run, tmp_path / "archive")
    assert archive_run(run, tmp_path / "archive", force=True)
    twin = _run(tmp_path / "other" / "sft_s0")
    with pytest.raises(ValueError, match="sft_s0"):
        archive_runs([run, twin], tmp_path / "both")
    with pytest.raises(FileNotFoundError, match="no result files"):
        (tmp_path / "empty").mkdir()
        archive_run(tmp_path / "empty", tmp_path / "x")


def test_archive_cli(tmp_path, capsys):
    run = _run(tmp_path / "runs" / "sft_s0")
    assert main(["archive", str(run), "--out", str(tmp_path / "archive"), "--top", "5"]) == 0
    assert "5 files" in capsys.readouterr().out
    r = read_rankings(tmp_path / "archive" / "sft_s0" / f"{STEM}.rankings.tsv")
    assert r.ranked.shape == (3, 5)
    assert main(["archive", str(run), "--out", str(tmp_path / "archive")]) == 2
    assert "--force" in capsys.readouterr().err


def test_every_committed_archive_config_is_yaml():
    """The archived configs under benchmarks/results are read back as YAML (a bare ``{root}``
    placeholder once made them unreadable)."""
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    configs = sorted(results.rglob("config.yaml"))
    assert configs, f"no archived configs under {results}"
    for path in configs:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(values, dict), path
        for section in values.values():
            if isinstance(section, dict):
                assert not any(isinstance(v, dict) for k, v in section.items() if "dir" in k), path
