"""Semantic identifiers: validation, collision-free extension and index building.

An item's semantic ID (SID) is a short sequence of code tokens ``<a_N>``, ``<b_N>``, ... where
the letter names the level (``a`` = first/coarsest) and ``N`` the code within that level's
codebook. This is the format of TIGER (Rajput et al., "Recommender Systems with Generative
Retrieval", NeurIPS 2023) and of LC-Rec's ``X.index.json`` files (Zheng et al., "Adapting Large
Language Models by Integrating Collaborative Semantics for Recommendation", ICDE 2024).

Two items may end up with the same full code sequence (LC-Rec's published Instruments/Games
indices keep 25/142 such items). Exact-match evaluation and trie-constrained decoding need unique
identifiers, so :func:`make_unique` appends one extra level to every member of a colliding group,
as TIGER does. Only colliding items are extended; since all members of a group get the extra
token, no identifier becomes a prefix of another.

:func:`build_index` turns an item-embedding matrix into such an index with an RQ-VAE
(:mod:`ilrec.identifiers.rqvae`); :func:`write_index` stores it as ``X.index.json``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "IndexResult",
    "build_index",
    "code_token",
    "collision_groups",
    "collision_rate",
    "level_letters",
    "make_unique",
    "prefix_conflicts",
    "validate_codes",
    "write_index",
]

_TOKEN_RE = re.compile(r"<([a-z])_(0|[1-9][0-9]*)>")
_MAX_LEVELS = 26


def code_token(level: int, code: int) -> str:
    """Token of ``code`` at 0-based ``level``, e.g. ``code_token(1, 7) == "<b_7>"``."""
    if not 0 <= level < _MAX_LEVELS:
        raise ValueError(f"level must be in [0, {_MAX_LEVELS}), got {level}")
    if code < 0:
        raise ValueError(f"code must be >= 0, got {code}")
    return f"<{chr(ord('a') + level)}_{int(code)}>"


def _validate_entry(item_id: Any, entry: Any) -> tuple[str, ...]:
    """Check one item's code list and return it as a tuple.

    The token at position ``j`` must use the ``j``-th level letter (``a``, ``b``, ...): this is
    what makes the letter of an extra level well defined and catches shuffled or truncated rows.
    """
    if isinstance(item_id, bool) or not isinstance(item_id, (int, np.integer)):
        raise ValueError(
            f"item id {item_id!r}: expected an int key (convert JSON string keys with int())"
        )
    if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence):
        raise ValueError(
            f"item {item_id}: expected a list of code tokens like ['<a_1>', '<b_2>'], "
            f"got {type(entry).__name__} {entry!r}"
        )
    if len(entry) == 0:
        raise ValueError(f"item {item_id}: expected a non-empty list of code tokens, got []")
    if len(entry) > _MAX_LEVELS:
        raise ValueError(f"item {item_id}: {len(entry)} levels, at most {_MAX_LEVELS} supported")
    for j, tok in enumerate(entry):
        want = chr(ord("a") + j)
        if not isinstance(tok, str):
            raise ValueError(
                f"item {item_id}: position {j} must be a string token like '<{want}_N>', "
                f"got {type(tok).__name__} {tok!r}"
            )
        m = _TOKEN_RE.fullmatch(tok)
        if m is None:
            raise ValueError(
                f"item {item_id}: position {j} must look like '<{want}_N>' (N a non-negative "
                f"integer), got {tok!r}"
            )
        if m.group(1) != want:
            raise ValueError(
                f"item {item_id}: position {j} must use level letter '{want}' ('<{want}_N>'), "
                f"got {tok!r}"
            )
    return tuple(entry)


def validate_codes(codes: Mapping[int, Sequence[str]]) -> None:
    """Raise ``ValueError`` naming the first malformed item of ``codes``.

    Args:
        codes: item id (int) -> list of tokens ``["<a_N>", "<b_N>", ...]``; position ``j`` must
            carry the ``j``-th letter. Items may have different lengths.
    """
    if not isinstance(codes, Mapping):
        raise ValueError(f"codes must be a dict item id -> token list, got {type(codes).__name__}")
    for item_id, entry in codes.items():
        _validate_entry(item_id, entry)


def level_letters(codes: Mapping[int, Sequence[str]]) -> list[str]:
    """Level letters used by ``codes``, in level order, e.g. ``['a', 'b', 'c', 'd']``.

    Args:
        codes: a validated-shape index (see :func:`validate_codes`).

    Returns:
        ``['a', ..., x]`` up to the letter of the longest identifier; ``[]`` for an empty index.
    """
    validate_codes(codes)
    depth = max((len(v) for v in codes.values()), default=0)
    return [chr(ord("a") + j) for j in range(depth)]


def collision_groups(codes: Mapping[int, Sequence[str]]) -> list[list[int]]:
    """Groups of >= 2 items that share their full code sequence.

    Returns:
        One list per shared sequence, item ids ascending; groups ordered by their smallest id.
    """
    validate_codes(codes)
    by_seq: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for item_id in sorted(codes):
        by_seq[tuple(codes[item_id])].append(int(item_id))
    return sorted((g for g in by_seq.values() if len(g) > 1), key=lambda g: g[0])


def collision_rate(codes: Mapping[int, Sequence[str]]) -> float:
    """Fraction of items whose full code sequence is shared with at least one other item."""
    if not codes:
        return 0.0
    return sum(len(g) for g in collision_groups(codes)) / len(codes)


def make_unique(codes: Mapping[int, Sequence[str]]) -> dict[int, list[str]]:
    """Make identifiers unique by appending one extra level to colliding items.

    For every group of items sharing a full code sequence of length ``L``, each member gets the
    token ``<x_k>`` appended, where ``x`` is the level letter at position ``L`` (``e`` after a
    4-level ``a..d`` index) and ``k = 0, 1, 2, ...`` numbers the members in increasing item id.
    Other items are returned unchanged. The result is deterministic and the function is
    idempotent (a second call changes nothing).

    Args:
        codes: item id (int) -> list of code tokens; validated, ``ValueError`` names a bad item.

    Returns:
        A new dict with the same keys (in ascending id order) and fresh lists.

    Raises:
        ValueError: on a malformed entry, or when a group already uses all 26 levels.
    """
    groups = collision_groups(codes)  # also validates
    out = {int(k): list(codes[k]) for k in sorted(codes)}
    for group in groups:
        depth = len(out[group[0]])
        for rank, item_id in enumerate(group):
            out[item_id].append(code_token(depth, rank))
    return out


def prefix_conflicts(codes: Mapping[int, Sequence[str]]) -> list[tuple[int, int]]:
    """Pairs ``(a, b)`` where item ``a``'s identifier is a proper prefix of item ``b``'s.

    Trie-constrained decoding cannot emit ``a`` when such a pair exists. Indices where every
    identifier has the same length, and the output of :func:`make_unique` applied to them, have
    none. Only one conflicting successor per prefix item is reported (enough to flag a problem).
    """
    validate_codes(codes)
    ordered = sorted((tuple(v), int(k)) for k, v in codes.items())
    out = []
    # In lexicographic order an identifier is a prefix of some other one iff it is a prefix of
    # its immediate successor.
    for (seq_a, id_a), (seq_b, id_b) in pairwise(ordered):
        if len(seq_a) < len(seq_b) and seq_b[: len(seq_a)] == seq_a:
            out.append((id_a, id_b))
    return out


@dataclass
class IndexResult:
    """Output of :func:`build_index`.

    Attributes:
        codes: item id -> tokens ``["<a_N>", ...]``, unique; items still colliding after the
            last-level reassignment carry one extra level (see :func:`make_unique`).
        utilisation: per RQ level, distinct codes used / codebook size, after collision handling.
        utilisation_before: the same for plain nearest-code assignment.
        collision_rate_before: fraction of items sharing their full code, nearest-code assignment.
        collision_rate_after: the same after last-level reassignment (before the extra level).
        n_extra_level: number of items that received an extra level token.
        recon_mse: mean squared reconstruction error of the trained RQ-VAE on the inputs.
        baseline_mse: the error of predicting the column mean for every item (reference point).
        train_seconds: wall time of training plus assignment.
        history: mean training loss per epoch.
    """

    codes: dict[int, list[str]]
    utilisation: list[float]
    utilisation_before: list[float]
    collision_rate_before: float
    collision_rate_after: float
    n_extra_level: int
    recon_mse: float = float("nan")
    baseline_mse: float = float("nan")
    train_seconds: float = 0.0
    history: list[float] = field(default_factory=list)

    def summary(self) -> str:
        """One human-readable paragraph with the index statistics."""
        util = ", ".join(f"{chr(ord('a') + j)}={u:.1%}" for j, u in enumerate(self.utilisation))
        return (
            f"{len(self.codes)} items; code utilisation {util}; collision rate "
            f"{self.collision_rate_before:.2%} -> {self.collision_rate_after:.2%} after "
            f"last-level reassignment; {self.n_extra_level} items got an extra level; "
            f"recon MSE {self.recon_mse:.4g} (mean baseline {self.baseline_mse:.4g}); "
            f"{self.train_seconds:.1f}s"
        )


def build_index(
    embeddings: np.ndarray,
    levels: int = 4,
    codebook_size: int = 256,
    epochs: int | None = None,
    seed: int = 0,
    *,
    item_ids: Sequence[int] | None = None,
    batch_size: int | None = None,
    hidden_dims: Sequence[int] | None = None,
    e_dim: int | None = None,
    lr: float | None = None,
    collision_rounds: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> IndexResult:
    """Train an RQ-VAE on item embeddings and derive unique semantic IDs.

    Steps: train (:func:`ilrec.identifiers.rqvae.train_rqvae`), assign the nearest code per
    level, move colliding items to the nearest unused last-level code (LC-Rec style), then give
    any remaining collision groups an extra level with :func:`make_unique`.

    Args:
        embeddings: float array ``[I, D]``; row ``i`` belongs to ``item_ids[i]``.
        levels: number of residual codebooks (LC-Rec: 4, TIGER: 3).
        codebook_size: codes per level (256 in both papers).
        epochs: training epochs; ``None`` keeps the :class:`RQVAEConfig` default.
        seed: seeds weight init, k-means init and batch order; same seed -> same codes.
        item_ids: ids of the rows; default ``0..I-1``.
        batch_size, hidden_dims, e_dim, lr, collision_rounds: override the
            :class:`~ilrec.identifiers.rqvae.RQVAEConfig` defaults when given;
            ``batch_size=0`` trains full-batch.
        device: torch device for training.
        progress: show a tqdm bar.

    Returns:
        :class:`IndexResult` with ``codes`` keyed by item id.
    """
    from ilrec.identifiers import rqvae  # torch import deferred: keeps `ilrec --help` light

    emb = np.asarray(embeddings)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty [items, dim] matrix, got {emb.shape}")
    ids = list(range(emb.shape[0])) if item_ids is None else [int(i) for i in item_ids]
    if len(ids) != emb.shape[0]:
        raise ValueError(f"{len(ids)} item ids for {emb.shape[0]} embedding rows")
    if len(set(ids)) != len(ids):
        raise ValueError("item_ids contains duplicates")

    overrides: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": batch_size,
        "hidden_dims": tuple(hidden_dims) if hidden_dims is not None else None,
        "e_dim": e_dim,
        "lr": lr,
        "collision_rounds": collision_rounds,
    }
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    if batch_size == 0:
        kwargs["batch_size"] = None
    cfg = rqvae.RQVAEConfig(levels=levels, codebook_size=codebook_size, seed=seed, **kwargs)
    result = rqvae.fit_codes(emb, cfg, device=device, progress=progress)

    raw = {
        ids[i]: [code_token(j, int(c)) for j, c in enumerate(row)]
        for i, row in enumerate(result.codes.tolist())
    }
    unique = make_unique(raw)
    n_extra = sum(len(unique[i]) > len(raw[i]) for i in raw)
    return IndexResult(
        codes=unique,
        utilisation=result.utilisation,
        utilisation_before=result.utilisation_before,
        collision_rate_before=result.collision_rate_before,
        collision_rate_after=result.collision_rate_after,
        n_extra_level=n_extra,
        recon_mse=result.recon_mse,
        baseline_mse=result.baseline_mse,
        train_seconds=result.seconds,
        history=result.history,
    )


def write_index(path: str | os.PathLike[str], codes: Mapping[int, Sequence[str]]) -> Path:
    """Write ``codes`` as an LC-Rec ``X.index.json`` file, atomically.

    The file maps item ids (as strings, ascending numerically) to token lists, one item per line.
    It is written to a temporary file in the target directory and moved into place with
    ``os.replace``, so readers never see a half-written index.

    Args:
        path: destination file; its parent directory must exist.
        codes: item id -> token list (validated first).

    Returns:
        The destination path.
    """
    validate_codes(codes)
    path = Path(path)
    lines = [f"{json.dumps(str(int(k)))}: {json.dumps(list(codes[k]))}" for k in sorted(codes)]
    text = "{\n" + ",\n".join(lines) + "\n}\n" if lines else "{}\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; an index file is not a secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
