"""``ilrec compare``: evaluated runs side by side, mean ± std over seeds and paired differences.

Every run of a comparison must have been evaluated on the same users (the same split, mode
and ``--users``); ``ilrec evaluate`` writes each user's target and ranked list to
``eval_<split>_<mode>[_first<N>].rankings.tsv``, and ``ilrec train-cf`` writes the classic
models' full rankings as ``eval_<split>_exact.rankings.tsv``. With ``--users N`` a run without
``_first<N>`` results is compared on the first N rows of its whole-split rankings, or of its
smallest ``_first<M>`` rankings with M > N (the same users; the check below refuses anything
else). Two kinds of uncertainty are reported,
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

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ilrec.evaluation.result_files import (
    RANKINGS_SUFFIX,
    Rankings,
    eval_stem,
    rankings_path,
    read_rankings,
)

__all__ = [
    "Comparison",
    "GroupResult",
    "compare_groups",
    "compare_runs",
    "format_comparison",
    "paired_bootstrap_ci",
    "plot_comparison",
    "seed_t_interval",
]

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


def _load_group(
    name: str, runs: list[Path], split: str, mode: str, users: int, reasoning_tokens: int
) -> list[Rankings]:
    if not runs:
        raise ValueError(f"group {name!r} has no runs")
    return [_load_rankings(Path(run), split, mode, users, reasoning_tokens) for run in runs]


def _load_rankings(run: Path, split: str, mode: str, users: int, reasoning_tokens: int) -> Rankings:
    """A run's rankings of ``users`` users: its ``--users N`` results, or else the first N rows
    of its evaluation of the whole split (a classic model ranks every user), or else of its
    smallest ``--users M`` evaluation with M > N (the first M users start with the first N)."""
    path = run / (eval_stem(split, mode, users, reasoning_tokens) + RANKINGS_SUFFIX)
    if users <= 0 or rankings_path(path) is not None:
        return read_rankings(path)
    larger = _larger_evaluation(run, split, mode, users, reasoning_tokens)
    if larger is None:
        return read_rankings(path)
    rankings = read_rankings(larger)
    if len(rankings.users) < users:
        raise ValueError(f"{larger}: {len(rankings.users)} users, fewer than --users {users}")
    return rankings.first(users)


def _larger_evaluation(
    run: Path, split: str, mode: str, users: int, reasoning_tokens: int
) -> Path | None:
    """The whole-split rankings of ``run`` if present, else those of its smallest evaluation
    of the first M > ``users`` users, else None."""
    stem = eval_stem(split, mode, 0, reasoning_tokens)
    whole = run / (stem + RANKINGS_SUFFIX)
    if rankings_path(whole) is not None:
        return whole
    name = re.compile(re.escape(stem) + r"_first(\d+)" + re.escape(RANKINGS_SUFFIX) + r"(\.gz)?")
    matches = (name.fullmatch(found.name) for found in run.glob(f"{stem}_first*"))
    sizes = {int(m.group(1)) for m in matches if m is not None and int(m.group(1)) > users}
    if not sizes:
        return None
    return run / (eval_stem(split, mode, min(sizes), reasoning_tokens) + RANKINGS_SUFFIX)


@dataclass(frozen=True)
class GroupResult:
    """One row of a comparison: a method's runs against the baseline (the first group)."""

    name: str
    values: dict[str, list[float]]  # metric -> its value in each run
    delta: tuple[float, float, float] | None  # paired Δ, bootstrap low, high (None: baseline)
    per_run: list[float] | None = None  # Δ of each run against the baseline's run
    per_run_interval: tuple[float, float] | None = None  # t interval over ``per_run``

    @property
    def n_runs(self) -> int:
        return len(next(iter(self.values.values())))


@dataclass(frozen=True)
class Comparison:
    split: str
    mode: str
    n_users: int
    metrics: list[str]
    delta_metric: str
    groups: list[GroupResult]

    @property
    def by_seed(self) -> bool:
        return self.groups[-1].per_run is not None


def compare_runs(
    groups: dict[str, list[Path]],
    split: str = "test",
    mode: str = "exact",
    users: int = 0,
    ks: tuple[int, ...] = (5, 10),
    delta_metric: str = "ndcg@10",
    n_boot: int = 10_000,
    reasoning_tokens: int = 0,
) -> Comparison:
    """Load every run's rankings (all on the same users) and compute the comparison:
    per-run metrics, the baseline-paired difference of ``delta_metric`` with a 95% bootstrap
    interval, and, when every group has as many runs as the baseline (>= 2), the per-run
    differences with a t interval. ``users`` and ``reasoning_tokens`` select the results of
    ``ilrec evaluate --users N --reasoning-tokens R``."""
    loaded = {
        name: _load_group(name, runs, split, mode, users, reasoning_tokens)
        for name, runs in groups.items()
    }
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
    baseline_runs = per_user[baseline_name]
    baseline = torch.stack([m[delta_metric] for m in baseline_runs]).mean(0)
    n_runs = {len(metrics) for metrics in per_user.values()}
    by_seed = len(n_runs) == 1 and n_runs.pop() >= 2
    baseline_per_run = [m[delta_metric].mean().item() for m in baseline_runs]
    results = []
    for name, metrics in per_user.items():
        values = {key: [m[key].mean().item() for m in metrics] for key in keys}
        delta = per_run = interval = None
        if name != baseline_name:
            diff = torch.stack([m[delta_metric] for m in metrics]).mean(0) - baseline
            delta = (diff.mean().item(), *paired_bootstrap_ci(diff, n_boot))
            if by_seed:
                per_run = [
                    v - b for v, b in zip(values[delta_metric], baseline_per_run, strict=True)
                ]
                interval = seed_t_interval(per_run)
        results.append(GroupResult(name, values, delta, per_run, interval))
    return Comparison(split, mode, len(reference.users), keys, delta_metric, results)


