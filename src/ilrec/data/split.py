"""Leave-one-out splits and training examples (paper Section 3.1; LC-Rec protocol).

For a user history ``[i_1, ..., i_n]``: the test target is ``i_n``, the validation target
``i_{n-1}``, and training uses ``i_1 .. i_{n-2}``. Histories are cut to the most recent
``max_history`` items (20 in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

from ilrec.data.dataset import InteractionData


@dataclass(frozen=True)
class Example:
    """Predict ``target`` after ``history`` (oldest first, already cut to ``max_history``)."""

    user: str
    history: tuple[int, ...]
    target: int


@dataclass(frozen=True)
class Window:
    """A training window; items from index ``supervise_from`` on are supervised."""

    user: str
    items: tuple[int, ...]
    supervise_from: int


@dataclass(frozen=True)
class Splits:
    """Leave-one-out split of a dataset."""

    train_sequences: dict[str, list[int]]  # user -> training part i_1 .. i_{n-2}
    valid: list[Example]
    test: list[Example]
    max_history: int

    def train_prefixes(self) -> list[Example]:
        """LC-Rec training examples: every prefix of every training sequence (length >= 1)."""
        return [
            Example(user, tuple(seq[max(0, t - self.max_history) : t]), seq[t])
            for user, seq in self.train_sequences.items()
            for t in range(1, len(seq))
        ]

    def train_windows(self) -> list[Window]:
        """Compact *sequence* examples covering every training item but each user's first.

        Each window holds at most ``max_history + 1`` consecutive items; every item of a
        training sequence except the first is supervised in exactly one window, with at least
        ``max_history // 2`` items of context once the sequence is long enough.
        """
        return [
            Window(user, tuple(seq[start:end]), supervise_from)
            for user, seq in self.train_sequences.items()
            for start, end, supervise_from in window_bounds(len(seq), self.max_history)
        ]

    def examples(self, split: str) -> list[Example]:
        if split == "valid":
            return self.valid
        if split == "test":
            return self.test
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")


def window_bounds(length: int, max_history: int) -> list[tuple[int, int, int]]:
    """``(start, end, supervise_from)`` of the training windows of a sequence.

    Windows end at ``span, span + stride, ...`` (``span = max_history + 1``, ``stride =
    max(1, max_history // 2)``) and the last one at ``length``; a window supervises its items
    from index ``supervise_from`` on, i.e. those that no earlier window supervised.
    """
    if length < 2:
        return []
    span, stride = max_history + 1, max(1, max_history // 2)
    ends = list(range(min(span, length), length, stride)) + [length]
    bounds, previous_end = [], 0
    for end in dict.fromkeys(ends):
        start = max(0, end - span)
        bounds.append((start, end, max(1, previous_end - start)))
        previous_end = end
    return bounds


def leave_one_out(data: InteractionData, max_history: int = 20) -> Splits:
    """Split every user's history: last item = test, second-to-last = validation."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    train, valid, test = {}, [], []
    for user, seq in data.sequences.items():
        train[user] = seq[:-2]
        valid.append(Example(user, tuple(seq[:-2][-max_history:]), seq[-2]))
        test.append(Example(user, tuple(seq[:-1][-max_history:]), seq[-1]))
    return Splits(train, valid, test, max_history)


def popularity_counts(splits: Splits, n_items: int) -> list[int]:
    """Interaction counts of every item in the training part (for the popularity baseline)."""
    counts = [0] * n_items
    for seq in splits.train_sequences.values():
        for item in seq:
            counts[item] += 1
    return counts
