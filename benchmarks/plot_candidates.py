"""Paper Figure 6 at this scale: candidate-ranking HitRatio@1 of each method, as a bar chart
and a markdown table, from the runs' ``eval_<split>_candidates.json`` files.

    python benchmarks/plot_candidates.py --out figure6.png \\
        --dataset LastFM SFT=runs/lastfm/cand_sft ILRec=runs/lastfm/cand_ilrec \\
            S-DPO=runs/lastfm/cand_sdpo DPO=runs/lastfm/cand_dpo \\
        --dataset Instruments users=5000 SFT=runs/inst_cands/cand_sft ...

Per method: HitRatio@1 of the exact ranking of the 20 candidates (by sequence
log-probability), and of greedy generation with exact name matching and with S-DPO's substring
matching (ValidRatio next to them in the table). Several runs of a method (seeds) are given as
``NAME=RUN1,RUN2``: bars show the mean, the table mean ± std. ``users=N`` in a dataset's list
reads its runs' ``evaluate --users N`` results (the first N rows; ``--users`` sets the default);
every method of a dataset must have been evaluated on the same rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from ilrec.data.io import atomic_write_text
from ilrec.evaluation.plots import pyplot, save_figure
from ilrec.evaluation.result_files import eval_stem

SERIES = {
    "ranking HR@1": lambda r: r["metrics"]["model (ranking)"]["hit@1"],
    "greedy HR@1 (exact match)": lambda r: r["generation"]["exact"]["hit@1"],
    "greedy HR@1 (substring, S-DPO)": lambda r: r["generation"]["substring"]["hit@1"],
}
VALID = {
    "valid (exact)": lambda r: r["generation"]["exact"]["valid"],
    "valid (substring)": lambda r: r["generation"]["substring"]["valid"],
}


def read(runs: list[Path], split: str, users: int) -> list[dict]:
    records = []
    for run in runs:
        path = run / f"{eval_stem(split, 'candidates', users)}.json"
        if not path.is_file():
            raise SystemExit(f"{path}: missing (run `ilrec evaluate --mode candidates` first)")
        records.append(json.loads(path.read_text()))
    return records


def read_dataset(items: list[str], split: str, users: int) -> tuple[list[str], list[list[dict]]]:
    """The methods of one ``--dataset`` list (``users=N`` and ``METHOD=RUN1,RUN2`` items) and
    their evaluation records, all over the same rows."""
    names, records = [], []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise SystemExit(f"{item!r}: expected METHOD=RUN[,RUN...] or users=N")
        if key == "users":
            users = int(value)
        else:
            names.append(key)
            records.append([Path(r) for r in value.split(",")])
    records = [read(runs, split, users) for runs in records]
    rows = {r["users"] for rs in records for r in rs}
    if len(rows) != 1:
        raise SystemExit(
            f"the methods were evaluated on different rows ({sorted(rows)}): not paired"
        )
    return names, records


def cell(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", nargs="+", action="append", required=True, metavar=("NAME", "METHOD=RUNS")
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--users", type=int, default=0, help="the runs' `evaluate --users N`")
    parser.add_argument("--out", type=Path, required=True, help="the PNG (a .md is written too)")
    args = parser.parse_args()
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(args.dataset), figsize=(6 * len(args.dataset), 4), squeeze=False
    )
    lines = []
    for ax, (dataset, *methods) in zip(axes[0], args.dataset, strict=True):
        names, records = read_dataset(methods, args.split, args.users)
        first = records[0][0]  # rows, protocol and popularity are the same for every run
        lines += [
            f"**{dataset}** ({args.split}, {first['users']} rows, protocol {first['protocol']})",
            "",
            "| method | runs | " + " | ".join([*SERIES, *VALID]) + " |",
            "|---|---|" + "---|" * (len(SERIES) + len(VALID)),
        ]
        width = 0.8 / len(SERIES)
        for s, (label, get) in enumerate(SERIES.items()):
            means = [statistics.mean(get(r) for r in rs) for rs in records]
            ax.bar([i + (s - 1) * width for i in range(len(names))], means, width, label=label)
        for name, rs in zip(names, records, strict=True):
            cells = [cell([get(r) for r in rs]) for get in [*SERIES.values(), *VALID.values()]]
            lines.append(f"| {name} | {len(rs)} | " + " | ".join(cells) + " |")
        lines.append("")
        popularity = first["metrics"]["popularity"]["hit@1"]
        ax.axhline(popularity, color="grey", linestyle="--", linewidth=1, label="popularity")
        lines.append(
            f"Most popular candidate first: HR@1 {popularity:.4f}; "
            f"random: {1 / first['candidates']:.4f}."
        )
        lines.append("")
        ax.set_xticks(range(len(names)), names)
        ax.set_title(f"{dataset}: pick the next item among {first['candidates']}")
        ax.set_ylabel("HitRatio@1")
        ax.set_ylim(0, 1.35 * ax.get_ylim()[1])
        ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    save_figure(fig, args.out)
    table = "\n".join(lines)
    atomic_write_text(args.out.with_suffix(".md"), table + "\n")
    print(table)


if __name__ == "__main__":
    main()
