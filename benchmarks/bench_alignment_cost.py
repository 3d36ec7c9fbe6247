"""Paper Table 5, measured: the cost of ILRec against SFT + an alignment stage.

Runs, on one dataset and backbone, side by side in one invocation (each stage its own process,
so peak memory is per stage): SFT; ILRec (an SFT run with the ILRec objective: no extra
stage); and from the same SFT model DPO, S-DPO, RosePO, SPRec and GRPO. Prints per method the
wall time of every stage and in total, the epochs (SFT + alignment x iterations), the
negative-sampling passes over the training prompts and the peak resident memory.

    python benchmarks/bench_alignment_cost.py --out runs/cost_syn \\
        --base configs/demo.yaml --data data/synthetic/Synthetic --sft-epochs 4 --threads 2
    python benchmarks/bench_alignment_cost.py --out runs/cost_inst \\
        --base configs/instruments_sft.yaml --data ../shared/data/Instruments \\
        --sft-epochs 2 --align-examples 20000 --threads 1

Wall times include what each stage does besides its optimizer steps (sampling negatives,
reference log-probabilities, rollouts, per-epoch validation); ``--valid-users`` keeps the
validation part small and equal for all stages. Finished stages are not rerun (delete the
folder to measure again); the table is rebuilt from their ``stage.json`` files.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ilrec.data.io import atomic_write_json

# method -> (config, overrides); "{epochs}" is --align-epochs (the DPO family's 3 in the
# paper's Table 5), SPRec runs its 3 iterations of one SFT + one DPO epoch, GRPO one epoch.
ALIGN_STAGES = {
    "DPO": ("configs/align/dpo.yaml", ["train.epochs={epochs}"]),
    "S-DPO": ("configs/align/sdpo.yaml", ["train.epochs={epochs}"]),
    "RosePO": ("configs/align/rosepo.yaml", ["train.epochs={epochs}", "align.oracle_run={cf}"]),
    "SPRec": ("configs/align/sprec.yaml", ["train.epochs=1"]),
    "RLVR (GRPO)": ("configs/align/grpo.yaml", ["train.epochs=1"]),
}


def run_stage(name: str, cmd: list[str], out: Path) -> dict:
    """Run one stage as a child process; wall time and its own peak RSS (``wait4``)."""
    record_path = out / f"{name}.stage.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    log = out / f"{name}.log"
    start = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage {name} failed: see {log}")
    record = {"wall_seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cmd": cmd}
    atomic_write_json(record_path, record)
    return record


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "train_summary.json").read_text())


def sampling_passes(method: str, run_dir: Path) -> int:
    if method == "SPRec":
        return summary(run_dir)["sampling_passes"]
    if method == "RLVR (GRPO)":
        s = summary(run_dir)
        return round(s["epochs"] / s.get("inner_steps", 1))  # one rollout pass per epoch
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True, help="SFT config (data, model)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--sft-epochs", type=float, default=4)
    parser.add_argument("--align-epochs", type=float, default=3, help="DPO, S-DPO, RosePO")
    parser.add_argument("--align-examples", type=int, default=0, help="0 = all prompts")
    parser.add_argument("--valid-users", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cf-epochs", type=int, default=5)
    parser.add_argument("--methods", nargs="*", default=["SFT", "ILRec", *ALIGN_STAGES])
    parser.add_argument(
        "--set", nargs="*", default=[], help="overrides of the SFT/ILRec runs (data.format=prompt)"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    py = [sys.executable, "-m", "ilrec.cli"]
    common = [f"data.path={args.data}", f"data.valid_users={args.valid_users}"]
    threads = f"train.threads={args.threads}"
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    sft, ilrec, cf = args.out / "sft", args.out / "ilrec", args.out / "cf_sasrec"
    train = [*py, "train", "-c", str(args.base), *common, threads, *args.set]
    epochs = f"train.epochs={args.sft_epochs}"
    stages: dict[str, dict] = {}
    stages["SFT"] = run_stage("sft", [*train, epochs, f"train.output_dir={sft}"], args.out)
    if "ILRec" in args.methods:
        cmd = [*train, epochs, f"train.output_dir={ilrec}", "objective.name=ilrec"]
        stages["ILRec"] = run_stage("ilrec", cmd, args.out)
    if "RosePO" in args.methods:  # RosePO's preference oracle, not counted as its cost
        cmd = [*py, "train-cf", "-c", "configs/cf/sasrec.yaml", "--data", args.data]
        run_stage("cf", [*cmd, "--out", str(cf), f"epochs={args.cf_epochs}"], args.out)

    rows = [_row("SFT", sft, stages["SFT"], None, 0)]
    if "ILRec" in stages:  # its "SFT stage" is the ILRec training run
        rows.append(_row("ILRec", ilrec, stages["ILRec"], None, 0))
    for method, (config, extra) in ALIGN_STAGES.items():
        if method not in args.methods:
            continue
        run_dir = args.out / method.split()[0].lower().replace("-", "")
        cmd = [*py, "align", "--from", str(sft), "-c", config, threads]
        cmd += [f"train.output_dir={run_dir}", f"align.examples={args.align_examples}"]
        cmd += [
            x.replace("{cf}", str(cf)).replace("{epochs}", f"{args.align_epochs:g}") for x in extra
        ]
        record = run_stage(run_dir.name, cmd, args.out)
        rows.append(_row(method, run_dir, record, rows[0], sampling_passes(method, run_dir)))
    table = _table(rows, args)
    print(table)
    (args.out / "table5.md").write_text(table + "\n")


def stage_seconds(run_dir: Path) -> float:
    """Compute time of a stage from its summaries (no interpreter start-up or model loading):
    training steps + validation + negative sampling + reference log-probabilities; SPRec sums
    its iterations' steps."""
    if (run_dir / "iterations.jsonl").exists():
        total = 0.0
        for it_dir in sorted(run_dir.glob("iter_*")):
            total += json.loads((it_dir / "pairs.json").read_text())["sampling_seconds"]
            total += stage_seconds(it_dir / "sft") + stage_seconds(it_dir / "dpo")
        return total
    s = summary(run_dir)
    parts = ("train_seconds_without_validation", "validation_seconds")
    parts += ("sampling_seconds_this_process", "reference_seconds_this_process")
    return sum(s.get(key) or 0.0 for key in parts)


