"""The study files of benchmarks/studies and their runner (benchmarks/run_study.py): the files
are what make_studies.py writes, every step's config loads with its overrides, and the
runner skips finished steps, resumes started ones and rejects malformed files."""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ilrec.config import config_to_dict, load_config, load_stage_config
from ilrec.models.backbones import SCRATCH_PRESETS

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "benchmarks" / "studies"
RUNNER = ROOT / "benchmarks" / "run_study.py"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


make_studies = _module(STUDIES / "make_studies.py")
run_study = _module(RUNNER)


@pytest.mark.parametrize(
    "name, build",
    [
        ("instruments_sft.yaml", lambda: make_studies.sft_study()),
        ("instruments_alignment.yaml", lambda: make_studies.alignment_study(make_studies.SELECTED)),
        ("instruments_ilrec_sweep.yaml", lambda: make_studies.ilrec_sweep_study()),
        ("games.yaml", lambda: make_studies.games_study(make_studies.SELECTED)),
        (
            "instruments_exact_grouped.yaml",
            lambda: make_studies.grouped_exact_study(make_studies.SELECTED),
        ),
        ("instruments_grouped_seeds.yaml", lambda: make_studies.grouped_seeds_study()),
        ("instruments_depth_grouped.yaml", lambda: make_studies.depth_screen_study()),
        ("instruments_depth_full.yaml", lambda: make_studies.depth_full_study()),
    ],
)
def test_generated_study_files_are_up_to_date(name, build):
    assert yaml.safe_load((STUDIES / name).read_text()) == build()


def _steps(name: str, root: Path) -> list[dict]:
    return run_study.load_study(STUDIES / name, str(root))["steps"]


def _config_and_overrides(args: list[str]) -> tuple[str, list[str]]:
    config = args[args.index("-c") + 1]
    overrides = [a for a in args if "=" in a and not a.startswith("-")]
    return config, overrides


@pytest.mark.parametrize("name", sorted(p.name for p in STUDIES.glob("*.yaml")))
def test_every_study_step_has_a_loadable_config(name, tmp_path, monkeypatch):
    """Each train step's config + overrides builds a Config; each align step's stage config
    builds on top of the run it starts from (a run folder holding only its config)."""
    monkeypatch.chdir(ROOT)
    started: set[str] = set()
    for step in _steps(name, tmp_path):
        args = step["args"]
        assert args[0] in {"train", "align", "evaluate", "train-cf"}, step["name"]
        if args[0] == "train":
            config, overrides = _config_and_overrides(args)
            loaded = load_config(config, overrides)
            out = Path(loaded.train.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(loaded)))
            started.add(str(out))
        elif args[0] == "align":
            config, overrides = _config_and_overrides(args)
            from_run = args[args.index("--from") + 1]
            if from_run not in started:  # started in another study file
                Path(from_run).mkdir(parents=True, exist_ok=True)
                sft = load_config("configs/study/instruments_sft.yaml")
                (Path(from_run) / "config.yaml").write_text(yaml.safe_dump(config_to_dict(sft)))
            loaded = load_stage_config(from_run, config, overrides)
            assert loaded.align.from_run == str(Path(from_run))
        elif args[0] == "evaluate":
            assert Path(args[args.index("--run") + 1]).is_absolute()


def test_size_presets_are_deeper_and_wider_than_small():
    small, deep, wide = (SCRATCH_PRESETS[k] for k in ("small", "deep", "wide"))
    assert deep.num_hidden_layers > small.num_hidden_layers >= 4
    assert deep.hidden_size == small.hidden_size
    assert wide.hidden_size > small.hidden_size
    assert wide.num_hidden_layers == small.num_hidden_layers


def test_the_wide_sft_differs_from_the_deep_one_only_by_its_preset(tmp_path):
    steps = {s["name"]: s["args"] for s in _steps("instruments_depth_full.yaml", tmp_path)}
    deep = _config_and_overrides(steps["full_sft"])
    wide = _config_and_overrides(steps["full_sft_wide"])
    assert deep[0] == wide[0]
    differ = set(deep[1]) ^ set(wide[1])
    assert {o for o in differ if not o.startswith("train.output_dir=")} == {
        "model.preset=deep",
        "model.preset=wide",
    }
    assert {"full_sft_wide_valid_beam", "full_sft_wide_test_beam"} <= set(steps)


