"""Train the five classic recommenders on one dataset and print a markdown table.

Reproduces the CF rows of the paper's Table 1 / the standalone CF models of Table 4 (test
HR@5/10 and NDCG@5/10 by full ranking, leave-one-out), plus training time.

    python benchmarks/bench_cf.py --data ../shared/data/Instruments --out runs/bench_cf
    python benchmarks/bench_cf.py --synthetic 500 --out /tmp/bench_cf epochs=3

Extra ``key=value`` arguments override every model's config (``configs/cf/<model>.yaml``).
Each model trains in ``OUT/<model>``; an existing run there is resumed (a finished one is only
re-evaluated), so an interrupted benchmark can be restarted with the same command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from ilrec.models.cf import CF_MODELS
from ilrec.training.cf import load_cf_config, train_cf

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "cf"
COLUMNS = ("hit@5", "ndcg@5", "hit@10", "ndcg@10")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="LC-Rec dataset folder")
    source.add_argument(
        "--synthetic",
        type=int,
        metavar="N_USERS",
        help="generate a small synthetic dataset (index-free) into OUT/data",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs")
    parser.add_argument("--models", nargs="+", default=list(CF_MODELS), choices=list(CF_MODELS))
    parser.add_argument("--configs", type=Path, default=CONFIG_DIR)
    parser.add_argument("overrides", nargs="*", help="key=value applied to every config")
    return parser.parse_args(argv)


def synthetic_data(out: Path, n_users: int) -> Path:
    from ilrec.data.synthetic import generate_synthetic

    root = out / "data" / "Synthetic"
    if not (root / "Synthetic.inter.json").exists():
        generate_synthetic(root, n_users=n_users, n_items=max(48, n_users // 5), index=False)
    return root


def popularity_row(data_dir: Path) -> dict:
    """The popularity baseline on the same split (most frequent training items for everyone)."""
    from ilrec.data.dataset import load_dataset
    from ilrec.data.split import leave_one_out, popularity_counts
    from ilrec.evaluation.ranking import popularity_metrics

    data = load_dataset(data_dir, require_index=False)
    splits = leave_one_out(data)
    test = popularity_metrics(popularity_counts(splits, data.n_items), splits.test)
    return {"model": "popularity", "test": test, "best_epoch": 0, "epochs": 0, "seconds": 0.0}


def markdown_table(rows: list[dict]) -> str:
    names = [c.replace("hit", "HR").replace("ndcg", "NDCG") for c in COLUMNS]
    header = "| model | " + " | ".join(names) + " | best epoch | train time |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for row in rows:
        metrics = " | ".join(f"{row['test'][c]:.4f}" for c in COLUMNS)
        lines.append(
            f"| {row['model']} | {metrics} | {row['best_epoch']}/{row['epochs']} | "
            f"{row['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data_dir = args.data if args.data else synthetic_data(args.out, args.synthetic)
    rows = []
    for name in args.models:
        config = load_cf_config(args.configs / f"{name}.yaml", args.overrides)
        run_dir = args.out / name
        started = time.perf_counter()
        result = train_cf(config, data_dir, run_dir, resume=True)
        seconds = sum(
            json.loads(line)["train_seconds"]
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        )
        rows.append({"model": name, **result, "seconds": seconds})
        print(
            f"{name}: test {result['test']} ({time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
    print(
        f"Test metrics on {data_dir} (full ranking, leave-one-out; train time = sum of "
        "epoch times, evaluation excluded)\n"
    )
    print(markdown_table([popularity_row(data_dir), *rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
