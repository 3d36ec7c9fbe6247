"""SPRec's self-play loop (Gao et al., 2024; baselines digest §4), ``align.method=sprec``.

Each of ``align.iterations`` iterations, starting from ``align.from_run``:

1. **negatives**: the current model's top non-history item for a seeded sample of
   ``align.examples`` training prompts (all when 0; a new sample per iteration); a prompt
   whose top item is its target has no negative and is dropped (counted; SPRec's code keeps
   it as its own negative);
2. **SFT**: one run of ``train.epochs`` of cross-entropy on those prompts' targets
   (``align.sft_lr``, else ``train.lr``), from the current model;
3. **DPO**: ``train.epochs`` of the sigmoid DPO loss with ``align.beta`` (SPRec: 0.1) on the
   pairs of step 1, from the SFT model, which is also the reference.

The next iteration starts from the DPO model. Every step is a run folder of its own under
``<output_dir>/iter_<i>/`` (``pairs.pt``, ``sft/``, ``dpo/``): a killed loop resumes inside
the step it was in, and finished steps are not redone. The loop's ``model/`` is the DPO model
of the iteration with the best validation NDCG@10; ``iterations.jsonl`` and ``sprec.png``
record each iteration.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from ilrec.alignment.negatives import NegativeContext
from ilrec.alignment.pairs import PairSet, build_pairs, subsample
from ilrec.alignment.stage import run_continued_sft, run_preference
from ilrec.config import Config, save_config
from ilrec.data.io import atomic_write_json
from ilrec.data.split import popularity_counts
from ilrec.distributed import barrier, is_main_process
from ilrec.runs.files import append_jsonl, read_jsonl, write_environment
from ilrec.runs.setup import load_setup, load_trained, make_encoder, set_threads
from ilrec.training.run import RunExistsError

__all__ = ["run_sprec"]


def _sub_config(config: Config, run_dir: Path, from_run: Path, method: str, lr: float) -> Config:
    return dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, output_dir=str(run_dir), lr=lr),
        align=dataclasses.replace(config.align, from_run=str(from_run), method=method),
    )


def _state(run_dir: Path) -> tuple[bool, bool]:
    """``(done, started)`` of a step's run folder."""
    return (run_dir / "train_summary.json").exists(), run_dir.exists()


def _greedy_pairs(path: Path, model_run: Path, examples, config: Config, setup, seed) -> PairSet:
    """Step 1: the current model's greedy negatives, saved to ``path`` (reused when there)."""
    if path.exists():
        return PairSet.load(path)
    model, tokenizer = load_trained(model_run)
    encoder = make_encoder(setup, tokenizer)
    ctx = NegativeContext(
        setup.data.n_items,
        popularity_counts(setup.splits, setup.data.n_items),
        model,
        encoder,
        batch_size=config.eval.batch_size,
    )
    start = time.perf_counter()
    pairs = build_pairs(examples, {"greedy": 1}, ctx, seed)
    if is_main_process():
        pairs.save(path)
        atomic_write_json(
            path.with_suffix(".json"),
            {
                "pairs": len(pairs),
                "examples": len(examples),
                "dropped_negative_equals_target": pairs.dropped,
                "sampling_seconds": round(time.perf_counter() - start, 2),
                "model": str(model_run),
            },
        )
    barrier()
    return pairs


def run_sprec(
    config: Config,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: list[TrainerCallback] | None = None,
) -> dict[str, float]:
    """Run the loop (see the module docstring); returns the best validation NDCG@10."""
    set_threads(config.train.threads)
    root = Path(config.train.output_dir)
    if root.exists() and any(root.iterdir()) and not (resume or overwrite):
        raise RunExistsError(
            f"{root} already holds a run; use --resume to continue it, --overwrite to replace "
            "it, or a new train.output_dir"
        )
    if is_main_process():
        if overwrite and not resume and root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        save_config(config, root / "config.yaml")
        write_environment(root)
    barrier()
    setup = load_setup(config)
    all_examples = setup.splits.train_prefixes()
    sft_lr = config.align.sft_lr or config.train.lr
    current = Path(config.align.from_run)
    log_path = root / "iterations.jsonl"
    logged = {r["iteration"] for r in read_jsonl(log_path)}
    for it in range(1, config.align.iterations + 1):
        it_dir = root / f"iter_{it}"
        if is_main_process():
            it_dir.mkdir(exist_ok=True)
        barrier()
        seed = config.align.seed + it
        ids = subsample(all_examples, config.align.examples, seed)
        examples = [all_examples[i] for i in ids]
        pairs = _greedy_pairs(it_dir / "pairs.pt", current, examples, config, setup, seed)
        sft_dir, dpo_dir = it_dir / "sft", it_dir / "dpo"
        done, started = _state(sft_dir)
        if not done:
            run_continued_sft(
                _sub_config(config, sft_dir, current, "sprec", sft_lr),
                examples,
                resume=started,
                callbacks=callbacks,
            )
        done, started = _state(dpo_dir)
        if not done:
            run_preference(
                _sub_config(config, dpo_dir, sft_dir, "dpo", config.train.lr),
                resume=started,
                callbacks=callbacks,
                pairs=pairs,
                examples=examples,
            )
        if is_main_process() and it not in logged:
            append_jsonl(log_path, _iteration_record(it, it_dir, pairs, config.selection_metric))
        current = dpo_dir
    return _finish(root, config)


