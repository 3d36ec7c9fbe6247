"""The run folder: resolved config, environment (package versions, git commit), logs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("ilrec", "torch", "transformers", "accelerate", "peft", "numpy")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=float) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def git_commit() -> str | None:
    """The commit of the ilrec source tree, with ``-dirty`` when it has local changes."""
    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere): float
    results and timings differ between CPU families (other SIMD kernels)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "git_commit": git_commit(),
        "argv": sys.argv,
    }


def write_environment(run_dir: Path) -> None:
    from ilrec.data.io import atomic_write_json

    atomic_write_json(run_dir / "environment.json", environment())


def require_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, or a clear error when it is not a run folder.

    Args:
        run_dir: a folder written by ``ilrec train`` or ``ilrec align``.

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: ``"<path>: not a run folder (...)"`` when the folder or its
            ``config.yaml`` is missing.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not (run_dir / "config.yaml").is_file():
        what = "no config.yaml" if run_dir.is_dir() else "no such folder"
        raise FileNotFoundError(
            f"{run_dir}: not a run folder ({what}; expected a folder written by "
            "`ilrec train` or `ilrec align`)"
        )
    return run_dir
