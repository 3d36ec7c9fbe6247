"""`ilrec align`: negatives, cached reference log-probabilities, every method in every format
from a finished run, and resume after a kill."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import FORMATS, KillAt, save_tiny_pretrained
from ilrec.alignment import negatives as negatives_module
from ilrec.alignment.negatives import NegativeContext, excluded_mask, sample_negatives
from ilrec.alignment.pairs import PairSet, build_pairs, pair_features, responses
from ilrec.alignment.stage import align, training_examples
from ilrec.config import ConfigError, load_config, load_stage_config
from ilrec.data.split import popularity_counts
from ilrec.models.scoring import score_responses
from ilrec.runs.setup import load_setup, load_trained, make_encoder
from ilrec.training.run import RunExistsError, train


def _stage(from_run: Path, out: Path, *overrides: str):
    return load_stage_config(
        from_run,
        None,
        [
            f"train.output_dir={out}",
            "train.batch_size=8",
            "train.threads=1",
            "train.logging_steps=1",
            "train.lr=1e-3",
            "align.examples=32",
            *overrides,
        ],
    )


def _context(run: Path, with_model: bool = True):
    config = load_config(run / "config.yaml")
    setup = load_setup(config)
    model, tokenizer = load_trained(run)
    encoder = make_encoder(setup, tokenizer)
    ctx = NegativeContext(
        setup.data.n_items,
        popularity_counts(setup.splits, setup.data.n_items),
        model if with_model else None,
        encoder,
        batch_size=8,
    )
    return setup, model, encoder, ctx


# -- negatives ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["random", "popular", "self_hard", "greedy"])
def test_samplers_are_deterministic_and_never_return_target_history_or_non_items(sft_runs, sampler):
    setup, _, _, ctx = _context(sft_runs["sequence"])
    examples = training_examples(setup, 200, seed=3)
    count = 1 if sampler == "greedy" else 4
    a = sample_negatives(examples, {sampler: count}, ctx, seed=7)
    b = sample_negatives(examples, {sampler: count}, ctx, seed=7)
    assert torch.equal(a, b)
    assert a.shape == (len(examples), count)
    kept = a >= 0
    if sampler != "greedy":
        assert kept.all()
    assert (a[kept] < setup.data.n_items).all()
    banned = excluded_mask(examples, setup.data.n_items)
    assert not banned.gather(1, a.clamp(min=0))[kept].any()  # target or history
    if count > 1:
        assert all(len(set(row)) == count for row in a.tolist())  # without replacement
    if sampler in ("random", "popular"):
        assert not torch.equal(a, sample_negatives(examples, {sampler: count}, ctx, seed=8))


def test_popular_negatives_follow_popularity(sft_runs):
    setup, _, _, ctx = _context(sft_runs["sequence"], with_model=False)
    examples = training_examples(setup, 2000, seed=0)
    drawn = sample_negatives(examples, {"popular": 1}, ctx, seed=0).reshape(-1)
    counts = torch.tensor(popularity_counts(setup.splits, setup.data.n_items), dtype=torch.float)
    top, bottom = counts.argsort(descending=True)[:10], counts.argsort()[:10]
    hits = torch.bincount(drawn, minlength=setup.data.n_items)
    expected = counts[top].sum() / counts[bottom].sum()  # ~ the ratio before exclusions
    observed = hits[top].sum() / hits[bottom].sum()
    assert expected > 2 and 0.6 * expected < observed < 1.6 * expected


def test_a_negative_equal_to_the_target_never_reaches_a_loss(sft_runs, monkeypatch):
    setup, _, encoder, ctx = _context(sft_runs["sequence"])
    examples = training_examples(setup, 12, seed=0)
    targets = [e.target for e in examples]

    def target_first_for_even_rows(model, prompts, trie, num_beams, **kw):
        rows = []
        for p in prompts:
            i = next(j for j, e in enumerate(examples) if encoder.prompt_ids(e.history) == p)
            others = [x for x in range(ctx.n_items) if x not in (*examples[i].history, targets[i])]
            first = [targets[i]] if i % 2 == 0 else []
            rows.append((first + others)[:num_beams])
        return torch.tensor(rows), torch.zeros(len(rows), num_beams)

    monkeypatch.setattr(negatives_module, "constrained_beam_search", target_first_for_even_rows)
    pairs = build_pairs(examples, {"greedy": 1}, ctx, seed=0)
    assert pairs.dropped == 6 and len(pairs) == 6
    assert (pairs.rejected[:, 0] != pairs.chosen).all()
    assert pairs.example_ids.tolist() == [1, 3, 5, 7, 9, 11]
    # self_hard skips the target instead of dropping the example
    hard = build_pairs(examples, {"self_hard": 2}, ctx, seed=0)
    assert hard.dropped == 0 and (hard.rejected != hard.chosen[:, None]).all()


# -- reference log-probabilities ----------------------------------------------------------------


def test_cached_reference_equals_a_live_frozen_reference(sft_runs, tmp_path):
    start = sft_runs["prompt"]
    out = tmp_path / "dpo"
    align(_stage(start, out, "train.max_steps=2", "align.negatives={random: 2}"))
    cached = torch.load(out / "reference_logps.pt", weights_only=True)
    pairs = PairSet.load(out / "pairs.pt")
    setup, model, encoder, _ = _context(start, with_model=False)
    frozen = copy.deepcopy(model).eval()
    examples = training_examples(setup, 32, seed=0)
    prompts = [encoder.prompt_ids(examples[i].history) for i in pairs.example_ids.tolist()]
    live = score_responses(
        frozen, prompts, responses(pairs, encoder), encoder.tokenizer.pad_token_id
    )
    torch.testing.assert_close(cached, live, rtol=1e-5, atol=1e-5)
    features = pair_features(pairs, examples, encoder, cached)
    assert features[0]["ref_logps"] == cached[0].tolist()
    # the policy moved, the reference did not
    trained, _ = load_trained(out)
    moved = score_responses(
        trained, prompts, responses(pairs, encoder), encoder.tokenizer.pad_token_id
    )
    assert not torch.allclose(moved, live)


# -- every method, every format ------------------------------------------------------------------

METHODS = {
    "dpo": ["align.method=dpo", "align.negatives={random: 1}", "align.label_smoothing=0.1"],
    "sdpo": ["align.method=sdpo", "align.negatives={random: 2, self_hard: 1}", "align.beta=1.0"],
    "rosepo": ["align.method=rosepo", "align.negatives={self_hard: 1, popular: 1}"],
    "sprec": ["align.method=sprec", "align.iterations=2", "align.examples=16"],
}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_two_steps_in_every_format(sft_runs, cf_run, tmp_path, method, fmt):
    start = sft_runs[fmt]
    out = tmp_path / method
    extra = [f"align.oracle_run={cf_run}"] if method == "rosepo" else []
    config = _stage(start, out, "train.max_steps=2", *METHODS[method], *extra)
    result = align(config)
    assert 0.0 <= result["ndcg@10"] <= 1.0
    for name in ("config.yaml", "model", "tokenizer", "train_summary.json"):
        assert (out / name).exists(), name
    stage_dir = out / "iter_2" / "dpo" if method == "sprec" else out
    records = [json.loads(x) for x in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "reward_accuracy" in r]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    before, after = load_file(str(start / "model" / "model.safetensors")), _weights(out)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if method == "rosepo":
        eps = PairSet.load(out / "pairs.pt").smoothing
        assert eps is not None and ((eps >= 0) & (eps <= 0.5)).all()
    if method == "sprec":
        iterations = [json.loads(x) for x in (out / "iterations.jsonl").read_text().splitlines()]
        assert [r["iteration"] for r in iterations] == [1, 2]
        assert (out / "sprec.png").exists()
    else:
        assert (out / "alignment.png").exists()
        saved = load_config(out / "config.yaml")
        assert saved.align.from_run == str(start) and saved.align.method == method


def test_continued_sft_control_trains_on_the_preference_prompts(sft_runs, tmp_path, monkeypatch):
    """align.method=sft: cross-entropy from the SFT run on exactly the prompts a preference
    method with the same align.examples / align.seed trains on."""
    import ilrec.alignment.stage as stage

    start = sft_runs["sequence"]
    seen = []
    real = stage.training_examples
    monkeypatch.setattr(stage, "training_examples", lambda *a: seen.append(real(*a)) or seen[-1])
    out = tmp_path / "sft_control"
    config = _stage(start, out, "train.max_steps=2", "align.method=sft", "align.examples=16")
    result = align(config)
    assert 0.0 <= result["ndcg@10"] <= 1.0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["method"] == "sft" and summary["examples"] == 16
    setup = load_setup(load_config(out / "config.yaml"))
    assert seen == [training_examples(setup, 16, config.align.seed)]
    before = load_file(str(start / "model" / "model.safetensors"))
    assert any(not torch.equal(before[k], v) for k, v in _weights(out).items())


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_stage_config_keeps_the_model_and_refuses_to_change_it(sft_runs, tmp_path):
    start = sft_runs["title"]
    config = load_stage_config(start, None, [f"train.output_dir={tmp_path / 'x'}"])
    assert config.data.format == "title" and config.model.preset == "tiny"
    with pytest.raises(ConfigError, match="model"):
        load_stage_config(start, None, ["model.preset=small"])
    with pytest.raises(ConfigError, match="not a run folder"):
        load_stage_config(tmp_path, None, [])
    with pytest.raises(ValueError, match="must differ"):
        align(load_stage_config(start, None, [f"train.output_dir={start}"]))


# -- resume --------------------------------------------------------------------------------------


def test_killed_alignment_run_resumes_to_the_same_result(sft_runs, tmp_path):
    start = sft_runs["sequence"]
    common = (
        "align.method=sdpo",
        "align.negatives={random: 2, self_hard: 1}",
        "align.examples=64",
        "train.max_steps=8",
        "train.eval_every=3",
        "train.save_total_limit=5",
    )
    straight = tmp_path / "straight"
    align(_stage(start, straight, *common))
    killed = tmp_path / "killed"
    config = _stage(start, killed, *common)
    with pytest.raises(KeyboardInterrupt):
        align(config, callbacks=[KillAt(5)])
    assert (killed / "checkpoint-3").exists() and not (killed / "model").exists()
    with pytest.raises(RunExistsError):
        align(config)
    pairs_before = PairSet.load(killed / "pairs.pt")
    align(config, resume=True)
    assert torch.equal(PairSet.load(killed / "pairs.pt").rejected, pairs_before.rejected)
    a, b = _weights(straight), _weights(killed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def test_a_stage_killed_before_its_first_checkpoint_resumes_with_its_saved_pairs(
    sft_runs, tmp_path, monkeypatch
):
    start = sft_runs["sequence"]
    out = tmp_path / "early"
    config = _stage(start, out, "train.max_steps=2", "align.negatives={random: 3}")
    from ilrec.alignment import stage as stage_module

    def die(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(stage_module, "reference_logps", die)
    with pytest.raises(KeyboardInterrupt):
        align(config)
    saved = PairSet.load(out / "pairs.pt")
    monkeypatch.undo()
    align(config, resume=True)
    assert torch.equal(PairSet.load(out / "pairs.pt").rejected, saved.rejected)
    assert (out / "model").exists()


def test_dpo_from_a_lora_run_trains_the_adapters(synthetic_dir, tmp_path):
    from conftest import _tiny_overrides

    folder = tmp_path / "pretrained"
    save_tiny_pretrained(folder)
    sft = tmp_path / "sft"
    lora = ("model.kind=hf", f"model.path={folder}", "model.lora=true", "model.lora_r=4")
    extra = ("data.format=prompt", "train.max_steps=2", *lora)
    train(load_config(None, _tiny_overrides(synthetic_dir, sft, *extra)))
    out = tmp_path / "dpo"
    align(_stage(sft, out, "train.max_steps=2", "align.negatives={random: 1}"))
    assert (out / "model" / "adapter_config.json").exists()
    before = load_file(str(sft / "model" / "adapter_model.safetensors"))
    after = load_file(str(out / "model" / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    changed = [k for k in before if "lora_" in k and not torch.equal(before[k], after[k])]
    assert changed  # the adapters went on training
    model, _ = load_trained(out)  # merged for inference
    assert not hasattr(model, "peft_config")
