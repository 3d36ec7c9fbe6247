"""From a config to data, identifiers, encoder, model and tokenizer (shared by ``train`` and
``evaluate``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ilrec.config import Config
from ilrec.data.candidates import candidate_stem, load_candidate_splits
from ilrec.data.dataset import InteractionData, load_dataset
from ilrec.data.encoding import Encoder
from ilrec.data.prompts import (
    CANDIDATE_TEMPLATES,
    SEQREC_INSTRUCTIONS,
    TITLE_INPUT,
    TITLE_INSTRUCTION,
    quoted,
)
from ilrec.data.split import Splits, leave_one_out
from ilrec.identifiers.semantic import make_unique
from ilrec.identifiers.vocab import unique_titles
from ilrec.models.backbones import BackboneInputs, build_backbone
from ilrec.runs.files import require_run_dir

log = logging.getLogger(__name__)


@dataclass
class Setup:
    config: Config
    data: InteractionData
    splits: Splits
    codes: dict[int, list[str]] | None  # unique semantic codes (None in the title paradigm)
    titles: list[str] | None  # unique titles (title paradigm)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads deliberately: oversubscribed cores make CPU training
    10-40x slower (platform.md). 0 = all cores alone, 1 per process when distributed."""
    if threads <= 0:
        threads = 1 if world_size() > 1 else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    return threads


def load_setup(config: Config) -> Setup:
    """The dataset, its splits and identifiers for ``config``.

    With ``data.task=candidates`` the splits are the candidate rows (a
    :class:`~ilrec.data.candidates.CandidateSplits` read from ``data.candidates``, every row
    checked), otherwise the leave-one-out split.
    """
    data = load_dataset(config.data.path, require_index=config.data.identifier == "semantic")
    splits = load_splits(config, data)
    codes = make_unique(data.codes) if config.data.identifier == "semantic" else None
    titles = unique_titles(data.titles()) if config.data.identifier == "title" else None
    return Setup(config, data, splits, codes, titles)


def load_splits(config: Config, data: InteractionData) -> Splits:
    """Leave-one-out splits (``data.task=full``) or the checked candidate rows."""
    cfg = config.data
    if cfg.task == "candidates":
        stem = candidate_stem(cfg.candidates, data)
        return load_candidate_splits(stem, cfg.protocol, data.n_items, cfg.max_history)
    return leave_one_out(data, cfg.max_history)


def text_corpus(setup: Setup) -> list[str]:
    """Texts a from-scratch text tokenizer is trained on: the prompt templates and titles
    (and the candidate instruction for the candidate task)."""
    corpus = [*SEQREC_INSTRUCTIONS, TITLE_INSTRUCTION, TITLE_INPUT]
    if setup.config.data.task == "candidates":
        corpus.append(CANDIDATE_TEMPLATES[setup.config.data.domain])
    corpus += [
        "Below is an instruction that describes a task. Write a response that "
        "appropriately completes the request. ### Instruction: ### Input: ### Response:"
    ]
    if setup.titles:
        corpus += [quoted(t) for t in setup.titles]
    return corpus


def make_encoder(setup: Setup, tokenizer: PreTrainedTokenizerBase) -> Encoder:
    cfg = setup.config.data
    kw = {"n_paraphrases": cfg.paraphrases, "candidate_domain": cfg.domain}
    if cfg.identifier == "title":
        return Encoder.for_titles(tokenizer, setup.titles, **kw)
    return Encoder.for_codes(cfg.format, tokenizer, setup.codes, **kw)


def build_model(setup: Setup) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    inputs = BackboneInputs(
        fmt=setup.config.data.format,
        codes=setup.codes,
        corpus=text_corpus(setup) if setup.config.model.kind == "scratch" else [],
        max_length=max_length(setup),
    )
    return build_backbone(setup.config.model, inputs)


def max_length(setup: Setup) -> int:
    """Position budget for scratch models: the longest prompt + response, with headroom."""
    if setup.config.data.format == "sequence":
        depth = max(len(c) for c in setup.codes.values())
        return 1 + (setup.config.data.max_history + 1) * depth + 8
    return 1024


def read_run(run_dir: str | Path) -> tuple[Path, Config]:
    """A finished run's folder (checked) and its saved config."""
    from ilrec.config import load_config

    run_dir = require_run_dir(run_dir)
    return run_dir, load_config(run_dir / "config.yaml")


def open_run(run_dir: str | Path, threads: int | None = None) -> tuple[Path, Config]:
    """A finished run's folder and config, with torch's threads set for using it.

    ``threads``: None takes the run's ``train.threads``; pass 1 when other jobs share the
    cores (a run resumed with more threads records that count, and oversubscribed cores are
    10-40x slower).
    """
    run_dir, config = read_run(run_dir)
    set_threads(config.train.threads if threads is None else threads)
    return run_dir, config


def load_for_inference(run_dir: Path, setup: Setup) -> tuple[PreTrainedModel, Encoder]:
    """The run's selected model (eval mode, merged, placed) and its encoder."""
    model, tokenizer = load_trained(run_dir)
    return model, make_encoder(setup, tokenizer)


def load_trained(
    run_dir: Path, trainable: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The selected model and tokenizer saved in a run folder.

    Args:
        run_dir: a finished run (``ilrec train`` or ``ilrec align``).
        trainable: for a later stage: the model in train mode on the CPU (the Trainer places
            it), LoRA adapters kept separate and trainable. Otherwise for inference: eval mode,
            adapters merged, on the GPU when there is one, in the run's ``model.dtype``.
    """
    run_dir = require_run_dir(run_dir)
    model_dir = run_dir / "model"
    if (
        not (model_dir / "config.json").exists()
        and not (model_dir / "adapter_config.json").exists()
    ):
        raise FileNotFoundError(f"{model_dir}: no trained model (did the run finish?)")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "tokenizer")
    if (model_dir / "adapter_config.json").exists():
        model = _load_lora(model_dir, len(tokenizer), trainable)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    if trainable:
        return model.train(), tokenizer
    return model.to(**inference_placement(run_dir)).eval(), tokenizer


def inference_placement(run_dir: Path) -> dict:
    """``{"device", "dtype"}`` for evaluating a run: the GPU in the run's ``model.dtype`` when
    CUDA is available, else the CPU in float32."""
    if not torch.cuda.is_available():
        return {"device": torch.device("cpu"), "dtype": torch.float32}
    dtype = read_run(run_dir)[1].model.dtype
    return {"device": torch.device("cuda"), "dtype": getattr(torch, dtype)}


def _load_lora(model_dir: Path, vocab_size: int, trainable: bool) -> PreTrainedModel:
    """Base model resized to the run's vocabulary, adapter loaded (merged for inference)."""
    import json

    from peft import PeftModel

    base_path = json.loads((model_dir / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ]
    base = AutoModelForCausalLM.from_pretrained(base_path)
    base.resize_token_embeddings(vocab_size, mean_resizing=False)
    model = PeftModel.from_pretrained(base, model_dir, is_trainable=trainable)
    return model if trainable else model.merge_and_unload()
