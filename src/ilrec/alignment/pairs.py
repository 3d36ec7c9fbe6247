"""Preference pairs of an alignment run, and the files that make a resumed run reuse them.

A run folder holds ``pairs.pt`` (which training examples, chosen and rejected items, RosePO's
smoothing), ``pairs.json`` (counts, dropped pairs, seconds) and ``reference_logps.pt`` (the
frozen reference's sequence log-probabilities of every chosen and rejected response, computed
once, so training holds one model). Both are checked against the run's examples on reuse.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ilrec.alignment.negatives import DROPPED, NegativeContext, sample_negatives
from ilrec.config import AlignConfig
from ilrec.data.encoding import Encoder
from ilrec.data.io import atomic_write_json
from ilrec.data.packing import pack_responses
from ilrec.data.split import Example
from ilrec.evaluation.ranking import shard_rows
from ilrec.models.scoring import score_responses

log = logging.getLogger(__name__)

__all__ = [
    "PairSet",
    "build_pairs",
    "load_or_build_pairs",
    "pair_features",
    "reference_logps",
    "subsample",
]


@dataclass
class PairSet:
    """``N`` prompts, each with a chosen item and ``K`` rejected ones.

    Attributes:
        example_ids: ``[N]`` indices into the stage's training examples.
        chosen: ``[N]`` item ids (the targets).
        rejected: ``[N, K]`` item ids.
        smoothing: ``[N, K]`` per-pair label smoothing (RosePO) or None.
        dropped: examples removed because a greedy negative equalled the target.
    """

    example_ids: Tensor
    chosen: Tensor
    rejected: Tensor
    smoothing: Tensor | None = None
    dropped: int = 0

    def __len__(self) -> int:
        return self.example_ids.numel()

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.__dict__, tmp)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> PairSet:
        return cls(**torch.load(path, weights_only=True))


def subsample(examples: list[Example], n: int, seed: int) -> list[int]:
    """Indices of a seeded random subsample of ``n`` examples, in order (all when n is 0)."""
    if n <= 0 or n >= len(examples):
        return list(range(len(examples)))
    return sorted(random.Random(seed).sample(range(len(examples)), n))


def build_pairs(
    examples: Sequence[Example], spec: dict[str, int], ctx: NegativeContext, seed: int
) -> PairSet:
    """Sample the rejected items of every example; drop examples left without a negative."""
    rejected = sample_negatives(examples, spec, ctx, seed)
    keep = (rejected != DROPPED).all(1)
    chosen = torch.tensor([e.target for e in examples], dtype=torch.long)
    return PairSet(
        example_ids=torch.arange(len(examples))[keep],
        chosen=chosen[keep],
        rejected=rejected[keep],
        dropped=int((~keep).sum()),
    )


def rosepo_smoothing(
    pairs: PairSet, examples: Sequence[Example], oracle_run: str, epsilon_max: float
) -> Tensor:
    """RosePO's personalised smoothing from a CF preference oracle (our reading, see
    docs): ``ε = ε_max · R(l) / (R(l) + R(w))`` — the oracle's Bradley-Terry probability that
    the user prefers the rejected item ``l`` over the chosen ``w``, scaled by ``ε_max``."""
    from ilrec.training.cf import cf_item_probs, load_cf_model

    model, _ = load_cf_model(oracle_run)
    out = []
    for start in range(0, len(pairs), 1024):
        ids = pairs.example_ids[start : start + 1024].tolist()
        histories = [list(examples[i].history) or [examples[i].target] for i in ids]
        users = [examples[i].user for i in ids]
        with torch.no_grad():
            probs = cf_item_probs(model, histories, users).cpu()  # [b, I]
        p_w = probs.gather(1, pairs.chosen[start : start + 1024, None])
        p_l = probs.gather(1, pairs.rejected[start : start + 1024])
        out.append(epsilon_max * p_l / (p_l + p_w).clamp(min=1e-30))
    return torch.cat(out) if out else torch.zeros(0, pairs.rejected.shape[1])


def load_or_build_pairs(
    run_dir: Path,
    examples: list[Example],
    cfg: AlignConfig,
    ctx: NegativeContext,
    is_main: bool = True,
) -> PairSet:
    """The run's pairs: read from ``pairs.pt`` when it exists (a resumed run), else sampled
    and written (with ``pairs.json``) by the main process."""
    path = run_dir / "pairs.pt"
    if path.exists():
        pairs = PairSet.load(path)
        _check_pairs(pairs, examples, path)
        return pairs
    start = time.perf_counter()
    pairs = build_pairs(examples, cfg.negatives, ctx, cfg.seed)
    if cfg.method == "rosepo":
        pairs.smoothing = rosepo_smoothing(pairs, examples, cfg.oracle_run, cfg.epsilon_max)
    seconds = time.perf_counter() - start
    log.info("%d pairs (%d dropped) in %.1f s", len(pairs), pairs.dropped, seconds)
    if is_main:
        pairs.save(path)
        atomic_write_json(
            run_dir / "pairs.json",
            {
                "pairs": len(pairs),
                "examples": len(examples),
                "dropped_negative_equals_target": pairs.dropped,
                "negatives": cfg.negatives,
                "seed": cfg.seed,
                "sampling_seconds": round(seconds, 2),
            },
        )
    return pairs


def _check_pairs(pairs: PairSet, examples: list[Example], path: Path) -> None:
    ids = pairs.example_ids
    if len(pairs) and int(ids.max()) >= len(examples):
        raise ValueError(f"{path}: pairs refer to examples this run does not have")
    targets = torch.tensor([examples[i].target for i in ids.tolist()], dtype=torch.long)
    if not torch.equal(targets, pairs.chosen):
        raise ValueError(f"{path}: saved pairs do not match this run's training examples")


def responses(pairs: PairSet, encoder: Encoder) -> list[list[list[int]]]:
    """Per pair: the chosen response, then the K rejected ones (token ids)."""
    items = torch.cat([pairs.chosen[:, None], pairs.rejected], dim=1).tolist()
    return [[encoder.response_ids(i) for i in row] for row in items]


def reference_logps(
    run_dir: Path,
    model: nn.Module,
    pairs: PairSet,
    examples: list[Example],
    encoder: Encoder,
    batch_size: int,
    is_main: bool = True,
) -> Tensor:
    """``[N, 1 + K]`` frozen-reference log-probabilities, cached in ``reference_logps.pt``."""
    path = run_dir / "reference_logps.pt"
    if path.exists():
        cached = torch.load(path, weights_only=True)
        if cached.shape != (len(pairs), 1 + pairs.rejected.shape[1]):
            raise ValueError(f"{path}: shape {tuple(cached.shape)} does not match the pairs")
        return cached
    prompts = [encoder.example_prompt_ids(examples[i]) for i in pairs.example_ids.tolist()]
    rows = list(zip(prompts, responses(pairs, encoder), strict=True))
    start = time.perf_counter()
    logps = shard_rows(
        lambda mine: score_responses(
            model,
            [p for p, _ in mine],
            [r for _, r in mine],
            encoder.tokenizer.pad_token_id,
            batch_size=batch_size,
            progress=lambda it: tqdm(it, desc="reference log-probs", disable=not is_main),
        ),
        rows,
    )
    log.info("reference log-probabilities in %.1f s", time.perf_counter() - start)
    if is_main:
        tmp = path.with_name(path.name + ".tmp")
        torch.save(logps, tmp)
        tmp.replace(path)
    return logps


def pair_features(
    pairs: PairSet, examples: list[Example], encoder: Encoder, ref: Tensor
) -> list[dict]:
    """Packed training features: prompt + chosen + K rejected, with reference log-probs."""
    out = []
    for n, (i, resp) in enumerate(
        zip(pairs.example_ids.tolist(), responses(pairs, encoder), strict=True)
    ):
        feature = pack_responses(encoder.example_prompt_ids(examples[i]), resp)
        feature["ref_logps"] = ref[n].tolist()
        if pairs.smoothing is not None:
            feature["smoothing"] = pairs.smoothing[n].tolist()
        out.append(feature)
    return out
