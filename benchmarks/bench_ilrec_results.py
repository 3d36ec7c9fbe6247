"""SFT vs ILRec variants over several seeds: train, evaluate (exact full ranking) and print
mean ± std tables. Optional validation-only tuning grid for the ILRec hyperparameters.

Examples:
    # tune alpha/beta/lambda on validation (seed 0), then 3 seeds of each variant on test
    python benchmarks/bench_ilrec_results.py --data data/synthetic/Synthetic --out runs/res_syn \
        --base configs/demo.yaml --tune --seeds 0 1 2
    python benchmarks/bench_ilrec_results.py --data ../shared/data/Instruments \
        --out runs/res_inst --base configs/instruments_sft.yaml --seeds 0 1 2 \
        --variants sft ilrec --set train.epochs=2

Runs are independent processes (1 thread each); ``--jobs 2`` runs two at a time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ilrec.evaluation.result_files import eval_stem

# Objective overrides of each variant (paper Table 3 names).
VARIANTS = {
    "sft": ["objective.name=ce"],
    "ilrec": ["objective.name=ilrec"],
    "il_cpo": ["objective.name=ilrec", "objective.lambda_cpd=0", "objective.mu_crr=0"],
    "wo_cpd": ["objective.name=ilrec", "objective.lambda_cpd=0"],
    "ilrec_sign": ["objective.name=ilrec", "objective.penalty=sign_aware"],
}
# A coarse grid inside the paper's ranges (alpha {0.1..1.2}, beta {0.005..0.2}, lambda
# {0.0005..0.1}); each point is one full training run on this 2-core CPU.
TUNE_GRID = {
    "objective.alpha": [0.5, 0.8],
    "objective.beta": [0.05, 0.2],
    "objective.lambda_cpd": [0.01, 0.1],
}
KEYS = ("hit@5", "ndcg@5", "hit@10", "ndcg@10")


def run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)


def train_and_eval(
    name: str, overrides: list[str], args: argparse.Namespace, split: str
) -> dict[str, float]:
    run_dir = args.out / name
    result_file = run_dir / f"{eval_stem(split, args.mode, args.users)}.json"
    if not result_file.exists():
        if not (run_dir / "model" / "config.json").exists():
            base = ["-c", str(args.base), f"data.path={args.data}", f"train.output_dir={run_dir}"]
            base += ["train.threads=1", *args.set, *overrides, "--overwrite"]
            run([sys.executable, "-m", "ilrec.cli", "train", *base], args.out / f"{name}.train.log")
        cmd = [
            sys.executable,
            "-m",
            "ilrec.cli",
            "evaluate",
            "--run",
            str(run_dir),
            "--split",
            split,
            "--mode",
            args.mode,
            "--batch-size",
            str(args.eval_batch),
        ]
        if args.users:
            cmd += ["--users", str(args.users)]
        run(cmd, args.out / f"{name}.eval_{split}.log")
    metrics = json.loads(result_file.read_text())["metrics"]
    return next(v for k, v in metrics.items() if k.startswith("model"))


def mean_std(rows: list[dict[str, float]]) -> dict[str, str]:
    out = {}
    for key in KEYS:
        values = [r[key] for r in rows]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out[key] = f"{statistics.mean(values):.4f} ± {std:.4f}"
    return out


def tune(args: argparse.Namespace) -> list[str]:
    """Grid over TUNE_GRID on validation NDCG@10 (seed 0); returns the best overrides."""
    combos = [
        dict(zip(TUNE_GRID, values, strict=True))
        for values in itertools.product(*TUNE_GRID.values())
    ]
    if args.tune_limit:
        combos = combos[: args.tune_limit]

    def one(combo: dict) -> tuple[float, list[str]]:
        overrides = [*VARIANTS["ilrec"], "train.seed=0", *[f"{k}={v}" for k, v in combo.items()]]
        name = "tune_" + "_".join(f"{k.split('.')[-1]}{v}" for k, v in combo.items())
        return train_and_eval(name, overrides, args, "valid")["ndcg@10"], overrides

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, combos))
    for score, overrides in sorted(results, reverse=True):
        print(f"valid ndcg@10 {score:.4f}  {' '.join(overrides[1:])}")
    best = max(results)[1]
    return [o for o in best if o.startswith("objective.") and "name" not in o]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", type=Path, default=Path("configs/demo.yaml"))
    parser.add_argument("--variants", nargs="+", default=["sft", "ilrec", "il_cpo", "wo_cpd"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--mode", choices=["exact", "beam"], default="exact")
    parser.add_argument("--users", type=int, default=0, help="evaluate the first N test users")
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    parser.add_argument("--tune", action="store_true", help="tune alpha/beta/lambda on valid")
    parser.add_argument("--tune-limit", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    tuned = tune(args) if args.tune else []
    if tuned:
        print("tuned on validation:", " ".join(tuned))
    jobs = [
        (
            f"{variant}_s{seed}",
            # the variant's own settings win over the tuned ones (e.g. il_cpo's lambda = 0)
            [*(tuned if variant != "sft" else []), *VARIANTS[variant], f"train.seed={seed}"],
        )
        for variant in args.variants
        for seed in args.seeds
    ]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(
            zip(
                [n for n, _ in jobs],
                pool.map(lambda j: train_and_eval(*j, args, "test"), jobs),
                strict=True,
            )
        )
    print(f"\n{args.data} — test, {args.mode} full ranking, seeds {args.seeds}")
    print("| variant | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    for variant in args.variants:
        rows = [results[f"{variant}_s{s}"] for s in args.seeds]
        cells = mean_std(rows)
        print(f"| {variant} | " + " | ".join(cells[k] for k in KEYS) + " |")
    (args.out / "results.json").write_text(json.dumps({"tuned": tuned, "runs": results}, indent=1))


if __name__ == "__main__":
    main()
