"""BPR-MF: Rendle, Freudenthaler, Gantner & Schmidt-Thieme, "BPR: Bayesian Personalized
Ranking from Implicit Feedback", UAI 2009.

Matrix factorisation: the user state is a learned user embedding, the score of item ``i`` is
``<p_u, q_i>``. The history is ignored, so only users seen in training can be scored; with the
leave-one-out split every evaluated user is a training user (the CRR reward scores the same
user's history). Trained with the BPR loss (``loss: bpr``) over the training interactions.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ilrec.models.cf.base import SequentialRecommender


class BPR(SequentialRecommender):
    """Matrix factorisation with user and item embeddings.

    Args:
        n_items: catalogue size.
        n_users: number of training users (indices ``0..n_users-1``, see ``user_index``).
        embedding_size: ``d`` (128 in the paper).
    """

    uses_users = True

    def __init__(self, n_items: int, n_users: int, embedding_size: int = 128) -> None:
        super().__init__(n_items, embedding_size)
        if n_users < 1:
            raise ValueError(f"BPR needs n_users >= 1, got {n_users}")
        self.n_users = n_users
        self.user_emb = nn.Embedding(n_users, embedding_size)
        self.item_emb = nn.Embedding(n_items, embedding_size)
        nn.init.xavier_normal_(self.user_emb.weight)
        nn.init.xavier_normal_(self.item_emb.weight)

    def encode(self, item_seq: Tensor, seq_len: Tensor, users: Tensor | None = None) -> Tensor:
        if users is None:
            raise ValueError("BPR scores known users only: pass `users` (indices of user_index)")
        return self.user_emb(users)

    def supervised_states(
        self, item_seq: Tensor, seq_len: Tensor, supervise_from: Tensor, users: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """One (user, item) pair per supervised item of the window.

        Items before ``supervise_from`` were supervised by an earlier window, except a user's
        very first training item, which BPR therefore never sees (as the sequential models).
        """
        if users is None:
            raise ValueError("BPR training needs `users`")
        position = torch.arange(item_seq.shape[1], device=item_seq.device)
        mask = (position < seq_len.unsqueeze(1)) & (position >= supervise_from.unsqueeze(1))
        states = self.user_emb(users).unsqueeze(1).expand(-1, item_seq.shape[1], -1)  # [B, T, d]
        return states[mask], item_seq[mask] - 1

    def item_embeddings(self) -> Tensor:
        return self.item_emb.weight
