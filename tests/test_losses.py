"""Tests of the ILRec losses (Eqs. 3-8, 11) against hand-computed values and properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ilrec.losses import (
    ENSEMBLE_STRATEGIES,
    cpd_loss,
    cpo_loss,
    crr_loss,
    ensemble_logits,
    extract_negatives,
    penalty_weights,
)

STRATEGIES = sorted(ENSEMBLE_STRATEGIES)


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


@st.composite
def prob_rows(draw, max_n: int = 5, max_v: int = 10):
    """Ensemble probabilities with frequent ties (logits drawn from small integers) and
    targets."""
    n = draw(st.integers(1, max_n))
    v = draw(st.integers(2, max_v))
    flat = draw(st.lists(st.integers(-3, 3), min_size=n * v, max_size=n * v))
    probs = torch.tensor(flat, dtype=torch.float32).view(n, v).softmax(-1)
    targets = torch.tensor(draw(st.lists(st.integers(0, v - 1), min_size=n, max_size=n)))
    return probs, targets


# ------------------------------------------------------------------ Eq. 3 / Appendix A.6


def test_ensemble_mean_hand():
    layers = _t([[[1, 2, 3, 4]], [[3, 2, 1, 0]]])  # k=2, N=1, V=4
    torch.testing.assert_close(ensemble_logits(layers), _t([[2, 2, 2, 2]]))
    torch.testing.assert_close(ensemble_logits(layers, "mean"), _t([[2, 2, 2, 2]]))


def _two_layers():
    pb = [0.7, 0.1, 0.1, 0.1]
    pc = [0.4, 0.2, 0.2, 0.2]
    lb, lc = _t(pb).log(), _t(pc).log()
    return pb, pc, lb, lc, torch.stack([lb, lc]).unsqueeze(1)  # [2, 1, 4]


def test_ensemble_variance_hand():
    _, _, lb, lc, layers = _two_layers()
    # Var_B = (0.49 + 3 * 0.01) / 4 - 1/16 = 0.0675 ; Var_C = (0.16 + 3 * 0.04) / 4 - 1/16
    # = 0.0075  -> weights 0.9 / 0.1
    expected = 0.9 * lb + 0.1 * lc
    torch.testing.assert_close(ensemble_logits(layers, "variance")[0], expected)


def test_ensemble_entropy_hand():
    _, _, lb, lc, layers = _two_layers()
    h_b = -(0.7 * math.log(0.7) + 0.3 * math.log(0.1))
    h_c = -(0.4 * math.log(0.4) + 0.6 * math.log(0.2))
    w_b = math.exp(-h_b) / (math.exp(-h_b) + math.exp(-h_c))
    expected = w_b * lb + (1 - w_b) * lc
    torch.testing.assert_close(ensemble_logits(layers, "entropy")[0], expected)
    assert w_b > 0.5  # the more confident layer weighs more


def test_ensemble_max_prob_hand():
    _, _, lb, lc, layers = _two_layers()
    expected = (7 / 11) * lb + (4 / 11) * lc
    torch.testing.assert_close(ensemble_logits(layers, "max_prob")[0], expected)


def test_ensemble_variance_all_uniform_falls_back_to_mean():
    layers = torch.zeros(3, 2, 5)
    layers[1] += 1.0  # still uniform distributions
    out = ensemble_logits(layers, "variance")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, layers.mean(0))


def test_ensemble_unknown_strategy_and_bad_shapes():
    with pytest.raises(ValueError, match="max_prob"):
        ensemble_logits(torch.zeros(2, 1, 4), "median")
    with pytest.raises(ValueError):
        ensemble_logits(torch.zeros(1, 4))
    with pytest.raises(ValueError):
        ensemble_logits(torch.zeros(0, 1, 4))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ensemble_weights_detached_gradient_flows_to_layers(strategy):
    layers = torch.randn(3, 4, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = ensemble_logits(layers, strategy)
    out.sum().backward()
    # d(sum_v sum_l w_l P^l_v)/dP^l_v = w_l when weights are constants: per-position sums
    # of the gradient over layers are 1 for every vocabulary entry.
    torch.testing.assert_close(layers.grad.sum(0), torch.ones(4, 6))


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 4),
    n=st.integers(1, 4),
    v=st.integers(1, 8),
    seed=st.integers(0, 2**16),
    strategy=st.sampled_from(STRATEGIES),
)
def test_ensemble_equal_layers_give_mean(k, n, v, seed, strategy):
    base = torch.randn(n, v, generator=torch.Generator().manual_seed(seed)) * 3
    layers = base.unsqueeze(0).expand(k, n, v).contiguous()
    torch.testing.assert_close(ensemble_logits(layers, strategy), base)


# ------------------------------------------------------------------ Eqs. 4-6


def test_extract_negatives_hand():
    probs = _t([[0.1, 0.4, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25]])
    targets = torch.tensor([2, 0])
    # row 0: tau = 0.6 * 0.3 = 0.18 -> {1 (0.4), 3 (0.2)}; row 1: tau = 0.15 -> all but 0
    expected = torch.tensor([[False, True, False, True], [False, True, True, True]])
    assert torch.equal(extract_negatives(probs, targets, 0.6), expected)
    # alpha = 1: tau = p(y) -> row 0 only {1}; row 1 ties count (>=)
    expected1 = torch.tensor([[False, True, False, False], [False, True, True, True]])
    assert torch.equal(extract_negatives(probs, targets, 1.0), expected1)
    capped = extract_negatives(probs, targets, 0.6, max_negatives=1)
    assert torch.equal(capped[0], torch.tensor([False, True, False, False]))
    assert capped[1].sum() == 1 and not capped[1, 0]
    assert not extract_negatives(probs, targets, 0.6, max_negatives=0).any()


def test_penalty_weights_hand():
    probs = _t([[0.1, 0.4, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25]])
    mask = torch.tensor([[False, True, False, True], [False, False, False, False]])
    w = penalty_weights(probs, mask)
    z = math.exp(0.4) + math.exp(0.2)
    expected = _t([[0, math.exp(0.4) / z, 0, math.exp(0.2) / z], [0, 0, 0, 0]])
    torch.testing.assert_close(w, expected)
    assert w.dtype == torch.float32 and not w.requires_grad


@settings(max_examples=60, deadline=None)
@given(data=prob_rows(), alpha=st.floats(0.0, 2.0), cap=st.none() | st.integers(0, 12))
def test_negatives_and_weights_properties(data, alpha, cap):
    probs, targets = data
    mask = extract_negatives(probs, targets, alpha, max_negatives=cap)
    assert mask.dtype == torch.bool and mask.shape == probs.shape
    # the target is never a negative
    assert not mask.gather(1, targets.unsqueeze(1)).any()
    full = extract_negatives(probs, targets, alpha)
    p_y = probs.gather(1, targets.unsqueeze(1))
    ids = torch.arange(probs.shape[1]).unsqueeze(0)
    assert torch.equal(full, (probs >= alpha * p_y) & (ids != targets.unsqueeze(1)))
    if cap is not None:
        assert (mask.sum(1) <= cap).all()
        assert (mask <= full).all()  # subset of the uncapped negatives
        assert torch.equal(mask.sum(1), full.sum(1).clamp(max=cap))
        # the kept ones are the most probable: every kept >= every dropped
        dropped = full & ~mask
        for row in range(probs.shape[0]):
            if mask[row].any() and dropped[row].any():
                assert probs[row][mask[row]].min() >= probs[row][dropped[row]].max()
    w = penalty_weights(probs, mask)
    assert torch.isfinite(w).all()
    assert (w[~mask] == 0).all()
    sums = w.sum(1)
    nonempty = mask.any(1)
    torch.testing.assert_close(sums[nonempty], torch.ones(int(nonempty.sum())))
    assert (sums[~nonempty] == 0).all()


@settings(max_examples=30, deadline=None)
@given(data=prob_rows())
def test_huge_alpha_gives_no_negatives(data):
    probs, targets = data
    assert not extract_negatives(probs, targets, 1e9).any()


# ------------------------------------------------------------------ Eq. 7


def test_cpo_hand():
    z = _t([[2.0, 1.0, -1.0, 0.0]])
    y = torch.tensor([0])
    w = _t([[0.0, 1.0, 0.0, 0.0]])
    expected = math.log(math.exp(2) + math.exp(1.5) + math.exp(-1) + 1) - 2
    torch.testing.assert_close(cpo_loss(z, y, w, 0.5), torch.tensor(expected))
    # identical for a positive logit with the sign-aware form
    torch.testing.assert_close(cpo_loss(z, y, w, 0.5, penalty="sign_aware"), torch.tensor(expected))
    # a negative logit: paper form -1 * 1.5 = -1.5; sign-aware -1 + 0.5 * 1 = -0.5
    w_neg = _t([[0.0, 0.0, 1.0, 0.0]])
    paper = math.log(math.exp(2) + math.exp(1) + math.exp(-1.5) + 1) - 2
    aware = math.log(math.exp(2) + math.exp(1) + math.exp(-0.5) + 1) - 2
    torch.testing.assert_close(cpo_loss(z, y, w_neg, 0.5), torch.tensor(paper))
    torch.testing.assert_close(
        cpo_loss(z, y, w_neg, 0.5, penalty="sign_aware"), torch.tensor(aware)
    )
    # two positions: the mean
    z2 = torch.cat([z, _t([[0.0, 0.0, 0.0, 0.0]])])
    y2 = torch.tensor([0, 3])
    w2 = torch.cat([w, torch.zeros(1, 4)])
    torch.testing.assert_close(
        cpo_loss(z2, y2, w2, 0.5), torch.tensor((expected + math.log(4)) / 2)
    )


@pytest.mark.parametrize("penalty", ["scale", "sign_aware"])
def test_cpo_no_negatives_equals_cross_entropy(penalty):
    g = torch.Generator().manual_seed(1)
    z = torch.randn(7, 11, generator=g) * 4
    y = torch.randint(0, 11, (7,), generator=g)
    loss = cpo_loss(z, y, torch.zeros_like(z), beta=0.3, penalty=penalty)
    torch.testing.assert_close(loss, F.cross_entropy(z, y))


def test_cpo_rejects_unknown_penalty():
    z, y, w = _t([[2.0, 1.0]]), torch.tensor([0]), _t([[0.0, 1.0]])
    with pytest.raises(ValueError, match="penalty"):
        cpo_loss(z, y, w, 0.6, penalty="additive")


@pytest.mark.parametrize("penalty", ["scale", "sign_aware"])
def test_cpo_gradient_matches_appendix_a3(penalty):
    sign_aware = penalty == "sign_aware"
    g = torch.Generator().manual_seed(2)
    n, v, beta = 5, 9, 0.2
    z = (torch.randn(n, v, generator=g) * 3).requires_grad_(True)
    y = torch.randint(0, v, (n,), generator=g)
    probs = torch.randn(n, v, generator=g).softmax(-1)
    w = penalty_weights(probs, extract_negatives(probs, y, 0.5))
    assert (w > 0).any()
    cpo_loss(z, y, w, beta, penalty=penalty).backward()
    with torch.no_grad():
        zd = z.detach()
        if sign_aware:
            z_pen = zd + beta * w * zd.abs()
            factor = 1 + beta * w * torch.sign(zd)
        else:
            z_pen = zd * (1 + beta * w)
            factor = 1 + beta * w
        closed = z_pen.softmax(-1) * factor - F.one_hot(y, v).float()
    torch.testing.assert_close(z.grad, closed / n)


def test_cpo_weights_get_no_gradient():
    z = torch.randn(3, 5, requires_grad=True)
    w = torch.rand(3, 5, requires_grad=True)
    cpo_loss(z, torch.tensor([0, 1, 2]), w, 0.1).backward()
    assert w.grad is None
    assert z.grad is not None


def test_cpo_shape_checks():
    with pytest.raises(ValueError):
        cpo_loss(torch.zeros(2, 4), torch.tensor([0, 1]), torch.zeros(2, 5), 0.1)
    with pytest.raises(ValueError):
        cpo_loss(torch.zeros(2, 4), torch.tensor([0]), torch.zeros(2, 4), 0.1)


# ------------------------------------------------------------------ Eq. 8


def test_cpd_hand():
    # position 0: student uniform (0.5, 0.5), teacher (0.25, 0.75)
    # position 1: student == teacher
    layer0 = _t([[0.0, 0.0], [1.0, 2.0]])
    layer1 = _t([[0.0, math.log(3)], [1.0, 2.0]])  # equals the teacher everywhere
    final = _t([[0.0, math.log(3)], [1.0, 2.0]])
    kl0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # KL(student || teacher)
    loss = cpd_loss(torch.stack([layer0, layer1]), final)
    torch.testing.assert_close(loss, torch.tensor(kl0 / 2))  # mean over N=2, sum over layers
    # direction check: KL(teacher || student) differs
    kl_rev = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert abs(kl0 - kl_rev) > 1e-3
    # two copies of the first layer sum
    torch.testing.assert_close(cpd_loss(torch.stack([layer0, layer0]), final), torch.tensor(kl0))


def test_cpd_teacher_gets_no_gradient():
    layers = torch.randn(2, 4, 6, requires_grad=True)
    final = torch.randn(4, 6, requires_grad=True)
    cpd_loss(layers, final).backward()
    assert final.grad is None
    assert layers.grad is not None and layers.grad.abs().sum() > 0


def test_cpd_zero_when_equal_and_for_no_layers():
    final = torch.randn(3, 7)
    layers = final.unsqueeze(0).repeat(3, 1, 1)
    assert cpd_loss(layers, final).abs().item() < 1e-6
    zero = cpd_loss(torch.zeros(0, 3, 7), final)
    assert zero.item() == 0.0


# ------------------------------------------------------------------ Eq. 11


def test_crr_hand():
    z = _t([[0.0, math.log(2), math.log(3), math.log(4)]]).log_softmax(-1) + 1.0
    # softmax(z) = (0.1, 0.2, 0.3, 0.4)
    y = torch.tensor([1])
    neg = torch.tensor([[False, False, False, True]])
    r = _t([[9.0, 0.5, 7.0, 0.2]])  # entries outside H = {1, 3} are ignored
    q1 = math.exp(0.5) / (math.exp(0.5) + math.exp(0.2))
    expected = -(q1 * math.log(0.2) + (1 - q1) * math.log(0.4))
    torch.testing.assert_close(crr_loss(z, y, neg, r), torch.tensor(expected))


def test_crr_without_negatives_is_cross_entropy_and_rewards_detached():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(6, 8, generator=g, requires_grad=True)
    y = torch.randint(0, 8, (6,), generator=g)
    r = torch.rand(6, 8, generator=g, requires_grad=True)
    loss = crr_loss(z, y, torch.zeros(6, 8, dtype=torch.bool), r)
    torch.testing.assert_close(loss, F.cross_entropy(z, y))
    loss.backward()
    assert r.grad is None and z.grad is not None


def test_crr_gradient_is_softmax_minus_soft_labels():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(4, 6, generator=g, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    neg = torch.rand(4, 6, generator=g) > 0.5
    neg[torch.arange(4), y] = False
    r = torch.rand(4, 6, generator=g)
    crr_loss(z, y, neg, r).backward()
    h = neg.clone()
    h[torch.arange(4), y] = True
    labels = r.masked_fill(~h, float("-inf")).softmax(-1)
    torch.testing.assert_close(z.grad, (z.detach().softmax(-1) - labels) / 4)


# ------------------------------------------------------------------ dtypes / edge cases


def test_bf16_inputs_give_float32_close_to_float32():
    g = torch.Generator().manual_seed(5)
    k, n, v = 3, 6, 20
    layers32 = torch.randn(k, n, v, generator=g) * 2
    final32 = torch.randn(n, v, generator=g) * 2
    y = torch.randint(0, v, (n,), generator=g)
    rewards = torch.rand(n, v, generator=g)
    layers16, final16 = layers32.bfloat16(), final32.bfloat16()

    for strategy in STRATEGIES:
        e16 = ensemble_logits(layers16, strategy)
        assert e16.dtype == torch.float32
        torch.testing.assert_close(e16, ensemble_logits(layers32, strategy), atol=0.05, rtol=0.02)

    p32 = ensemble_logits(layers32).softmax(-1)
    p16 = p32.bfloat16()
    neg = extract_negatives(p32, y, 0.5)
    w16 = penalty_weights(p16, neg)
    assert w16.dtype == torch.float32
    torch.testing.assert_close(w16, penalty_weights(p32, neg), atol=0.01, rtol=0.01)
    w = penalty_weights(p32, neg)
    for fn, args16, args32 in [
        (cpo_loss, (final16, y, w.bfloat16(), 0.2), (final32, y, w, 0.2)),
        (cpd_loss, (layers16, final16), (layers32, final32)),
        (crr_loss, (final16, y, neg, rewards.bfloat16()), (final32, y, neg, rewards)),
    ]:
        out16, out32 = fn(*args16), fn(*args32)
        assert out16.dtype == torch.float32 and out16.dim() == 0
        torch.testing.assert_close(out16, out32, atol=0.03, rtol=0.02)


def test_losses_stable_for_large_logits():
    z = _t([[1000.0, 999.0, -1000.0], [-500.0, 400.0, 400.0]])
    y = torch.tensor([0, 1])
    w = _t([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    for loss in (
        cpo_loss(z, y, w, 0.1),
        cpd_loss(z.unsqueeze(0) * 0.5, z),
        crr_loss(z, y, w.bool(), torch.zeros_like(z)),
    ):
        assert torch.isfinite(loss)


def test_empty_positions_give_zero_with_graph():
    z = torch.zeros(0, 5, requires_grad=True)
    y = torch.zeros(0, dtype=torch.long)
    for loss in (
        cpo_loss(z, y, torch.zeros(0, 5), 0.1),
        cpd_loss(torch.zeros(2, 0, 5, requires_grad=True), z),
        crr_loss(z, y, torch.zeros(0, 5, dtype=torch.bool), torch.zeros(0, 5)),
    ):
        assert loss.item() == 0.0
        loss.backward()


def test_cpo_numerator_uses_unpenalized_target_logit():
    # Eq. 7's numerator is exp(z_y) even if a caller passes a weight on the target.
    z = _t([[1.0, 2.0, 0.5]])
    w = _t([[1.0, 0.0, 0.0]])
    expected = math.log(math.exp(1.0 * 1.5) + math.exp(2.0) + math.exp(0.5)) - 1.0
    torch.testing.assert_close(cpo_loss(z, torch.tensor([0]), w, 0.5), torch.tensor(expected))
