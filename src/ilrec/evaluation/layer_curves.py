"""Per-layer cross-entropy over training steps (paper Figure 2).

The ILRec objective logs ``ce_layer_{l}``: the cross-entropy of each candidate layer's own
prediction ``φ(h^l)`` and of the final layer (``l = L``), computed without gradient at the
supervised positions. The final layer's curve below the intermediate ones is what makes the
intermediate layers "weaker experts" whose confident mistakes are useful negatives.
"""

from __future__ import annotations

import re
from pathlib import Path

from ilrec.runs.files import read_jsonl

__all__ = ["layer_loss_series", "plot_layer_losses"]

_KEY = re.compile(r"^ce_layer_(\d+)$")


def layer_loss_series(metrics_jsonl: str | Path) -> dict[int, tuple[list[int], list[float]]]:
    """``{layer: (steps, cross-entropies)}`` from a run's ``metrics.jsonl``, layers ascending."""
    series: dict[int, tuple[list[int], list[float]]] = {}
    for record in read_jsonl(Path(metrics_jsonl)):
        for key, value in record.items():
            match = _KEY.match(key)
            if match and value is not None:
                steps, values = series.setdefault(int(match.group(1)), ([], []))
                steps.append(int(record.get("step", len(steps))))
                values.append(float(value))
    return dict(sorted(series.items()))


def plot_layer_losses(metrics_jsonl: str | Path, out_png: str | Path) -> Path:
    """Plot every ``ce_layer_*`` series of a run against the training step.

    The highest layer number is the final layer (drawn solid and thicker); intermediate layers
    are dashed.

    Raises:
        ValueError: the file holds no ``ce_layer_*`` records (not an ILRec run, or
            ``objective.layer_logs`` was off).
    """
    series = layer_loss_series(metrics_jsonl)
    if not series:
        raise ValueError(f"{metrics_jsonl}: no ce_layer_* records (was this an ILRec run?)")
    from ilrec.evaluation.plots import pyplot, save_figure

    plt = pyplot()
    final = max(series)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for layer, (steps, values) in series.items():
        is_final = layer == final
        ax.plot(
            steps,
            values,
            label=f"layer {layer}" + (" (final)" if is_final else ""),
            linestyle="-" if is_final else "--",
            linewidth=2.0 if is_final else 1.2,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy at supervised positions")
    ax.set_title("per-layer prediction loss")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, Path(out_png))
