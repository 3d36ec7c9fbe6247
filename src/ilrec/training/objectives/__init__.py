"""Training objectives, one module each, dispatched through a plain registry (``OBJECTIVES``).

An objective maps ``(model, batch)`` to a scalar loss plus floats to log
(:class:`~ilrec.training.objectives.base.ObjectiveOutput`). SFT runs pick one with
``objective.name``; alignment stages with ``align.method``. This package imports its members;
they import only :mod:`~ilrec.training.objectives.base`, never the registry.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ilrec.config import Config, ConfigError
from ilrec.data.encoding import Encoder
from ilrec.training.objectives.base import ForwardResult, ObjectiveOutput, forward_supervised
from ilrec.training.objectives.ce import CrossEntropyObjective
from ilrec.training.objectives.grpo import GRPOObjective
from ilrec.training.objectives.ilrec import ILRecObjective
from ilrec.training.objectives.preference import PreferenceObjective

__all__ = [
    "OBJECTIVES",
    "SFT_OBJECTIVES",
    "CrossEntropyObjective",
    "ForwardResult",
    "GRPOObjective",
    "ILRecObjective",
    "ObjectiveOutput",
    "PreferenceObjective",
    "build_objective",
    "forward_supervised",
]

Objective = Callable[[nn.Module, dict], ObjectiveOutput]

OBJECTIVES: dict[str, Callable[[Config, nn.Module, Encoder | None], Objective]] = {
    "ce": lambda config, model, encoder: CrossEntropyObjective(),
    "ilrec": lambda config, model, encoder: ILRecObjective(config.objective, model),
    "dpo": lambda config, model, encoder: PreferenceObjective(config.align, "dpo"),
    "sdpo": lambda config, model, encoder: PreferenceObjective(config.align, "sdpo"),
    "rosepo": lambda config, model, encoder: PreferenceObjective(config.align, "rosepo"),
    "grpo": lambda config, model, encoder: GRPOObjective(config.align, model, encoder),
}
"""Objective name -> builder ``(config, model, encoder) -> objective``."""

SFT_OBJECTIVES = ("ce", "ilrec")
"""What ``objective.name`` may name (the others are alignment stages: ``align.method``)."""


def build_objective(name: str, config: Config, model: nn.Module, encoder=None) -> Objective:
    """The objective ``name`` for ``model``; for ILRec with ``objective.mu_crr > 0`` its CRR
    reward provider is built from the CF run ``objective.cf_run`` (needs the ``encoder``'s
    identifier table, and the LM's history length so the CF model sees the same histories)."""
    if name not in OBJECTIVES:
        raise ConfigError(f"objective must be one of {sorted(OBJECTIVES)}, got {name!r}")
    objective = OBJECTIVES[name](config, model, encoder)
    if isinstance(objective, ILRecObjective) and config.objective.mu_crr > 0:
        if encoder is None:
            raise ValueError("objective.mu_crr > 0: build_objective needs the encoder")
        from ilrec.training.crr import CFRewardProvider

        vocab_size = model.get_output_embeddings().weight.shape[0]
        objective.set_reward_provider(
            CFRewardProvider(
                config.objective.cf_run,
                encoder.item_table(),
                vocab_size,
                config.data.max_history,
            )
        )
    return objective
