"""``ilrec compare``: evaluated runs side by side, mean ± std over seeds and paired differences.

Every run of a comparison must have been evaluated on the same users (the same split, mode
and ``--users``); ``ilrec evaluate`` writes each user's target and ranked list to
``eval_<split>_<mode>[_first<N>].rankings.tsv``. Two kinds of uncertainty are reported,
because they answer different questions:

- the std over a group's runs (seeds): training noise;
- a paired bootstrap over users of the difference to the baseline group (each user's metric
  averaged over the group's runs first): evaluation-sample noise. Same users on both sides,
  so the user-to-user spread cancels and small differences become visible.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from torch import Tensor

from ilrec.evaluation.result_files import Rankings, eval_stem, read_rankings

__all__ = ["compare_groups", "paired_bootstrap_ci"]


def paired_bootstrap_ci(
    diff: Tensor, n_boot: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``diff.mean()`` resampling users with replacement.

    Args:
        diff: ``[U]`` per-user differences (method minus baseline, same users).
        n_boot: bootstrap resamples.
        level: coverage of the two-sided interval.
        seed: generator seed (the interval is reproducible).
    """
    if diff.dim() != 1 or diff.numel() == 0:
        raise ValueError(f"diff must be a non-empty [U] tensor, got shape {tuple(diff.shape)}")
    generator = torch.Generator().manual_seed(seed)
    values = diff.double()
    means = torch.empty(n_boot, dtype=torch.float64)
    for start in range(0, n_boot, 1000):  # bounded memory: 1000 x U indices at a time
        rows = min(1000, n_boot - start)
        idx = torch.randint(values.numel(), (rows, values.numel()), generator=generator)
        means[start : start + rows] = values[idx].mean(1)
    tail = (1.0 - level) / 2
    lo, hi = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return lo.item(), hi.item()


def _load_group(name: str, runs: list[Path], split: str, mode: str, users: int) -> list[Rankings]:
    if not runs:
        raise ValueError(f"group {name!r} has no runs")
    stem = eval_stem(split, mode, users)
    return [read_rankings(Path(run) / f"{stem}.rankings.tsv") for run in runs]


def compare_groups(
    groups: dict[str, list[Path]],
    split: str = "test",
    mode: str = "exact",
    users: int = 0,
    ks: tuple[int, ...] = (5, 10),
    delta_metric: str = "ndcg@10",
    n_boot: int = 10_000,
) -> str:
    """A markdown table: one row per group (first = baseline), metrics as mean ± std over its
    runs (the value alone for a single run), and the baseline-paired difference of
    ``delta_metric`` with a 95% bootstrap interval. ``users`` selects the evaluation of the first N users (``ilrec evaluate --users``).
    """
    loaded = {name: _load_group(name, runs, split, mode, users) for name, runs in groups.items()}
    reference = next(iter(loaded.values()))[0]
    for name, rankings in loaded.items():
        for run, r in zip(groups[name], rankings, strict=True):
            if r.users != reference.users or not torch.equal(r.targets, reference.targets):
                raise ValueError(
                    f"{run}: evaluated on other users than {groups[next(iter(groups))][0]} "
                    f"({len(r.users)} vs {len(reference.users)}); evaluate every run with the "
                    "same split and --users"
                )
    keys = [f"{m}@{k}" for k in ks for m in ("hit", "ndcg")]
    if delta_metric not in keys:
        raise ValueError(f"delta_metric must be one of {keys}, got {delta_metric!r}")
    per_user = {name: [r.user_metrics(ks) for r in rankings] for name, rankings in loaded.items()}
    baseline_name = next(iter(per_user))
    baseline = torch.stack([m[delta_metric] for m in per_user[baseline_name]]).mean(0)
    lines = [
        f"{len(reference.users)} users, {split} split, {mode} mode; ± = std over runs; "
        f"Δ = paired difference to {baseline_name} with a 95% bootstrap interval over users",
        "",
        "| method | runs | " + " | ".join(keys) + f" | Δ {delta_metric} |",
        "|---|---|" + "---|" * (len(keys) + 1),
    ]
    for name, metrics in per_user.items():
        cells = []
        for key in keys:
            values = [m[key].mean().item() for m in metrics]
            cell = f"{statistics.mean(values):.4f}"
            cells.append(cell + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""))
        if name == baseline_name:
            delta = "—"
        else:
            diff = torch.stack([m[delta_metric] for m in metrics]).mean(0) - baseline
            lo, hi = paired_bootstrap_ci(diff, n_boot)
            delta = f"{diff.mean().item():+.4f} [{lo:+.4f}, {hi:+.4f}]"
        lines.append(f"| {name} | {len(metrics)} | " + " | ".join(cells) + f" | {delta} |")
    return "\n".join(lines) + "\n"
