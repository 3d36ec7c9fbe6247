"""benchmarks/gpu_check.py: the dry run (CPU, fp32, tiny models) writes every key the GPU run
writes, with consistent values; the GPU run's smallest part runs when CUDA is there."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"

TOP = {"mode", "environment", "data", "plan", "settings", "notes", "seconds"}
SETTING = {"skipped", "model", "batch_size", "train", "ratios", "decoding", "seconds"}
VARIANT = {
    "step_s_median",
    "step_s_min",
    "steps",
    "tokens_per_s",
    "padded_tokens_per_s",
    "supervised_positions_per_batch",
    "train_flops_per_token",
    "achieved_tflops",
    "peak_bytes",
    "peak_delta_bytes",
    "peak_method",
    "first_loss",
}
ILREC_VARIANT = VARIANT | {"neg_per_pos", "neg_logit_negative_frac"}
RATIOS = {"ilrec_vs_ce", "ilrec_vs_ce_ckpt", "ckpt_vs_plain_ce", "ckpt_vs_plain_ilrec"}
DECODING = {
    "users",
    "items",
    "beams",
    "identifier_depth",
    "mean_prompt_tokens",
    "beam_users_per_s",
    "generate_users_per_s",
    "top10_overlap_beam_generate",
    "top10_identical_beam_generate",
    "exact_users",
    "exact_internal_positions",
    "exact_users_per_s",
    "top10_overlap_beam_exact",
    "exact_best_in_beams",
    "max_abs_beam_vs_exact_score",
}
MODEL = {"architecture", "params", "non_embedding_params", "layers", "hidden", "vocab"}


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _check_setting(setting: dict) -> None:
    assert set(setting) >= SETTING
    assert setting["skipped"] is None
    assert set(setting["model"]) >= MODEL | {"tied_embeddings", "format"}
    train = setting["train"]
    assert set(train) == {"ce", "ilrec", "ce+ckpt", "ilrec+ckpt"}
    for variant, record in train.items():
        keys = ILREC_VARIANT if variant.startswith("ilrec") else VARIANT
        assert set(record) == keys, variant
        assert record["step_s_median"] > 0 and record["tokens_per_s"] > 0
    assert set(setting["ratios"]) == RATIOS
    assert all(set(r) == {"time", "memory"} for r in setting["ratios"].values())
    # same initial weights and batches: the first-batch loss does not depend on checkpointing
    # (and CPO equals CE at the same weights only up to the penalty, so compare like with like)
    assert train["ce+ckpt"]["first_loss"] == pytest.approx(train["ce"]["first_loss"], abs=1e-3)
    assert train["ilrec+ckpt"]["first_loss"] == pytest.approx(
        train["ilrec"]["first_loss"], abs=1e-3
    )
    ckpt_flops = train["ce+ckpt"]["train_flops_per_token"]
    assert ckpt_flops * 6 == train["ce"]["train_flops_per_token"] * 8
    decoding = setting["decoding"]
    assert set(decoding) == DECODING
    assert decoding["beam_users_per_s"] > 0 and decoding["exact_users_per_s"] > 0


def test_dry_run_writes_every_key(tmp_path):
    out = tmp_path / "dry.json"
    result = _load().main(["--dry-run", "--out", str(out)], log=lambda _: None)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert set(result) == TOP and result["mode"] == "dry-run"
    assert result["environment"]["device"] == "cpu" and result["environment"]["dtype"] == "float32"
    assert set(result["settings"]) == {"smollm2_135m", "qwen2_scratch"}
    for setting in result["settings"].values():
        _check_setting(setting)
        decoding = setting["decoding"]
        # fp32: the batched trie walk returns generate's beams, and each beam's score is the
        # exact score of its item (beam search may still miss items exact scoring ranks high)
        assert decoding["top10_overlap_beam_generate"] == 1.0
        assert 0.0 <= decoding["top10_overlap_beam_exact"] <= 1.0
        assert decoding["max_abs_beam_vs_exact_score"] < 1e-4
    assert result["settings"]["qwen2_scratch"]["model"]["architecture"] == "Qwen2ForCausalLM"
    assert result["settings"]["smollm2_135m"]["model"]["format"] == "prompt"


def test_settings_can_be_left_out(tmp_path):
    result = _load().main(
        ["--dry-run", "--out", str(tmp_path / "x.json"), "--settings", "qwen2_scratch"],
        log=lambda _: None,
    )
    left_out = result["settings"]["smollm2_135m"]
    assert set(left_out) >= SETTING and left_out["skipped"].startswith("not selected")
    _check_setting(result["settings"]["qwen2_scratch"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_smallest_part(tmp_path):
    """The real mode (bf16 on CUDA) on the from-scratch Qwen2 setting, few steps and users."""
    argv = ["--out", str(tmp_path / "gpu.json"), "--settings", "qwen2_scratch"]
    argv += ["--steps", "3", "--warmup", "1", "--users", "16", "--exact-users", "4"]
    result = _load().main(argv, log=lambda _: None)
    assert result["mode"] == "gpu" and result["environment"]["dtype"] == "bfloat16"
    setting = result["settings"]["qwen2_scratch"]
    _check_setting(setting)
    assert setting["train"]["ce"]["peak_method"] == "cuda.max_memory_allocated"
    assert setting["train"]["ce"]["peak_delta_bytes"] > 0
    assert setting["model"]["layers"] == 24 and setting["model"]["hidden"] == 1024
