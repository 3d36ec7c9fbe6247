"""Caser: Tang & Wang, "Personalized Top-N Sequential Recommendation via Convolutional Sequence
Embedding", WSDM 2018.

The ``L`` most recent items form an ``L x d`` "image"; horizontal filters (heights ``1..L``,
max-pooled over time) capture union-level sequential patterns and vertical filters weighted
sums of the items. A fully connected layer turns both into the state ``z``, which scores items
against a separate output item embedding (``W'`` in the paper).

Difference from the paper: the user embedding ``P_u`` is left out so the state depends only on
the history (any history can be scored, which the CRR reward needs); the per-item output bias
is left out too (the shared contract scores by a dot product).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ilrec.models.cf.base import PAD, SequentialRecommender


class Caser(SequentialRecommender):
    """Convolutional sequence embedding over the last ``window`` items.

    Args:
        n_items: catalogue size.
        embedding_size: ``d`` (128 in the paper).
        window: ``L``, the number of previous items the state sees (5 in the paper).
        n_horizontal: horizontal filters per height ``h = 1..L``.
        n_vertical: vertical filters.
        dropout: dropout before the fully connected layer.
    """

    def __init__(
        self,
        n_items: int,
        embedding_size: int = 128,
        window: int = 5,
        n_horizontal: int = 16,
        n_vertical: int = 4,
        dropout: float = 0.4,
    ) -> None:
        super().__init__(n_items, embedding_size)
        d = embedding_size
        self.window = window
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.out_emb = nn.Embedding(n_items, d)
        self.vertical = nn.Conv2d(1, n_vertical, (window, 1))
        self.horizontal = nn.ModuleList(
            nn.Conv2d(1, n_horizontal, (height, d)) for height in range(1, window + 1)
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(n_vertical * d + n_horizontal * window, d)
        nn.init.normal_(self.item_emb.weight, std=1.0 / d)
        nn.init.normal_(self.out_emb.weight, std=1.0 / d)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def window_state(self, windows: Tensor) -> Tensor:
        """State from windows of ``L`` previous items: ``[N, L]`` (ids ``+1``) -> ``[N, d]``."""
        image = self.item_emb(windows).unsqueeze(1)  # [N, 1, L, d]
        vertical = self.vertical(image).flatten(1)  # [N, n_v * d]
        horizontal = [
            F.relu(conv(image).squeeze(3)).max(dim=2).values  # [N, n_h]
            for conv in self.horizontal
        ]
        features = torch.cat([vertical, *horizontal], dim=1)
        return F.relu(self.fc(self.dropout(features)))

    def encode(self, item_seq: Tensor, seq_len: Tensor, users: Tensor | None = None) -> Tensor:
        offsets = torch.arange(self.window, device=item_seq.device)
        index = seq_len.unsqueeze(1) - self.window + offsets  # [B, L], last L real positions
        windows = item_seq.gather(1, index.clamp_min(0)).masked_fill(index < 0, PAD)
        return self.window_state(windows)

    def supervised_states(
        self, item_seq: Tensor, seq_len: Tensor, supervise_from: Tensor, users: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Sliding windows: the ``L`` items before position ``t`` predict item ``t``."""
        length = item_seq.shape[1]
        padded = F.pad(item_seq, (self.window, 0), value=PAD)  # [B, L + T]
        windows = padded.unfold(1, self.window, 1)[:, :length]  # [B, T, L]: items t-L .. t-1
        position = torch.arange(length, device=item_seq.device)
        mask = (position < seq_len.unsqueeze(1)) & (position >= supervise_from.unsqueeze(1))
        return self.window_state(windows[mask]), item_seq[mask] - 1

    def item_embeddings(self) -> Tensor:
        return self.out_emb.weight
