"""Access to a causal LM's decoder, final norm, LM head and per-layer hidden states at the
supervised positions only (paper Eq. 2: ``P^l = φ(h^l)``).

Hugging Face ``hidden_states[l]`` is the output of layer ``l`` (``hidden_states[0]`` the
embeddings); the last entry already went through the final norm. Logits are computed only
at the positions whose next token is supervised, never for the whole sequence × vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ilrec.data.encoding import IGNORE_INDEX


@dataclass
class LMParts:
    """The pieces of a decoder-only LM that per-layer logits need."""

    decoder: nn.Module  # returns hidden states (e.g. LlamaModel, Qwen2Model)
    norm: nn.Module  # final norm applied before the head
    head: nn.Module  # LM head
    n_layers: int


def causal_lm(model: nn.Module) -> nn.Module:
    """The underlying ``*ForCausalLM`` of a DDP- and/or PEFT-wrapped model."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        model = model.module
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    return model


def lm_parts(model: nn.Module) -> LMParts:
    """Decoder, final norm and head of a (possibly PEFT- or DDP-wrapped) causal LM."""
    base = causal_lm(model)
    decoder = base.model
    norm = getattr(decoder, "norm", None)
    if norm is None:
        raise TypeError(f"{type(decoder).__name__} has no final `norm`; unsupported architecture")
    return LMParts(decoder, norm, base.lm_head, base.config.num_hidden_layers)


def supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions whose next token is supervised, and those targets.

    Args:
        labels: ``[B, T]`` with -100 on unsupervised tokens (aligned with ``input_ids``).
    Returns:
        ``(index, targets)``: ``index`` is ``[N, 2]`` (row, position predicting the target),
        ``targets`` is ``[N]``.
    """
    next_labels = labels[:, 1:]  # position t predicts token t+1
    index = (next_labels != IGNORE_INDEX).nonzero()
    return index, next_labels[index[:, 0], index[:, 1]]


def gather(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``hidden[B, T, H]`` at ``index[N, 2]`` → ``[N, H]``."""
    return hidden[index[:, 0], index[:, 1]]


def hidden_states(
    parts: LMParts,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    all_layers: bool,
) -> tuple[torch.Tensor, ...]:
    """Run the decoder; returns the last (normed) hidden state, or all of them."""
    out = parts.decoder(
        input_ids=input_ids,
        attention_mask=attention_mask,
        output_hidden_states=all_layers,
        use_cache=False,
    )
    return out.hidden_states if all_layers else (out.last_hidden_state,)


def final_logits(model: nn.Module, last_hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``z = P^L`` at the supervised positions: the model's own head on the last (normed)
    hidden state ``[B, T, H]`` gathered at ``index [N, 2]``; float32 ``[N, V]``."""
    return lm_parts(model).head(gather(last_hidden, index)).float()
