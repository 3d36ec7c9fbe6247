"""GRU4Rec: Hidasi, Karatzoglou, Baltrunas & Tikk, "Session-based Recommendations with
Recurrent Neural Networks", ICLR 2016.

A GRU reads the item sequence; its hidden state after each item, projected to ``d``, scores
every item against the item embeddings (the RecBole variant with tied input/output items).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ilrec.models.cf.base import PAD, SequentialRecommender, gather_last


class GRU4Rec(SequentialRecommender):
    """Recurrent sequential recommender.

    Args:
        n_items: catalogue size.
        embedding_size: ``d`` (128 in the paper).
        hidden_size: GRU hidden size (default ``d``).
        n_layers: stacked GRU layers.
        dropout: dropout on the input item embeddings.
    """

    def __init__(
        self,
        n_items: int,
        embedding_size: int = 128,
        hidden_size: int = 0,
        n_layers: int = 1,
        dropout: float = 0.3,
    ) -> None:
        super().__init__(n_items, embedding_size)
        d = embedding_size
        hidden_size = hidden_size or d
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(d, hidden_size, n_layers, batch_first=True, bias=False)
        self.project = nn.Linear(hidden_size, d)
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()
        for weight in self.gru.parameters():
            nn.init.xavier_uniform_(weight)

    def encode_all_positions(
        self, item_seq: Tensor, seq_len: Tensor, users: Tensor | None = None
    ) -> Tensor:
        # Right padding: the recurrence reaches each real position before any padding.
        hidden, _ = self.gru(self.dropout(self.item_emb(item_seq)))  # [B, T, hidden]
        return self.project(hidden)  # [B, T, d]

    def encode(self, item_seq: Tensor, seq_len: Tensor, users: Tensor | None = None) -> Tensor:
        return gather_last(self.encode_all_positions(item_seq, seq_len), seq_len)

    def item_embeddings(self) -> Tensor:
        return self.item_emb.weight[1:]
