"""Plots of a run: training loss and validation metrics over steps."""

from __future__ import annotations

from pathlib import Path

from ilrec.runs.files import read_jsonl


def plot_training_curves(metrics_path: Path, out_path: Path) -> Path:
    """Training loss (and each logged objective component) and validation HR/NDCG@10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_jsonl(metrics_path)
    train = [r for r in records if "loss" in r]
    valid = [r for r in records if "eval_ndcg@10" in r]
    fig, (ax_loss, ax_valid) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="training loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training")
    ax_loss.legend()
    for key in ("eval_hit@10", "eval_ndcg@10"):
        ax_valid.plot(
            [r["step"] for r in valid], [r[key] for r in valid], marker="o", label=key[5:]
        )
    ax_valid.set_xlabel("step")
    ax_valid.set_title("validation (full ranking)")
    ax_valid.legend()
    fig.tight_layout()
    tmp = out_path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_path)
    return out_path
