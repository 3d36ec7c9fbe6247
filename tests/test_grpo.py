"""GRPO / RLVR: valid rollouts, rewards, the REINFORCE limit, reasoning rollouts, every
format, resume after a kill."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import FORMATS, KillAt
from ilrec.alignment.grpo import rollout_order
from ilrec.alignment.stage import align
from ilrec.config import ConfigError, load_config, load_stage_config
from ilrec.identifiers.trie import PrefixTrie
from ilrec.losses import grpo_advantages
from ilrec.rl.rewards import CFReward, ranking_reward, rule_reward
from ilrec.rl.rollouts import (
    REASONING_SEPARATOR,
    beam_rollouts,
    reasoning_rollouts,
    sampled_rollouts,
)
from ilrec.runs.setup import load_setup, load_trained, make_encoder
from ilrec.training.objectives.grpo import GRPOObjective
from ilrec.training.run import RunExistsError


def _loaded(run):
    setup = load_setup(load_config(run / "config.yaml"))
    model, tokenizer = load_trained(run)
    encoder = make_encoder(setup, tokenizer)
    trie = PrefixTrie.from_item_tokens(encoder.item_table())
    return setup, model, encoder, trie


def _stage(run, out, *overrides):
    return load_stage_config(
        run,
        None,
        [
            "align.method=grpo",
            f"train.output_dir={out}",
            "train.batch_size=4",
            "train.threads=1",
            "train.logging_steps=1",
            "train.lr=1e-3",
            "train.warmup_ratio=0",
            "align.examples=40",
            "align.rollouts=4",
            *overrides,
        ],
    )


# -- rollouts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["sequence", "title"])
def test_rollouts_are_valid_items_and_beams_are_distinct(sft_runs, fmt):
    setup, model, encoder, trie = _loaded(sft_runs[fmt])
    prompts = [encoder.prompt_ids(e.history) for e in setup.splits.valid[:6]]
    pad = encoder.tokenizer.pad_token_id
    beams = beam_rollouts(model, prompts, trie, 5, pad, 3).items
    assert beams.shape == (6, 5)
    assert all(len(set(row)) == 5 for row in beams.tolist())
    samples = sampled_rollouts(model, prompts, trie, 7, pad, 1.5, torch.Generator().manual_seed(0))
    for items in (beams, samples.items):
        assert ((items >= 0) & (items < setup.data.n_items)).all()
    again = sampled_rollouts(model, prompts, trie, 7, pad, 1.5, torch.Generator().manual_seed(0))
    assert torch.equal(samples.items, again.items)


@pytest.mark.parametrize("fmt", ["prompt", "title"])
def test_a_reasoning_rollout_always_ends_in_a_valid_identifier(sft_runs, fmt):
    setup, model, encoder, trie = _loaded(sft_runs[fmt])
    prompts = [encoder.prompt_ids(e.history) for e in setup.splits.valid[:4]]
    tokenizer = encoder.tokenizer
    out = reasoning_rollouts(
        model, tokenizer, prompts, trie, 3, 6, 1.0, torch.Generator().manual_seed(1)
    )
    separator = tokenizer.encode(REASONING_SEPARATOR, add_special_tokens=False)
    assert out.items.shape == (4, 3)
    assert ((out.items >= 0) & (out.items < setup.data.n_items)).all()
    for group, items in zip(out.prefixes, out.items.tolist(), strict=True):
        for prefix, item in zip(group, items, strict=True):
            assert prefix[-len(separator) :] == separator
            assert len(prefix) - len(separator) <= 6
            response = prefix + encoder.response_ids(item)
            # the identifier after the separator is exactly the item's, read back by the trie
            tail = torch.tensor([response[len(prefix) :]])
            assert trie.match(tail).item() == item


def test_reasoning_evaluation_ranks_after_the_greedy_rationale(sft_runs, tmp_path):
    from ilrec.cli import main
    from ilrec.evaluation.beam import constrained_beam_search
    from ilrec.evaluation.ranking import evaluate_examples
    from ilrec.evaluation.reasoning import generate_rationales, greedy_reasoning_prompts

    setup, model, encoder, trie = _loaded(sft_runs["prompt"])
    examples = setup.splits.valid[:3]
    prompts = [encoder.prompt_ids(e.history) for e in examples]
    tokenizer = encoder.tokenizer
    separator = tokenizer.encode(REASONING_SEPARATOR, add_special_tokens=False)
    # by hand, one prompt at a time: greedy rationale, separator, then the usual beam search
    by_hand = []
    for prompt in prompts:
        with torch.inference_mode():
            (rationale,) = generate_rationales(model, tokenizer, [prompt], 5, do_sample=False)
        assert len(rationale) <= 5
        by_hand.append(prompt + rationale + separator)
    assert greedy_reasoning_prompts(model, tokenizer, prompts, 5, batch_size=2) == by_hand
    with torch.inference_mode():
        expected, _ = constrained_beam_search(
            model, by_hand, trie, 4, pad_token_id=tokenizer.pad_token_id
        )
    _, ranked = evaluate_examples(model, encoder, examples, beams=4, ks=(1, 4), reasoning_tokens=5)
    assert torch.equal(ranked, expected)
    # the CLI writes its own result file, next to (never over) the plain evaluation
    run = sft_runs["prompt"]
    args = ["evaluate", "--run", str(run), "--split", "valid", "--users", "3"]
    assert main(args + ["--reasoning-tokens", "5"]) == 0
    assert (run / "eval_valid_beam_reasoning5_first3.rankings.tsv").exists()
    assert not (run / "eval_valid_beam_first3.json").exists()
    setup_seq, model_seq, encoder_seq, _ = _loaded(sft_runs["sequence"])
    with pytest.raises(ValueError, match="text format"):
        evaluate_examples(model_seq, encoder_seq, setup_seq.splits.valid[:1], reasoning_tokens=2)


# -- rewards -------------------------------------------------------------------------------------


def test_rule_and_ranking_rewards_hand_worked():
    items = torch.tensor([[5, 3, 9, 1], [2, 4, 6, 8]])
    targets = torch.tensor([3, 7])
    assert rule_reward(items, targets).tolist() == [[0, 1, 0, 0], [0, 0, 0, 0]]
    d = [1 / math.log2(i + 2) for i in range(4)]
    w = [x / sum(d) for x in d]
    got = ranking_reward(items, targets)
    assert got[0].tolist() == pytest.approx([-w[0], 1.0, -w[2], -w[3]])
    assert got[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # no hit in the group: no penalty


def test_cf_reward_is_normalised_per_group(cf_run):
    reward = CFReward(str(cf_run))
    items = torch.tensor([[1, 2, 3], [4, 5, 6]])
    r = reward(items, torch.tensor([1, 4]), histories=[[7, 8], [9]], users=None)
    assert r.shape == (2, 3) and (r > 0).all()
    torch.testing.assert_close(r.sum(1), torch.ones(2))


# -- the REINFORCE limit -------------------------------------------------------------------------


def test_beta_zero_one_inner_step_gradient_is_reinforce_with_baseline(sft_runs):
    setup, model, encoder, _ = _loaded(sft_runs["prompt"])
    model.train()
    config = _stage(sft_runs["prompt"], "unused", "align.beta=0", "align.reward=ranking")
    objective = GRPOObjective(config.align, model, encoder)
    examples = setup.splits.train_prefixes()[:3]
    batch = {
        "example": torch.arange(3),
        "target": torch.tensor([e.target for e in examples]),
        "prompt": [encoder.prompt_ids(e.history) for e in examples],
        "history": [list(e.history) for e in examples],
        "user": [e.user for e in examples],
    }
    model.zero_grad()
    objective(model, batch).loss.backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # slow obvious reference: one full sequence per rollout, loss -A * log pi / T
    advantages = grpo_advantages(objective._rollout.rewards)
    rollout_items = beam_rollouts(
        model, batch["prompt"], objective.trie, 4, encoder.tokenizer.pad_token_id, 3
    ).items
    model.zero_grad()
    total = 0.0
    for u, prompt in enumerate(batch["prompt"]):
        for g, item in enumerate(rollout_items[u].tolist()):
            response = encoder.response_ids(item)
            ids = torch.tensor([prompt + response])
            logits = model(input_ids=ids).logits[0].float().log_softmax(-1)
            lp = logits[len(prompt) - 1 : len(prompt) - 1 + len(response)]
            seq = lp.gather(1, torch.tensor(response)[:, None]).sum()
            total = total - advantages[u, g] * seq / len(response)
    (total / (3 * 4)).backward()
    want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6, msg=name)


def test_rollout_order_repeats_each_batch():
    order = rollout_order(5, 2, 3, seed=0)
    assert len(order) == 15
    batches = [order[i : i + 2] for i in range(0, 15, 2)]
    assert batches[0] == batches[1] == batches[2]
    assert sorted(set(order)) == [0, 1, 2, 3, 4]


# -- the stage -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_grpo_trains_two_steps_in_every_format(sft_runs, cf_run, tmp_path, fmt):
    extra = ["align.reward=cf", f"align.reward_run={cf_run}"] if fmt == "title" else []
    if fmt == "prompt":
        extra = ["align.rollout=sample", "align.reward=ranking", "align.inner_steps=2"]
    out = tmp_path / "grpo"
    result = align(_stage(sft_runs[fmt], out, "train.max_steps=2", *extra))
    assert 0.0 <= result["ndcg@10"] <= 1.0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward_mean" in r]
    assert len(steps) == 2
    for key in (
        "reward_mean",
        "group_hit_rate",
        "kl",
        "clip_frac",
        "rollout_seconds",
        "step_seconds",
    ):
        assert all(math.isfinite(r[key]) for r in steps), key
    before = load_file(str(sft_runs[fmt] / "model" / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (out / "grpo.png").exists()


def test_reasoning_grpo_trains_in_the_prompt_format_and_is_refused_in_sequence(sft_runs, tmp_path):
    out = tmp_path / "reason"
    align(_stage(sft_runs["prompt"], out, "train.max_steps=2", "align.reasoning_tokens=4"))
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("rationale_tokens" in r for r in records)
    with pytest.raises(ConfigError, match="text format"):
        align(_stage(sft_runs["sequence"], tmp_path / "no", "align.reasoning_tokens=4"))


@pytest.mark.parametrize("rollout", ["beam", "sample"])
def test_killed_grpo_run_resumes_to_the_same_result(sft_runs, tmp_path, rollout):
    common = (
        "train.max_steps=6",
        "train.eval_every=2",
        "train.save_total_limit=5",
        "align.beta=0.05",
        f"align.rollout={rollout}",
    )
    straight = tmp_path / "straight"
    align(_stage(sft_runs["sequence"], straight, *common))
    killed = tmp_path / "killed"
    config = _stage(sft_runs["sequence"], killed, *common)
    with pytest.raises(KeyboardInterrupt):
        align(config, callbacks=[KillAt(3)])
    with pytest.raises(RunExistsError):
        align(config)
    align(config, resume=True)
    a = load_file(str(straight / "model" / "model.safetensors"))
    b = load_file(str(killed / "model" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)
