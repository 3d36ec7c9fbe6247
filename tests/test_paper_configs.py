"""Paper-scale configurations (configs/paper/, configs/accelerate/) and gradient checkpointing.

Every paper config loads, pins the hyperparameters of the paper / LC-Rec / BIGRec, and trains
two steps on CPU with a tiny random model of its backbone's architecture (Llama or Qwen2) in
place of the 8B weights. The accelerate launch configs parse as accelerate itself parses them.
Gradient checkpointing recomputes the decoder layers and leaves ILRec's loss and gradients
unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import (
    TrainerCallback,
)

from conftest import save_tiny_pretrained, tiny_causal_lm
from ilrec.config import ObjectiveConfig, load_config, read_config_values
from ilrec.models.layers import causal_lm
from ilrec.training.objectives.ilrec import ILRecObjective
from ilrec.training.run import train, training_arguments

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted((REPO / "configs" / "paper").glob("*.yaml"))
BASES = sorted((REPO / "configs" / "paper" / "bases").glob("*.yaml"))
ACCELERATE = REPO / "configs" / "accelerate"
PLACEHOLDERS = {"/models/Llama-3.1-8B": "llama", "/models/Qwen2.5-7B": "qwen2"}
ARCHS = ("llama", "qwen2")
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pretrained")
    folders = {arch: root / arch for arch in ARCHS}
    for arch, folder in folders.items():
        save_tiny_pretrained(folder, arch)
    return folders


def _stem(path: Path) -> str:
    return path.stem


# --------------------------------------------------------------------------------------
# the paper configurations
# --------------------------------------------------------------------------------------


def test_paper_config_matrix():
    """Both paradigms x both objectives x both backbones x LoRA / full fine-tuning."""
    names = {p.stem for p in PAPER}
    expected = {
        f"{paradigm}_{ft}_{model}_{objective}"
        for paradigm in ("lcrec", "bigrec")
        for ft in ("full", "lora")
        for model in ("llama3", "qwen2")
        for objective in ("sft", "ilrec")
    }
    assert names == expected


@pytest.mark.parametrize("path", PAPER + BASES, ids=lambda p: p.stem)
def test_paper_config_pins_the_hyperparameters(path):
    c = load_config(path)
    assert c.model.kind == "hf" and c.model.path in PLACEHOLDERS
    assert c.model.dtype == "bfloat16" and c.train.gradient_checkpointing
    assert c.eval.beams == 20 and c.data.max_history == 20
    if path.stem == "common":
        return
    assert c.train.batch_size * c.train.grad_accum * 8 == 128  # effective batch on 8 GPUs
    if c.data.format == "prompt":  # LC-Rec
        assert c.data.identifier == "semantic"
        assert (c.train.epochs, c.train.scheduler, c.train.warmup_ratio) == (4, "cosine", 0.01)
        assert c.train.weight_decay == 0.01
        if c.model.lora:
            assert (c.model.lora_r, c.model.lora_alpha, c.model.lora_dropout) == (8, 32, 0.05)
            assert c.model.lora_targets == ALL_PROJECTIONS and c.train.lr == 1e-4
        else:
            assert c.train.lr == 5e-5
    else:  # BIGRec
        assert c.data.format == "title" and c.data.identifier == "title"
        assert (c.train.epochs, c.train.patience, c.train.scheduler) == (50, 5, "linear")
        if c.model.lora:
            assert (c.model.lora_r, c.model.lora_alpha, c.model.lora_dropout) == (8, 16, 0.05)
            assert c.model.lora_targets == ["q_proj", "v_proj"] and c.train.lr == 1e-4
        else:
            assert c.train.lr == 5e-5
    if path in PAPER:
        assert c.model.lora == ("_lora_" in path.stem)
        assert PLACEHOLDERS[c.model.path] == ("qwen2" if "_qwen2_" in path.stem else "llama")
        assert c.train.output_dir == f"runs/paper/{path.stem}"


@pytest.mark.parametrize("path", [p for p in PAPER if p.stem.endswith("_ilrec")], ids=_stem)
def test_ilrec_config_differs_from_its_sft_config_only_in_the_objective(path):
    ilrec = read_config_values(path)
    sft = read_config_values(path.with_name(path.name.replace("_ilrec", "_sft")))
    assert ilrec["objective"]["name"] == "ilrec" and sft["objective"]["name"] == "ce"
    for values in (ilrec, sft):
        values.pop("objective")
        values["train"].pop("output_dir")
    assert ilrec == sft


class RecordCheckpointing(TrainerCallback):
    """Whether the model the Trainer trains has activation checkpointing on."""

    active: bool | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.active = causal_lm(model).is_activation_checkpointing


@pytest.mark.parametrize("path", PAPER, ids=_stem)
def test_paper_config_trains_a_tiny_model_of_its_architecture(
    path, tiny_folders, synthetic_dir, tmp_path
):
    arch = PLACEHOLDERS[load_config(path).model.path]
    run = tmp_path / "run"
    overrides = [
        f"model.path={tiny_folders[arch]}",
        "model.dtype=float32",
        f"data.path={synthetic_dir}",
        f"train.output_dir={run}",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.grad_accum=1",
        "train.threads=1",
        "train.logging_steps=1",
        "data.valid_users=8",
        "eval.batch_size=8",
        "eval.beams=10",
    ]
    config = load_config(path, overrides)
    record = RecordCheckpointing()
    result = train(config, callbacks=[record])
    assert 0.0 <= result["ndcg@10"] <= 1.0
    assert record.active is config.train.gradient_checkpointing is True
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and all(map(torch.isfinite, torch.tensor(losses)))
    if config.objective.name == "ilrec":
        assert all("cpd" in r and "cpo" in r for r in records if "loss" in r)
    model_files = {p.name for p in (run / "model").iterdir()}
    assert ("adapter_config.json" in model_files) == config.model.lora
    saved = load_config(run / "config.yaml")
    assert saved.train.gradient_checkpointing and saved.model.kind == "hf"


# --------------------------------------------------------------------------------------
# gradient checkpointing
# --------------------------------------------------------------------------------------


def _clear_launcher_env(monkeypatch):
    for name in (
        "ACCELERATE_USE_FSDP",
        "FSDP_ACTIVATION_CHECKPOINTING",
        "ACCELERATE_MIXED_PRECISION",
    ):
        monkeypatch.delenv(name, raising=False)


def test_training_arguments_checkpointing(tmp_path, monkeypatch):
    _clear_launcher_env(monkeypatch)
    off = training_arguments(load_config(None, []), tmp_path)
    assert off.activation_checkpointing is False
    config = load_config(None, ["train.gradient_checkpointing=true"])
    on = training_arguments(config, tmp_path)
    assert on.activation_checkpointing is True
    assert on.activation_checkpointing_kwargs == {"use_reentrant": False}
    # under `accelerate launch` with FSDP's own activation checkpointing, FSDP does it
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")
    assert training_arguments(config, tmp_path).activation_checkpointing is False


def test_launcher_mixed_precision_reaches_an_fp32_model(tmp_path, monkeypatch):
    """model.dtype=float32 under a bf16 launch config: fp32 weights (master copy), bf16
    autocast from the launcher (what configs/accelerate/fsdp_*.yaml relies on)."""
    _clear_launcher_env(monkeypatch)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    args = training_arguments(load_config(None, ["model.dtype=float32"]), tmp_path)
    assert args.bf16 is False and args.mixed_precision == "bf16"


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_ilrec_with_checkpointing_recomputes_layers_and_keeps_gradients(arch):
    """ILRec reads every hidden state (output_hidden_states=True) and sends CPD gradients into
    the intermediate layers; with non-reentrant checkpointing the decoder layers run again in
    the backward pass and the loss and every gradient are unchanged."""
    torch.manual_seed(0)
    model = tiny_causal_lm(arch, 64, num_hidden_layers=3).train()
    ids = torch.randint(0, 64, (4, 12))
    labels = ids.clone()
    labels[:, :8] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    objective = ILRecObjective(ObjectiveConfig(k=2, alpha=0.1, beta=0.2, lambda_cpd=0.5), model)
    mlp = model.model.layers[1].mlp
    calls = []
    forward = mlp.forward
    mlp.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)

    def step():
        model.zero_grad()
        calls.clear()
        out = objective(model, batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        return out.loss.detach(), grads, len(calls)

    loss, grads, runs = step()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    loss_ckpt, grads_ckpt, runs_ckpt = step()
    assert (runs, runs_ckpt) == (1, 2)  # the layer ran again in the backward pass
    torch.testing.assert_close(loss_ckpt, loss)
    assert grads.keys() == grads_ckpt.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, msg=name)


# --------------------------------------------------------------------------------------
# accelerate launch configs
# --------------------------------------------------------------------------------------

LAUNCH_CONFIGS = sorted(ACCELERATE.glob("*.yaml"))


def test_launch_config_set():
    names = {p.stem for p in LAUNCH_CONFIGS}
    assert {"ddp", "fsdp_llama", "fsdp_qwen2", "zero3", "zero3_offload"} <= names


@pytest.mark.parametrize("path", LAUNCH_CONFIGS, ids=_stem)
def test_launch_config_is_a_valid_accelerate_config(path, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    raw = yaml.safe_load(path.read_text())
    for key in ("compute_environment", "distributed_type", "num_processes", "num_machines"):
        assert key in raw, key
    assert raw["compute_environment"] == "LOCAL_MACHINE" and raw["use_cpu"] is False
    assert (raw["num_processes"], raw["num_machines"]) == (8, 1)
    load_config_from_file(str(path))  # accelerate's own parser: no unknown keys
    monkeypatch.chdir(REPO)
    argv = ["--config_file", str(path), "-m", "ilrec.cli", "train", "-c", "x.yaml"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    assert args.num_processes == 8
    kind = raw["distributed_type"]
    if kind == "DEEPSPEED":
        # precision lives in the DeepSpeed file; accelerate refuses mixed_precision beside it
        assert "mixed_precision" not in raw and args.use_deepspeed
        ds_file = REPO / raw["deepspeed_config"]["deepspeed_config_file"]
        ds = json.loads(ds_file.read_text())
        assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] == "auto"
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
        offload = "offload_optimizer" in ds["zero_optimization"]
        assert offload == ("offload" in path.stem)
    else:
        assert raw["mixed_precision"] == "bf16" == args.mixed_precision
        assert kind == ("FSDP" if path.stem.startswith("fsdp") else "MULTI_GPU")


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_fsdp_wraps_the_decoder_layer_class(arch):
    """The class named for auto-wrap exists in transformers' module of the architecture and
    is the decoder layer of a model of it (accelerate raises when the class is missing)."""
    import importlib

    raw = yaml.safe_load((ACCELERATE / f"fsdp_{arch}.yaml").read_text())
    fsdp = raw["fsdp_config"]
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_reshard_after_forward"] is True  # full shard
    assert fsdp["fsdp_activation_checkpointing"] is True
    name = fsdp["fsdp_transformer_layer_cls_to_wrap"]
    module = importlib.import_module(f"transformers.models.{arch}.modeling_{arch}")
    layer_cls = getattr(module, name)
    model = tiny_causal_lm(arch, 64)
    assert name in model._no_split_modules
    assert all(isinstance(layer, layer_cls) for layer in model.model.layers)


def test_ddp_launch_config_runs_a_paper_config(tiny_folders, synthetic_dir, tmp_path):
    """The documented command (accelerate launch --config_file configs/accelerate/ddp.yaml -m
    ilrec.cli train -c configs/paper/...) on 2 CPU processes: LoRA + ILRec + checkpointing
    under DDP."""
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE / "ddp.yaml"),
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29543",
        "-m",
        "ilrec.cli",
        "train",
        "-c",
        str(REPO / "configs" / "paper" / "lcrec_lora_llama3_ilrec.yaml"),
        f"model.path={tiny_folders['llama']}",
        "model.dtype=float32",
        f"data.path={synthetic_dir}",
        f"train.output_dir={run}",
        "train.max_steps=2",
        "train.batch_size=4",
        "train.grad_accum=1",
        "train.logging_steps=1",
        "data.valid_users=8",
        "eval.batch_size=4",
        "eval.beams=10",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 2
    assert (run / "model" / "adapter_config.json").exists()
