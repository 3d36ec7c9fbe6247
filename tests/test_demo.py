"""The demo end to end on tiny settings: train, evaluate, recommend for three users."""

from __future__ import annotations

import json
import shutil

from ilrec.demo import run_demo


def test_demo_trains_evaluates_and_recommends(synthetic_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    shutil.copytree(synthetic_dir, out / "data" / "Synthetic")  # skips the data generation
    tiny = ["model.preset=tiny", "train.max_steps=3", "data.valid_users=16", "train.threads=1"]
    run_demo(out, overrides=tiny)
    printed = capsys.readouterr().out
    for split in ("valid", "test"):
        assert (out / "sft" / f"eval_{split}_beam.json").exists()
    records = [json.loads(x) for x in (out / "recommendations.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(len(r["items"]) == 5 for r in records)
    assert all(r["items"][0]["title"] for r in records)  # the synthetic items have titles
    assert "ilrec recommend --run" in printed and "missing keys" not in printed
