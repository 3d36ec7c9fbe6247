"""ILRec's sweep at this scale (paper Table 6 and Figure 5): every point of
``benchmarks/studies/instruments_ilrec_sweep.yaml`` against the SFT run of the same budget,
as a markdown table of paired differences and a figure of the α, β and k series and of every
point's paired difference.

    python benchmarks/plot_sweep.py /data/runs/instruments/sweep --out sweep.png
    python benchmarks/plot_sweep.py /data/runs/instruments_grouped/depth_grouped --out depth.png \
        --points center k4 k2 layers_middle separate_head

Reads ``<sweep>/sft`` and ``<sweep>/ilrec_<point>`` (the points of ``make_studies.SWEEP``);
each must hold ``eval_<split>_<mode>.rankings.tsv`` (``ilrec evaluate``; or ``.tsv.gz``, an
archive). Points not evaluated yet are listed as such. Δ is ILRec minus SFT over the same
users, with a 95% paired bootstrap interval (``ilrec compare``'s).
"""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ilrec.data.io import atomic_write_text
from ilrec.evaluation.compare import paired_bootstrap_ci
from ilrec.evaluation.plots import pyplot, save_figure
from ilrec.evaluation.result_files import eval_stem, rankings_path, read_rankings

HERE = Path(__file__).resolve().parent
# the x-axis of each figure panel: sweep point -> value (the centre sits in every series)
SERIES = {
    "α (β 0.2)": {
        "alpha0.1": 0.1,
        "alpha0.5": 0.5,
        "center": 0.8,
        "alpha1.0": 1.0,
        "alpha1.2": 1.2,
    },
    "β (α 0.8)": {
        "beta0.005": 0.005,
        "beta0.01": 0.01,
        "beta0.05": 0.05,
        "beta0.1": 0.1,
        "center": 0.2,
    },
    # the upper layers (-2, -3, -4) are the layers of k 3
    "k (layers below the last)": {"k0": 0, "center": 1, "k2": 2, "layers_upper": 3, "k4": 4},
}
LOG_X = {"β (α 0.8)"}  # Table 6's β values span 0.005-0.2
CENTER = "k 1, α 0.8, β 0.2, λ 0.1, μ 0.1"


def sweep_points() -> list[str]:
    spec = importlib.util.spec_from_file_location("make_studies", HERE / "studies/make_studies.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.SWEEP)


@dataclass(frozen=True)
class Point:
    name: str
    value: float  # the chosen metric
    hit: float  # hit@10
    delta: float
    low: float
    high: float


def measure(
    sweep: Path, split: str, mode: str, metric: str, n_boot: int, names: list[str]
) -> tuple[dict[str, Point], list[str], int]:
    """Each evaluated point's metric and paired Δ to SFT, the points not evaluated yet, and
    the number of users."""
    stem = eval_stem(split, mode)
    ks = tuple(sorted({10, int(metric.split("@")[1])}))
    sft = read_rankings(sweep / "sft" / f"{stem}.rankings.tsv")
    base = sft.user_metrics(ks)
    points = {
        "SFT": Point("SFT", base[metric].mean().item(), base["hit@10"].mean().item(), 0, 0, 0)
    }
    missing = []
    for name in names:
        path = rankings_path(sweep / f"ilrec_{name}" / f"{stem}.rankings.tsv")
        if path is None:
            missing.append(name)
            continue
        run = read_rankings(path)
        if run.users != sft.users:
            raise SystemExit(f"{path}: other users than {sweep / 'sft'}")
        values = run.user_metrics(ks)
        diff = values[metric] - base[metric]
        low, high = paired_bootstrap_ci(diff, n_boot)
        points[name] = Point(
            name, values[metric].mean().item(), values["hit@10"].mean().item(),
            diff.mean().item(), low, high,
        )  # fmt: skip
    return points, missing, len(sft.users)


def table(points: dict[str, Point], missing: list[str], metric: str, users: int) -> str:
    lines = [
        f"{users} users; centre: {CENTER}; Δ = ILRec − SFT, 95% paired bootstrap interval",
        "",
        f"| point | hit@10 | {metric} | Δ {metric} |",
        "|---|---|---|---|",
    ]
    for p in points.values():
        delta = "—" if p.name == "SFT" else f"{p.delta:+.4f} [{p.low:+.4f}, {p.high:+.4f}]"
        lines.append(f"| {p.name} | {p.hit:.4f} | {p.value:.4f} | {delta} |")
    if missing:
        lines += ["", "not evaluated yet: " + ", ".join(missing)]
    return "\n".join(lines) + "\n"


def figure(points: dict[str, Point], metric: str, out: Path) -> Path:
    """Draw the sweep (see `draw`) and write it to ``out``."""
    return save_figure(draw(points, metric), out)


def draw(points: dict[str, Point], metric: str):
    """One panel per series with at least two evaluated points (the metric against the
    factor's value), and a panel of every point's paired Δ to SFT with its interval."""
    plt = pyplot()
    series = {
        title: [(x, points[name]) for name, x in xs.items() if name in points]
        for title, xs in SERIES.items()
    }
    series = {title: have for title, have in series.items() if len(have) >= 2}
    deltas = [p for p in points.values() if p.name != "SFT"]
    n_panels = len(series) + 1
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels, 3.4), squeeze=False)
    for ax, (title, have) in zip(axes[0], series.items(), strict=False):
        ax.axhline(points["SFT"].value, color="grey", linestyle="--", label="SFT")
        # the interval of the paired difference, drawn around the point's own value
        ax.errorbar(
            [x for x, _ in have],
            [p.value for _, p in have],
            yerr=[[p.delta - p.low for _, p in have], [p.high - p.delta for _, p in have]],
            marker="o",
            capsize=3,
            label="ILRec",
        )
        if title in LOG_X:
            ax.set_xscale("log")
        ax.set_title(title)
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
    ax = axes[0][-1]
    ax.axvline(0, color="grey", linestyle="--")
    ys = range(len(deltas))
    ax.errorbar(
        [p.delta for p in deltas],
        list(ys),
        xerr=[[p.delta - p.low for p in deltas], [p.high - p.delta for p in deltas]],
        fmt="o",
        capsize=3,
    )
    ax.set_yticks(list(ys), [p.name for p in deltas], fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(plt.MaxNLocator(nbins=4))  # small deltas: 4-digit ticks
    ax.set_title("every point")
    ax.set_xlabel(f"Δ {metric} vs SFT (95% paired)")
    fig.tight_layout()
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the sweep folder ({root}/sweep)")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--mode", default="beam")
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--bootstrap", type=int, default=10_000)
    parser.add_argument("--out", type=Path, required=True, help="the PNG (a .md is written too)")
    parser.add_argument(
        "--points", nargs="+", help="sweep points to read (default: all of make_studies.SWEEP)"
    )
    args = parser.parse_args()
    known = sweep_points()
    names = args.points or known
    if unknown := set(names) - set(known):
        parser.error(f"--points: not sweep points of make_studies.SWEEP: {sorted(unknown)}")
    points, missing, users = measure(
        args.sweep, args.split, args.mode, args.metric, args.bootstrap, names
    )
    text = table(points, missing, args.metric, users)
    atomic_write_text(args.out.with_suffix(".md"), text)
    print(text)
    print(f"wrote {figure(points, args.metric, args.out)}")


if __name__ == "__main__":
    main()
