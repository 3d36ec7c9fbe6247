"""``ilrec evaluate``: metrics of a trained run next to popularity, as JSON and markdown."""

from __future__ import annotations

import time
from pathlib import Path

from ilrec.data.io import atomic_write_json, atomic_write_text
from ilrec.data.split import popularity_counts
from ilrec.distributed import is_main_process
from ilrec.evaluation.partial import PartialRankings, model_signature
from ilrec.evaluation.ranking import evaluate_examples, popularity_metrics
from ilrec.evaluation.result_files import eval_stem, rankings_tsv
from ilrec.runs.setup import load_for_inference, load_setup, open_run

METRIC_KEYS = ("hit@5", "ndcg@5", "hit@10", "ndcg@10")


def markdown_table(rows: dict[str, dict[str, float]], keys=METRIC_KEYS) -> str:
    """A markdown table with one row per method and one column per metric."""
    lines = ["| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for name, metrics in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{metrics[k]:.4f}" for k in keys) + " |")
    return "\n".join(lines)


def evaluate_run(
    run_dir: Path,
    split: str = "test",
    mode: str = "beam",
    beams: int = 20,
    batch_size: int = 16,
    users: int = 0,
    progress: bool = True,
    reasoning_tokens: int = 0,
    threads: int | None = None,
) -> dict[str, dict[str, float]]:
    """Evaluate the selected model of ``run_dir`` on ``split``.

    Writes ``<stem>.json`` / ``.md`` (metrics next to popularity) and ``.rankings.tsv``
    (every user's target and top-``beams`` items), with the stem of :func:`eval_stem`.
    ``reasoning_tokens > 0``: the model first writes a greedy rationale of up to that many
    tokens and the separator (a model trained with ``align.reasoning_tokens``).
    ``mode="candidates"`` (a run with ``data.task=candidates``) is
    :func:`~ilrec.evaluation.candidate_report.evaluate_candidate_run`.
    ``threads``: torch threads (None: the run's ``train.threads``).
    Resumable: the rows ranked so far are kept in ``<stem>.partial.pt`` (see
    :mod:`ilrec.evaluation.partial`) until the results are written; running the same
    evaluation again continues from them.
    """
    if mode == "candidates":
        if reasoning_tokens:
            raise ValueError("--reasoning-tokens applies to full ranking, not --mode candidates")
        from ilrec.evaluation.candidate_report import evaluate_candidate_run

        return evaluate_candidate_run(run_dir, split, batch_size, users, progress, threads=threads)
    run_dir, config = open_run(run_dir, threads)
    if config.data.task == "candidates":
        raise ValueError(
            f"{run_dir} was trained on candidate rows (data.task=candidates): "
            "evaluate it with --mode candidates"
        )
    setup = load_setup(config)
    model, encoder = load_for_inference(run_dir, setup)
    examples = setup.splits.examples(split)
    if users > 0:
        examples = examples[:users]
    ks = tuple(config.eval.ks)
    main = is_main_process()
    stem = run_dir / eval_stem(split, mode, users, reasoning_tokens)
    partial = PartialRankings(
        stem.with_suffix(".partial.pt"),
        {
            "split": split,
            "mode": mode,
            "beams": beams,
            "reasoning_tokens": reasoning_tokens,
            "users": [[e.user, e.target] for e in examples],
            "model": model_signature(run_dir),
        },
        write=main,
    )
    done = partial.load()
    start = time.perf_counter()
    metrics, ranked = evaluate_examples(
        model,
        encoder,
        examples,
        mode=mode,
        beams=beams,
        batch_size=batch_size,
        ks=ks,
        progress=progress and main,
        reasoning_tokens=reasoning_tokens,
        done=done,
        on_chunk=partial.save,
    )
    seconds = time.perf_counter() - start
    rows = {
        "popularity": popularity_metrics(
            popularity_counts(setup.splits, setup.data.n_items), examples, ks
        ),
        f"model ({mode})": metrics,
    }
    if main:  # the .json last: a study takes it as the mark of a finished evaluation
        table = markdown_table(rows)
        atomic_write_text(stem.with_suffix(".rankings.tsv"), rankings_tsv(examples, ranked))
        atomic_write_text(stem.with_suffix(".md"), table + "\n")
        atomic_write_json(
            stem.with_suffix(".json"),
            {
                "split": split,
                "mode": mode,
                "beams": beams,
                "users": len(examples),
                "reasoning_tokens": reasoning_tokens,
                "seconds": round(seconds, 2),
                "resumed_after_users": 0 if done is None else len(done),
                "metrics": rows,
            },
        )
        partial.remove()
        print(f"{split} split, {len(examples)} users, {mode} mode, {seconds:.1f} s\n{table}")
    return rows
