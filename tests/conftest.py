"""Shared fixtures: one small synthetic dataset per test session, one torch thread per worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset (300 users, 80 items) with semantic IDs."""
    from ilrec.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("data") / "Synthetic"
    generate_synthetic(out, n_users=300, n_items=80, seed=0, index_epochs=30)
    return out


@pytest.fixture
def tiny_overrides():
    """Config overrides for a few-second training run on the tiny preset."""
    return _tiny_overrides


def _tiny_overrides(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        f"data.path={data_dir}",
        f"train.output_dir={run_dir}",
        "model.preset=tiny",
        "data.valid_users=16",
        "train.batch_size=16",
        "train.threads=1",
        "train.logging_steps=1",
        "eval.batch_size=16",
        *extra,
    ]


@pytest.fixture(scope="session")
def cf_run(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch SASRec on the synthetic dataset (CRR rewards, RosePO's oracle, GRPO's cf reward)."""
    from ilrec.training.cf import CFConfig, train_cf

    run = tmp_path_factory.mktemp("cf") / "sasrec"
    config = CFConfig(
        model="sasrec",
        embedding_size=16,
        epochs=1,
        batch_size=64,
        progress=False,
        model_kwargs={"n_layers": 1, "n_heads": 1},
    )
    train_cf(config, synthetic_dir, run)
    return run


FORMATS = {
    "sequence": [],
    "prompt": ["data.format=prompt"],
    "title": ["data.format=title", "data.identifier=title"],
}
"""Overrides of the three data formats (semantic IDs in sequence / prompt format, titles)."""


@pytest.fixture(scope="session")
def sft_runs(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished 4-step tiny SFT run per format: the starting points of later stages."""
    from ilrec.config import load_config
    from ilrec.training.run import train

    root = tmp_path_factory.mktemp("sft")
    runs = {}
    for fmt, extra in FORMATS.items():
        runs[fmt] = root / fmt
        overrides = _tiny_overrides(synthetic_dir, runs[fmt], "train.max_steps=4", *extra)
        train(load_config(None, overrides))
    return runs


class KillAt(TrainerCallback):
    """Raises KeyboardInterrupt at the end of optimizer step ``step`` (a killed run)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


class SignalAt(TrainerCallback):
    """Sends this process ``signum`` (``times`` times) at the end of optimizer step ``step``,
    as a scheduler's preemption (SIGTERM) or a Ctrl-C (SIGINT) would."""

    def __init__(self, step: int, signum: int, times: int = 1) -> None:
        self.step, self.signum, self.times = step, signum, times

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


TINY_ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
}


def tiny_causal_lm(arch: str = "llama", vocab_size: int = 50, **extra):
    """A randomly initialised 2-layer model of the architecture (seed 0), hidden size 32."""
    import transformers

    config_cls, model_cls = (getattr(transformers, name) for name in TINY_ARCHS[arch])
    shape = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    torch.manual_seed(0)
    return model_cls(config_cls(vocab_size=vocab_size, **{**shape, **extra}))


def save_tiny_pretrained(folder: Path, arch: str = "llama") -> int:
    """A tiny pretrained-style folder: config + random weights + a small BPE tokenizer (no
    downloads); returns the tokenizer's size."""
    from ilrec.identifiers.vocab import build_text_tokenizer

    tokenizer = build_text_tokenizer(["The user has interacted with items", "### Response:"], 300)
    model = tiny_causal_lm(
        arch,
        len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return len(tokenizer)
