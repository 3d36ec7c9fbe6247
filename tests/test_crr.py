"""The collaborative reward (CRR): rewards computed from the same history the LM sees, and
CRR training inside the ILRec objective from a trained CF checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from ilrec.config import ConfigError, load_config
from ilrec.data.encoding import PaddingCollator
from ilrec.identifiers.vocab import build_code_tokenizer
from ilrec.rewards import prefix_rewards
from ilrec.runs.setup import load_setup, make_encoder
from ilrec.training.cf import cf_item_probs, load_cf_model
from ilrec.training.crr import CFRewardProvider
from ilrec.training.run import train


def test_rewards_follow_the_lm_history(synthetic_dir, cf_run, tiny_overrides, tmp_path):
    config = load_config(None, tiny_overrides(synthetic_dir, tmp_path / "unused"))
    setup = load_setup(config)
    tokenizer = build_code_tokenizer(setup.codes)
    encoder = make_encoder(setup, tokenizer)
    windows = setup.splits.train_windows()[:3]
    batch = PaddingCollator(tokenizer.pad_token_id)([encoder.encode_window(w) for w in windows])
    next_labels = batch["labels"][:, 1:]
    index = (next_labels != -100).nonzero()
    targets = next_labels[index[:, 0], index[:, 1]]
    table = encoder.item_table()
    provider = CFRewardProvider(cf_run, table, len(tokenizer), max_history=20)
    rewards = provider(batch, index, targets)
    assert rewards.shape == (len(targets), len(tokenizer))

    model, _ = load_cf_model(cf_run)
    for n in range(len(targets)):  # slow obvious reference, one position at a time
        row, pos = index[n, 0].item(), index[n, 1].item() + 1
        slot = batch["item_slot"][row, pos].item()
        window = windows[row]
        history = list(window.items[:slot])
        target_item = window.items[slot]
        depth = batch["id_pos"][row, pos].item()
        probs = cf_item_probs(model, [history])
        expected = prefix_rewards(
            probs, table, torch.tensor([depth]), table[target_item].unsqueeze(0), len(tokenizer)
        )[0]
        torch.testing.assert_close(rewards[n], expected)
        assert rewards[n, targets[n]] > 0  # the target continues its own prefix
        assert rewards[n].sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("fmt", ["sequence", "prompt"])
def test_crr_trains_inside_ilrec(synthetic_dir, cf_run, tiny_overrides, tmp_path, fmt):
    run = tmp_path / "run"
    overrides = tiny_overrides(
        synthetic_dir,
        run,
        f"data.format={fmt}",
        "objective.name=ilrec",
        "objective.mu_crr=0.1",
        f"objective.cf_run={cf_run}",
        "objective.alpha=0.1",
        "train.max_steps=2",
    )
    train(load_config(None, overrides))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    crr = [r["crr"] for r in records if "crr" in r]
    assert crr and all(c > 0 for c in crr)


def test_mu_without_reward_provider_is_a_config_error(synthetic_dir, tiny_overrides, tmp_path):
    with pytest.raises(ConfigError, match="cf_run"):
        load_config(None, tiny_overrides(synthetic_dir, tmp_path, "objective.mu_crr=0.1"))
