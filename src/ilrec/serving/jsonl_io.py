"""The JSONL front end of ``ilrec recommend`` (:class:`~ilrec.serving.recommender.Recommender`
ranks; this module reads histories and writes recommendations).

A :class:`Recommender` loads a run once (config, data, merged eval-mode model, tokenizer,
encoder, identifier trie) and ranks the whole catalogue for each history exactly as
``ilrec evaluate`` ranks it for a user with that history: the same prompt (histories cut to the
most recent ``data.max_history`` items, prompt paraphrase 0), the same batching and the same
ranker (``beam``: trie-constrained beam search of width ``max(k, beams)``; ``exact``: every
item scored, top ``k``). The score of an item is the summed log-probability of its identifier.

Input of ``ilrec recommend`` (:func:`read_histories`): a JSONL file, one object per line,
``{"user": "<any id, optional>", "history": [3, 17, 42]}`` (oldest item first); items are
internal ids ``0..n_items-1``, or with ``id_type="original"`` the original ids (strings) of the
dataset's ``X.item2id``. Blank lines are ignored. A malformed JSON line, a line that is not an
object, a missing ``history`` key, an empty history and an unknown or mistyped item id are bad
lines; each is reported as ``<file>:<line>: <problem>; expected ...``.

Bad-line policy: by default the whole file is validated before anything is ranked, and any bad
line is an error (:class:`~ilrec.data.dataset.DataError`) listing up to 20 bad lines; nothing
is written. With ``skip_bad_lines`` (``--skip-bad-lines``) the bad lines are reported on stderr
and the good ones are processed.

Output (:func:`recommendations_jsonl`): one line per processed input line,
``{"user": ..., "items": [{"item": 12, "original_id": "B00...", "title": "...", "score":
-3.21}, ...]}`` (``original_id``/``title`` are null when the dataset has no ``X.item2id`` /
item texts).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilrec.data.dataset import DataError
from ilrec.serving.recommender import MODES, Catalogue, Recommendation, Recommender, item_problem

ID_TYPES = ("internal", "original")
MAX_REPORTED = 20  # bad lines listed in one error message

__all__ = ["HistoryRequest", "read_histories", "recommend_file", "recommendations_jsonl"]


@dataclass(frozen=True)
class HistoryRequest:
    """One valid input line: its number, the ``user`` value (None when absent), the history
    as internal item ids."""

    line: int
    user: Any
    history: tuple[int, ...]


class _BadLine(ValueError):
    pass


def _parse_line(raw: bytes, catalogue: Catalogue, id_type: str) -> tuple[Any, tuple[int, ...]]:
    example = '["B000123", "B000456"]' if id_type == "original" else "[3, 17, 42]"
    expected = f'one JSON object per line like {{"user": "u1", "history": {example}}}'
    try:
        obj = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise _BadLine(f"not UTF-8 text ({e.reason}); expected {expected}") from e
    except json.JSONDecodeError as e:
        raise _BadLine(f"malformed JSON ({e.msg} at column {e.colno}); expected {expected}") from e
    if not isinstance(obj, dict):
        raise _BadLine(f"got a JSON {type(obj).__name__}; expected {expected}")
    if "history" not in obj:
        raise _BadLine(f"missing key 'history'; expected {expected}")
    history = obj["history"]
    if not isinstance(history, list) or not history:
        what = "an empty list" if history == [] else f"{type(history).__name__} {history!r}"
        raise _BadLine(f"'history' is {what}; expected a non-empty list of item ids")
    if id_type == "original":
        bad = [i for i in history if not isinstance(i, str)]
        if bad:
            raise _BadLine(f"original item ids must be strings (from X.item2id), got {bad[:5]}")
        try:
            return obj.get("user"), tuple(catalogue.internal_ids(history))
        except ValueError as e:
            raise _BadLine(str(e)) from e
    problem = item_problem(history, catalogue.n_items, "--id-type original")
    if problem:
        raise _BadLine(problem)
    return obj.get("user"), tuple(history)


def read_histories(
    path: str | Path,
    catalogue: Catalogue,
    id_type: str = "internal",
    skip_bad_lines: bool = False,
    warn: Callable[[str], None] | None = None,
) -> list[HistoryRequest]:
    """Parse and validate a JSONL file of histories (format and policy: module docstring).

    Args:
        path: the input file.
        catalogue: the run's items (ids are checked against it).
        id_type: ``internal`` (ids ``0..n_items-1``) or ``original`` (ids of ``X.item2id``).
        skip_bad_lines: report bad lines through ``warn`` and keep the good ones, instead of
            failing on any bad line.
        warn: where skipped lines are reported (default: stderr).

    Returns:
        The valid lines, in file order, with internal item ids.

    Raises:
        FileNotFoundError: no such file.
        DataError: any bad line (without ``skip_bad_lines``; up to 20 listed, each as
            ``<file>:<line>: <problem>``), or no valid line at all.
    """
    path = Path(path)
    if id_type not in ID_TYPES:
        raise ValueError(f"id_type must be one of {ID_TYPES}, got {id_type!r}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such input file (expected JSONL histories)")
    if id_type == "original":
        _ = catalogue.item_of_original  # fails once, clearly, without X.item2id
    requests, bad = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                user, history = _parse_line(raw, catalogue, id_type)
            except _BadLine as e:
                bad.append(f"{path}:{number}: {e}")
                continue
            requests.append(HistoryRequest(number, user, history))
    listed = "\n  ".join(bad[:MAX_REPORTED])
    more = f"\n  ... and {len(bad) - MAX_REPORTED} more" if len(bad) > MAX_REPORTED else ""
    if bad and not skip_bad_lines:
        raise DataError(
            f"{path}: {len(bad)} bad line(s); nothing was processed "
            f"(--skip-bad-lines processes the others):\n  {listed}{more}"
        )
    if bad:
        (warn or _stderr)(f"skipped {len(bad)} bad line(s) of {path}:\n  {listed}{more}")
    if not requests:
        raise DataError(f"{path}: no valid histories (expected JSONL lines with a 'history')")
    return requests


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def recommendations_jsonl(
    requests: Sequence[HistoryRequest], recommendations: Sequence[Sequence[Recommendation]]
) -> str:
    """The output JSONL: ``{"user": ..., "items": [...]}`` per request, in order.

    Args:
        requests: the parsed input lines.
        recommendations: one list per request (from :meth:`Recommender.recommend`).

    Returns:
        The file content (one line per request, newline-terminated).
    """
    lines = [
        json.dumps({"user": r.user, "items": [x.to_json() for x in recs]}, ensure_ascii=False)
        for r, recs in zip(requests, recommendations, strict=True)
    ]
    return "".join(line + "\n" for line in lines)


def recommend_file(
    run_dir: str | Path,
    input_path: str | Path,
    output: str | Path | None = None,
    k: int = 10,
    mode: str = "beam",
    id_type: str = "internal",
    batch_size: int = 16,
    beams: int = 20,
    skip_bad_lines: bool = False,
    force: bool = False,
    threads: int | None = None,
) -> int:
    """``ilrec recommend``: rank for every history of a JSONL file, write JSONL.

    The input is fully validated before the model is loaded; the output is written atomically
    (to stdout when ``output`` is None) and an existing file is kept unless ``force``.

    Args:
        run_dir: the trained run.
        input_path: JSONL histories (see the module docstring).
        output: output JSONL file, or None for stdout.
        k: items per history.
        mode: ``beam`` or ``exact``.
        id_type: ``internal`` or ``original`` item ids in the input.
        batch_size: histories per forward.
        beams: beam width in beam mode (``ilrec evaluate --beams``).
        skip_bad_lines: skip (and report) bad lines instead of failing.
        force: overwrite an existing output file.
        threads: torch threads (None: the run's ``train.threads``).

    Returns:
        The number of histories written.
    """
    from ilrec.data.io import atomic_write_text
    from ilrec.runs.setup import load_setup, open_run

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if output is not None and Path(output).exists() and not force:
        raise FileExistsError(f"{output} exists; pass --force to overwrite it")
    run_dir, config = open_run(run_dir, threads)
    setup = load_setup(config)
    requests = read_histories(input_path, Catalogue.from_data(setup.data), id_type, skip_bad_lines)
    recommender = Recommender.from_run(run_dir, mode, batch_size, beams, setup=setup)
    recommendations = recommender.recommend([r.history for r in requests], k)
    text = recommendations_jsonl(requests, recommendations)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(output, text)
    return len(requests)
