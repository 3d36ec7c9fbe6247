"""Plots of a run: training loss and validation metrics over steps, and any logged series
(alignment rewards, GRPO statistics) by panel."""

from __future__ import annotations

import logging
from pathlib import Path

from ilrec.runs.files import read_jsonl

log = logging.getLogger(__name__)

ALIGNMENT_PANELS = {
    "implicit rewards β·(log π − log π_ref)": ["reward_chosen", "reward_rejected"],
    "reward margin (chosen − rejected)": ["reward_margin"],
    "preference accuracy": ["reward_accuracy"],
}
GRPO_PANELS = {
    "reward": ["reward_mean", "group_hit_rate"],
    "KL to the reference (k3)": ["kl"],
    "clipped share": ["clip_frac"],
    "seconds per step": ["step_seconds", "rollout_seconds"],
}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_path: Path) -> Path:
    """Write atomically (a temporary file, then rename) and close the figure."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    pyplot().close(fig)
    tmp.replace(out_path)
    return out_path


def plot_training_curves(metrics_path: Path, out_path: Path) -> Path:
    """Training loss (and each logged objective component) and validation HR/NDCG@10 (HR@1
    and NDCG@5 of a candidate-ranking run)."""
    plt = pyplot()
    records = read_jsonl(metrics_path)
    train = [r for r in records if "loss" in r]
    valid = [r for r in records if "eval_ndcg@5" in r]
    fig, (ax_loss, ax_valid) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="training loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training")
    ax_loss.legend()
    full = not valid or "eval_hit@10" in valid[0]  # else candidate ranking (HR@1, NDCG@5)
    for key in ("eval_hit@10", "eval_ndcg@10") if full else ("eval_hit@1", "eval_ndcg@5"):
        ax_valid.plot(
            [r["step"] for r in valid], [r[key] for r in valid], marker="o", label=key[5:]
        )
    ax_valid.set_xlabel("step")
    ax_valid.set_title("validation (full ranking)" if full else "validation (candidate ranking)")
    ax_valid.legend()
    fig.tight_layout()
    return save_figure(fig, out_path)


def validation_curve(metrics_path: Path, metric: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the validation ``metric`` a training run logged after each epoch."""
    if not Path(metrics_path).is_file():
        raise FileNotFoundError(f"{metrics_path}: no training log (metrics.jsonl) in this run")
    rows = [r for r in read_jsonl(metrics_path) if f"eval_{metric}" in r]
    if not rows:
        raise ValueError(f"{metrics_path}: no validation {metric} logged (key eval_{metric})")
    return [r["epoch"] for r in rows], [r[f"eval_{metric}"] for r in rows]


def plot_validation_curves(groups: dict[str, list[Path]], metric: str, out_path: Path) -> Path:
    """The validation ``metric`` by epoch of every run folder, one colour per group (method),
    so that where methods part (a faster start or a better end) can be seen."""
    curves = {
        name: [validation_curve(Path(run) / "metrics.jsonl", metric) for run in runs]
        for name, runs in groups.items()
    }
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for colour, (name, runs) in enumerate(curves.items()):
        for i, (epochs, values) in enumerate(runs):
            ax.plot(epochs, values, marker="o", color=f"C{colour}", label=name if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric} (selection subset)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_path)


def plot_logged_series(
    metrics_path: Path, panels: dict[str, list[str]], out_path: Path
) -> Path | None:
    """One panel per title, one line per logged key, against the step; panels whose keys were
    never logged are left out (None when none was)."""
    records = read_jsonl(metrics_path)
    present = {
        title: [k for k in keys if any(k in r for r in records)] for title, keys in panels.items()
    }
    present = {title: keys for title, keys in present.items() if keys}
    if not present:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(present), figsize=(4.5 * len(present), 3.8), squeeze=False)
    for ax, (title, keys) in zip(axes[0], present.items(), strict=True):
        for key in keys:
            rows = [r for r in records if r.get(key) is not None]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=key)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out_path)


def plot_stage_safely(run_dir: Path, panels: dict[str, list[str]], name: str) -> None:
    """``plot_logged_series`` into ``run_dir/name``; a failed plot never loses a run."""
    try:
        plot_logged_series(run_dir / "metrics.jsonl", panels, run_dir / name)
    except Exception as e:
        log.warning("could not plot %s: %s", name, e)
