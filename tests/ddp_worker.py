"""Run by tests/test_distributed.py under torchrun / accelerate launch (not collected by pytest).

Trains with the given overrides; at the end every rank writes a digest of its weights. With
``SIGNAL_RANK1_AT=N`` in the environment, rank 1 alone is sent SIGTERM at step N: every rank
writes ``stopped<rank>.json`` (the step it stopped after) instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
from pathlib import Path

from transformers import TrainerCallback

from ilrec.config import load_config
from ilrec.evaluation.report import evaluate_run
from ilrec.training.run import train
from ilrec.training.signals import TrainingStopped


class WeightDigest(TrainerCallback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, args, state, control, model=None, **kwargs):
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        rank = os.environ.get("RANK", "0")
        self.out.joinpath(f"rank{rank}.json").write_text(
            json.dumps({"digest": digest.hexdigest(), "world": os.environ.get("WORLD_SIZE")})
        )


class SignalRank1At(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and os.environ["RANK"] == "1":
            os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    config = load_config(None, sys.argv[2:])
    if "SIGNAL_RANK1_AT" in os.environ:
        try:
            train(config, callbacks=[SignalRank1At(int(os.environ["SIGNAL_RANK1_AT"]))])
        except TrainingStopped as stopped:
            rank = os.environ["RANK"]
            out.joinpath(f"stopped{rank}.json").write_text(json.dumps({"step": stopped.step}))
        sys.exit(0)
    train(config, callbacks=[WeightDigest(out)])
    # Distributed evaluation: users sharded over the ranks, gathered on every rank.
    evaluate_run(
        Path(config.train.output_dir),
        split="valid",
        mode="beam",
        beams=10,
        batch_size=8,
        progress=False,
    )
    # An odd number of users: the ranks' shares are padded to equal length (lockstep).
    evaluate_run(Path(config.train.output_dir), "test", "beam", 10, 2, users=7, progress=False)
