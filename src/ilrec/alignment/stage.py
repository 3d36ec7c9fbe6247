"""``ilrec align``: a training stage that starts from a finished run.

The starting run's selected model (LoRA adapters kept trainable) is the policy; frozen, it is
the reference, whose log-probabilities are computed once and cached in the run folder
(``reference_logps.pt``), so training holds one model. The stage reuses the SFT machinery:
the same Trainer subclass, checkpoints and ``--resume``, validation-based model selection,
``metrics.jsonl`` and ``train_summary.json``.

Methods (``align.method``): ``dpo``, ``sdpo``, ``rosepo`` (this module), ``sprec`` (the
self-play loop, :mod:`ilrec.alignment.sprec`) and ``grpo`` (:mod:`ilrec.alignment.grpo`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ilrec.alignment.negatives import NegativeContext
from ilrec.alignment.pairs import (
    PairSet,
    load_or_build_pairs,
    pair_features,
    reference_logps,
    subsample,
)
from ilrec.config import Config
from ilrec.data.packing import PackedCollator
from ilrec.data.split import Example, popularity_counts
from ilrec.evaluation.plots import ALIGNMENT_PANELS, plot_stage_safely
from ilrec.runs.setup import Setup, load_setup, load_trained, make_encoder
from ilrec.training.objectives import build_objective
from ilrec.training.run import RunStart, fit, start_run, validation_ranker, write_run_files

__all__ = ["align", "open_stage", "run_continued_sft", "run_preference", "training_examples"]


def align(
    config: Config,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, float]:
    """Run the stage named by ``align.method``; returns the best validation metrics."""
    if not config.align.from_run:
        raise ValueError("align.from_run is not set: `ilrec align --from RUN`")
    if Path(config.train.output_dir).resolve() == Path(config.align.from_run).resolve():
        raise ValueError("train.output_dir must differ from the run the stage starts from")
    method = config.align.method
    if method == "sprec":
        from ilrec.alignment.sprec import run_sprec

        return run_sprec(config, resume, overwrite, callbacks)
    if method == "grpo":
        from ilrec.alignment.grpo import run_grpo

        return run_grpo(config, resume, overwrite, callbacks)
    if method == "sft":
        return run_continued_sft(config, None, resume, overwrite, callbacks)
    return run_preference(config, resume, overwrite, callbacks)


def open_stage(config: Config, resume: bool, overwrite: bool) -> tuple[RunStart, Setup, Any, Any]:
    """A stage's run folder (checked; restartable before its first checkpoint), the data, the
    starting run's model (trainable, LoRA adapters kept) and the encoder; writes the run's
    config, environment and tokenizer."""
    start = start_run(config, resume, overwrite)
    setup = load_setup(config)
    model, tokenizer = load_trained(Path(config.align.from_run), trainable=True)
    encoder = make_encoder(setup, tokenizer)
    write_run_files(start, config, tokenizer)
    return start, setup, model, encoder


def training_examples(setup: Setup, n: int, seed: int) -> list[Example]:
    """The stage's training prompts: every training prefix (history -> next item), or a
    seeded subsample of ``n``. With ``data.task=candidates`` the candidate training rows
    (``setup.splits`` is then a :class:`~ilrec.data.candidates.CandidateSplits`), whose
    prompts list their candidates and which the ``candidates`` sampler draws from."""
    examples = setup.splits.train_prefixes()
    return [examples[i] for i in subsample(examples, n, seed)]


def negative_context(config: Config, setup: Setup, model, encoder) -> NegativeContext:
    return NegativeContext(
        setup.data.n_items,
        popularity_counts(setup.splits, setup.data.n_items),
        model,
        encoder,
        batch_size=config.eval.batch_size,
    )


def run_preference(
    config: Config,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[TrainerCallback] | None = None,
    pairs: PairSet | None = None,
    examples: list[Example] | None = None,
) -> dict[str, float]:
    """DPO / S-DPO / RosePO from ``align.from_run`` (``pairs`` and ``examples`` given by a
    caller such as SPRec, or sampled here and saved for a resumed run)."""
    start, setup, model, encoder = open_stage(config, resume, overwrite)
    if examples is None:
        examples = training_examples(setup, config.align.examples, config.align.seed)
    clock = time.perf_counter()
    if pairs is None:
        ctx = negative_context(config, setup, model, encoder)
        pairs = load_or_build_pairs(start.run_dir, examples, config.align, ctx, start.is_main)
    elif start.is_main:
        pairs.save(start.run_dir / "pairs.pt")
    sampled = time.perf_counter()
    ref = reference_logps(
        start.run_dir,
        model,
        pairs,
        examples,
        encoder,
        config.eval.batch_size,
        start.is_main,
    )
    referenced = time.perf_counter()
    features = pair_features(pairs, examples, encoder, ref)
    summary = {
        "method": config.align.method,
        "from_run": config.align.from_run,
        "pairs": len(pairs),
        "negatives_per_pair": pairs.rejected.shape[1],
        "dropped_pairs": pairs.dropped,
        "sampling_seconds_this_process": sampled - clock,
        "reference_seconds_this_process": referenced - sampled,
    }
    return _fit(start, config, model, features, encoder, setup, callbacks, summary)


def run_continued_sft(
    config: Config,
    examples: list[Example] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, float]:
    """Cross-entropy on ``examples`` (prompt + target) starting from ``align.from_run``: the
    SFT step of SPRec's loop, or ``align.method=sft`` (``examples`` None: the same seeded
    ``align.examples`` prompts a preference method would train on)."""
    import random

    from ilrec.data.encoding import PaddingCollator

    start, setup, model, encoder = open_stage(config, resume, overwrite)
    if examples is None:
        examples = training_examples(setup, config.align.examples, config.align.seed)
    rng = random.Random(config.train.seed)
    features = [encoder.encode_example(e, rng.randrange(encoder.n_paraphrases)) for e in examples]
    return fit(
        start,
        config,
        model,
        build_objective("ce", config, model, encoder),
        features,
        PaddingCollator(encoder.tokenizer.pad_token_id),
        validation_ranker(config, setup.splits.valid, encoder),
        callbacks,
        {"method": "sft", "from_run": config.align.from_run, "examples": len(examples)},
    )


def _fit(
    start: RunStart, config: Config, model, features, encoder, setup, callbacks, summary
) -> dict[str, float]:
    objective = build_objective(config.align.method, config, model, encoder)
    result = fit(
        start,
        config,
        model,
        objective,
        features,
        PackedCollator(encoder.tokenizer.pad_token_id),
        validation_ranker(config, setup.splits.valid, encoder),
        callbacks,
        summary,
    )
    if start.is_main:
        plot_stage_safely(start.run_dir, ALIGNMENT_PANELS, "alignment.png")
    return result
