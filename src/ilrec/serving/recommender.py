"""Top-k recommendations for arbitrary histories from a trained run (Python API).

A :class:`Recommender` loads a run once (config, data, merged eval-mode model, tokenizer,
encoder, identifier trie) and ranks the whole catalogue for each history exactly as
``ilrec evaluate`` ranks it for a user with that history: the same prompt (histories cut to the
most recent ``data.max_history`` items, prompt paraphrase 0), the same batching and the same
ranker (``beam``: trie-constrained beam search of width ``max(k, beams)``; ``exact``: every
item scored, top ``k``). The score of an item is the summed log-probability of its identifier.

    recommender = Recommender.from_run("runs/demo/sft")
    recommender.recommend([[3, 17, 42]], k=10)[0][0]  # Recommendation(item=..., score=...)

The JSONL front end of ``ilrec recommend`` is :mod:`ilrec.serving.jsonl_io`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ilrec.data.dataset import DataError, InteractionData, read_item2id
from ilrec.data.encoding import Encoder
from ilrec.evaluation.beam import constrained_beam_search
from ilrec.evaluation.exact import rank_items, score_all_items
from ilrec.identifiers.trie import PrefixTrie

if TYPE_CHECKING:
    from ilrec.runs.setup import Setup

MODES = ("beam", "exact")

__all__ = ["Catalogue", "MODES", "Recommendation", "Recommender", "item_problem"]


@dataclass(frozen=True)
class Recommendation:
    """One recommended item.

    Attributes:
        item: internal item id (``0..n_items-1``).
        original_id: the item's id in the dataset's ``X.item2id`` (None without that file).
        score: summed log-probability of the item's identifier after the history's prompt.
        title: the item's title (None when the dataset has no item texts).
    """

    item: int
    original_id: str | None
    score: float
    title: str | None

    def to_json(self) -> dict[str, Any]:
        """The output record ``{"item", "original_id", "title", "score"}``."""
        return {
            "item": self.item,
            "original_id": self.original_id,
            "title": self.title,
            "score": self.score,
        }


@dataclass(frozen=True)
class Catalogue:
    """What a dataset knows about its items: their number, original ids and titles.

    Attributes:
        n_items: items are ``0..n_items-1``.
        original_ids: ``original_ids[item]`` from ``X.item2id`` (None without that file).
        titles: ``titles[item]`` from ``X.item.json`` (None without item texts).
        item2id_path: where the original ids come from (for messages).
    """

    n_items: int
    original_ids: tuple[str, ...] | None
    titles: tuple[str, ...] | None
    item2id_path: Path

    @classmethod
    def from_data(cls, data: InteractionData) -> Catalogue:
        """The catalogue of a loaded dataset (reads ``X.item2id`` when present).

        Args:
            data: a dataset from :func:`ilrec.data.dataset.load_dataset`.

        Returns:
            The dataset's :class:`Catalogue`.
        """
        path = Path(data.root) / f"{data.name}.item2id"
        originals = read_item2id(path, data.n_items) if path.is_file() else None
        titles = tuple(data.titles()) if data.items is not None else None
        return cls(data.n_items, originals, titles, path)

    @cached_property
    def item_of_original(self) -> dict[str, int]:
        """``{original id: internal id}``; a :class:`DataError` without ``X.item2id``."""
        if self.original_ids is None:
            raise DataError(f"{self.item2id_path}: missing; original item ids need this file")
        return {original: item for item, original in enumerate(self.original_ids)}

    def internal_ids(self, originals: Sequence[str]) -> list[int]:
        """Internal ids of original item ids.

        Args:
            originals: ids as written in ``X.item2id``.

        Returns:
            The internal id of each.

        Raises:
            ValueError: naming the unknown ids (a :class:`DataError` without ``X.item2id``).
        """
        lookup = self.item_of_original
        unknown = [o for o in originals if o not in lookup]
        if unknown:
            raise ValueError(
                f"unknown original item ids {unknown[:5]} (not in {self.item2id_path.name})"
            )
        return [lookup[o] for o in originals]


class Recommender:
    """Ranks the catalogue of a trained run for item histories (see the module docstring).

    Args:
        model: the run's causal LM (eval mode, adapters merged).
        encoder: the run's encoder (prompts and item identifiers).
        catalogue: the dataset's items (original ids, titles).
        max_history: histories are cut to their last ``max_history`` items (``data.max_history``).
        mode: ``beam`` (constrained beam search) or ``exact`` (score every item).
        batch_size: histories per forward (use evaluation's to get bit-identical scores).
        beams: beam width in beam mode (at least ``k``); ``ilrec evaluate --beams``' default.
    """

    def __init__(
        self,
        model: nn.Module,
        encoder: Encoder,
        catalogue: Catalogue,
        max_history: int,
        mode: str = "beam",
        batch_size: int = 16,
        beams: int = 20,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if batch_size < 1 or beams < 1 or max_history < 1:
            raise ValueError(
                f"batch_size, beams, max_history must be >= 1, got {batch_size}, {beams}, {max_history}"
            )
        self.model, self.encoder, self.catalogue = model.eval(), encoder, catalogue
        self.max_history, self.mode = max_history, mode
        self.batch_size, self.beams = batch_size, beams
        self.trie = PrefixTrie.from_item_tokens(encoder.item_table())

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        mode: str = "beam",
        batch_size: int = 16,
        beams: int = 20,
        setup: Setup | None = None,
    ) -> Recommender:
        """Load a finished run once: config, data, model (merged, eval), tokenizer, encoder.

        Torch's thread count is left as it is (``ilrec recommend`` sets them with
        :func:`~ilrec.runs.setup.open_run`, as ``ilrec evaluate`` does).

        Args:
            run_dir: a folder written by ``ilrec train`` or ``ilrec align``.
            mode: ``beam`` or ``exact``.
            batch_size: histories per forward.
            beams: beam width in beam mode.
            setup: the run's :class:`~ilrec.runs.setup.Setup` when already loaded.

        Returns:
            A ready :class:`Recommender`.

        Raises:
            FileNotFoundError: ``<path>: not a run folder (...)`` or no trained model.
        """
        from ilrec.runs.setup import load_for_inference, load_setup, read_run

        run_dir, config = read_run(run_dir)
        if setup is None:
            setup = load_setup(config)
        model, encoder = load_for_inference(run_dir, setup)
        catalogue = Catalogue.from_data(setup.data)
        return cls(
            model, encoder, catalogue, setup.config.data.max_history, mode, batch_size, beams
        )

    def rank(self, histories: Sequence[Sequence[int]], k: int = 10) -> tuple[Tensor, Tensor]:
        """Top-``k`` items and their scores for every history.

        Args:
            histories: internal item ids, oldest first (cut to the last ``max_history``).
            k: items per history (at most the catalogue size).

        Returns:
            ``items[U, k]`` and ``scores[U, k]`` (summed log-probabilities), best first,
            ties by lower item id.

        Raises:
            ValueError: an empty history, an unknown item id, or ``k`` out of ``1..n_items``.
        """
        n_items = self.catalogue.n_items
        if not 1 <= k <= n_items:
            raise ValueError(f"k must be in 1..{n_items} (the catalogue size), got {k}")
        prompts = [self.encoder.prompt_ids(h) for h in self._cut(histories)]
        pad = self.encoder.tokenizer.pad_token_id
        items, scores = [], []
        for start in range(0, len(prompts), self.batch_size):  # bounds exact mode's [B, I]
            batch = prompts[start : start + self.batch_size]
            if self.mode == "beam":
                width = min(max(k, self.beams), n_items)
                top, top_scores = constrained_beam_search(
                    self.model, batch, self.trie, width, self.batch_size, pad
                )
            else:
                all_scores = score_all_items(
                    self.model, batch, self.trie, batch_size=self.batch_size, pad_token_id=pad
                )
                top = rank_items(all_scores, k)
                top_scores = all_scores.gather(1, top)
            items.append(top[:, :k])
            scores.append(top_scores[:, :k])
        if not items:
            return torch.empty(0, k, dtype=torch.long), torch.empty(0, k)
        return torch.cat(items), torch.cat(scores)

    def recommend(
        self, histories: Sequence[Sequence[int]], k: int = 10
    ) -> list[list[Recommendation]]:
        """Top-``k`` :class:`Recommendation` lists, one per history (see :meth:`rank`).

        Args:
            histories: internal item ids, oldest first.
            k: items per history.

        Returns:
            One list of ``k`` recommendations per history, best first.
        """
        items, scores = self.rank(histories, k)
        originals, titles = self.catalogue.original_ids, self.catalogue.titles
        return [
            [
                Recommendation(
                    item,
                    None if originals is None else originals[item],
                    score,
                    None if titles is None else titles[item],
                )
                for item, score in zip(row_items, row_scores, strict=True)
            ]
            for row_items, row_scores in zip(items.tolist(), scores.tolist(), strict=True)
        ]

    def _cut(self, histories: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        """Validated histories cut to their most recent ``max_history`` items."""
        out = []
        for row, history in enumerate(histories):
            problem = item_problem(history, self.catalogue.n_items, "Catalogue.internal_ids")
            if problem:
                raise ValueError(f"histories[{row}]: {problem}")
            out.append(tuple(int(i) for i in history[-self.max_history :]))
        return out


def item_problem(history: Sequence[Any], n_items: int, originals_hint: str) -> str | None:
    """What is wrong with a history of internal item ids (None when it is valid);
    ``originals_hint`` says how to pass original ids when the history holds strings."""
    if len(history) == 0:
        return "empty history; expected at least one item id"
    bad = [
        i
        for i in history
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < n_items
    ]
    if bad:
        hint = f"; for X.item2id ids use {originals_hint}" if isinstance(bad[0], str) else ""
        return f"unknown item ids {bad[:5]}; expected internal ids 0..{n_items - 1}{hint}"
    return None
