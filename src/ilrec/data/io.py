"""Small file helpers shared by the data tools: atomic writes, transparent gzip reading and a
guard against overwriting an existing dataset.

Atomic writes go to a temporary file in the destination directory and are moved into place with
``os.replace``, so a reader (or a crashed run) never leaves a half-written file behind.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

GZIP_MAGIC = b"\x1f\x8b"

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "is_gzip",
    "open_maybe_gzip",
    "refuse_overwrite",
]


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same directory + rename).

    Args:
        path: destination file; its parent directory must exist.
        data: the complete file content.

    Returns:
        The destination path.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _new_file_mode())  # mkstemp's 0600 would hide results from the group
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends on every platform) to ``path`` atomically.

    Args:
        path: destination file; its parent directory must exist.
        text: the complete file content.

    Returns:
        The destination path.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(
    path: str | os.PathLike[str], obj: Any, one_entry_per_line: bool = True
) -> Path:
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept) atomically.

    Args:
        path: destination file; its parent directory must exist.
        obj: a JSON-serialisable object.
        one_entry_per_line: when ``obj`` is a dict, write each top-level entry compactly on its
            own line (readable and diff-friendly for the big LC-Rec id -> value maps); otherwise
            the whole object goes on one line.

    Returns:
        The destination path.
    """
    if one_entry_per_line and isinstance(obj, dict):
        lines = [
            f"{json.dumps(str(k), ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
            for k, v in obj.items()
        ]
        text = "{\n" + ",\n".join(lines) + "\n}\n" if lines else "{}\n"
    else:
        text = json.dumps(obj, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text)


def is_gzip(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts with the gzip magic bytes (the suffix is not trusted)."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def open_maybe_gzip(path: str | os.PathLike[str]) -> TextIO:
    """Open a text file for reading, decompressing it when it is gzip (detected by magic bytes).

    Args:
        path: a plain or gzip-compressed UTF-8 text file, whatever its suffix.

    Returns:
        A text stream (UTF-8; undecodable bytes become U+FFFD rather than aborting a long read).
    """
    if is_gzip(path):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def refuse_overwrite(out_dir: str | os.PathLike[str], names: Iterable[str], force: bool) -> None:
    """Raise unless none of ``out_dir/<name>`` exists or ``force`` is set.

    Args:
        out_dir: the output directory.
        names: file names the caller is about to write.
        force: allow overwriting.

    Raises:
        FileExistsError: naming every existing file and how to overwrite them.
    """
    if force:
        return
    existing = [str(Path(out_dir) / n) for n in names if (Path(out_dir) / n).exists()]
    if existing:
        raise FileExistsError(
            f"refusing to overwrite existing file(s) {', '.join(existing)}; "
            "pass force=True (--force) or choose another output directory"
        )
