"""LastFM as used by LLaRA and S-DPO (20-candidate ranking) -> an LC-Rec dataset folder.

Source files (a folder such as ``../shared/data/LastFM``, see its ``SOURCE.md``):

- ``train_data.df``, ``Val_data.df``, ``Test_data.df``: pickled pandas DataFrames with the
  columns ``seq`` (the last <= 10 items before the target, oldest first, right-padded with the
  padding id ``n_items`` = 4606), ``len_seq`` (real items in ``seq``, floored at 1) and ``next``
  (the target). Each user contributes a block of consecutive rows, one per position of their
  sequence, starting with an all-padding row. The three files hold disjoint users (976 / 122 /
  122 = 1,220).
- ``id2name.txt``: ``ID::Artist name`` per line, ids ``0 .. n_items-1`` in file order.

Two evaluation protocols, both on the user-disjoint val/test files:

- ``rows`` (S-DPO, NeurIPS 2024): every row with ``len_seq >= 3`` (47,872 / 2,767 / 2,495
  rows for train / val / test): S-DPO's ``lastfm-{train,val,test}.json``.
- ``last`` (LLaRA's later Hugging Face release): only the last row of each user of the val
  and test files (122 / 122 rows).

Each row gets S-DPO's 20 candidates (:func:`sdpo_candidates`).

Mapping to leave-one-out. A user's complete sequence is the list of the ``next`` targets of
their block, in row order (row ``k`` predicts item ``k`` from the items before it, and every
row's ``seq`` is checked to be the last <= 10 of those items). ``LastFM.inter.json`` holds the
1,220 complete sequences, users ``"0".."975"`` from the train file, ``"976".."1097"`` from the
val file and ``"1098".."1219"`` from the test file (``LastFM.users.json`` lists them per
file). Under the project's leave-one-out split (``max_history=10``):

- the test example of a test-file user is exactly its ``last`` test row (history and target);
- the test example of a val-file user is exactly its ``last`` val row: LLaRA validates on
  *other users'* final items, so LLaRA's validation set is not the leave-one-out validation
  split (which is every user's second-to-last item, the block's second-to-last row);
- train-file users contribute their last two items to the leave-one-out valid/test splits,
  whereas LLaRA and S-DPO train on all of their rows.

So leave-one-out over ``inter.json`` is the project's own full-ranking protocol on LastFM;
the S-DPO/LLaRA protocols are the candidate files, one JSON object per line
``{"user", "row", "history", "target", "candidates"}`` (``row``: index in the source pickle):

- ``LastFM.candidates.train.jsonl``: the train rows with ``len_seq >= 3`` (both protocols);
- ``LastFM.candidates.{rows,last}.{valid,test}.jsonl``: the evaluation rows of a protocol.

pandas is needed only to read the pickles (``pip install pandas``). Unpickling runs code:
read only trusted files such as the checked copies described in ``SOURCE.md``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ilrec.data.dataset import MIN_INTERACTIONS, DataError
from ilrec.data.io import atomic_write_json, atomic_write_text, refuse_overwrite

__all__ = [
    "N_CANDIDATES",
    "NAME",
    "PROTOCOLS",
    "SOURCE_FILES",
    "LastfmReport",
    "LastfmRow",
    "candidate_file",
    "judge_answer",
    "load_candidates",
    "match_candidates",
    "prepare_lastfm",
    "protocol_rows",
    "read_frame",
    "read_id2name",
    "read_split",
    "sdpo_candidates",
    "user_blocks",
]

NAME = "LastFM"
N_CANDIDATES = 20
MIN_HISTORY = 3  # S-DPO / LLaRA keep rows with len_seq >= 3
WINDOW = 10
PROTOCOLS = ("rows", "last")
SPLITS = ("train", "valid", "test")
SOURCE_FILES = {"train": "train_data.df", "valid": "Val_data.df", "test": "Test_data.df"}
ID2NAME = "id2name.txt"
COLUMNS = ("seq", "len_seq", "next")
RECORD_KEYS = frozenset({"user", "history", "target", "candidates"})
QUOTES = "\"'“”‘’«»`"


@dataclass(frozen=True)
class LastfmRow:
    """One row of a LastFM pickle.

    Attributes:
        index: the row's position in its file (0-based).
        history: the real items of ``seq`` (padding removed), oldest first.
        target: the ``next`` item.
        len_seq: the file's ``len_seq`` (``len(history)`` floored at 1).
    """

    index: int
    history: tuple[int, ...]
    target: int
    len_seq: int


# ----------------------------------------------------------------------------- reading


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as e:  # not a core dependency
        raise ImportError("reading the LastFM pickles needs pandas: pip install pandas") from e
    return pandas


def read_id2name(path: str | Path) -> list[str]:
    """Artist names by id from ``id2name.txt``.

    Args:
        path: a UTF-8 file of ``ID::name`` lines with ids ``0, 1, 2, ...`` in order; the line
            is split on the first ``::`` and the name stripped (as S-DPO does).

    Returns:
        The names, ``names[i]`` being item ``i``.

    Raises:
        DataError: naming the file, the line and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (expected the LastFM item names, lines 'ID::name')")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e
    while lines and not lines[-1].strip():
        lines.pop()
    names = []
    for number, line in enumerate(lines, start=1):
        key, sep, name = line.partition("::")
        if not sep or key.strip() != str(len(names)) or not name.strip():
            raise DataError(
                f"{path}: line {number}: expected '{len(names)}::<non-empty name>' "
                f"(ids 0, 1, 2, ... in order), got {line[:80]!r}"
            )
        names.append(name.strip())
    if not names:
        raise DataError(f"{path}: no 'ID::name' lines")
    return names


