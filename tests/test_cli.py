"""Tests of the ``ilrec`` command line (ilrec.cli): fast help, ``check`` and error reporting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ilrec.cli import build_parser, main
from ilrec.data.dataset import DataError
from toy_data import INDEX, SEQUENCES

ITEMS = {str(i): {"title": f"Item {i}"} for i in range(6)}
STATS = [
    "                   users: 5",
    "                   items: 6",
    "            interactions: 21",
    "            mean_history: 4.2",
    "             max_history: 6",
    "                sparsity: 0.3",
    "       identifier_levels: 3",
    "   identifier_collisions: 2",
    "          has_item_texts: 1",
]
MALFORMED = '{"0": [0, 1, 2],\n "1": [1 2 3]}'


def _write(root: Path, inter: str) -> Path:
    root.mkdir(parents=True)
    (root / "Tiny.inter.json").write_text(inter)
    (root / "Tiny.index.json").write_text(json.dumps(INDEX))
    (root / "Tiny.item.json").write_text(json.dumps(ITEMS))
    return root


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _write(tmp_path / "Tiny", json.dumps(SEQUENCES, indent=2))


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    return _write(tmp_path / "Broken" / "Tiny", MALFORMED)


def _ilrec() -> list[str]:
    script = Path(sys.executable).parent / "ilrec"
    return [str(script)] if script.exists() else [sys.executable, "-m", "ilrec.cli"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


# -- in-process ------------------------------------------------------------------------------
def test_check_prints_statistics(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--data", str(tiny)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{tiny}: Tiny", *STATS]
    assert err == ""


def test_check_without_index(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tiny / "Tiny.index.json").unlink()
    assert main(["check", "--data", str(tiny)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{tiny}: Tiny", *STATS[:6], STATS[8]]


def test_check_broken_folder(broken: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--data", str(broken)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"ilrec check: error: {broken / 'Tiny.inter.json'}: malformed JSON at line 2 column 10: "
        "Expecting ',' delimiter\n"
    )


def test_check_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    assert main(["check", "--data", str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"ilrec check: error: {missing}: not a directory")


def test_verbose_reraises(broken: Path) -> None:
    with pytest.raises(DataError, match="malformed JSON"):
        main(["-v", "check", "--data", str(broken)])


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["check"], ["frobnicate"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "usage: ilrec" in capsys.readouterr().err


def test_parser_subcommands() -> None:
    parser = build_parser()
    args = parser.parse_args(["train", "-c", "x.yaml", "train.lr=0.1", "objective.k=2"])
    assert args.command == "train"
    assert args.config == Path("x.yaml")
    assert args.overrides == ["train.lr=0.1", "objective.k=2"]
    args = parser.parse_args(["evaluate", "--run", "runs/a", "--mode", "exact"])
    assert (args.run, args.split, args.mode, args.beams) == (Path("runs/a"), "test", "exact", 20)


# -- subprocesses ----------------------------------------------------------------------------
def test_parser_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys, ilrec.cli; ilrec.cli.build_parser(); "
        "print('transformers' in sys.modules, 'torch' in sys.modules)"
    )
    result = _run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]


def test_help_subprocess() -> None:
    result = _run([*_ilrec(), "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ilrec")
    for command in ("check", "prepare", "index", "train", "evaluate", "train-cf"):
        assert command in result.stdout


def test_check_subprocess(tiny: Path, broken: Path) -> None:
    # `check` itself must not pull in torch/transformers either
    code = (
        "import sys, ilrec.cli; rc = ilrec.cli.main(sys.argv[1:]); "
        "print('transformers' in sys.modules, 'torch' in sys.modules); sys.exit(rc)"
    )
    result = _run([sys.executable, "-c", code, "check", "--data", str(tiny)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{tiny}: Tiny", *STATS, "False False"]

    result = _run([*_ilrec(), "check", "--data", str(broken)])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"ilrec check: error: {broken / 'Tiny.inter.json'}: malformed JSON at line 2 column 10: "
        "Expecting ',' delimiter\n"
    )


def test_a_run_stopped_by_a_signal_exits_with_the_shells_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    import ilrec.training.run
    from ilrec.training.signals import TrainingStopped

    def stopped(config, resume, overwrite):
        raise TrainingStopped(signal.SIGTERM, 40, "runs/x/checkpoint-40")

    monkeypatch.setattr(ilrec.training.run, "train", stopped)
    assert main(["train", "train.output_dir=runs/x"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert "stopped by SIGTERM after step 40" in err and "runs/x/checkpoint-40" in err
    assert "--resume" in err
