"""Tests of the file helpers: atomic writes and transparent gzip reading."""

from __future__ import annotations

import gzip
import os

import pytest

from ilrec.data.io import atomic_write_json, atomic_write_text, open_maybe_gzip, refuse_overwrite


def test_atomic_write_leaves_only_the_file_with_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "one")
        atomic_write_text(path, "two")
    finally:
        os.umask(old)
    assert path.read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no temporary left behind
    assert path.stat().st_mode & 0o777 == 0o644  # as open(path, "w") would (not mkstemp's 0600)


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = atomic_write_json(tmp_path / "a.json", {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert path.read_text().strip().startswith("{") and "ok" in path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_open_maybe_gzip_trusts_the_bytes_not_the_suffix(tmp_path):
    (tmp_path / "plain.gz").write_text("plain\n")
    (tmp_path / "packed.txt").write_bytes(gzip.compress(b"packed\n"))
    assert open_maybe_gzip(tmp_path / "plain.gz").read() == "plain\n"
    assert open_maybe_gzip(tmp_path / "packed.txt").read() == "packed\n"


def test_refuse_overwrite_names_the_file(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    refuse_overwrite(tmp_path, ["y.json"], force=False)
    refuse_overwrite(tmp_path, ["x.json"], force=True)
    with pytest.raises(FileExistsError, match="x.json"):
        refuse_overwrite(tmp_path, ["x.json", "y.json"], force=False)
