"""A run's results without its weights: what ``ilrec compare`` and the benchmark plots read.

A run folder holds checkpoints (megabytes to gigabytes); its results are a few small files —
the resolved config, the training log and summary, every ``ilrec evaluate`` summary, and the
per-user rankings. ``archive_run`` copies those into a folder small enough to commit or share
(rankings truncated to the top ``top`` items and gzipped), which ``compare`` reads like the run.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import yaml

from ilrec.data.io import atomic_write_bytes, atomic_write_text, refuse_overwrite
from ilrec.evaluation.result_files import RANKINGS_SUFFIX, read_rankings

__all__ = ["archive_run", "archive_runs"]

RESULT_SUFFIXES = (".json", ".jsonl", ".yaml", ".md")
MAX_RESULT_BYTES = 5_000_000  # a larger top-level file is not a result file


SOURCE_ROOT = Path(__file__).resolve().parents[3]  # the checkout ilrec runs from


def _without_machine_paths(text: str, root: Path) -> str:
    """``text`` with this machine's folders written as ``{root}`` (the study's root folder, as
    in the study files) and ``{ilrec}`` (the source checkout), so an archive names no
    machine."""
    return text.replace(str(root), "{root}").replace(str(SOURCE_ROOT), "{ilrec}")


def _yaml_without_machine_paths(text: str, root: Path) -> str:
    """A YAML file's text with the machine's folders replaced in its string values, dumped
    again so that the placeholders are quoted (``output_dir: '{root}/sft_s0'``): a bare
    ``{root}/...`` would read back as a YAML mapping, not as a path."""

    def replace(value: Any) -> Any:
        if isinstance(value, str):
            return _without_machine_paths(value, root)
        if isinstance(value, dict):
            return {key: replace(item) for key, item in value.items()}
        if isinstance(value, list):
            return [replace(item) for item in value]
        return value

    return yaml.safe_dump(replace(yaml.safe_load(text)), sort_keys=False, allow_unicode=True)


def _study_root(run: Path, root: Path | None) -> Path:
    """The folder written as ``{root}``: ``root`` (which must hold the run) or the run's
    parent."""
    if root is None:
        return run.resolve().parent
    root = Path(root).resolve()
    if not run.resolve().is_relative_to(root):
        raise ValueError(f"{run}: not inside the root folder {root}")
    return root


def _truncated_rankings(path: Path, top: int) -> bytes:
    """The rankings file with each user's list cut to ``top`` items (metrics@k for k <= top
    are unchanged), gzipped (mtime 0, so the same rankings give the same bytes)."""
    return gzip.compress(read_rankings(path).to_tsv(top).encode("utf-8"), mtime=0)


def archive_run(
    run: Path, dest: Path, top: int = 10, force: bool = False, root: Path | None = None
) -> list[Path]:
    """Copy ``run``'s result files into ``dest``: top-level ``*.json``, ``*.jsonl``, ``*.yaml``
    and ``*.md`` files (not checkpoints or tokenizers), and every ``*.rankings.tsv`` as
    ``*.rankings.tsv.gz`` cut to the top ``top`` items. Paths under ``root`` (default: the
    run's parent; give the study root when the run names its siblings' folders, e.g. a CRR
    reward run) are written as ``{root}``. Refuses to overwrite unless ``force``. Returns the
    written paths."""
    run, dest = Path(run), Path(dest)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    study_root = _study_root(run, root)
    files = sorted(
        p
        for p in run.iterdir()
        if p.is_file() and p.suffix in RESULT_SUFFIXES and p.stat().st_size <= MAX_RESULT_BYTES
    )
    rankings = sorted(run.glob(f"*{RANKINGS_SUFFIX}"))
    if not files and not rankings:
        raise FileNotFoundError(f"{run}: no result files (config.yaml, eval_*.json, ...)")
    names = [p.name for p in files] + [p.name + ".gz" for p in rankings]
    dest.mkdir(parents=True, exist_ok=True)
    refuse_overwrite(dest, names, force)
    written = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".yaml":
            text = _yaml_without_machine_paths(text, study_root)
        else:
            text = _without_machine_paths(text, study_root)
        written.append(atomic_write_text(dest / path.name, text))
    for path in rankings:
        written.append(
            atomic_write_bytes(dest / (path.name + ".gz"), _truncated_rankings(path, top))
        )
    return written


def archive_runs(
    runs: list[Path], out: Path, top: int = 10, force: bool = False, root: Path | None = None
) -> dict[Path, list[Path]]:
    """``archive_run`` for each run into ``out/<run folder name>``; two runs with one name
    are an error (their archives would collide)."""
    names = [Path(r).name for r in runs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"runs share the folder name(s) {clashes}; archive them to separate --out")
    return {Path(r): archive_run(Path(r), Path(out) / Path(r).name, top, force, root) for r in runs}
