"""``ilrec index``: semantic IDs for a dataset folder from item texts or a ``.npy`` matrix."""

from __future__ import annotations

from pathlib import Path

from ilrec.data.dataset import DataError, dataset_name, load_dataset
from ilrec.data.io import refuse_overwrite


def index_dataset(
    root: Path,
    embeddings_path: Path | None = None,
    levels: int = 4,
    codebook_size: int = 256,
    epochs: int | None = None,
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Train an RQ-VAE on item embeddings and write ``X.index.json``; prints its statistics."""
    from ilrec.identifiers.embeddings import item_text, load_embeddings, text_embeddings
    from ilrec.identifiers.semantic import build_index, write_index

    name = dataset_name(root)
    out = Path(root) / f"{name}.index.json"
    refuse_overwrite(root, [out.name], force)
    data = load_dataset(root, require_index=False)
    if embeddings_path is not None:
        embeddings = load_embeddings(embeddings_path, data.n_items)
    elif data.items is not None:
        texts = [
            item_text({**vars(data.items[i]), "categories": list(data.items[i].categories)})
            for i in range(data.n_items)
        ]
        embeddings = text_embeddings(texts, progress=True)
    else:
        raise DataError(
            f"{root}: no {name}.item.json to embed item texts; pass --embeddings FILE.npy"
        )
    result = build_index(
        embeddings, levels=levels, codebook_size=codebook_size, epochs=epochs, seed=seed
    )
    write_index(out, result.codes)
    print(f"wrote {out}\n{result.summary()}")
    return out
