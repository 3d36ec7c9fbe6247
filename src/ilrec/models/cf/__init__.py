"""Classic recommenders used as baselines and as the CF reward model (paper Table 1, Table 4,
Section 2.4). One model per file; all follow :class:`SequentialRecommender`.

``CF_MODELS`` is the registry: add a model by importing its class here.
"""

from __future__ import annotations

import inspect
from typing import Any

from ilrec.models.cf.base import SequentialRecommender, gather_last, pad_histories
from ilrec.models.cf.bert4rec import BERT4Rec
from ilrec.models.cf.bpr import BPR
from ilrec.models.cf.caser import Caser
from ilrec.models.cf.gru4rec import GRU4Rec
from ilrec.models.cf.sasrec import SASRec

CF_MODELS: dict[str, type[SequentialRecommender]] = {
    "sasrec": SASRec,
    "gru4rec": GRU4Rec,
    "caser": Caser,
    "bert4rec": BERT4Rec,
    "bpr": BPR,
}


def model_parameters(name: str) -> dict[str, inspect.Parameter]:
    """Constructor arguments of a registered model (besides ``n_items``)."""
    if name not in CF_MODELS:
        raise ValueError(f"unknown CF model {name!r}; valid: {sorted(CF_MODELS)}")
    params = inspect.signature(CF_MODELS[name].__init__).parameters
    return {k: p for k, p in params.items() if k not in ("self", "n_items")}


def build_cf_model(name: str, n_items: int, **kwargs: Any) -> SequentialRecommender:
    """Instantiate ``CF_MODELS[name]``.

    Args:
        name: a key of :data:`CF_MODELS`.
        n_items: catalogue size.
        **kwargs: constructor arguments; an argument the model does not take is an error.
    """
    accepted = model_parameters(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"{name} has no argument {unknown[0]!r}; valid: {sorted(accepted)}")
    return CF_MODELS[name](n_items, **kwargs)


__all__ = [
    "BERT4Rec",
    "BPR",
    "CF_MODELS",
    "Caser",
    "GRU4Rec",
    "SASRec",
    "SequentialRecommender",
    "build_cf_model",
    "gather_last",
    "model_parameters",
    "pad_histories",
]