SINGLE_RUN_NOTE = (
    "Note: one run of {groups}: the bootstrap interval covers which users were sampled, not "
    "training noise (another seed, or the same seed rerun on other hardware, can move a run "
    "by more); give each group several seeds, in the same order, for a t interval over them."
)


def format_comparison(comparison: Comparison) -> str:
    """The comparison as a markdown table (metrics as mean ± std over runs)."""
    c, by_seed = comparison, comparison.by_seed
    lines = [
        f"{c.n_users} users, {c.split} split, {c.mode} mode; ± = std over runs; "
        f"Δ = paired difference to {c.groups[0].name} with a 95% bootstrap interval over users"
        + ("; per run: runs paired by position, t interval over them" if by_seed else ""),
        "",
        "| method | runs | "
        + " | ".join(c.metrics)
        + f" | Δ {c.delta_metric} |"
        + (" Δ per run [t interval] |" if by_seed else ""),
        "|---|---|" + "---|" * (len(c.metrics) + 1 + by_seed),
    ]
    for group in c.groups:
        cells = []
        for key in c.metrics:
            values = group.values[key]
            cell = f"{statistics.mean(values):.4f}"
            cells.append(cell + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""))
        if group.delta is None:
            delta = "—" + (" | —" if by_seed else "")
        else:
            mean, lo, hi = group.delta
            delta = f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"
            if by_seed:
                lo, hi = group.per_run_interval
                delta += " | " + ", ".join(f"{d:+.4f}" for d in group.per_run)
                delta += f" [{lo:+.4f}, {hi:+.4f}]"
        lines.append(f"| {group.name} | {group.n_runs} | " + " | ".join(cells) + f" | {delta} |")
    single = [g.name for g in c.groups if g.n_runs == 1]
    if single:
        lines += ["", SINGLE_RUN_NOTE.format(groups=", ".join(single))]
    return "\n".join(lines) + "\n"


def compare_groups(groups: dict[str, list[Path]], **options) -> str:
    """A markdown table: one row per group (first = baseline), metrics as mean ± std over its
    runs (the value alone for a single run), and the baseline-paired difference of
    ``delta_metric`` with a 95% bootstrap interval; ``options`` are ``compare_runs``'s."""
    return format_comparison(compare_runs(groups, **options))


def plot_comparison(comparison: Comparison, out_path: Path) -> Path:
    """Two panels: each method's ``delta_metric`` (mean over runs, one dot per run) and its
    paired difference to the baseline with the 95% bootstrap interval over users (dots: the
    per-run differences when runs are paired by seed)."""
    from ilrec.evaluation.plots import pyplot, save_figure

    c, plt = comparison, pyplot()
    names = [g.name for g in c.groups]
    rows = range(len(names))
    fig, (ax_value, ax_delta) = plt.subplots(
        1, 2, figsize=(11, 1.0 + 0.45 * len(names)), sharey=True
    )
    for row, group in zip(rows, c.groups, strict=True):
        values = group.values[c.delta_metric]
        ax_value.barh(row, statistics.mean(values), color="#9ab")
        ax_value.plot(values, [row] * len(values), "k.", markersize=4)
        if group.delta is not None:
            mean, lo, hi = group.delta
            color = "#2a7" if lo > 0 else "#c44" if hi < 0 else "#888"
            ax_delta.errorbar(mean, row, xerr=[[mean - lo], [hi - mean]], fmt="o", color=color)
            if group.per_run is not None:
                ax_delta.plot(group.per_run, [row] * len(group.per_run), "k.", markersize=4)
    ax_value.set_yticks(list(rows), names)
    ax_value.invert_yaxis()
    ax_value.set_xlabel(f"{c.delta_metric} ({c.split}, {c.mode}; dots: runs)")
    ax_delta.axvline(0.0, color="k", linewidth=0.8)
    ax_delta.xaxis.set_major_locator(plt.MaxNLocator(nbins=5))  # small deltas: 4-digit ticks
    dots = "; dots: seeds" if c.by_seed else ""
    ax_delta.set_xlabel(f"Δ {c.delta_metric} vs {names[0]} (95% paired bootstrap{dots})")
    fig.suptitle(f"{c.n_users} users")
    fig.tight_layout()
    return save_figure(fig, out_path)
