"""``make demo``: synthetic data → semantic IDs → train a small model → evaluate.

Prints popularity vs the model (HR/NDCG@5/10 on validation and test, full ranking) and writes
the training/validation curves as a PNG.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ilrec.config import load_config
from ilrec.data.synthetic import generate_synthetic

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def run_demo(out: Path, config_path: Path = CONFIG, overrides: list[str] | None = None) -> None:
    from ilrec.evaluation.report import evaluate_run
    from ilrec.training.run import train

    start = time.perf_counter()
    data_dir = out / "data" / "Synthetic"
    if not (data_dir / "Synthetic.index.json").exists():
        report = generate_synthetic(data_dir, progress=True, force=True)
        print(f"[demo] synthetic dataset + semantic IDs: {report}")
    run_dir = out / "sft"
    config = load_config(
        config_path, [f"data.path={data_dir}", f"train.output_dir={run_dir}", *(overrides or [])]
    )
    if (run_dir / "model" / "config.json").exists():
        print(f"[demo] {run_dir} is already trained; evaluating it (delete it to retrain)")
    else:
        train(config, overwrite=True)
    for split in ("valid", "test"):
        evaluate_run(run_dir, split=split, mode="beam", beams=20, batch_size=64)
    recommend_examples(out, run_dir, config)
    print(f"[demo] curves: {run_dir / 'curves.png'}; total {time.perf_counter() - start:.0f} s")


def recommend_examples(out: Path, run_dir: Path, config) -> None:
    """Three users' test histories as an `ilrec recommend` input file, and their top 5."""
    import json

    from ilrec.data.io import atomic_write_text
    from ilrec.runs.setup import load_setup
    from ilrec.serving import recommend_file

    examples = load_setup(config).splits.test[:3]
    histories = out / "histories.jsonl"
    lines = [json.dumps({"user": e.user, "history": list(e.history)}) for e in examples]
    atomic_write_text(histories, "\n".join(lines) + "\n")
    output = out / "recommendations.jsonl"
    recommend_file(run_dir, histories, output, k=5, force=True)
    print(f"[demo] ilrec recommend --run {run_dir} --input {histories} --k 5:")
    for line in output.read_text().splitlines():
        record = json.loads(line)
        titles = ", ".join(item["title"] or str(item["item"]) for item in record["items"])
        print(f"  user {record['user']}: {titles}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = parser.parse_args()
    run_demo(args.out, overrides=args.overrides)


if __name__ == "__main__":
    main()