def read_frame(path: str | Path) -> Any:
    """Read one LLaRA pickle and check that it is a DataFrame with ``seq``, ``len_seq``, ``next``.

    Args:
        path: a pickled pandas DataFrame (``pandas.read_pickle``; trusted files only).

    Returns:
        The DataFrame.

    Raises:
        DataError: the file is missing, truncated or not a pickle, not a DataFrame, or lacks
            one of the columns.
        ImportError: pandas is not installed.
    """
    pandas, path = _pandas(), Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing (expected a pickled pandas DataFrame with {COLUMNS})")
    try:
        frame = pandas.read_pickle(path)
    except Exception as e:  # unpickling a bad file can raise almost anything
        raise DataError(
            f"{path}: not a readable pickled pandas DataFrame (truncated or corrupt?): "
            f"{type(e).__name__}: {e}"
        ) from e
    if not isinstance(frame, pandas.DataFrame):
        raise DataError(f"{path}: expected a pickled pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}, "
            f"found {[str(c) for c in frame.columns]}"
        )
    return frame


def _as_int(value: Any) -> int | None:
    """``value`` as a Python int when it is an integer (numpy included, bool excluded)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    return int(value.__index__())


def _parse_row(
    path: Path, index: int, seq: Any, len_seq: Any, target: Any, n_items: int
) -> LastfmRow:
    where = f"{path}: row {index}"
    ids = (
        [_as_int(x) for x in seq]
        if isinstance(seq, (list, tuple)) or hasattr(seq, "tolist")
        else None
    )
    if ids is None or len(ids) != WINDOW or any(i is None or not 0 <= i <= n_items for i in ids):
        raise DataError(
            f"{where}: 'seq' must be {WINDOW} item ids in 0..{n_items - 1} right-padded with "
            f"{n_items}, got {seq!r}"
        )
    history = tuple(i for i in ids if i != n_items)
    if any(i != n_items for i in ids[len(history) :]):
        raise DataError(f"{where}: 'seq' has an item after the padding id {n_items}: {ids}")
    target_id, length = _as_int(target), _as_int(len_seq)
    if target_id is None or not 0 <= target_id < n_items:
        raise DataError(f"{where}: 'next' must be an item id in 0..{n_items - 1}, got {target!r}")
    if length != max(1, len(history)):
        raise DataError(
            f"{where}: 'len_seq' is {len_seq!r}, expected {max(1, len(history))} "
            f"(the real items of 'seq', at least 1)"
        )
    return LastfmRow(index, history, target_id, length)


def read_split(path: str | Path, n_items: int) -> list[LastfmRow]:
    """Read and validate the rows of one LLaRA pickle.

    Args:
        path: ``train_data.df``, ``Val_data.df`` or ``Test_data.df``.
        n_items: the number of items (the padding id is ``n_items``).

    Returns:
        The rows in file order.

    Raises:
        DataError: naming the file, the row and what was expected.
    """
    path = Path(path)
    frame = read_frame(path)
    rows = [
        _parse_row(path, k, seq, length, target, n_items)
        for k, (seq, length, target) in enumerate(
            zip(frame["seq"], frame["len_seq"], frame["next"], strict=True)
        )
    ]
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def user_blocks(rows: Sequence[LastfmRow], path: str | Path = "") -> list[list[LastfmRow]]:
    """Group rows into users: a block starts at each row with an empty history.

    Args:
        rows: the rows of one file, in file order.
        path: the file, for error messages.

    Returns:
        The blocks; the complete sequence of a user is ``[r.target for r in block]``.

    Raises:
        DataError: the first row has a history, or a row's history is not the last
            ``WINDOW`` targets of the rows before it in its block.
    """
    blocks: list[list[LastfmRow]] = []
    for row in rows:
        if not row.history:
            blocks.append([])
        elif not blocks:
            raise DataError(f"{path}: row {row.index}: a user's first row must have no history")
        if list(row.history) != [r.target for r in blocks[-1][-WINDOW:]]:
            raise DataError(
                f"{path}: row {row.index}: history {list(row.history)} is not the last "
                f"{WINDOW} targets of the rows before it in its user block "
                f"(starting at row {blocks[-1][0].index if blocks[-1] else row.index})"
            )
        blocks[-1].append(row)
    return blocks


# ------------------------------------------------------------------------ protocols


def protocol_rows(blocks: Sequence[list[LastfmRow]], protocol: str) -> list[tuple[int, LastfmRow]]:
    """The evaluation rows of a protocol, with the position of their user block.

    Args:
        blocks: the user blocks of one file (:func:`user_blocks`).
        protocol: ``"rows"`` (S-DPO: every row with ``len_seq >= 3``) or ``"last"`` (LLaRA's
            later release: the last row of each user).

    Returns:
        ``(block index, row)`` pairs in file order.
    """
    if protocol == "rows":
        return [(b, r) for b, block in enumerate(blocks) for r in block if r.len_seq >= MIN_HISTORY]
    if protocol == "last":
        return [(b, block[-1]) for b, block in enumerate(blocks)]
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def sdpo_candidates(
    history: Sequence[int], target: int, n_items: int, n: int = N_CANDIDATES
) -> list[int]:
    """S-DPO's candidate set of one row, reproduced exactly.

    The pool is every item id ``0 .. n_items-1`` in order except the history and the target;
    Python's ``random`` seeded with ``target`` samples ``n - 1`` of them, the target is
    appended, and the list is shuffled after re-seeding with ``target``. A private
    ``random.Random`` is used, so the global generator is untouched.

    Args:
        history: the row's real (unpadded) history; ids outside the catalogue are ignored.
        target: the row's target item.
        n_items: catalogue size.
        n: candidates per row (20 in S-DPO).

    Returns:
        ``n`` distinct item ids, containing ``target`` exactly once.
    """
    if not 0 <= target < n_items:
        raise ValueError(f"target {target} is not an item id in 0..{n_items - 1}")
    excluded = sorted({i for i in history if 0 <= i < n_items} | {target})
    pool: list[int] = []
    start = 0
    for item in excluded:  # = [i for i in range(n_items) if i not in excluded], faster
        pool.extend(range(start, item))
        start = item + 1
    pool.extend(range(start, n_items))
    if len(pool) < n - 1:
        raise ValueError(f"only {len(pool)} items are left for {n - 1} negatives")
    rng = random.Random(target)
    candidates = rng.sample(pool, n - 1) + [target]
    rng.seed(target)
    rng.shuffle(candidates)
    return candidates


# ------------------------------------------------------------------- answer matching


def _answer_forms(text: str) -> set[str]:
    """The stripped text, and the same without one pair of surrounding quotes."""
    stripped = text.strip()
    forms = {stripped}
    if len(stripped) >= 2 and stripped[0] in QUOTES and stripped[-1] in QUOTES:
        forms.add(stripped[1:-1].strip())
    return forms


def match_candidates(text: str, candidate_names: Sequence[str], mode: str = "exact") -> list[int]:
    """Indices of the candidates that a generated answer names.

    Args:
        text: the generated text (the response only, without the prompt).
        candidate_names: the row's candidate names, in order.
        mode: ``"exact"``: the text, stripped of surrounding whitespace and optionally of one
            pair of surrounding quotes, equals the name (case-sensitive; names that end in a
            quote such as ``Royce da 5'9"`` still match unquoted); ``"substring"``: S-DPO's
            ``evaluate_batch.py`` rule, the name occurs anywhere in the text (so ``Jeff Beck``
            also names the candidate ``Beck``).

    Returns:
        The matching indices in candidate order; an answer is valid when there is exactly one.
    """
    if mode == "exact":
        forms = _answer_forms(text)
        return [k for k, name in enumerate(candidate_names) if name in forms]
    if mode == "substring":
        return [k for k, name in enumerate(candidate_names) if name in text]
    raise ValueError(f"mode must be 'exact' or 'substring', got {mode!r}")


def judge_answer(
    text: str, candidate_names: Sequence[str], target: int, mode: str = "exact"
) -> tuple[bool, bool]:
    """S-DPO's ValidRatio / HitRatio@1 decision for one answer.

    Args:
        text: the generated answer.
        candidate_names: the row's candidate names.
        target: the index of the target in ``candidate_names``.
        mode: see :func:`match_candidates`.

    Returns:
        ``(valid, hit)``: valid = exactly one candidate named; hit = valid and it is the target.
    """
    matches = match_candidates(text, candidate_names, mode)
    return len(matches) == 1, matches == [target]


# ---------------------------------------------------------------------------- writing


@dataclass
class LastfmReport:
    """What :func:`prepare_lastfm` read and wrote.

    Attributes:
        out: the dataset folder.
        protocol: ``rows``, ``last`` or ``both``.
        users: users per source file.
        items: catalogue size.
        interactions: total items over all sequences.
        rows: rows written per candidate file name.
        files: every file written.
    """

    out: str
    protocol: str
    users: dict[str, int] = field(default_factory=dict)
    items: int = 0
    interactions: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines."""
        users = ", ".join(f"{s} {n}" for s, n in self.users.items())
        lines = [
            f"{NAME}: {sum(self.users.values())} users ({users}), {self.items} items, "
            f"{self.interactions} interactions, protocol {self.protocol} -> {self.out}"
        ]
        lines += [f"  {name}: {n} rows" for name, n in self.rows.items()]
        return "\n".join(lines)


def candidate_file(split: str, protocol: str | None = None) -> str:
    """The candidate file name of a split (``protocol`` is ignored for ``train``)."""
    if split == "train":
        return f"{NAME}.candidates.train.jsonl"
    if split not in SPLITS or protocol not in PROTOCOLS:
        raise ValueError(f"need a split in {SPLITS} and a protocol in {PROTOCOLS}")
    return f"{NAME}.candidates.{protocol}.{split}.jsonl"


def _all_outputs() -> list[str]:
    fixed = [f"{NAME}.{s}" for s in ("inter.json", "item.json", "users.json", "index.json")]
    evaluation = [candidate_file(s, p) for p in PROTOCOLS for s in ("valid", "test")]
    return [*fixed, candidate_file("train"), *evaluation]


def _candidate_lines(
    pairs: Sequence[tuple[int, LastfmRow]], first_user: int, n_items: int
) -> Iterator[str]:
    for block, row in pairs:
        record = {
            "user": str(first_user + block),
            "row": row.index,
            "history": list(row.history),
            "target": row.target,
            "candidates": sdpo_candidates(row.history, row.target, n_items),
        }
        yield json.dumps(record) + "\n"


def load_candidates(path: str | Path) -> list[dict[str, Any]]:
    """Read a candidate file written by :func:`prepare_lastfm`.

    Args:
        path: a ``LastFM.candidates.*.jsonl`` file.

    Returns:
        One dict per row: ``user`` (str), ``row``, ``history``, ``target``, ``candidates``.

    Raises:
        DataError: a line is not a JSON object with these keys.
    """
    path, records = Path(path), []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {number}: malformed JSON ({e.msg})") from e
            if not isinstance(record, dict) or not RECORD_KEYS.issubset(record):
                raise DataError(
                    f"{path}: line {number}: expected an object with user, history, target, "
                    "candidates"
                )
            records.append(record)
    return records


def _read_blocks(path: Path, n_items: int) -> list[list[LastfmRow]]:
    """The user blocks of one pickle; every user needs 3 items (leave-one-out)."""
    blocks = user_blocks(read_split(path, n_items), path)
    short = [block[0].index for block in blocks if len(block) < MIN_INTERACTIONS]
    if short:
        raise DataError(
            f"{path}: the user block starting at row {short[0]} has fewer than "
            f"{MIN_INTERACTIONS} rows; leave-one-out needs {MIN_INTERACTIONS} items per user"
        )
    return blocks


def prepare_lastfm(
    src: str | Path, out: str | Path, protocol: str = "both", force: bool = False
) -> LastfmReport:
    """Convert the LLaRA/S-DPO LastFM files into ``out/LastFM`` (see the module docstring).

    Args:
        src: folder with ``train_data.df``, ``Val_data.df``, ``Test_data.df``, ``id2name.txt``.
        out: parent folder; the dataset goes to ``out/LastFM``.
        protocol: ``"rows"`` (S-DPO), ``"last"`` (LLaRA's last row per user) or ``"both"``:
            which evaluation candidate files to write.
        force: overwrite existing files (stale candidate files of the other protocol and a
            stale ``LastFM.index.json`` are then removed).

    Returns:
        A :class:`LastfmReport`.

    Raises:
        FileExistsError: an output file exists and ``force`` is not set.
        DataError: a source file is missing or malformed (the message names it).
        ImportError: pandas is not installed.
    """
    protocols = PROTOCOLS if protocol == "both" else (protocol,)
    if protocol != "both" and protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be 'rows', 'last' or 'both', got {protocol!r}")
    src, folder = Path(src), Path(out) / NAME
    refuse_overwrite(folder, _all_outputs(), force)
    names = read_id2name(src / ID2NAME)
    n_items = len(names)
    blocks = {split: _read_blocks(src / f, n_items) for split, f in SOURCE_FILES.items()}
    report = LastfmReport(str(folder), protocol, {s: len(b) for s, b in blocks.items()}, n_items)
    first = {"train": 0, "valid": len(blocks["train"])}
    first["test"] = first["valid"] + len(blocks["valid"])

    jobs = [("train", "rows", candidate_file("train"))]
    jobs += [(s, p, candidate_file(s, p)) for p in protocols for s in ("valid", "test")]
    folder.mkdir(parents=True, exist_ok=True)
    fresh = {f"{NAME}.{s}" for s in ("inter.json", "item.json", "users.json")}
    for stale in set(_all_outputs()) - fresh - {name for _, _, name in jobs}:
        (folder / stale).unlink(missing_ok=True)  # exists only with force
    sequences = {
        str(first[s] + b): [r.target for r in block]
        for s in SPLITS
        for b, block in enumerate(blocks[s])
    }
    report.interactions = sum(len(seq) for seq in sequences.values())
    users = {s: [str(first[s] + b) for b in range(len(blocks[s]))] for s in SPLITS}
    written = [
        atomic_write_json(folder / f"{NAME}.inter.json", sequences),
        atomic_write_json(
            folder / f"{NAME}.item.json", {str(i): {"title": n} for i, n in enumerate(names)}
        ),
        atomic_write_json(folder / f"{NAME}.users.json", users),
    ]
    for split, proto, name in jobs:
        pairs = protocol_rows(blocks[split], proto)
        written.append(
            atomic_write_text(
                folder / name, "".join(_candidate_lines(pairs, first[split], n_items))
            )
        )
        report.rows[name] = len(pairs)
    report.files = [str(p) for p in written]
    return report
