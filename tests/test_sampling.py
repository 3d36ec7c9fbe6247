"""Length-grouped batches: a permutation, little padding, seeded per epoch, kept out of GRPO."""

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import RandomSampler, SequentialSampler
from transformers import TrainingArguments
from transformers.trainer_pt_utils import get_length_grouped_indices

from ilrec.training.sampling import LengthGroupedSampler, length_grouped_order
from ilrec.training.trainer import RecTrainer


def _batches(order: list[int], batch_size: int) -> list[list[int]]:
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padded_fraction(lengths: list[int], order: list[int], batch_size: int) -> float:
    """Share of the tokens of padded batches that are padding."""
    real = padded = 0
    for batch in _batches(order, batch_size):
        sizes = [lengths[i] for i in batch]
        real += sum(sizes)
        padded += len(sizes) * max(sizes)
    return 1 - real / padded


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 100), min_size=1, max_size=300),
    batch_size=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_order_reorders_the_grouped_batches_and_keeps_the_partial_batch_last(
    lengths, batch_size, seed
):
    order = length_grouped_order(lengths, batch_size, torch.Generator().manual_seed(seed))
    grouped = get_length_grouped_indices(
        lengths, batch_size, generator=torch.Generator().manual_seed(seed)
    )
    assert sorted(order) == list(range(len(lengths)))
    n_full = len(lengths) // batch_size * batch_size
    assert order[n_full:] == grouped[n_full:]  # the partial batch, unchanged and last
    full_batches = sorted(map(tuple, _batches(order[:n_full], batch_size)))
    assert full_batches == sorted(map(tuple, _batches(grouped[:n_full], batch_size)))
    if len(lengths) >= batch_size:
        assert max(lengths[i] for i in order[:batch_size]) == max(lengths)  # longest first


def test_partial_batch_may_hold_the_example_swapped_out_for_the_longest():
    # Hugging Face swaps the longest example to the front; when it was drawn into a last
    # mega-batch that is the partial batch, the example it is swapped with lands there, so
    # the partial batch is not sorted by length (hypothesis found this case)
    lengths = [1] * 8 + [3, 100]
    order = length_grouped_order(lengths, 4, torch.Generator().manual_seed(8))
    assert [lengths[i] for i in order[:4]] == [100, 1, 1, 1]
    assert [lengths[i] for i in order[-2:]] == [1, 3]


def test_grouping_removes_most_padding():
    rng = random.Random(0)
    lengths = [rng.randint(13, 90) for _ in range(6400)]
    grouped = length_grouped_order(lengths, 64, torch.Generator().manual_seed(0))
    shuffled = list(range(len(lengths)))
    rng.shuffle(shuffled)
    assert padded_fraction(lengths, shuffled, 64) > 0.3
    assert padded_fraction(lengths, grouped, 64) < 0.05


def test_batches_come_in_random_order_not_longest_to_shortest():
    lengths = list(range(1, 6401))
    order = length_grouped_order(lengths, 16, torch.Generator().manual_seed(0))
    maxima = [max(lengths[i] for i in b) for b in _batches(order, 16)]
    descents = sum(a > b for a, b in zip(maxima[1:], maxima[2:], strict=False))
    # a sweep inside each mega-batch would descend at almost every step; a random order
    # descends about half the time
    assert 0.35 < descents / (len(maxima) - 2) < 0.65


def test_sampler_order_depends_on_seed_and_epoch_only():
    lengths = [random.Random(1).randint(1, 50) for _ in range(500)]
    a, b = LengthGroupedSampler(lengths, 8, seed=3), LengthGroupedSampler(lengths, 8, seed=3)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first  # a new order every epoch
    b.set_epoch(1)
    assert list(a) == list(b)  # a resumed run (a fresh sampler at epoch 1) sees the same
    b.set_epoch(0)
    assert list(b) == first
    assert list(LengthGroupedSampler(lengths, 8, seed=4)) != first
    assert len(a) == 500
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedSampler(lengths, 0, seed=0)


@pytest.mark.parametrize(
    ("group", "strategy", "expected"),
    [
        (False, "random", RandomSampler),
        (True, "random", LengthGroupedSampler),
        (True, "sequential", SequentialSampler),  # GRPO's fixed rollout order is kept
    ],
)
def test_trainer_groups_only_a_random_order(tmp_path, group, strategy, expected):
    args = TrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], per_device_train_batch_size=4
    )
    args.train_sampling_strategy = strategy
    data = [{"input_ids": [1] * n} for n in (3, 9, 2, 7, 5, 1, 8, 4)]
    trainer = RecTrainer(
        model=torch.nn.Linear(2, 2),
        args=args,
        train_dataset=data,
        objective=None,
        rank_metrics_fn=None,
        group_by_length=group,
    )
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, expected)
    if group:
        assert max(len(data[i]["input_ids"]) for i in list(sampler)[:4]) == 9  # longest first


def test_two_ranks_split_grouped_batches_between_them():
    # how accelerate shards the sampler's batches under DDP: rank r takes every other batch
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    rng = random.Random(2)
    lengths = [rng.randint(5, 80) for _ in range(64 * 40)]
    sampler = LengthGroupedSampler(lengths, 8, seed=0)
    shards = [list(BatchSamplerShard(BatchSampler(sampler, 8, False), 2, rank)) for rank in (0, 1)]
    seen = [i for shard in shards for batch in shard for i in batch]
    assert sorted(seen) == list(range(len(lengths)))  # every example once, on one rank
    for shard in shards:
        assert padded_fraction(lengths, [i for b in shard for i in b], 8) < 0.1
