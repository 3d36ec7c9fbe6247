"""`ilrec index`: semantic IDs for a folder from a .npy matrix, then `ilrec check` accepts it."""

from __future__ import annotations

import json

import numpy as np

from ilrec.cli import main


def _folder(tmp_path, n_items=24):
    root = tmp_path / "Toy"
    root.mkdir()
    rng = np.random.default_rng(0)
    inter = {
        str(u): [int(i) for i in rng.choice(n_items, size=5, replace=False)] for u in range(30)
    }
    (root / "Toy.inter.json").write_text(json.dumps(inter))
    items = {str(i): {"title": f"Item {i}"} for i in range(n_items)}
    (root / "Toy.item.json").write_text(json.dumps(items))
    centers = rng.normal(size=(4, 8))
    np.save(
        tmp_path / "emb.npy", centers[np.arange(n_items) % 4] + 0.1 * rng.normal(size=(n_items, 8))
    )
    return root


def test_index_from_npy_then_check(tmp_path, capsys):
    root = _folder(tmp_path)
    args = [
        "index",
        "--data",
        str(root),
        "--embeddings",
        str(tmp_path / "emb.npy"),
        "--levels",
        "2",
        "--codebook",
        "8",
        "--epochs",
        "5",
    ]
    assert main(args) == 0
    index = json.loads((root / "Toy.index.json").read_text())
    assert sorted(index, key=int) == [str(i) for i in range(24)]
    identifiers = [tuple(v) for v in index.values()]
    assert len(set(identifiers)) == len(identifiers)  # unique after collision handling
    assert all(v[0].startswith("<a_") and v[1].startswith("<b_") for v in index.values())
    assert "code utilisation" in capsys.readouterr().out
    assert main(["check", "--data", str(root)]) == 0
    assert "identifier_collisions" in capsys.readouterr().out
    assert main(args) == 2  # refuses to overwrite the index without --force
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


def test_index_wrong_embedding_shape(tmp_path, capsys):
    root = _folder(tmp_path)
    np.save(tmp_path / "bad.npy", np.zeros((5, 8)))
    assert main(["index", "--data", str(root), "--embeddings", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert "bad.npy" in err and "24" in err


def test_index_without_texts_needs_embeddings(tmp_path, capsys):
    root = _folder(tmp_path)
    (root / "Toy.item.json").unlink()  # no texts and no index: the items are undefined
    assert main(["index", "--data", str(root)]) == 2
    assert "Toy.index.json or Toy.item.json" in capsys.readouterr().err
