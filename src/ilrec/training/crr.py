"""The collaborative reward provider for CRR (paper Section 2.4, Eqs. 10-11).

A trained, frozen CF model (``ilrec train-cf``) gives ``R(i)``, the probability of every item
after the *same history the LM sees* for each supervised identifier; Eq. 10 turns it into
token rewards at every supervised position. CF scores are computed once per distinct
(example, target item) of a batch and shared by that identifier's token positions; Eq. 10 is
evaluated through the identifier trie (only the items below each prefix), which equals
:func:`ilrec.rewards.prefix_rewards` at a fraction of its cost.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ilrec.models.cf.base import SequentialRecommender
from ilrec.rewards import TrieRewardIndex, trie_prefix_rewards
from ilrec.training.cf import cf_item_probs, load_cf_model


class CFRewardProvider:
    """Callable ``(batch, index, targets) -> rewards [N, V]`` for the ILRec objective.

    Args:
        cf_run: a run folder written by ``ilrec train-cf``.
        item_tokens: ``[I, D]`` response token ids of every item (-1 padded), as in the
            identifier trie (``Encoder.item_table()``).
        vocab_size: the LM's vocabulary size.
        max_history: histories are cut to their most recent items, as the LM's prompts are.
    """

    def __init__(
        self, cf_run: str | Path, item_tokens: torch.Tensor, vocab_size: int, max_history: int
    ) -> None:
        self.model, _ = load_cf_model(cf_run)
        self.model.requires_grad_(False)
        if self.model.n_items != item_tokens.shape[0]:
            raise ValueError(
                f"objective.cf_run={cf_run}: the CF model has {self.model.n_items} items, "
                f"the dataset {item_tokens.shape[0]} (trained on another dataset?)"
            )
        self.index = TrieRewardIndex(item_tokens)
        # Causal models (SASRec, GRU4Rec) give the state after every prefix in one pass.
        self.per_position = (
            type(self.model).encode_all_positions is not SequentialRecommender.encode_all_positions
        )
        self.vocab_size = vocab_size
        self.max_history = max_history

    @torch.no_grad()
    def __call__(self, batch: dict, index: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows, positions = index[:, 0], index[:, 1] + 1  # the token predicted at index[:, 1]
        slots = batch["item_slot"][rows, positions]  # [N] which item of the example
        prefix_len = batch["id_pos"][rows, positions]  # [N] identifier tokens before it
        items = batch["items"].cpu()  # [B, W], -1 padded
        width = items.shape[1]
        unique, inverse = torch.unique((rows * width + slots).cpu(), return_inverse=True)
        u_rows, u_slots = unique // width, unique % width
        users = [batch["user"][r] for r in u_rows.tolist()] if "user" in batch else None
        probs = self.item_probs(items, u_rows, u_slots, users)  # [M, I]
        target_items = items[u_rows, u_slots][inverse]  # [N]
        prefix_nodes = self.index.paths[target_items, prefix_len.cpu()]  # [N]
        rewards = trie_prefix_rewards(probs, self.index, inverse, prefix_nodes, self.vocab_size)
        return rewards.to(index.device)

    def item_probs(
        self, items: torch.Tensor, rows: torch.Tensor, slots: torch.Tensor, users: list | None
    ) -> torch.Tensor:
        """``R(i)`` after ``items[rows[m], :slots[m]]`` (cut to ``max_history``): ``[M, I]``,
        each row up to a positive factor (Eq. 10 is a ratio of masses)."""
        if self.per_position and int(slots.max()) <= self.max_history:
            # every history starts at its example's first item: one causal pass per example
            examples, which = torch.unique(rows, return_inverse=True)
            seqs = items[examples, : self.max_history]  # [R, T]
            item_seq, seq_len = (seqs + 1).clamp(min=0), (seqs >= 0).sum(1)
            device = next(self.model.parameters()).device
            states = self.model.encode_all_positions(item_seq.to(device), seq_len.to(device))
            logits = self.model.score_all(states[which, slots - 1]).float()  # after slot items
            # R up to a factor per row, which Eq. 10's ratios cancel: exp(s - max), in place
            return logits.sub_(logits.amax(-1, keepdim=True)).exp_().cpu()
        histories = [
            items[r, max(0, s - self.max_history) : s].tolist()
            for r, s in zip(rows.tolist(), slots.tolist(), strict=True)
        ]
        return cf_item_probs(self.model, histories, users).cpu()
