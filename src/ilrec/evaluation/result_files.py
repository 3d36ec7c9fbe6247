"""Files ``ilrec evaluate`` writes next to a run, and the reader of its per-user rankings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ilrec.data.io import open_maybe_gzip
from ilrec.data.split import Example
from ilrec.metrics import target_ranks, user_metrics

__all__ = ["RANKINGS_SUFFIX", "Rankings", "eval_stem", "rankings_tsv", "read_rankings"]

HEADER = "user\ttarget\tranked"
RANKINGS_SUFFIX = ".rankings.tsv"


def eval_stem(split: str, mode: str, users: int = 0, reasoning_tokens: int = 0) -> str:
    """Result file stem: ``eval_<split>_<mode>``, ``..._reasoning<R>`` when the model wrote a
    rationale first, ``..._first<N>`` when only N users ran (so a subset or a variant never
    overwrites a full evaluation)."""
    stem = f"eval_{split}_{mode}"
    stem += f"_reasoning{reasoning_tokens}" if reasoning_tokens > 0 else ""
    return stem + (f"_first{users}" if users > 0 else "")


def rankings_tsv(examples: list[Example], ranked: torch.Tensor) -> str:
    """One line per user: ``user  target  top-k item ids`` (for paired comparisons of runs)."""
    users = tuple(e.user for e in examples)
    return Rankings(users, torch.tensor([e.target for e in examples]), ranked).to_tsv()


@dataclass(frozen=True)
class Rankings:
    """One evaluation's per-user results: ``users[U]``, ``targets[U]``, ``ranked[U, K]``."""

    users: tuple[str, ...]
    targets: Tensor
    ranked: Tensor

    def user_metrics(self, ks: tuple[int, ...]) -> dict[str, Tensor]:
        return user_metrics(target_ranks(self.ranked, self.targets), ks)

    def first(self, n: int) -> Rankings:
        """The first ``n`` users' rows."""
        return Rankings(self.users[:n], self.targets[:n], self.ranked[:n])

    def to_tsv(self, top: int | None = None) -> str:
        """The ``.rankings.tsv`` text, each list cut to its first ``top`` items if given."""
        lines = [HEADER]
        rows = zip(self.users, self.targets.tolist(), self.ranked[:, :top].tolist(), strict=True)
        lines += [f"{user}\t{target}\t{' '.join(map(str, items))}" for user, target, items in rows]
        return "\n".join(lines) + "\n"


def rankings_path(path: str | Path) -> Path | None:
    """``path`` (a ``<eval stem>.rankings.tsv``) if it exists, else its gzipped ``.gz``
    sibling (an archived run, see ``ilrec archive``) if that exists, else None."""
    path = Path(path)
    gz = path.with_name(path.name + ".gz")
    return path if path.is_file() else gz if gz.is_file() else None


def read_rankings(path: str | Path) -> Rankings:
    """Parse a ``<eval stem>.rankings.tsv``, or its gzipped ``.gz`` sibling when the plain file
    is absent; errors name the file and line."""
    found = rankings_path(path)
    if found is None:
        raise FileNotFoundError(f"{path}: no rankings file (run `ilrec evaluate` on this run)")
    path = found
    with open_maybe_gzip(path) as f:
        lines = f.read().splitlines()
    if not lines or lines[0] != HEADER:
        raise ValueError(f"{path}: expected the header {HEADER!r}")
    users, targets, ranked = [], [], []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        try:
            user, target, items = fields
            targets.append(int(target))
            ranked.append([int(i) for i in items.split()])
        except ValueError as e:
            raise ValueError(f"{path}:{number}: expected 'user<TAB>target<TAB>ids': {e}") from e
        users.append(user)
        if len(ranked[-1]) != len(ranked[0]):
            raise ValueError(
                f"{path}:{number}: {len(ranked[-1])} ranked items, line 2 has {len(ranked[0])}"
            )
    if not users:
        raise ValueError(f"{path}: no users")
    return Rankings(tuple(users), torch.tensor(targets), torch.tensor(ranked))
