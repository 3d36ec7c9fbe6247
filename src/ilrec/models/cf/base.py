"""The contract shared by the classic recommenders (paper Section 2.4 and Table 4).

Every model encodes a user's history into a state and scores all items against it, so one
trainer, one evaluator and the CRR reward :math:`R(i)` (:func:`ilrec.training.cf.cf_item_probs`)
serve all of them. Losses live in :mod:`ilrec.training.cf`, never in the models.

Tensor conventions:

- ``item_seq`` ``[B, T]`` holds item ids shifted by ``+1``; ``0`` is padding. Histories are
  **right-padded**: row ``b`` holds its items oldest first in ``item_seq[b, :seq_len[b]]``.
  With right padding a causal model's state at a real position never depends on the padding
  after it, so the same history scores the same whatever ``T`` is.
- ``seq_len`` ``[B]`` number of real items per row (``>= 1`` for ``encode``).
- ``users`` ``[B]`` user indices (only models with ``uses_users = True`` read them).

Build the inputs with :func:`pad_histories` rather than by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

PAD = 0


def pad_histories(
    histories: Sequence[Sequence[int]], max_len: int | None = None
) -> tuple[Tensor, Tensor]:
    """Right-pad item histories (ids ``0..n_items-1``) into model inputs.

    Args:
        histories: item ids, oldest first; at least one item each.
        max_len: keep only the most recent ``max_len`` items of each history.

    Returns:
        ``item_seq`` ``[B, T]`` (ids ``+1``, ``0`` = padding, ``T`` = longest kept history) and
        ``seq_len`` ``[B]``.
    """
    kept = [list(h)[-max_len:] if max_len else list(h) for h in histories]
    if any(len(h) == 0 for h in kept):
        raise ValueError("every history needs at least one item")
    seq_len = torch.tensor([len(h) for h in kept], dtype=torch.long)
    item_seq = torch.zeros(len(kept), int(seq_len.max()), dtype=torch.long)
    for row, history in enumerate(kept):
        item_seq[row, : len(history)] = torch.tensor(history, dtype=torch.long) + 1
    return item_seq, seq_len


def gather_last(hidden: Tensor, seq_len: Tensor) -> Tensor:
    """The state at each row's last real position: ``hidden[b, seq_len[b] - 1]``.

    Shapes: ``hidden`` ``[B, T, d]``, ``seq_len`` ``[B]`` -> ``[B, d]``.
    """
    index = (seq_len - 1).clamp_min(0).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
    return hidden.gather(1, index).squeeze(1)


def causal_mask(length: int, device: torch.device) -> Tensor:
    """``[T, T]`` boolean mask, ``True`` where position ``i`` must not attend to ``j > i``."""
    return torch.triu(torch.ones(length, length, dtype=torch.bool, device=device), diagonal=1)


class SequentialRecommender(nn.Module):
    """Base class: encode a history into a ``d``-dimensional state, score every item.

    Subclasses implement :meth:`encode` and :meth:`item_embeddings`, and either
    :meth:`encode_all_positions` (next-item models supervised at every position) or their own
    :meth:`supervised_states` (sliding windows, cloze, user-item pairs).

    Attributes:
        n_items: number of catalogue items (ids ``0..n_items-1``).
        embedding_size: ``d``.
        uses_users: whether :meth:`encode` reads ``users`` (BPR) instead of the history.
        user_index: user id string -> index, filled by the trainer and saved with the model.
        max_history: inference helpers keep only the most recent ``max_history`` items of a
            history (``None``: no cut); set by the models with position embeddings and by the
            trainer, so scoring sees histories as long as in training.
    """

    uses_users: bool = False

    def __init__(self, n_items: int, embedding_size: int) -> None:
        super().__init__()
        if n_items < 1 or embedding_size < 1:
            raise ValueError(
                f"n_items and embedding_size must be >= 1, got {n_items}, {embedding_size}"
            )
        self.n_items = n_items
        self.embedding_size = embedding_size
        self.user_index: dict[str, int] = {}
        self.max_history: int | None = None

    def encode(self, item_seq: Tensor, seq_len: Tensor, users: Tensor | None = None) -> Tensor:
        """User state after the history: ``[B, T]``, ``[B]`` -> ``[B, d]``."""
        raise NotImplementedError

    def encode_all_positions(
        self, item_seq: Tensor, seq_len: Tensor, users: Tensor | None = None
    ) -> Tensor:
        """State after every prefix: ``[B, T, d]``; position ``t`` has seen items ``0..t``."""
        raise NotImplementedError(f"{type(self).__name__} has no per-position encoder")

    def item_embeddings(self) -> Tensor:
        """Output embeddings of the catalogue items, ``[n_items, d]`` (no padding row)."""
        raise NotImplementedError

    def score_all(self, state: Tensor) -> Tensor:
        """Scores (logits) of every item: ``[B, d]`` -> ``[B, n_items]``."""
        return state @ self.item_embeddings().T

    def score_items(self, state: Tensor, items: Tensor) -> Tensor:
        """Scores of chosen items: ``state`` ``[N, d]``, ``items`` ``[N, K]`` -> ``[N, K]``.

        Naive equivalent: ``score_all(state).gather(1, items)``.
        """
        return torch.einsum("nd,nkd->nk", state, self.item_embeddings()[items])

    def forward(self, item_seq: Tensor, seq_len: Tensor, users: Tensor | None = None) -> Tensor:
        return self.score_all(self.encode(item_seq, seq_len, users))

    def supervised_states(
        self, item_seq: Tensor, seq_len: Tensor, supervise_from: Tensor, users: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """States and their target items for one batch of training windows.

        The default is next-item prediction at every position (SASRec, GRU4Rec): the state
        after items ``0..t-1`` predicts item ``t`` for ``supervise_from <= t < seq_len``.

        Args:
            item_seq: ``[B, T]`` training windows (ids ``+1``, right-padded).
            seq_len: ``[B]`` window lengths.
            supervise_from: ``[B]`` first supervised index of each window (``>= 1``).
            users: ``[B]`` user indices or ``None``.

        Returns:
            ``states`` ``[N, d]`` and ``targets`` ``[N]`` (item ids ``0..n_items-1``).
        """
        inputs, labels = item_seq[:, :-1], item_seq[:, 1:]  # [B, T-1]
        position = torch.arange(1, item_seq.shape[1], device=item_seq.device)  # label index
        mask = (position < seq_len.unsqueeze(1)) & (position >= supervise_from.unsqueeze(1))
        hidden = self.encode_all_positions(inputs, (seq_len - 1).clamp_min(1), users)
        return hidden[mask], labels[mask] - 1