def _row(method: str, run_dir: Path, record: dict, sft: dict | None, passes: int) -> dict:
    """A table row; ``sft`` is the SFT row an alignment stage starts from."""
    run_summary = summary(run_dir)
    seconds = stage_seconds(run_dir)
    row = {
        "method": method,
        "sft_seconds": seconds if sft is None else sft["sft_seconds"],
        "stage_seconds": None if sft is None else seconds,
        "passes": passes,
        "peak_mb": record["peak_rss_mb"]
        if sft is None
        else max(sft["peak_mb"], record["peak_rss_mb"]),
        "wall_seconds": record["wall_seconds"] + (0 if sft is None else sft["wall_seconds"]),
    }
    row["seconds"] = row["sft_seconds"] + (row["stage_seconds"] or 0.0)
    if sft is None:
        row["epochs"] = f"{run_summary['epochs']:g}"
        return row
    sft_epochs = summary(Path(run_summary["from_run"]))["epochs"]
    align_epochs = run_summary["epochs"]
    iterations = run_summary.get("iterations")
    detail = f"{iterations} x {align_epochs / iterations:g}" if iterations else f"{align_epochs:g}"
    row["epochs"] = f"{sft_epochs + align_epochs:g} ({sft_epochs:g} + {detail})"
    return row


def _table(rows: list[dict], args: argparse.Namespace) -> str:
    base = next(r for r in rows if r["method"] == "SFT")["seconds"]
    lines = [
        f"data {args.data} {' '.join(args.set)}, SFT {args.sft_epochs:g} epochs, DPO family "
        f"{args.align_epochs:g} "
        f"epoch(s), SPRec 3 x (1 + 1), GRPO 1, on {args.align_examples or 'all'} training "
        f"prompts, {args.threads} thread(s); time = training steps + validation + sampling + "
        "reference log-probs (process wall time, with start-up and loading, in the last column)",
        "",
        "| method | SFT (ILRec: its own) stage | alignment stage | total | total / SFT | epochs "
        "| sampling passes | peak RSS | wall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r["method"],
            _minutes(r["sft_seconds"]),
            _minutes(r["stage_seconds"]),
            _minutes(r["seconds"]),
            f"{r['seconds'] / base:.2f}x",
            r["epochs"],
            str(r["passes"]),
            f"{r['peak_mb']:.0f} MB",
            _minutes(r["wall_seconds"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


if __name__ == "__main__":
    main()
