"""A clean stop on SIGTERM or SIGINT: the run finishes its optimizer step, saves a resumable
checkpoint there and exits, so a preempted job, a ``kill`` or a Ctrl-C loses no training."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ilrec.distributed import any_rank

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(Exception):
    """Training stopped on a signal after saving ``checkpoint``; ``--resume`` continues it."""

    def __init__(self, signum: int, step: int, checkpoint: str, unit: str = "step") -> None:
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after {unit} {step}; checkpoint saved in {checkpoint} "
            "(run the same command with --resume to continue)"
        )


class StopOnSignal(TrainerCallback):
    """On the first SIGTERM or SIGINT: save a checkpoint at the end of the current optimizer
    step, then raise :class:`TrainingStopped`; a second signal acts as it did before (the
    previous handlers come back on the first).

    The ranks of a distributed run vote at every step end, so all of them stop after the same
    step even when the signal reaches them at different times. The handlers are in place inside
    ``with StopOnSignal() as stopper:``; a loop of its own (the CF trainer) reads
    ``stopper.received`` where it can stop."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.stopping = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():  # signals go there only
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc_info) -> None:
        self.restore()

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            # None: a handler not set from Python, which cannot be put back; the default then
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _on_signal(self, signum, frame) -> None:
        self.received = signum
        self.restore()
        log.warning(
            "%s received: stopping after the current step (train-cf: epoch) once its "
            "checkpoint is saved; send it again to stop at once",
            signal.Signals(signum).name,
        )

    def on_step_end(self, args, state, control, **kwargs):
        if any_rank(self.received is not None, args.device):
            self.stopping = True
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.stopping:  # the checkpoint of this step is on disk: leave before anything else
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            signum = self.received or signal.SIGTERM  # a rank that only saw the vote
            raise TrainingStopped(signum, state.global_step, str(checkpoint))
        return control
