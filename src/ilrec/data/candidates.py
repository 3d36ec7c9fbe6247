"""Candidate ranking (S-DPO / LLaRA; paper Figure 6): pick the next item among N candidates.

A candidate file holds one JSON object per line ``{"user", "row", "history", "target",
"candidates"}`` (``row`` optional): the history (oldest first), the target and the N candidate
items, which contain the target once. A dataset's files share a stem (``data.candidates``):

- ``<stem>.train.jsonl``: the training rows;
- ``<stem>.<protocol>.valid.jsonl`` and ``<stem>.<protocol>.test.jsonl``: the evaluation rows
  of a protocol (``rows`` or ``last``, see :mod:`ilrec.data.lastfm`).

``ilrec prepare lastfm`` writes S-DPO's LastFM files; :func:`prepare_candidates` (``ilrec
prepare candidates``) writes the same format for any LC-Rec dataset from its leave-one-out
split, with S-DPO's sampler (:func:`ilrec.data.lastfm.sdpo_candidates`). With
``data.task=candidates`` a run reads these rows instead of the leave-one-out split
(:func:`load_candidate_splits`): training, validation, evaluation and the alignment stages
then see :class:`CandidateExample` rows, whose prompt lists the candidates.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ilrec.data.dataset import DataError, InteractionData, load_dataset
from ilrec.data.io import atomic_write_text, refuse_overwrite
from ilrec.data.lastfm import N_CANDIDATES, PROTOCOLS, load_candidates, sdpo_candidates
from ilrec.data.split import Example, Splits, Window, leave_one_out

__all__ = [
    "CandidateExample",
    "CandidateSplits",
    "CandidatesReport",
    "candidate_path",
    "candidate_stem",
    "load_candidate_splits",
    "prepare_candidates",
    "read_candidate_file",
]

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class CandidateExample(Example):
    """An :class:`~ilrec.data.split.Example` whose answer is one of ``candidates``.

    Attributes:
        candidates: the row's N distinct candidate items, in the file's order (the order of
            the prompt and the tie-break of the ranking); the target is one of them.
    """

    candidates: tuple[int, ...] = ()


@dataclass(frozen=True)
class CandidateSplits(Splits):
    """Splits whose examples are candidate rows.

    ``valid`` / ``test`` hold the protocol's evaluation rows and :meth:`train_prefixes` the
    training rows, so every consumer of :class:`Splits` (SFT, validation, evaluation, the
    alignment stages) works on candidate rows unchanged. ``train_sequences`` (popularity)
    chains each user's training rows: the first row's history, then every row's target (a
    user's complete training sequence when the rows are consecutive prefixes, as both
    ``prepare`` commands write them).
    """

    train_rows: tuple[CandidateExample, ...] = ()

    def train_prefixes(self) -> list[Example]:
        """The training rows, in file order."""
        return list(self.train_rows)

    def train_windows(self) -> list[Window]:
        """None: candidate rows need a text format (no sequence-format windows)."""
        return []


def candidate_path(stem: str | Path, split: str, protocol: str = "rows") -> Path:
    """``<stem>.train.jsonl`` or ``<stem>.<protocol>.<split>.jsonl``."""
    if split not in SPLITS or protocol not in PROTOCOLS:
        raise ValueError(f"need a split in {SPLITS} and a protocol in {PROTOCOLS}")
    name = Path(stem).name
    suffix = "train.jsonl" if split == "train" else f"{protocol}.{split}.jsonl"
    return Path(stem).with_name(f"{name}.{suffix}")


def candidate_stem(configured: str | None, data: InteractionData) -> Path:
    """``data.candidates``, or ``<dataset folder>/<X>.candidates`` when it is not set."""
    return Path(configured) if configured else data.root / f"{data.name}.candidates"


# ------------------------------------------------------------------------------ reading


def _int_list(value: Any) -> list[int] | None:
    if not isinstance(value, list) or any(
        isinstance(v, bool) or not isinstance(v, int) for v in value
    ):
        return None
    return value


def _parse_row(record: dict[str, Any], n_items: int, n: int | None) -> str | CandidateExample:
    """The row as an example, or what is wrong with it."""
    history, candidates = _int_list(record["history"]), _int_list(record["candidates"])
    target, user = record["target"], record["user"]
    if not isinstance(user, (str, int)) or isinstance(user, bool):
        return f"'user' must be a string, got {user!r}"
    if history is None or any(not 0 <= i < n_items for i in history):
        return f"'history' must be a list of item ids in 0..{n_items - 1}, got {history!r}"
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < n_items:
        return f"'target' must be an item id in 0..{n_items - 1}, got {target!r}"
    if candidates is None or any(not 0 <= i < n_items for i in candidates):
        return f"'candidates' must be item ids in 0..{n_items - 1}, got {record['candidates']!r}"
    if len(set(candidates)) != len(candidates):
        return f"'candidates' repeat an item: {candidates}"
    if n is not None and len(candidates) != n:
        return f"{len(candidates)} candidates, expected {n} (as the file's first line)"
    if len(candidates) < 2:
        return f"need at least 2 candidates, got {len(candidates)}"
    if candidates.count(target) != 1:
        return f"the target {target} is not among the candidates {candidates}"
    return CandidateExample(str(user), tuple(history), target, tuple(candidates))


def read_candidate_file(
    path: str | Path, n_items: int, max_history: int | None = None, n: int | None = None
) -> list[CandidateExample]:
    """Read and check every row of a candidate file.

    Args:
        path: a ``*.jsonl`` candidate file.
        n_items: catalogue size (items are ``0 .. n_items-1``).
        max_history: cut histories to their last ``max_history`` items (None = keep).
        n: the number of candidates every row must have (None = the first row's).

    Returns:
        The rows in file order.

    Raises:
        DataError: naming the file and line of the first bad row (malformed JSON, a missing
            key, an item outside the catalogue, repeated candidates, a count different from
            the others, a target that is not a candidate), or an empty file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing candidate file (see `ilrec prepare candidates`)")
    rows: list[CandidateExample] = []
    for number, record in enumerate(load_candidates(path), start=1):
        row = _parse_row(record, n_items, n)
        if isinstance(row, str):
            raise DataError(f"{path}: line {number}: {row}")
        n = len(row.candidates)
        if max_history is not None:
            row = CandidateExample(row.user, row.history[-max_history:], row.target, row.candidates)
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _train_sequences(rows: Iterable[CandidateExample]) -> dict[str, list[int]]:
    sequences: dict[str, list[int]] = {}
    for row in rows:
        sequences.setdefault(row.user, list(row.history)).append(row.target)
    return sequences


def load_candidate_splits(
    stem: str | Path, protocol: str, n_items: int, max_history: int
) -> CandidateSplits:
    """The candidate rows of a dataset, checked.

    Args:
        stem: the files' stem (``data.candidates``).
        protocol: ``rows`` or ``last`` (the evaluation files read).
        n_items: catalogue size.
        max_history: histories are cut to their last ``max_history`` items.

    Returns:
        :class:`CandidateSplits`; every file must have the same number of candidates per row.

    Raises:
        DataError: a file is missing or has a bad row (file and line named).
    """
    train = read_candidate_file(candidate_path(stem, "train"), n_items, max_history)
    n = len(train[0].candidates)
    valid, test = (
        read_candidate_file(candidate_path(stem, s, protocol), n_items, max_history, n)
        for s in ("valid", "test")
    )
    return CandidateSplits(_train_sequences(train), valid, test, max_history, tuple(train))


# ------------------------------------------------------------------------------ writing


@dataclass
class CandidatesReport:
    """What :func:`prepare_candidates` wrote.

    Attributes:
        out: the output folder.
        stem: the files' stem (the value of ``data.candidates``).
        rows: rows per file name.
    """

    out: str
    stem: str
    rows: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"candidate files -> {self.out} (data.candidates={self.stem})"]
        return "\n".join(lines + [f"  {name}: {n} rows" for name, n in self.rows.items()])


