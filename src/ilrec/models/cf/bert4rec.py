"""BERT4Rec: Sun, Liu, Wu, Pei, Lin, Ou & Jiang, "BERT4Rec: Sequential Recommendation with
Bidirectional Encoder Representations from Transformer", CIKM 2019.

A bidirectional Transformer trained with the cloze objective: random items of a sequence are
replaced by a ``[mask]`` token and predicted from both sides. At inference a ``[mask]`` is
appended after the history and its output state scores every item (output embeddings tied to
the input item embeddings, after a GELU + LayerNorm projection head as in the paper).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ilrec.models.cf.base import PAD, SequentialRecommender, gather_last


class BERT4Rec(SequentialRecommender):
    """Bidirectional self-attentive recommender with a mask token (id ``n_items + 1``).

    Args:
        n_items: catalogue size.
        embedding_size: ``d`` (128 in the paper).
        max_history: longest history; sequences of ``max_history + 1`` items (history + mask,
            or a training window) fit the position embeddings.
        n_layers: Transformer blocks.
        n_heads: attention heads (must divide ``d``).
        inner_size: feed-forward hidden size (default ``4 d``).
        dropout: dropout on embeddings, attention and feed-forward outputs.
        mask_prob: probability of masking each item of a training window (cloze); a window
            with no masked item gets its last item masked.
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
        mask_prob: float = 0.2,
    ) -> None:
        super().__init__(n_items, embedding_size)
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        d = embedding_size
        self.mask_token = n_items + 1
        self.max_history = max_history
        self.max_len = max_history + 1
        self.mask_prob = mask_prob
        self.item_emb = nn.Embedding(n_items + 2, d, padding_idx=PAD)  # + padding + mask
        self.pos_emb = nn.Embedding(self.max_len, d)
        self.emb_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d, n_heads, inner_size or 4 * d, dropout, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d))
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[PAD].zero_()

    def hidden_states(self, item_seq: Tensor, seq_len: Tensor) -> Tensor:
        """Bidirectional states of every position, ``[B, T] -> [B, T, d]`` (padding ignored)."""
        length = item_seq.shape[1]
        if length > self.max_len:
            raise ValueError(
                f"BERT4Rec got sequences of {length} tokens; the limit is {self.max_len}"
            )
        positions = torch.arange(length, device=item_seq.device)
        x = self.dropout(self.emb_norm(self.item_emb(item_seq) + self.pos_emb(positions)))
        padding_mask = positions.unsqueeze(0) >= seq_len.unsqueeze(1)  # [B, T], True = ignore
        x = self.encoder(x, src_key_padding_mask=padding_mask)
        return self.head(x)

    def encode(self, item_seq: Tensor, seq_len: Tensor, users: Tensor | None = None) -> Tensor:
        """Append ``[mask]`` after each history and return its state."""
        rows = torch.arange(item_seq.shape[0], device=item_seq.device)
        with_mask = torch.nn.functional.pad(item_seq, (0, 1), value=PAD)  # [B, T + 1]
        with_mask[rows, seq_len] = self.mask_token
        return gather_last(self.hidden_states(with_mask, seq_len + 1), seq_len + 1)

    def supervised_states(
        self, item_seq: Tensor, seq_len: Tensor, supervise_from: Tensor, users: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Cloze: mask each real item with ``mask_prob`` and predict the masked ones.

        Every real item of the window can be masked (``supervise_from`` is not used: the
        objective is bidirectional, so no item needs to be kept as context).
        """
        position = torch.arange(item_seq.shape[1], device=item_seq.device)
        real = position.unsqueeze(0) < seq_len.unsqueeze(1)  # [B, T]
        masked = (torch.rand(item_seq.shape, device=item_seq.device) < self.mask_prob) & real
        unmasked_rows = (~masked.any(dim=1)).nonzero().squeeze(1)
        masked[unmasked_rows, seq_len[unmasked_rows] - 1] = True
        hidden = self.hidden_states(item_seq.masked_fill(masked, self.mask_token), seq_len)
        return hidden[masked], item_seq[masked] - 1

    def item_embeddings(self) -> Tensor:
        return self.item_emb.weight[1 : self.n_items + 1]
