"""Run a study: a YAML list of `ilrec` commands, resumable.

    python benchmarks/run_study.py benchmarks/studies/instruments_alignment.yaml [--dry-run]

A study file holds ``root`` (where run folders go; ``{root}`` in any argument is replaced by
it), optional ``env`` (environment variables, e.g. ``OMP_NUM_THREADS: "1"``) and ``steps``:
each step is ``{name, args, done}`` where ``args`` are the arguments of ``ilrec`` and ``done``
the file whose existence marks the step finished; an optional ``after`` names a file (or a
list of files) another step or study writes (e.g. the SFT run this stage starts from): the
step waits until they all exist. A step also waits for every unfinished earlier step that
writes a folder its arguments name (``evaluate --run X`` after the step training ``X``,
``align --from X`` after it). A finished step is never redone; a `train`, `align` or
`train-cf` step whose run folder it already started is continued with ``--resume`` (from its
last checkpoint, or from step 0 if it stopped before the first), and an `evaluate` step
continues from the rows it saved (``ilrec evaluate`` is resumable by itself); a step that
fails stops the study (its output is in ``{root}/logs/<name>.log``). Kill the study at any
time and start it again: it picks up where it stopped. The file is read again before every
step, so a study regenerated while it runs takes effect at its next step. SIGTERM or Ctrl-C
(SIGINT) is passed to the running step, which saves a checkpoint after its current optimizer
step and exits; the runner then starts nothing more (a second signal stops the step at once).
``--steps PATTERN`` (repeatable, shell-style) restricts a runner to the steps whose names
match, so two runners can share one study on disjoint steps, one per core (e.g. ``--steps
'cand_*'`` and ``--steps 'title_*'``)."""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

RESUMABLE = ("train", "align", "train-cf")


def load_study(path: Path, root: str | None = None) -> dict:
    study = yaml.safe_load(path.read_text())
    if not isinstance(study, dict) or "root" not in study or "steps" not in study:
        raise SystemExit(f"{path}: expected a mapping with 'root' and 'steps'")
    root = study["root"] = str(root or study["root"])
    names = set()
    for i, step in enumerate(study["steps"]):
        missing = {"name", "args", "done"} - set(step)
        if missing:
            raise SystemExit(f"{path}: steps[{i}] lacks {sorted(missing)}")
        if step["name"] in names:
            raise SystemExit(f"{path}: steps[{i}]: duplicate name {step['name']!r}")
        names.add(step["name"])
        step["args"] = [str(a).replace("{root}", root) for a in step["args"]]
        step["done"] = str(step["done"]).replace("{root}", root)
        if "after" in step:  # one file or a list of them
            after = step["after"] if isinstance(step["after"], list) else [step["after"]]
            step["after"] = [str(a).replace("{root}", root) for a in after]
    return study


def run_folder(args: list[str]) -> Path | None:
    """The run folder a train/align step writes (``train.output_dir=...``)."""
    for arg in args:
        if arg.startswith("train.output_dir="):
            return Path(arg.split("=", 1)[1])
    return None


def written_folder(args: list[str]) -> Path | None:
    """The folder a step creates: a train/align run folder, or ``train-cf --out``."""
    if args and args[0] == "train-cf" and "--out" in args[:-1]:
        return Path(args[args.index("--out") + 1])
    return run_folder(args)


def named_paths(args: list[str]) -> set[Path]:
    """Every argument, and every ``key=value``'s value, read as a path."""
    return {Path(a.split("=", 1)[1] if "=" in a else a) for a in args}


def unfinished_inputs(step: dict, study_steps: list[dict]) -> list[dict]:
    """The unfinished steps before ``step`` in the study that write a folder ``step`` names
    (the runner of one step must not start on a run another runner is still training)."""
    paths, inputs = named_paths(step["args"][1:]), []
    for earlier in study_steps:
        if earlier["name"] == step["name"]:
            break
        folder = written_folder(earlier["args"])
        if folder in paths and not Path(earlier["done"]).exists():
            inputs.append(earlier)
    return inputs


def is_started(args: list[str]) -> bool:
    """Whether a train/align/train-cf step's run folder holds a started run (``ilrec ...
    --resume`` continues it from its last checkpoint, or from the start when it stopped before
    the first)."""
    folder = written_folder(args)
    return folder is not None and (folder / "config.yaml").exists()


