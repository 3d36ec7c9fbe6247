"""Recommendations from a trained run: :class:`Recommender` (Python API, ``recommender``)
and the JSONL input/output of ``ilrec recommend`` (``jsonl_io``)."""

from ilrec.data.dataset import read_item2id
from ilrec.serving.jsonl_io import (
    HistoryRequest,
    read_histories,
    recommend_file,
    recommendations_jsonl,
)
from ilrec.serving.recommender import Catalogue, Recommendation, Recommender

__all__ = [
    "Catalogue",
    "HistoryRequest",
    "Recommendation",
    "Recommender",
    "read_histories",
    "read_item2id",
    "recommend_file",
    "recommendations_jsonl",
]