def test_the_deep_exact_rows_rank_runs_the_study_trains_after_they_are_trained(tmp_path):
    """Each exact step ranks the first 2,000 test users of a run a train step writes, and comes
    after that step, so one runner can do the whole study in file order."""
    steps = _steps("instruments_depth_full.yaml", tmp_path)
    order = {}
    for i, s in enumerate(steps):
        if s["args"][0] == "train":
            out = next(a for a in s["args"] if a.startswith("train.output_dir="))
            order[out.split("=", 1)[1]] = i
    exact = [(i, s["args"]) for i, s in enumerate(steps) if "exact" in s["args"]]
    assert len(exact) == 6
    for i, args in exact:
        run = args[args.index("--run") + 1]
        assert order[run] < i
        assert args[args.index("--split") + 1] == "test"
        assert args[args.index("--users") + 1] == "2000"


def _write_study(path: Path, root: Path, steps: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({"root": str(root), "steps": steps}))
    return path


def _dry_run(study: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, str(RUNNER), str(study), "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def test_runner_skips_finished_steps_and_resumes_started_ones(tmp_path):
    root = tmp_path / "runs"
    finished, started, fresh = root / "a", root / "b", root / "c"
    finished.mkdir(parents=True)
    (finished / "train_summary.json").write_text("{}")
    (started / "checkpoint-10").mkdir(parents=True)
    (started / "config.yaml").write_text("{}")

    def train(folder: Path) -> dict:
        args = ["train", "-c", "x.yaml", f"train.output_dir={{root}}/{folder.name}"]
        return {"name": folder.name, "args": args, "done": f"{folder}/train_summary.json"}

    study = _write_study(tmp_path / "s.yaml", root, [train(finished), train(started), train(fresh)])
    lines = _dry_run(study)
    assert lines[0] == "[done] a"
    assert lines[1].startswith("[run ] b:") and lines[1].endswith("--resume")
    assert lines[2].startswith("[run ] c:") and not lines[2].endswith("--resume")
    assert f"train.output_dir={root}/c" in lines[2]


def test_runner_reads_a_study_regenerated_while_it_runs(tmp_path, monkeypatch):
    root = tmp_path / "runs"

    def evaluate(name: str) -> dict:
        return {"name": name, "args": ["evaluate", name], "done": f"{root}/{name}.done"}

    study = _write_study(tmp_path / "s.yaml", root, [evaluate("a"), evaluate("b")])
    ran = []

    def fake_call(cmd, **kwargs):
        name = cmd[-1]
        ran.append(name)
        (root / f"{name}.done").write_text("")
        if name == "a":  # regenerated while "a" runs: "c" inserted before "b"
            _write_study(study, root, [evaluate("a"), evaluate("c"), evaluate("b")])
        return 0

    monkeypatch.setattr(run_study, "call_step", fake_call)
    monkeypatch.setattr(sys, "argv", ["run_study.py", str(study)])
    assert run_study.main() == 0
    assert ran == ["a", "c", "b"]


@pytest.mark.parametrize("command", ["train", "align", "train-cf"])
def test_a_started_step_is_resumed(tmp_path, command):
    folder = tmp_path / "run"
    args = [command, f"train.output_dir={folder}"]
    if command == "train-cf":
        args = [command, "-c", "configs/cf/sasrec.yaml", "--out", str(folder), "epochs=3"]
    assert not run_study.is_started(args)
    folder.mkdir()
    assert not run_study.is_started(args)
    (folder / "config.yaml").write_text("{}")
    assert run_study.is_started(args)
    assert run_study.command({"args": args})[-1] == "--resume"


@pytest.mark.parametrize(
    "content, message",
    [
        ({"steps": []}, "expected a mapping with 'root' and 'steps'"),
        ({"root": "r", "steps": [{"name": "a", "args": []}]}, "steps[0] lacks ['done']"),
        (
            {"root": "r", "steps": [{"name": "a", "args": [], "done": "x"}] * 2},
            "steps[1]: duplicate name 'a'",
        ),
    ],
)
def test_runner_rejects_a_malformed_study_by_name(tmp_path, content, message):
    study = tmp_path / "bad.yaml"
    study.write_text(yaml.safe_dump(content))
    with pytest.raises(SystemExit, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_study.load_study(study)


def _rankings(path: Path, ranked: list[list[int]], targets: list[int]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    lines = ["user\ttarget\tranked"]
    lines += [
        f"u{i}\t{t}\t{' '.join(map(str, r))}"
        for i, (t, r) in enumerate(zip(targets, ranked, strict=True))
    ]
    (path / "eval_valid_beam.rankings.tsv").write_text("\n".join(lines) + "\n")


def test_sweep_table_gives_paired_differences_to_sft(tmp_path):
    plot_sweep = _module(ROOT / "benchmarks" / "plot_sweep.py")
    targets = [1, 2, 3, 4]
    miss = list(range(10, 20))
    # SFT: user 0 at rank 0 (NDCG 1), the rest missed; ILRec centre: users 0 and 1 at rank 0
    _rankings(tmp_path / "sft", [[1, *miss[1:]], miss, miss, miss], targets)
    _rankings(tmp_path / "ilrec_center", [[1, *miss[1:]], [2, *miss[1:]], miss, miss], targets)
    names = plot_sweep.sweep_points()
    points, missing, users = plot_sweep.measure(tmp_path, "valid", "beam", "ndcg@10", 200, names)
    assert users == 4 and set(points) == {"SFT", "center"}
    assert points["SFT"].value == pytest.approx(0.25)
    assert points["center"].value == pytest.approx(0.5)
    assert points["center"].delta == pytest.approx(0.25)
    assert points["center"].low <= 0.25 <= points["center"].high
    assert "center" not in missing and "k2" in missing
    text = plot_sweep.table(points, missing, "ndcg@10", users)
    assert "| center | 0.5000 | 0.5000 | +0.2500 [" in text
    assert plot_sweep.figure(points, "ndcg@10", tmp_path / "sweep.png").is_file()
    # two points of the β series (centre and β 0.01) draw its panel, on a log axis
    _rankings(tmp_path / "ilrec_beta0.01", [miss, miss, miss, miss], targets)
    points, _, _ = plot_sweep.measure(tmp_path, "valid", "beam", "ndcg@10", 200, names)
    assert points["beta0.01"].delta == pytest.approx(-0.25)
    fig = plot_sweep.draw(points, "ndcg@10")
    beta_panel = next(ax for ax in fig.axes if ax.get_title().startswith("β"))
    assert beta_panel.get_xscale() == "log"
    assert {ax.get_xscale() for ax in fig.axes if ax is not beta_panel} == {"linear"}
    plot_sweep.pyplot().close(fig)
    (tmp_path / "ilrec_beta0.01" / "eval_valid_beam.rankings.tsv").unlink()
    # an archived point (gzipped rankings) reads the same
    plain = tmp_path / "ilrec_center" / "eval_valid_beam.rankings.tsv"
    plain.with_name(plain.name + ".gz").write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    again, _, _ = plot_sweep.measure(tmp_path, "valid", "beam", "ndcg@10", 200, ["center"])
    assert again["center"].delta == pytest.approx(0.25)
    # a screen of a few points lists only those as missing
    _, missing, _ = plot_sweep.measure(tmp_path, "valid", "beam", "ndcg@10", 200, ["center", "k4"])
    assert missing == ["k4"]


def _candidate_eval(run: Path, stem: str, rows: int, hit: float) -> None:
    run.mkdir(parents=True, exist_ok=True)
    record = {
        "users": rows,
        "protocol": "rows",
        "candidates": 20,
        "metrics": {"model (ranking)": {"hit@1": hit}, "popularity": {"hit@1": 0.25}},
        "generation": {
            "exact": {"hit@1": hit / 2, "valid": 0.5},
            "substring": {"hit@1": hit / 2, "valid": 0.6},
        },
    }
    (run / f"{stem}.json").write_text(json.dumps(record))


def test_candidate_chart_reads_each_datasets_rows_and_refuses_unpaired_methods(tmp_path):
    plot = _module(ROOT / "benchmarks" / "plot_candidates.py")
    _candidate_eval(tmp_path / "sft", "eval_test_candidates_first50", 50, 0.3)
    _candidate_eval(tmp_path / "ilrec", "eval_test_candidates_first50", 50, 0.4)
    _candidate_eval(tmp_path / "seed1", "eval_test_candidates_first50", 50, 0.2)
    names, records = plot.read_dataset(
        ["users=50", f"SFT={tmp_path / 'sft'},{tmp_path / 'seed1'}", f"ILRec={tmp_path / 'ilrec'}"],
        "test",
        0,
    )
    assert names == ["SFT", "ILRec"] and [len(r) for r in records] == [2, 1]
    assert plot.cell([plot.SERIES["ranking HR@1"](r) for r in records[0]]) == "0.2500 ± 0.0707"
    # without users=50 the full evaluation is read, and there is none
    with pytest.raises(SystemExit, match="eval_test_candidates.json: missing"):
        plot.read_dataset([f"SFT={tmp_path / 'sft'}"], "test", 0)
    _candidate_eval(tmp_path / "dpo", "eval_test_candidates_first50", 40, 0.1)
    with pytest.raises(SystemExit, match="different rows"):
        plot.read_dataset(
            ["users=50", f"SFT={tmp_path / 'sft'}", f"DPO={tmp_path / 'dpo'}"], "test", 0
        )
    with pytest.raises(SystemExit, match="METHOD=RUN"):
        plot.read_dataset([str(tmp_path / "sft")], "test", 0)


def test_candidate_chart_writes_the_figure_and_its_table(tmp_path, monkeypatch):
    plot = _module(ROOT / "benchmarks" / "plot_candidates.py")
    _candidate_eval(tmp_path / "sft", "eval_test_candidates", 50, 0.3)
    _candidate_eval(tmp_path / "ilrec", "eval_test_candidates", 50, 0.4)
    out = tmp_path / "figure6.png"
    argv = ["plot_candidates.py", "--out", str(out), "--dataset", "Toy"]
    argv += [f"SFT={tmp_path / 'sft'}", f"ILRec={tmp_path / 'ilrec'}"]
    monkeypatch.setattr(sys, "argv", argv)
    plot.main()
    assert out.stat().st_size > 0
    table = out.with_suffix(".md").read_text()
    assert "| SFT | 1 | 0.3000 | 0.1500 | 0.1500 | 0.5000 | 0.6000 |" in table
    assert "| ILRec | 1 | 0.4000 |" in table
    assert "Most popular candidate first: HR@1 0.2500; random: 0.0500." in table


def _evaluate_steps(root: Path, names, **extra) -> list[dict]:
    return [
        {"name": n, "args": ["evaluate", n], "done": f"{root}/{n}.done", **extra.get(n, {})}
        for n in names
    ]


def _run_fake(tmp_path, monkeypatch, steps, options=(), on_sleep=None) -> list[str]:
    """Run the runner on ``steps`` with a fake command (writes the step's done file) and a
    fake sleep (``on_sleep``: what the rest of the world does meanwhile); the steps run."""
    root = tmp_path / "runs"
    study = _write_study(tmp_path / "s.yaml", root, steps)
    ran, sleeps = [], []

    def fake_call(cmd, **kwargs):
        ran.append(cmd[-1])
        (root / f"{cmd[-1]}.done").write_text("")
        return 0

    def fake_sleep(seconds):
        sleeps.append(seconds)
        assert on_sleep is not None and len(sleeps) < 5, "the runner kept waiting"
        on_sleep()

    monkeypatch.setattr(run_study, "call_step", fake_call)
    monkeypatch.setattr(run_study.time, "sleep", fake_sleep)
    monkeypatch.setattr(sys, "argv", ["run_study.py", str(study), *options])
    assert run_study.main() == 0
    return ran


def test_runners_with_disjoint_step_patterns_share_one_study(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    steps = _evaluate_steps(root, ["cand_a", "title_a", "cand_b"])
    ran = _run_fake(tmp_path, monkeypatch, steps, ["--steps", "cand_*"])
    assert ran == ["cand_a", "cand_b"]
    with pytest.raises(SystemExit, match="no step matches"):
        _run_fake(tmp_path, monkeypatch, steps, ["--steps", "nothing*"])


@contextlib.contextmanager
def _held_by_another_runner(root: Path, name: str):
    """Step ``name`` claimed by a live process; yields what that runner does when it finishes
    (writes the step's done file, releases the claim)."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (root / "logs" / f"{name}.claim").write_text(str(other.pid))

    def finishes():
        (root / f"{name}.done").write_text("")
        (root / "logs" / f"{name}.claim").unlink()

    try:
        yield finishes
    finally:
        other.kill()
        other.wait()


def test_a_claim_is_exclusive_until_released(tmp_path):
    assert run_study.claim(tmp_path, "a")
    assert (tmp_path / "a.claim").read_text() == str(os.getpid())
    assert not run_study.claim(tmp_path, "a")  # held by a live runner (this one)
    run_study.release(tmp_path, "a")
    assert run_study.claim(tmp_path, "a")


def test_runners_sharing_a_study_pass_over_a_step_another_runner_holds(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    with _held_by_another_runner(root, "a") as finishes:
        ran = _run_fake(tmp_path, monkeypatch, _evaluate_steps(root, "ab"), on_sleep=finishes)
    assert ran == ["b"]


def test_the_claim_of_a_runner_that_died_is_taken_over(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    (root / "logs").mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (root / "logs" / "a.claim").write_text(str(dead.pid))
    ran = _run_fake(tmp_path, monkeypatch, _evaluate_steps(root, "ab"))
    assert ran == ["a", "b"]
    assert not (root / "logs" / "a.claim").exists()  # released after the step


def test_a_step_waiting_for_its_after_file_is_passed_over(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    prerequisite = tmp_path / "elsewhere" / "final.json"
    steps = _evaluate_steps(root, "ab", a={"after": str(prerequisite)})

    def another_study_writes_it():
        prerequisite.parent.mkdir(parents=True, exist_ok=True)
        prerequisite.write_text("{}")

    ran = _run_fake(tmp_path, monkeypatch, steps, on_sleep=another_study_writes_it)
    assert ran == ["b", "a"]


def test_a_step_after_several_files_waits_for_all_of_them(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    first, second = tmp_path / "sft.json", tmp_path / "oracle.json"
    steps = _evaluate_steps(root, "a", a={"after": [str(first), str(second)]})
    writes = [first, second]  # one more file appears at each wait

    def one_more_file_appears():
        writes.pop(0).write_text("{}")

    ran = _run_fake(tmp_path, monkeypatch, steps, on_sleep=one_more_file_appears)
    assert ran == ["a"]
    assert not writes  # it waited through both, not only the first


def test_a_step_naming_a_run_another_runner_trains_waits_for_it(tmp_path, monkeypatch):
    """Sharing one study, the second runner must not evaluate (or align from) a run the first
    one is still training: it runs an independent step, then the evaluation once done."""
    root = tmp_path / "runs"
    steps = [
        {"name": "sft", "args": ["train", f"train.output_dir={root}/sft", "sft"]},
        {"name": "eval_sft", "args": ["evaluate", "--run", f"{root}/sft", "eval_sft"]},
        {"name": "dpo", "args": ["align", "--from", f"{root}/sft", "dpo"]},
        {"name": "cf", "args": ["train-cf", "--out", f"{root}/cf", "cf"]},
    ]
    for s in steps:
        s["done"] = f"{root}/{s['name']}.done"
    with _held_by_another_runner(root, "sft") as finishes:
        ran = _run_fake(tmp_path, monkeypatch, steps, on_sleep=finishes)
    assert ran == ["cf", "eval_sft", "dpo"]
    assert run_study.written_folder(steps[3]["args"]) == root / "cf"


CHILD = """
import signal, sys, time
from pathlib import Path
out, got = Path(sys.argv[1]), []
signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
out.write_text("0")
deadline = time.time() + 30
while not got and time.time() < deadline:
    time.sleep(0.01)
time.sleep(0.5)  # a second copy of the signal would arrive meanwhile
out.write_text(str(len(got)))
sys.exit(128 + signal.SIGTERM)
"""


def test_a_signal_to_the_runner_reaches_its_step_once_and_stops_the_study(tmp_path):
    # the runner in its own process, sent SIGTERM as `kill -- -PGID` would send it to the
    # runner's process group: the step (in its own session) gets it once, by forwarding
    count = tmp_path / "signals"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    runner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, runpy; sys.argv = ['run_study']; "
            f"m = runpy.run_path({str(RUNNER)!r}); "
            f"sys.exit(m['call_step']([sys.executable, {str(script)!r}, {str(count)!r}]))",
        ],
        start_new_session=True,
    )
    for _ in range(200):
        if count.exists() and count.read_text() == "0":
            break
        time.sleep(0.05)
    os.killpg(runner.pid, signal.SIGTERM)
    assert runner.wait(timeout=30) == 128 + signal.SIGTERM
    assert count.read_text() == "1"


def test_the_runner_starts_no_step_after_a_stopped_one(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    study = _write_study(tmp_path / "s.yaml", root, _evaluate_steps(root, ["a", "b"]))
    ran = []

    def stopped_call(cmd, **kwargs):
        ran.append(cmd[-1])
        run_study.stop_requested.append(signal.SIGTERM)
        return 128 + signal.SIGTERM

    monkeypatch.setattr(run_study, "call_step", stopped_call)
    monkeypatch.setattr(run_study, "stop_requested", [])
    monkeypatch.setattr(sys, "argv", ["run_study.py", str(study)])
    assert run_study.main() == 128 + signal.SIGTERM
    assert ran == ["a"]
    assert not (root / "logs" / "a.claim").exists()  # released for the next runner
