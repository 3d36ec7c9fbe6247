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
    print(f"[demo] curves: {run_dir / 'curves.png'}; total {time.perf_counter() - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    args = parser.parse_args()
    run_demo(args.out, overrides=args.overrides)


if __name__ == "__main__":
    main()
