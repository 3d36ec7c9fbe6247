"""``ilrec compare``: evaluated runs side by side, mean ± std over seeds and paired differences.

Every run of a comparison must have been evaluated on the same users (the same split, mode
and ``--users``); ``ilrec evaluate`` writes each user's target and ranked list to
``eval_<split>_<mode>[_first<N>].rankings.tsv``. Two kinds of uncertainty are reported,
because they answer different questions:

- the std over a group's runs (seeds): training noise;
- a paired bootstrap over users of the difference to the baseline group (each user's metric
  averaged over the group's runs first): evaluation-sample noise. Same users on both sides,
  so the user-to-user spread cancels and small differences become visible.

When every group has as many runs as the baseline (two or more), the runs are also paired by
position - give the seeds in the same order - and a last column lists each pair's difference
with a t interval over them, which also covers training noise (wide with few seeds).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
from torch import Tensor

from ilrec.evaluation.result_files import Rankings, eval_stem, read_rankings

__all__ = ["compare_groups", "paired_bootstrap_ci", "seed_t_interval"]

# Two-sided 95% quantiles of Student's t, t_{0.975}(df) for df = 1..30 (beyond: normal's 1.96).
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


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


def seed_t_interval(diffs: list[float]) -> tuple[float, float]:
    """95% t interval of the mean of per-seed paired differences (``len(diffs) >= 2``)."""
    n = len(diffs)
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 paired runs, got {n}")
    t = T_975[n - 2] if n - 1 <= len(T_975) else 1.96
    half = t * statistics.stdev(diffs) / n**0.5
    mean = statistics.mean(diffs)
    return mean - half, mean + half


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
    n_runs = {len(metrics) for metrics in per_user.values()}
    by_seed = len(n_runs) == 1 and n_runs.pop() >= 2
    lines = [
        f"{len(reference.users)} users, {split} split, {mode} mode; ± = std over runs; "
        f"Δ = paired difference to {baseline_name} with a 95% bootstrap interval over users"
        + ("; per run: runs paired by position, t interval over them" if by_seed else ""),
        "",
        "| method | runs | "
        + " | ".join(keys)
        + f" | Δ {delta_metric} |"
        + (" Δ per run [t interval] |" if by_seed else ""),
        "|---|---|" + "---|" * (len(keys) + 1 + by_seed),
    ]
    for name, metrics in per_user.items():
        cells = []
        for key in keys:
            values = [m[key].mean().item() for m in metrics]
            cell = f"{statistics.mean(values):.4f}"
            cells.append(cell + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""))
        if name == baseline_name:
            delta = "—" + (" | —" if by_seed else "")
        else:
            diff = torch.stack([m[delta_metric] for m in metrics]).mean(0) - baseline
            lo, hi = paired_bootstrap_ci(diff, n_boot)
            delta = f"{diff.mean().item():+.4f} [{lo:+.4f}, {hi:+.4f}]"
            if by_seed:
                delta += " | " + _per_run_delta(metrics, per_user[baseline_name], delta_metric)
        lines.append(f"| {name} | {len(metrics)} | " + " | ".join(cells) + f" | {delta} |")
    return "\n".join(lines) + "\n"


def _per_run_delta(metrics: list[dict], baseline: list[dict], key: str) -> str:
    diffs = [
        m[key].mean().item() - b[key].mean().item() for m, b in zip(metrics, baseline, strict=True)
    ]
    lo, hi = seed_t_interval(diffs)
    return ", ".join(f"{d:+.4f}" for d in diffs) + f" [{lo:+.4f}, {hi:+.4f}]"
