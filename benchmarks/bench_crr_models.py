"""Which CF model scores the tokens for CRR (paper Table 4): ILRec + CRR with each CF model.

For every CF run folder (``ilrec train-cf``, e.g. from ``bench_cf.py``) the LM is trained with
the ILRec objective and ``objective.mu_crr`` > 0, ``objective.cf_run=<that folder>``, then
evaluated on test; the table puts each CF model's own test metrics next to the LM's.

``--mu`` with several values first tunes mu on *validation* with the first CF model (the
trainer's validation NDCG@10 at the end of training, ``data.valid_users`` users), then trains
the other CF models with the best mu.

    python benchmarks/bench_crr_models.py --data ../shared/data/Instruments \
        --cf-runs runs/cf_inst --out runs/t4 --base configs/instruments_sft.yaml \
        --mu 0.1 0.01 --mode beam --users 5000 --eval-batch 32 \
        --set train.epochs=2 data.valid_users=500 objective.alpha=0.8 objective.beta=0.2 \
              objective.lambda_cpd=0.1

Runs land in ``<out>/<cf model>_mu<mu>/ilrec_s<seed>`` and are reused when already finished.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ilrec_results import KEYS, VARIANTS, train_and_eval  # noqa: E402

CF_ORDER = ("sasrec", "gru4rec", "bert4rec", "caser", "bpr")


def final_valid_ndcg(run_dir: Path) -> float:
    """The trainer's last validation NDCG@10 (``eval_ndcg@10`` in ``metrics.jsonl``)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    values = [json.loads(line)["eval_ndcg@10"] for line in lines if "eval_ndcg@10" in line]
    if not values:
        raise RuntimeError(f"{run_dir}/metrics.jsonl has no eval_ndcg@10 (validation disabled?)")
    return values[-1]


def run_crr(cf_run: Path, mu: float, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """ILRec + CRR from ``cf_run`` for every seed: test metrics per seed."""
    sub = copy.copy(args)
    sub.out = args.out / f"{cf_run.name}_mu{mu}"
    sub.out.mkdir(parents=True, exist_ok=True)
    sub.set = [*args.set, f"objective.mu_crr={mu}", f"objective.cf_run={cf_run.resolve()}"]
    return {
        seed: train_and_eval(
            f"ilrec_s{seed}", [*VARIANTS["ilrec"], f"train.seed={seed}"], sub, "test"
        )
        for seed in args.seeds
    }


def fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cf-runs", type=Path, required=True, help="folder of train-cf runs")
    parser.add_argument("--models", nargs="+", default=list(CF_ORDER), choices=CF_ORDER)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", type=Path, default=Path("configs/instruments_sft.yaml"))
    parser.add_argument("--mu", nargs="+", type=float, default=[0.01])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--mode", choices=["exact", "beam"], default="exact")
    parser.add_argument("--users", type=int, default=0, help="evaluate the first N test users")
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides for every run")
    args = parser.parse_args()
    cf_runs = {m: args.cf_runs / m for m in args.models}
    for model, path in cf_runs.items():
        if not (path / "final.json").exists():
            parser.error(f"--cf-runs: {path}/final.json not found (train {model} first)")

    first, *rest = args.models
    tested = {mu: run_crr(cf_runs[first], mu, args) for mu in args.mu}
    valid = {
        mu: final_valid_ndcg(args.out / f"{first}_mu{mu}" / f"ilrec_s{args.seeds[0]}")
        for mu in args.mu
    }
    best_mu = max(valid, key=valid.get)
    if len(args.mu) > 1:
        print(f"mu tuned on validation with {first} (seed {args.seeds[0]}):")
        for mu, score in sorted(valid.items(), key=lambda kv: -kv[1]):
            print(f"  mu={mu}: valid NDCG@10 {score:.4f}")
    results = {first: tested[best_mu]} | {m: run_crr(cf_runs[m], best_mu, args) for m in rest}

    print(f"\n{args.data} — ILRec + CRR (mu={best_mu}), test, {args.mode}, seeds {args.seeds}")
    header = "| CF model | CF HR@10 | CF NDCG@10 | " + " | ".join(f"LM {k}" for k in KEYS) + " |"
    print(header + "\n|---|---|---|" + "---|" * len(KEYS))
    for model, per_seed in results.items():
        cf_test = json.loads((cf_runs[model] / "final.json").read_text())["test"]
        cells = [fmt([per_seed[s][k] for s in args.seeds]) for k in KEYS]
        print(
            f"| {model} | {cf_test['hit@10']:.4f} | {cf_test['ndcg@10']:.4f} | "
            + " | ".join(cells)
            + " |"
        )
    summary = {"mu": best_mu, "valid": valid, "runs": results}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
