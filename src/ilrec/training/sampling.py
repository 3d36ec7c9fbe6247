"""Length-grouped training order: batches of examples of similar length, in random order.

A batch is padded to its longest example. With random batches of the sequence format on
Amazon Instruments (examples of 13 to 90 tokens) about two thirds of every batch is padding;
grouping by length removes almost all of it (BENCHMARKS.md, "Length-grouped batches").

The grouping is Hugging Face's ``get_length_grouped_indices`` (a random permutation cut into
mega-batches of 50 batches, each sorted by length). On top of it the full batches are
shuffled, so training does not sweep each mega-batch from its longest to its shortest
examples (the batch holding the longest example still comes first, as in Hugging Face's
sampler, so an out-of-memory error shows at the first step), and the order is drawn from
``seed + epoch`` (the Trainer calls ``set_epoch``), so a resumed run sees exactly the order of
an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices


def length_grouped_order(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator
) -> list[int]:
    """Example indices whose consecutive runs of ``batch_size`` have similar lengths.

    Every index appears once. The full batches come in random order, except that the one
    holding the longest example comes first; a last partial batch (``len(lengths) %
    batch_size`` examples) stays last, so the slicing into batches that the data loader does
    holds.
    """
    order = get_length_grouped_indices(list(lengths), batch_size, generator=generator)
    n_full = len(order) // batch_size
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(n_full)]
    # get_length_grouped_indices puts the longest example first: its batch stays first
    rest = [b for b in torch.randperm(n_full, generator=generator).tolist() if b != 0]
    batches = [batches[b] for b in [0, *rest][:n_full]]
    return [i for batch in batches for i in batch] + order[n_full * batch_size :]


class LengthGroupedSampler(Sampler[int]):
    """A sampler over ``lengths`` (one per training example) for batches of ``batch_size``."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(length_grouped_order(self.lengths, self.batch_size, generator))
