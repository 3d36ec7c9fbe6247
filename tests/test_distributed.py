"""Two CPU processes (gloo) under torchrun and accelerate: both ranks end with identical
weights, distributed evaluation covers every user exactly once, and a signal to one rank
stops both after the same step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ilrec.config import load_config
from ilrec.evaluation.report import evaluate_run
from ilrec.evaluation.result_files import read_rankings
from ilrec.metrics import rank_metrics

WORKER = Path(__file__).with_name("ddp_worker.py")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


LAUNCHERS = {
    "torchrun": [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29531",
    ],
    "accelerate": [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29532",
    ],
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_identical_weights(synthetic_dir, tmp_path, tiny_overrides, launcher):
    run = tmp_path / "run"
    overrides = tiny_overrides(synthetic_dir, run, "train.max_steps=4", "train.eval_every=2")
    cmd = [*LAUNCHERS[launcher], str(WORKER), str(tmp_path), *overrides]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == ["2", "2"]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert (run / "model" / "model.safetensors").exists()
    config = load_config(run / "config.yaml")
    assert config.train.max_steps == 4

    # The sharded evaluation (written by rank 0) equals a single-process one over every user.
    sharded = json.loads((run / "eval_valid_beam.json").read_text())
    single = evaluate_run(run, split="valid", mode="beam", beams=10, batch_size=8, progress=False)
    assert sharded["users"] == 300
    for method, metrics in single.items():
        assert sharded["metrics"][method] == pytest.approx(metrics), method
    odd = read_rankings(run / "eval_test_beam_first7.rankings.tsv")
    alone = evaluate_run(run, "test", "beam", 10, 2, users=7, progress=False)
    assert len(odd.users) == 7
    assert rank_metrics(odd.ranked, odd.targets) == pytest.approx(alone["model (beam)"])


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(
    synthetic_dir, tmp_path, tiny_overrides
):
    run = tmp_path / "run"
    overrides = tiny_overrides(synthetic_dir, run, "train.max_steps=6", "train.eval_every=4")
    cmd = [*LAUNCHERS["torchrun"], str(WORKER), str(tmp_path), *overrides]
    env = {**_env(), "SIGNAL_RANK1_AT": "2"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [json.loads((tmp_path / f"stopped{r}.json").read_text())["step"] for r in (0, 1)]
    assert steps == [2, 2]  # rank 0 was never signalled: it stopped on rank 1's vote
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (run / "model").exists()
