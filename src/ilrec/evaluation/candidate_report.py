"""``ilrec evaluate --mode candidates``: the candidate-ranking metrics of a run trained with
``data.task=candidates`` (see :mod:`ilrec.evaluation.candidates`), as JSON and markdown."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ilrec.data.io import atomic_write_json, atomic_write_text
from ilrec.data.split import popularity_counts
from ilrec.distributed import is_main_process
from ilrec.evaluation.candidates import (
    METRIC_KEYS,
    default_new_tokens,
    generate_answers,
    generation_metrics,
    popularity_ranking,
    rank_candidates,
)
from ilrec.evaluation.report import markdown_table
from ilrec.evaluation.result_files import eval_stem, rankings_tsv
from ilrec.runs.setup import load_for_inference, load_setup, open_run

__all__ = ["evaluate_candidate_run"]

MODE = "candidates"


def _markdown(ranking: dict, generation: dict, header: str) -> str:
    gen_rows = {f"model (greedy, {mode} match)": m for mode, m in generation.items()}
    return (
        f"{header}\n\nExact ranking of the candidates by sequence log-probability:\n\n"
        f"{markdown_table(ranking, METRIC_KEYS)}\n\n"
        "Greedy generation (hit@1 = HitRatio@1, valid = ValidRatio):\n\n"
        f"{markdown_table(gen_rows, ('hit@1', 'valid'))}\n"
    )


def evaluate_candidate_run(
    run_dir: Path,
    split: str = "test",
    batch_size: int = 16,
    users: int = 0,
    progress: bool = True,
    max_new_tokens: int | None = None,
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate the selected model of a candidate-task run on ``split``.

    Writes ``eval_<split>_candidates[_first<N>]``: ``.json`` / ``.md`` (exact ranking next to
    popularity, greedy generation with exact and substring matching), ``.rankings.tsv`` (each
    row's target and its ranked candidates, for ``ilrec compare --mode candidates``) and
    ``.answers.jsonl`` (each row's generated answer and the candidates each mode found in it).

    Args:
        run_dir: a finished run with ``data.task=candidates``.
        split: ``valid`` or ``test`` (the protocol's rows, ``data.protocol``).
        batch_size: rows per scoring / generation batch.
        users: evaluate the first N rows only (0 = all).
        progress: show a progress bar for the scoring.
        max_new_tokens: generation budget (None: 20 for titles, identifier length + 1).
        threads: torch threads (None: the run's ``train.threads``).

    Returns:
        ``{"popularity", "model (ranking)": {hit@1, hit@5, ndcg@5}, "model (greedy, exact
        match)", "model (greedy, substring match)": {hit@1, valid}}``.
    """
    run_dir, config = open_run(run_dir, threads)
    if config.data.task != "candidates":
        raise ValueError(f"{run_dir}: --mode candidates needs a run with data.task=candidates")
    setup = load_setup(config)
    model, encoder = load_for_inference(run_dir, setup)
    examples = setup.splits.examples(split)
    examples = examples[:users] if users > 0 else examples
    main = is_main_process()
    start = time.perf_counter()
    bar = _progress_bar(progress and main)
    metrics, ranked = rank_candidates(model, encoder, examples, batch_size, bar)
    new_tokens = max_new_tokens or default_new_tokens(encoder)
    answers = generate_answers(model, encoder, examples, batch_size, new_tokens)
    generation, details = generation_metrics(answers, examples, encoder)
    seconds = time.perf_counter() - start
    counts = popularity_counts(setup.splits, setup.data.n_items)
    ranking = {"popularity": popularity_ranking(counts, examples)[0], "model (ranking)": metrics}
    if main:
        n = len(examples[0].candidates)
        header = (
            f"{split} split, protocol {config.data.protocol}, {len(examples)} rows, "
            f"{n} candidates, {seconds:.1f} s"
        )
        stem = run_dir / eval_stem(split, MODE, users)
        record = {
            "split": split,
            "mode": MODE,
            "protocol": config.data.protocol,
            "candidates": n,
            "users": len(examples),
            "max_new_tokens": new_tokens,
            "seconds": round(seconds, 2),
            "metrics": ranking,
            "generation": generation,
        }
        atomic_write_json(stem.with_suffix(".json"), record)
        table = _markdown(ranking, generation, header)
        atomic_write_text(stem.with_suffix(".md"), table)
        atomic_write_text(stem.with_suffix(".rankings.tsv"), rankings_tsv(examples, ranked))
        lines = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in details)
        atomic_write_text(stem.with_suffix(".answers.jsonl"), lines)
        print(table, end="")
    gen_rows = {f"model (greedy, {mode} match)": m for mode, m in generation.items()}
    return {**ranking, **gen_rows}


def _progress_bar(enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return lambda it: tqdm(it, desc="candidate scores")