def _iteration_record(it: int, it_dir: Path, pairs: PairSet, metric: str) -> dict:
    import json

    sft = json.loads((it_dir / "sft" / "train_summary.json").read_text())
    dpo = json.loads((it_dir / "dpo" / "train_summary.json").read_text())
    sampling = json.loads((it_dir / "pairs.json").read_text())
    last = [r for r in read_jsonl(it_dir / "dpo" / "metrics.jsonl") if "reward_accuracy" in r]
    return {
        "iteration": it,
        "pairs": len(pairs),
        "dropped_negative_equals_target": pairs.dropped,
        "sampling_seconds": sampling["sampling_seconds"],
        f"sft_valid_{metric}": sft[f"best_valid_{metric}"],
        f"dpo_valid_{metric}": dpo[f"best_valid_{metric}"],
        "sft_seconds": sft["train_seconds_without_validation"],
        "dpo_seconds": dpo["train_seconds_without_validation"],
        "dpo_reference_seconds": dpo.get("reference_seconds_this_process"),
        "dpo_last_reward_accuracy": last[-1]["reward_accuracy"] if last else None,
        "peak_memory_mb": max(sft["peak_memory_mb"]["rss"], dpo["peak_memory_mb"]["rss"]),
    }


def _finish(root: Path, config: Config) -> dict[str, float]:
    """Copy the best iteration's DPO model to ``root/model``; summary and plot."""
    metric = config.selection_metric
    records = sorted(read_jsonl(root / "iterations.jsonl"), key=lambda r: r["iteration"])
    best = max(records, key=lambda r: r[f"dpo_valid_{metric}"] or 0.0)
    if is_main_process():
        source = root / f"iter_{best['iteration']}" / "dpo"
        for name in ("model", "tokenizer"):
            tmp = root / f"{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(source / name, tmp)
            shutil.rmtree(root / name, ignore_errors=True)
            tmp.rename(root / name)
        atomic_write_json(
            root / "train_summary.json",
            {
                "method": "sprec",
                "from_run": config.align.from_run,
                "iterations": len(records),
                "best_iteration": best["iteration"],
                "selection_metric": metric,
                f"best_valid_{metric}": best[f"dpo_valid_{metric}"],
                "train_seconds_without_validation": sum(
                    r["sft_seconds"] + r["dpo_seconds"] for r in records
                ),
                "sampling_seconds": sum(r["sampling_seconds"] for r in records),
                "sampling_passes": len(records),
                "epochs": len(records) * 2 * config.train.epochs,
                "peak_memory_mb": {"rss": max(r["peak_memory_mb"] for r in records)},
            },
        )
        _plot(root, records, metric)
    barrier()
    return {metric: best[f"dpo_valid_{metric}"] or 0.0}


def _plot(root: Path, records: list[dict], metric: str) -> None:
    from ilrec.evaluation.plots import pyplot, save_figure

    plt = pyplot()
    its = [r["iteration"] for r in records]
    fig, (ax_valid, ax_pairs) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_valid.plot(its, [r[f"sft_valid_{metric}"] for r in records], marker="o", label="after SFT")
    ax_valid.plot(its, [r[f"dpo_valid_{metric}"] for r in records], marker="s", label="after DPO")
    ax_valid.set_xlabel("iteration")
    ax_valid.set_title(f"validation {metric}")
    ax_valid.legend()
    ax_pairs.bar(its, [r["dropped_negative_equals_target"] for r in records])
    ax_pairs.set_xlabel("iteration")
    ax_pairs.set_title("prompts whose top item was the target (dropped)")
    fig.tight_layout()
    save_figure(fig, root / "sprec.png")
