"""Shared-prompt packing: R responses in one row score exactly like R separate sequences."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_causal_lm
from ilrec.data.packing import PackedCollator, pack_responses, packed_attention_mask
from ilrec.models.modes import eval_mode
from ilrec.models.scoring import response_token_logprobs, score_responses, sequence_logprobs


def _model(kind: str = "llama"):
    return tiny_causal_lm(kind, vocab_size=50, pad_token_id=0).eval()


def _naive_logprob(model, prompt, response) -> float:
    """Slow obvious reference: one sequence, full log-softmax, sum over the response."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    lp = logits.log_softmax(-1)
    start = len(prompt) - 1
    return sum(lp[start + d, t].item() for d, t in enumerate(response))


def test_pack_layout():
    f = pack_responses([5, 6, 7], [[1, 2, 3], [4], [8, 9]])
    assert f["input_ids"] == [5, 6, 7, 1, 2, 8]
    assert f["position_ids"] == [0, 1, 2, 3, 4, 3]
    assert f["segment"] == [0, 0, 0, 1, 1, 3]
    assert f["score_pos"] == [[2, 3, 4], [2], [2, 5]]
    assert f["score_tok"] == [[1, 2, 3], [4], [8, 9]]
    with pytest.raises(ValueError):
        pack_responses([], [[1]])
    with pytest.raises(ValueError):
        pack_responses([1], [[1], []])


def test_mask_isolates_responses():
    mask = packed_attention_mask(torch.tensor([[0, 0, 1, 1, 2, -1]]), torch.float32)[0, 0]
    seen = mask == 0
    assert seen[4].tolist() == [True, True, False, False, True, False]  # segment 2: prompt + self
    assert seen[3].tolist() == [True, True, True, True, False, False]
    assert seen[5].tolist() == [True, True, False, False, False, False]  # padding: prompt only


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_packed_equals_separate_sequences(kind):
    model = _model(kind)
    prompts = [[3, 4, 5, 6], [7, 8], [9, 10, 11]]
    responses = [
        [[12, 13, 14], [15, 16, 17], [18, 19]],
        [[20], [21, 22, 23, 24], [25, 26]],
        [[27, 28], [29, 30], [31, 32, 33]],
    ]
    got = score_responses(model, prompts, responses, pad_token_id=0, batch_size=2)
    want = torch.tensor(
        [
            [_naive_logprob(model, p, r) for r in rs]
            for p, rs in zip(prompts, responses, strict=True)
        ]
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gradient_flows_and_matches_no_grad():
    model = _model()
    batch = PackedCollator(0)([pack_responses([3, 4], [[5, 6], [7, 8, 9]])])
    with torch.no_grad():
        reference = sequence_logprobs(model, batch)
    model.train()
    lp, mask = response_token_logprobs(model, batch)
    assert mask.tolist() == [[[True, True, False], [True, True, True]]]
    torch.testing.assert_close(lp.sum(-1), reference, rtol=1e-6, atol=1e-6)
    lp.sum().backward()
    assert model.model.embed_tokens.weight.grad is not None


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_previous_mode_even_when_the_block_raises(training):
    model = torch.nn.Sequential(torch.nn.Dropout(0.5)).train(training)
    with pytest.raises(KeyError), eval_mode(model):
        assert not model.training and not model[0].training
        raise KeyError
    assert model.training == training and model[0].training == training