def _lines(examples: Sequence[Example], n_items: int, n: int) -> str:
    return "".join(
        json.dumps(
            {
                "user": e.user,
                "row": k,
                "history": list(e.history),
                "target": e.target,
                "candidates": sdpo_candidates(e.history, e.target, n_items, n),
            }
        )
        + "\n"
        for k, e in enumerate(examples)
    )


def _refuse_dataset_folder(out: Path, data: InteractionData) -> None:
    root, target = data.root.resolve(), out.resolve()
    if target == root or root in target.parents:
        raise ValueError(
            f"--out {out} is inside the dataset folder {data.root}; candidate files go to a "
            "folder of their own (the dataset folder is read-only input)"
        )


def prepare_candidates(
    data_dir: str | Path,
    out: str | Path,
    n: int = N_CANDIDATES,
    max_history: int = 20,
    force: bool = False,
) -> CandidatesReport:
    """Candidate files for an LC-Rec dataset from its leave-one-out split.

    ``<out>/<X>.candidates.train.jsonl``: every training prefix (as
    :meth:`~ilrec.data.split.Splits.train_prefixes` orders them); ``<X>.candidates.rows.
    {valid,test}.jsonl``: the leave-one-out validation and test examples (one row per user),
    written again under the ``last`` names (here both protocols are the same rows). Each row
    gets S-DPO's ``n`` candidates (:func:`~ilrec.data.lastfm.sdpo_candidates`: seeded by the
    target, ``n - 1`` items outside the row's history, shuffled).

    Args:
        data_dir: the dataset folder (read only; nothing is written there).
        out: the output folder (created), outside the dataset folder.
        n: candidates per row.
        max_history: histories are the last ``max_history`` items (as ``data.max_history``).
        force: overwrite existing files.

    Returns:
        A :class:`CandidatesReport`.

    Raises:
        FileExistsError: an output file exists and ``force`` is not set.
        ValueError: ``out`` is inside the dataset folder, or the catalogue is too small.
        DataError: the dataset folder is malformed.
    """
    data = load_dataset(data_dir, require_index=False)
    out = Path(out)
    _refuse_dataset_folder(out, data)
    stem = out / f"{data.name}.candidates"
    paths = {"train": candidate_path(stem, "train")}
    paths |= {f"{p}.{s}": candidate_path(stem, s, p) for p in PROTOCOLS for s in SPLITS[1:]}
    refuse_overwrite(out, [p.name for p in paths.values()], force)
    splits = leave_one_out(data, max_history)
    examples = {"train": splits.train_prefixes(), "valid": splits.valid, "test": splits.test}
    texts = {split: _lines(rows, data.n_items, n) for split, rows in examples.items()}
    out.mkdir(parents=True, exist_ok=True)
    report = CandidatesReport(str(out), str(stem))
    for key, path in paths.items():
        split = key.rsplit(".", 1)[-1]
        atomic_write_text(path, texts[split])
        report.rows[path.name] = len(examples[split])
    return report