POLL_SECONDS = 30  # how often a runner with nothing it can run looks again


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def claim(logs: Path, name: str) -> bool:
    """Take step ``name`` for this runner by creating ``logs/<name>.claim`` (atomically) with
    this process id; False when a live runner holds it. A dead runner's claim is first moved
    aside (an atomic rename: of two runners taking it over, one wins)."""
    path = logs / f"{name}.claim"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue  # released meanwhile
            if not text.strip().isdigit() or _alive(int(text)):
                return False  # held, or being written by the runner that just took it
            with contextlib.suppress(FileNotFoundError):  # another runner moved it first
                path.rename(path.with_name(f"{path.name}.stale-{os.getpid()}"))
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def release(logs: Path, name: str) -> None:
    (logs / f"{name}.claim").unlink(missing_ok=True)


def selected(study: dict, patterns: list[str] | None) -> list[dict]:
    """The study's steps whose names match one of ``patterns`` (all of them without any)."""
    if not patterns:
        return study["steps"]
    return [s for s in study["steps"] if any(fnmatch.fnmatchcase(s["name"], p) for p in patterns)]


def pending(steps: list[dict]) -> list[dict]:
    """The steps whose ``done`` file does not exist yet, in study order."""
    return [s for s in steps if not Path(s["done"]).exists()]


def is_ready(step: dict, study_steps: list[dict]) -> bool:
    after = all(Path(a).exists() for a in step.get("after", []))
    return after and not unfinished_inputs(step, study_steps)


def command(step: dict) -> list[str]:
    cmd = [sys.executable, "-m", "ilrec.cli", *step["args"]]
    if step["args"][0] in RESUMABLE and is_started(step["args"]):
        cmd.append("--resume")
    return cmd


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
stop_requested: list[int] = []  # the signals received while a step ran


def call_step(cmd: list[str], **popen_kwargs) -> int:
    """Run ``cmd`` to its end in its own session, passing SIGTERM/SIGINT on to it once each.

    Its own session keeps a signal to the runner's process group (``kill -- -PGID``, Ctrl-C)
    from reaching the step twice, once directly and once forwarded (the second would stop
    it before it saves)."""
    child = subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)

    def forward(signum, frame):
        stop_requested.append(signum)
        print(f"[stop] {signal.Signals(signum).name}: passed to the running step", flush=True)
        child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        return child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_step(step: dict, logs: Path, env: dict[str, str]) -> int:
    cmd = command(step)
    print(f"[run ] {step['name']}: {' '.join(cmd[2:])}", flush=True)
    start = time.time()
    with open(logs / f"{step['name']}.log", "a") as log:
        code = call_step(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    print(f"       exit {code} after {time.time() - start:.0f} s", flush=True)
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="print what would run")
    parser.add_argument("--root", help="where run folders go (overrides the study's root)")
    parser.add_argument(
        "--steps", action="append", metavar="PATTERN", help="only steps whose names match"
    )
    args = parser.parse_args()
    study = load_study(args.study, args.root)
    steps = selected(study, args.steps)
    if not steps:
        raise SystemExit(f"{args.study}: no step matches {args.steps}")
    for step in steps:
        if Path(step["done"]).exists():
            print(f"[done] {step['name']}")
        elif args.dry_run:
            print(f"[run ] {step['name']}: {' '.join(command(step)[2:])}")
    if args.dry_run:
        return 0
    root = Path(study["root"])
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(v) for k, v in (study.get("env") or {}).items()}}
    # The file is read again before every step: a study regenerated while it runs (a new
    # selection, a reordering) takes effect at its next step.
    waiting = None
    while todo := pending(selected(study, args.steps)):
        ready = (s for s in todo if is_ready(s, study["steps"]))
        step = next((s for s in ready if claim(logs, s["name"])), None)
        if step is None:
            names = ", ".join(s["name"] for s in todo)
            if names != waiting:
                print(
                    f"[wait] {names}: claimed by another runner, or waiting for files", flush=True
                )
                waiting = names
            time.sleep(POLL_SECONDS)
            study = load_study(args.study, args.root)
            continue
        waiting = None
        try:
            if Path(step["done"]).exists():  # finished by another runner meanwhile
                continue
            code = run_step(step, logs, env)
        finally:
            release(logs, step["name"])
        if stop_requested:
            print(f"[stop] {step['name']}: stopped; run the same command again to resume it")
            return 128 + stop_requested[0]
        if code != 0 or not Path(step["done"]).exists():
            print(f"step {step['name']} failed: see {logs / step['name']}.log", file=sys.stderr)
            return 1
        study = load_study(args.study, args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
