"""Tests of the synthetic dataset generator (ilrec.data.synthetic)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from ilrec.data.dataset import InteractionData, collision_count, load_dataset
from ilrec.data.split import leave_one_out, popularity_counts
from ilrec.data.synthetic import BRANDS, COMPLEMENTS, STYLE_DIM, TAXONOMY, generate_synthetic

SMALL = {"n_users": 800, "n_items": 300, "seed": 0, "index_epochs": 20}
SUFFIXES = ["inter.json", "item.json", "item2id", "user2id", "item_features.npy", "index.json"]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("syn") / "Synthetic"
    return out, generate_synthetic(out, **SMALL)


def baseline_metrics(data: InteractionData, k: int = 10) -> dict[str, tuple[float, float]]:
    """Test HR@k / NDCG@k of popularity and a first-order Markov model, full ranking.

    Markov: item -> next-item transition counts of the training parts, ties (and unseen
    transitions) broken by popularity. Remaining ties go to the smaller item id.
    """
    splits = leave_one_out(data)
    pop = np.asarray(popularity_counts(splits, data.n_items), dtype=float)
    trans = np.zeros((data.n_items, data.n_items))
    for seq in splits.train_sequences.values():
        np.add.at(trans, (seq[:-1], seq[1:]), 1.0)
    last = np.array([ex.history[-1] for ex in splits.test])
    target = np.array([ex.target for ex in splits.test])
    scores = {
        "popularity": np.tile(pop, (len(target), 1)),
        "markov": trans[last] + 1e-3 * pop / pop.max(),
    }
    out = {}
    for name, s in scores.items():
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        hit_rank = np.argmax(top == target[:, None], axis=1)
        hit = (top == target[:, None]).any(axis=1)
        ndcg = np.where(hit, 1.0 / np.log2(hit_rank + 2), 0.0)
        out[name] = (float(hit.mean()), float(ndcg.mean()))
    return out


def test_report_and_files(small: tuple[Path, object]) -> None:
    out, report = small
    assert sorted(Path(f).name for f in report.files) == sorted(f"Synthetic.{s}" for s in SUFFIXES)
    assert (report.users, report.items) == (800, 300)
    assert 8.0 <= report.mean_history <= 10.0
    assert report.max_history <= 40
    assert len(report.index_utilisation) == 3
    assert report.collision_rate_after <= report.collision_rate_before
    assert "800 users" in report.summary()


def test_loads_and_is_well_formed(small: tuple[Path, object]) -> None:
    out, report = small
    data = load_dataset(out)
    assert (data.n_users, data.n_items, data.n_interactions) == (800, 300, report.interactions)
    assert all(len(seq) >= 5 and len(set(seq)) == len(seq) for seq in data.sequences.values())
    assert collision_count(data.codes) == 0
    assert len(set(map(tuple, data.codes.values()))) == 300
    titles = data.titles()
    assert len(set(titles)) == len(titles)
    assert re.fullmatch(r"\w+( \w+)? \w+ .+ [A-Z]{2}-\d{3}", titles[0])
    subs = {s: top for top, group in TAXONOMY.items() for s in group}
    for info in data.items.values():
        top, sub = info.categories
        assert subs[sub] == top
        assert info.brand in BRANDS and list(TAXONOMY).index(top) in BRANDS[info.brand]
        assert info.title.startswith(info.brand) and info.description
    asins = [line.split("\t") for line in (out / "Synthetic.item2id").read_text().splitlines()]
    assert [int(i) for _, i in asins] == list(range(300))
    assert len({a for a, _ in asins}) == 300 and all(re.fullmatch(r"B0\w{8}", a) for a, _ in asins)


def test_item_features(small: tuple[Path, object]) -> None:
    out, _ = small
    data = load_dataset(out)
    feats = np.load(out / "Synthetic.item_features.npy")
    n_top, n_sub, n_brand = len(TAXONOMY), len(COMPLEMENTS), len(BRANDS)
    assert feats.dtype == np.float32
    assert feats.shape == (300, n_top + n_sub + n_brand + STYLE_DIM)
    onehot = feats[:, : n_top + n_sub + n_brand]
    assert set(np.unique(onehot)) == {0.0, 1.0} and (onehot.sum(axis=1) == 3).all()
    tops = np.argmax(feats[:, :n_top], axis=1)
    assert [list(TAXONOMY)[t] for t in tops] == [data.items[i].categories[0] for i in range(300)]


def test_markov_beats_popularity(small: tuple[Path, object]) -> None:
    data = load_dataset(small[0])
    m = baseline_metrics(data)
    pop_hr, markov_hr = m["popularity"][0], m["markov"][0]
    assert pop_hr < 0.2
    assert markov_hr >= 2 * pop_hr
    assert 0.25 < markov_hr < 0.9  # learnable, but not trivially solvable


def test_deterministic(small: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = small
    again = tmp_path / "again"
    generate_synthetic(again, **SMALL)
    for suffix in SUFFIXES:
        name = f"Synthetic.{suffix}"
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    other = tmp_path / "other"
    generate_synthetic(other, **{**SMALL, "seed": 1}, index=False)
    assert (other / "Synthetic.inter.json").read_bytes() != (
        out / "Synthetic.inter.json"
    ).read_bytes()
    assert not (other / "Synthetic.index.json").exists()


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    args = {"n_users": 20, "n_items": 48, "index": False}
    generate_synthetic(tmp_path, **args)
    with pytest.raises(FileExistsError, match=r"Synthetic\.inter\.json"):
        generate_synthetic(tmp_path, **args)
    report = generate_synthetic(tmp_path, **args, force=True)
    assert load_dataset(tmp_path, require_index=False).n_users == report.users == 20
    with pytest.raises(ValueError, match="n_items"):
        generate_synthetic(tmp_path / "x", n_users=5, n_items=47)


@pytest.mark.slow
def test_default_size_numbers(tmp_path: Path) -> None:
    """The default dataset (3000 users, 600 items); prints the baseline numbers."""
    report = generate_synthetic(tmp_path / "Synthetic")
    data = load_dataset(tmp_path / "Synthetic")
    m = baseline_metrics(data)
    print(report.summary())
    for name, (hr, ndcg) in m.items():
        print(f"{name}: HR@10 {hr:.4f} NDCG@10 {ndcg:.4f}")
    assert m["popularity"][0] < 0.1
    assert 2 * m["popularity"][0] <= m["markov"][0] < 0.9
    assert collision_count(data.codes) == 0
