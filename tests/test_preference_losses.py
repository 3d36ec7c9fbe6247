"""DPO, S-DPO and GRPO losses: hand-computed values, limits, stability, gradients."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ilrec.losses import dpo_loss, grpo_advantages, grpo_loss, k3_kl, sdpo_loss


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_dpo_hand_computed():
    chosen = torch.tensor([-1.0, -2.0])
    rejected = torch.tensor([-3.0, -1.0])
    ref_chosen = torch.tensor([-1.5, -2.0])
    ref_rejected = torch.tensor([-2.0, -1.5])
    # margins: (0.5) - (-1.0) = 1.5 and 0.0 - 0.5 = -0.5; beta 0.5
    want = -(_log_sigmoid(0.75) + _log_sigmoid(-0.25)) / 2
    got = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=0.5)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # conservative DPO: -(1-e) log s(bm) - e log s(-bm)
    eps = 0.1
    want = -sum((1 - eps) * _log_sigmoid(x) + eps * _log_sigmoid(-x) for x in (0.75, -0.25)) / 2
    got = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, 0.5, label_smoothing=eps)
    assert got.item() == pytest.approx(want, rel=1e-6)
    # a per-pair smoothing tensor (RosePO) gives each pair its own epsilon
    per_pair = dpo_loss(
        chosen, rejected, ref_chosen, ref_rejected, 0.5, label_smoothing=torch.tensor([0.0, 0.3])
    )
    want = -(_log_sigmoid(0.75) + 0.7 * _log_sigmoid(-0.25) + 0.3 * _log_sigmoid(0.25)) / 2
    assert per_pair.item() == pytest.approx(want, rel=1e-6)


def test_dpo_at_equal_policy_and_reference_is_log2_and_rejects_bad_smoothing():
    x = torch.tensor([-4.0, -7.0, -1.0])
    assert dpo_loss(x, x - 1, x, x - 1, beta=0.1).item() == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(x, x, x, x, 0.1, label_smoothing=1.0)


def test_sdpo_hand_computed_two_negatives():
    chosen, ref_chosen = torch.tensor([-2.0]), torch.tensor([-2.5])  # r_w = 0.5
    rejected = torch.tensor([[-3.0, -1.0]])
    ref_rejected = torch.tensor([[-3.0, -2.0]])  # r_l = 0, 1
    beta = 2.0
    lse = math.log(math.exp(beta * (0 - 0.5)) + math.exp(beta * (1 - 0.5)))
    want = -_log_sigmoid(-lse)
    got = sdpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta)
    assert got.item() == pytest.approx(want, rel=1e-6)


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(-50, 0), min_size=4, max_size=4),
    st.floats(0.01, 5.0),
)
def test_sdpo_with_one_negative_is_dpo(values, beta):
    c, r, rc, rr = (torch.tensor([v]) for v in values)
    d = dpo_loss(c, r, rc, rr, beta)
    s = sdpo_loss(c, r[:, None], rc, rr[:, None], beta)
    assert abs(d.item() - s.item()) <= 1e-6


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_sdpo_is_finite_for_huge_margins(sign):
    chosen = torch.zeros(3, requires_grad=True)
    rejected = torch.full((3, 5), sign * 1e4, requires_grad=True)
    loss = sdpo_loss(chosen, rejected, torch.zeros(3), torch.zeros(3, 5), beta=1.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    if sign > 0:  # rejected far above chosen: loss ~ lse = 1e4 + log 5
        assert loss.item() == pytest.approx(1e4 + math.log(5), rel=1e-6)
    else:
        assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_grpo_advantages_hand_computed():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    adv = grpo_advantages(rewards)
    std = torch.tensor([1.0, 0.0, 0.0, 0.0]).std().item()  # unbiased: 0.5
    assert adv[0].tolist() == pytest.approx(
        [0.75 / (std + 1e-4), -0.25 / (std + 1e-4), -0.25 / (std + 1e-4), -0.25 / (std + 1e-4)]
    )
    assert adv[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # equal rewards: no signal


def test_k3_kl_zero_at_equality_and_positive_elsewhere():
    logp = torch.tensor([-1.0, -2.0, -0.3])
    assert k3_kl(logp, logp).tolist() == [0.0, 0.0, 0.0]
    kl = k3_kl(logp, logp + torch.tensor([0.5, -0.5, 2.0]))
    assert (kl > 0).all()
    assert kl[0].item() == pytest.approx(math.exp(0.5) - 0.5 - 1)


def test_grpo_loss_equal_rewards_give_no_policy_gradient():
    logp = torch.randn(4, 3, requires_grad=True)
    mask = torch.ones(4, 3, dtype=torch.bool)
    adv = grpo_advantages(torch.ones(1, 4)).reshape(-1)
    loss, _ = grpo_loss(logp, logp.detach(), None, adv, mask, beta=0.0)
    loss.backward()
    assert torch.count_nonzero(logp.grad) == 0


def test_grpo_loss_clips_the_ratio():
    logp = torch.log(torch.tensor([[1.5], [0.5]]))  # ratio 1.5 and 0.5 against old = 0
    old = torch.zeros(2, 1)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 1, dtype=torch.bool)
    loss, stats = grpo_loss(logp, old, None, adv, mask, beta=0.0, clip_eps=0.2)
    # min(1.5*1, 1.2*1) = 1.2 ; min(0.5*-1, 0.8*-1) = -0.8 -> loss = -(1.2 - 0.8)/2
    assert loss.item() == pytest.approx(-0.2)
    assert stats["clip_frac"].item() == pytest.approx(1.0)
