"""The collaborative reward provider for CRR (paper Section 2.4, Eqs. 10-11).

A trained, frozen CF model (``ilrec train-cf``) gives ``R(i)``, the probability of every item
after the *same history the LM sees* for each supervised identifier; Eq. 10 turns it into
token rewards at every supervised position. CF scores are computed once per distinct
(example, target item) of a batch and shared by that identifier's token positions; Eq. 10 is
evaluated through the identifier trie (node masses), which equals
:func:`ilrec.rewards.prefix_rewards` at a fraction of its cost.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ilrec.identifiers.trie import PrefixTrie
from ilrec.rewards import item_paths, trie_prefix_rewards


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
        from ilrec.training.cf import load_cf_model

        self.model, _ = load_cf_model(cf_run)
        self.model.requires_grad_(False)
        if self.model.n_items != item_tokens.shape[0]:
            raise ValueError(
                f"objective.cf_run={cf_run}: the CF model has {self.model.n_items} items, "
                f"the dataset {item_tokens.shape[0]} (trained on another dataset?)"
            )
        self.trie = PrefixTrie.from_item_tokens(item_tokens)
        self.paths = item_paths(self.trie, item_tokens)  # [I, D + 1] prefix nodes
        self.vocab_size = vocab_size
        self.max_history = max_history

    @torch.no_grad()
    def __call__(self, batch: dict, index: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows, positions = index[:, 0], index[:, 1] + 1  # the token predicted at index[:, 1]
        slots = batch["item_slot"][rows, positions]  # [N] which item of the example
        prefix_len = batch["id_pos"][rows, positions]  # [N] identifier tokens before it
        items = batch["items"]  # [B, W], -1 padded
        width = items.shape[1]
        unique, inverse = torch.unique(rows * width + slots, return_inverse=True)
        u_rows, u_slots = unique // width, unique % width
        histories = [
            items[r, max(0, s - self.max_history) : s].tolist()
            for r, s in zip(u_rows.tolist(), u_slots.tolist(), strict=True)
        ]
        users = [batch["user"][r] for r in u_rows.tolist()] if "user" in batch else None
        from ilrec.training.cf import cf_item_probs

        probs = cf_item_probs(self.model, histories, users).cpu()  # [M, I]
        target_items = items[u_rows, u_slots].cpu()[inverse.cpu()]  # [N]
        prefix_nodes = self.paths[target_items, prefix_len.cpu()]  # [N]
        rewards = trie_prefix_rewards(
            probs, self.trie, self.paths, inverse.cpu(), prefix_nodes, self.vocab_size
        )
        return rewards.to(index.device)
