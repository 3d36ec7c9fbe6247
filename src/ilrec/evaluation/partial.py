"""Resumable evaluation: the rankings computed so far, kept next to the results.

``ilrec evaluate`` saves the rows it has ranked to ``<stem>.partial.pt`` at most every
``SAVE_EVERY_SECONDS`` and removes the file once the results are written, so an evaluation killed
after an hour of exact ranking continues where it stopped when the same command runs again.
Rows are reused only when everything that decides them matches: split, mode, beam width,
rationale length, the users and their targets, and the model's files (size and mtime).
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

import torch

from ilrec.data.io import atomic_write_bytes

log = logging.getLogger(__name__)

SAVE_EVERY_SECONDS = 30.0
"""The least time between two saves: a save costs a few ms, losing 30 s of ranking is cheap."""


def model_signature(run_dir: Path) -> list[list]:
    """``[name, size, mtime_ns]`` of every file of the run's saved model: it changes when the
    model is trained again in place."""
    model_dir = Path(run_dir) / "model"
    return [
        [str(f.relative_to(model_dir)), f.stat().st_size, f.stat().st_mtime_ns]
        for f in sorted(model_dir.rglob("*"))
        if f.is_file()
    ]


class PartialRankings:
    """The saved prefix of an evaluation's ranking rows (one row per user, in order).

    Args:
        path: the ``.partial.pt`` file.
        key: what must match for saved rows to be reused (JSON-like values).
        every_seconds: the least time between two saves, ``SAVE_EVERY_SECONDS`` if None (the
            last rows are always saved by the caller writing the results).
        write: False on the ranks of a distributed evaluation other than the main one (they
            read the saved rows but leave the file to the main rank).
    """

    def __init__(
        self, path: Path, key: dict, every_seconds: float | None = None, write: bool = True
    ):
        self.path, self.key = Path(path), key
        self.every_seconds = SAVE_EVERY_SECONDS if every_seconds is None else every_seconds
        self.write = write
        self._last_save = time.monotonic()

    def load(self) -> torch.Tensor | None:
        """The saved rows, or None (no file, an unreadable one, or another evaluation's)."""
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, weights_only=True)
            rows, key = state["ranked"], state["key"]
        except Exception as e:  # a truncated or foreign file: start over, say so
            log.warning("%s: unreadable (%s); ranking every user again", self.path, e)
            return None
        if key != self.key:
            changed = sorted(k for k in self.key if key.get(k) != self.key[k])
            log.warning(
                "%s: saved for a different %s; ranking every user again", self.path, changed
            )
            return None
        print(f"resuming from {self.path}: {len(rows)} users already ranked", flush=True)
        return rows

    def save(self, blocks: list[torch.Tensor]) -> None:
        """Save the rows of ``blocks`` (concatenated in order) if ``every_seconds`` have passed
        since the last save."""
        if not self.write or time.monotonic() - self._last_save < self.every_seconds:
            return
        buffer = io.BytesIO()
        torch.save({"key": self.key, "ranked": torch.cat(blocks)}, buffer)
        atomic_write_bytes(self.path, buffer.getvalue())
        self._last_save = time.monotonic()

    def remove(self) -> None:
        if self.write:
            self.path.unlink(missing_ok=True)
