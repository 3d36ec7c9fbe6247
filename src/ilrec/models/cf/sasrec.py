"""SASRec: Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.

A stack of causal (unidirectional) Transformer blocks over the item sequence with learned
absolute position embeddings; the state after the last item scores every item by a dot
product with the (shared) input item embeddings. The paper's default CF model for the
collaborative reward (Section 2.4).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ilrec.models.cf.base import PAD, SequentialRecommender, causal_mask, gather_last


class SASRec(SequentialRecommender):
    """Self-attentive sequential recommender (pre-LayerNorm blocks as in the authors' code).

    Args:
        n_items: catalogue size.
        embedding_size: ``d`` (128 in the paper).
        max_history: longest input sequence (number of position embeddings).
        n_layers: Transformer blocks.
        n_heads: attention heads (must divide ``d``).
        inner_size: hidden size of the point-wise feed-forward network (default ``4 d``).
        dropout: dropout on embeddings, attention and feed-forward outputs.
    """

    def __init__(
        self,
        n_items: int,
        embedding_size: int = 128,
        max_history: int = 20,
        n_layers: int = 2,
        n_heads: int = 2,
        inner_size: int = 0,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(n_items, embedding_size)
        d = embedding_size
        self.max_history = max_history
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=PAD)
        self.pos_emb = nn.Embedding(max_history, d)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d,
            n_heads,
            inner_size or 4 * d,
            dropout,
            activation="relu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def encode_all_positions(
        self, item_seq: Tensor, seq_len: Tensor, users: Tensor | None = None
    ) -> Tensor:
        length = item_seq.shape[1]
        if length > self.max_history:
            raise ValueError(
                f"SASRec got sequences of {length} items; max_history={self.max_history}"
            )
        positions = torch.arange(length, device=item_seq.device)
        x = self.item_emb(item_seq) * math.sqrt(self.embedding_size) + self.pos_emb(positions)
        x = self.dropout(x)  # [B, T, d]
        # Right padding + causal attention: real positions only ever see real items.
        x = self.encoder(x, mask=causal_mask(length, item_seq.device), is_causal=True)
        return self.final_norm(x)

    def encode(self, item_seq: Tensor, seq_len: Tensor, users: Tensor | None = None) -> Tensor:
        return gather_last(self.encode_all_positions(item_seq, seq_len), seq_len)

    def item_embeddings(self) -> Tensor:
        return self.item_emb.weight[1:]
