"""The ILRec objective (paper Eqs. 2-12) wired to real models, its config presets and the
per-layer loss plot: equivalence with full-sequence logits, reduction to plain CE, where the
CPD gradient goes, separate heads, config errors, and every ablation preset trained 2 steps
through ``ilrec.training.run.train``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from ilrec.config import Config, ConfigError, ObjectiveConfig, load_config
from ilrec.losses import cpd_loss, cpo_loss, ensemble_logits, extract_negatives, penalty_weights
from ilrec.models.backbones import SCRATCH_PRESETS, ScratchPreset
from ilrec.training.objectives import CrossEntropyObjective, build_objective
from ilrec.training.objectives.ilrec import HEADS_ATTR, ILRecObjective, candidate_layers

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PRESETS = sorted((CONFIGS / "ablations").glob("*.yaml"))
VOCAB = 40
N_LAYERS = 4


def _tiny_model(kind: str = "llama", n_layers: int = N_LAYERS, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    return LlamaForCausalLM(LlamaConfig(**common))


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded rows; the 'prompt' (first tokens) and the padding are unsupervised."""
    g = torch.Generator().manual_seed(seed)
    lengths = [12, 9, 7]
    length = max(lengths)
    input_ids = torch.zeros(len(lengths), length, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    labels = torch.full_like(input_ids, -100)
    for row, n in enumerate(lengths):
        input_ids[row, :n] = torch.randint(1, VOCAB, (n,), generator=g)
        attention[row, :n] = 1
        labels[row, 3:n] = input_ids[row, 3:n]
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _cfg(**kw) -> ObjectiveConfig:
    return ObjectiveConfig(name="ilrec", **kw)


def _full_sequence(model, batch, layers):
    """Reference: the model's normal forward over the whole sequence, then masking."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=True,
    )
    mask = batch["labels"][:, 1:] != -100
    targets = batch["labels"][:, 1:][mask]
    final = out.logits[:, :-1][mask].float()
    inner = torch.stack(
        [model.lm_head(model.model.norm(out.hidden_states[i]))[:, :-1][mask] for i in layers]
    ).float()
    return final, inner, targets


# --------------------------------------------------------------------------------------
# (a) + (g): gathering at the supervised positions = full-sequence logits and masking
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_supervised_gathering_matches_full_sequence(kind):
    from ilrec.training.objectives import forward_supervised

    model = _tiny_model(kind)
    batch = _batch()
    cfg = _cfg(k=2, alpha=0.5, beta=0.2, lambda_cpd=0.3)
    objective = ILRecObjective(cfg, model)
    assert objective.layers == [2, 3]

    result = forward_supervised(model, batch)
    z = objective.final_logits(model, result)
    inner = objective.layer_logits(model, result)
    ref_z, ref_inner, ref_targets = _full_sequence(model, batch, [2, 3])
    torch.testing.assert_close(result.targets, ref_targets)
    torch.testing.assert_close(z, ref_z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(inner, ref_inner, rtol=1e-5, atol=1e-5)

    # the whole loss, recomputed from the full-sequence logits with the pure functions
    probs = ensemble_logits(ref_inner).softmax(-1)
    neg = extract_negatives(probs, ref_targets, cfg.alpha)
    weights = penalty_weights(probs, neg)
    expected = cpo_loss(ref_z, ref_targets, weights, cfg.beta) + cfg.lambda_cpd * cpd_loss(
        ref_inner, ref_z
    )
    out = objective(model, batch)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-5)
    assert out.loss.dtype == torch.float32 and out.loss.requires_grad
    logs = out.logs
    assert logs["loss_total"] == pytest.approx(expected.item(), rel=1e-5)
    assert logs["neg_per_pos"] == pytest.approx(neg.sum().item() / len(ref_targets))
    frac = ((ref_z < 0) & neg).sum().item() / neg.sum().item()
    assert logs["neg_logit_negative_frac"] == pytest.approx(frac)
    for i, layer in enumerate([2, 3]):
        ce = F.cross_entropy(ref_inner[i], ref_targets).item()
        assert logs[f"ce_layer_{layer}"] == pytest.approx(ce, rel=1e-5)
    assert logs[f"ce_layer_{N_LAYERS}"] == pytest.approx(
        F.cross_entropy(ref_z, ref_targets).item(), rel=1e-5
    )
    assert {"cpo", "cpd"} <= set(logs) and all(isinstance(v, float) for v in logs.values())
    out.loss.backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model.model.layers[-1].parameters()
    )


# --------------------------------------------------------------------------------------
# (b) no negatives and no CPD: plain cross-entropy
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("negatives_from", ["intermediate", "final"])
def test_without_negatives_or_cpd_equals_plain_ce(negatives_from):
    model = _tiny_model()
    batch = _batch()
    ce = CrossEntropyObjective()(model, batch)
    cfg = _cfg(alpha=1e9, lambda_cpd=0.0, beta=0.5, negatives_from=negatives_from)
    out = ILRecObjective(cfg, model)(model, batch)
    torch.testing.assert_close(out.loss, ce.loss, rtol=1e-6, atol=1e-6)
    assert out.logs["neg_per_pos"] == 0.0
    assert "neg_logit_negative_frac" not in out.logs  # no negatives selected at all
    # "w/o CPO" with lambda 0 is plain CE too, logged as `ce`
    plain = ILRecObjective(_cfg(cpo=False, lambda_cpd=0.0), model)(model, batch)
    torch.testing.assert_close(plain.loss, ce.loss, rtol=1e-6, atol=1e-6)
    assert plain.logs["ce"] == pytest.approx(ce.logs["ce"], rel=1e-6)
    assert "cpo" not in plain.logs and "neg_per_pos" not in plain.logs


def test_negatives_change_the_loss_and_sign_aware_differs():
    model = _tiny_model()
    batch = _batch()
    base = ILRecObjective(_cfg(alpha=0.5, beta=1.0, lambda_cpd=0.0), model)(model, batch)
    ce = CrossEntropyObjective()(model, batch)
    assert base.logs["neg_per_pos"] > 0
    assert not torch.allclose(base.loss, ce.loss)
    signed = ILRecObjective(_cfg(alpha=0.5, beta=1.0, lambda_cpd=0.0, penalty="sign_aware"), model)
    out = signed(model, batch)
    if base.logs.get("neg_logit_negative_frac", 0.0) > 0:
        assert not torch.allclose(out.loss, base.loss)


# --------------------------------------------------------------------------------------
# (c) CPD: the teacher is detached, the gradient reaches the student path only
# --------------------------------------------------------------------------------------


def _grads(model, cfg, batch):
    model.zero_grad(set_to_none=True)
    ILRecObjective(cfg, model)(model, batch).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_cpd_gradient_reaches_only_the_student_path():
    model = _tiny_model()
    batch = _batch()
    common = dict(k=1, alpha=0.5, beta=0.3)
    with_cpd = _grads(model, _cfg(lambda_cpd=1.0, **common), batch)
    without = _grads(model, _cfg(lambda_cpd=0.0, **common), batch)
    # CPD's student is layer L-1 through the shared norm + head; its teacher P^L is detached,
    # so the last decoder layer gets exactly the same gradient with or without CPD ...
    last = f"model.layers.{N_LAYERS - 1}."
    names = [n for n in with_cpd if n.startswith(last)]
    assert names
    for name in names:
        assert torch.equal(with_cpd[name], without[name]), name
    # ... while the shared head, the final norm and the layers below do get CPD gradient.
    for name in (
        "lm_head.weight",
        "model.norm.weight",
        f"model.layers.{N_LAYERS - 2}.mlp.up_proj.weight",
    ):
        assert not torch.allclose(with_cpd[name], without[name]), name

    # The CPD term alone: nothing reaches the last layer, its gradient is None.
    from ilrec.training.objectives import forward_supervised

    model.zero_grad(set_to_none=True)
    objective = ILRecObjective(_cfg(lambda_cpd=1.0, **common), model)
    result = forward_supervised(model, batch)
    cpd = cpd_loss(objective.layer_logits(model, result), objective.final_logits(model, result))
    cpd.backward()
    assert all(p.grad is None for p in model.model.layers[-1].parameters())
    assert model.lm_head.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------
# (e) layer selection and config errors
# --------------------------------------------------------------------------------------


def test_candidate_layers_and_errors():
    assert candidate_layers(_cfg(k=1), 4) == [3]
    assert candidate_layers(_cfg(k=3), 4) == [1, 2, 3]
    assert candidate_layers(_cfg(k=0), 4) == []
    assert candidate_layers(_cfg(layers=[-2, -4]), 32) == [29, 31]
    assert candidate_layers(_cfg(layers=[5, 2]), 6) == [2, 5]
    model = _tiny_model(n_layers=3)
    with pytest.raises(ConfigError, match=r"objective\.k=3.*3 layers"):
        build_objective("ilrec", Config(objective=_cfg(k=3)), model)
    with pytest.raises(ConfigError, match=r"objective\.k=7.*3 layers"):
        build_objective("ilrec", Config(objective=_cfg(k=7)), model)
    with pytest.raises(ConfigError, match=r"objective\.layers: 3 .*3 layers"):
        ILRecObjective(_cfg(layers=[3]), model)
    with pytest.raises(ConfigError, match=r"objective\.layers: -5"):
        ILRecObjective(_cfg(layers=[-5]), model)
    with pytest.raises(ConfigError, match="same layer twice"):
        ILRecObjective(_cfg(layers=[2, -2]), model)
    with pytest.raises(ConfigError, match=r"objective\.layers: -1"):
        _cfg(layers=[-1])
    with pytest.raises(ConfigError, match=r"objective\.layers"):
        _cfg(layers=[])
    with pytest.raises(ConfigError, match=r"lambda_cpd > 0"):
        _cfg(head="separate", lambda_cpd=0.0)
    assert isinstance(build_objective("ilrec", Config(objective=_cfg(k=1)), model), ILRecObjective)
    with pytest.raises(ConfigError, match="objective must be one of"):
        build_objective("nope", Config(), model)


def test_k0_uses_final_layer_negatives_without_cpd():
    model = _tiny_model()
    batch = _batch()
    out = ILRecObjective(_cfg(k=0, alpha=0.5, beta=0.5), model)(model, batch)
    assert "cpd" not in out.logs and set(k for k in out.logs if k.startswith("ce_layer_")) == {
        f"ce_layer_{N_LAYERS}"
    }
    same = ILRecObjective(_cfg(k=0, alpha=0.5, beta=0.5, lambda_cpd=0.0), model)(model, batch)
    fl = ILRecObjective(
        _cfg(k=1, alpha=0.5, beta=0.5, lambda_cpd=0.0, negatives_from="final"), model
    )(model, batch)
    torch.testing.assert_close(out.loss, same.loss)
    torch.testing.assert_close(out.loss, fl.loss)


def test_crr_needs_a_reward_provider():
    model = _tiny_model()
    batch = _batch()
    objective = ILRecObjective(_cfg(alpha=0.5, mu_crr=0.1, cf_run="cf"), model)
    with pytest.raises(ConfigError, match="reward provider"):
        objective(model, batch)
    seen = {}

    def rewards(b, index, targets):
        seen["n"] = len(targets)
        return torch.zeros(len(targets), VOCAB)

    out = objective.set_reward_provider(rewards)(model, batch)
    assert seen["n"] == int((batch["labels"][:, 1:] != -100).sum())
    assert math.isfinite(out.logs["crr"])
    without = ILRecObjective(_cfg(alpha=0.5), model)(model, batch)
    assert out.logs["loss_total"] == pytest.approx(
        without.logs["loss_total"] + 0.1 * out.logs["crr"], rel=1e-5
    )


# --------------------------------------------------------------------------------------
# (f) separate trainable heads
# --------------------------------------------------------------------------------------


def test_separate_heads_are_trainable_copies():
    from ilrec.training.objectives import forward_supervised

    model = _tiny_model()
    batch = _batch()
    shared = ILRecObjective(_cfg(k=2, lambda_cpd=0.5), model)
    result = forward_supervised(model, batch)
    before = shared.layer_logits(model, result).detach()

    objective = ILRecObjective(_cfg(k=2, lambda_cpd=0.5, head="separate"), model)
    heads = getattr(model, HEADS_ATTR)
    assert sorted(heads.keys()) == ["2", "3"]
    params = list(heads.parameters())
    assert params and all(p.requires_grad for p in params)
    assert {id(p) for p in params}.isdisjoint(
        id(p) for n, p in model.named_parameters() if not n.startswith(HEADS_ATTR)
    )
    # initialised from the final norm + LM head: same logits as the shared head at first
    torch.testing.assert_close(objective.layer_logits(model, result), before)
    # part of the model: the optimizer and checkpoints see them
    assert any(n.startswith(f"{HEADS_ATTR}.") for n in model.state_dict())

    objective(model, batch).loss.backward()
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0
    # building again on the same model reuses the heads
    ILRecObjective(_cfg(k=2, lambda_cpd=0.5, head="separate"), model)
    assert getattr(model, HEADS_ATTR) is heads


# --------------------------------------------------------------------------------------
# config presets: base inheritance, and every preset trained 2 steps (d)
# --------------------------------------------------------------------------------------


def test_presets_inherit_from_ilrec_yaml(tmp_path):
    base = load_config(CONFIGS / "ilrec.yaml")
    demo = load_config(CONFIGS / "demo.yaml")
    assert base.objective.name == "ilrec"
    assert (base.objective.k, base.objective.alpha, base.objective.beta) == (1, 0.8, 0.1)
    assert base.objective.lambda_cpd == 0.01
    assert base.data == demo.data and base.model == demo.model
    wo_cpd = load_config(CONFIGS / "ablations" / "wo_cpd.yaml", ["objective.beta=0.05"])
    assert wo_cpd.objective.lambda_cpd == 0.0 and wo_cpd.objective.alpha == 0.8
    assert wo_cpd.objective.beta == 0.05 and wo_cpd.data == demo.data
    shallow = load_config(CONFIGS / "ablations" / "shallow.yaml")
    assert shallow.objective.layers == [-12, -13, -14]

    (tmp_path / "a.yaml").write_text("base: b.yaml\ntrain:\n  lr: 0.5\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: missing.yaml\n")
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "c.yaml")


def _needed_layers(path: Path) -> int:
    objective = load_config(path).objective
    if objective.layers is not None:
        return max(-layer if layer < 0 else layer + 1 for layer in objective.layers)
    return objective.k + 1


@pytest.fixture(scope="module")
def preset_data(tmp_path_factory) -> Path:
    from ilrec.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("ilrec_data") / "Synthetic"
    generate_synthetic(out, n_users=200, n_items=60, seed=0, index_epochs=20)
    return out


@pytest.mark.parametrize("path", [CONFIGS / "ilrec.yaml", *PRESETS], ids=lambda p: p.stem)
def test_preset_trains_two_steps(path, preset_data, tmp_path, monkeypatch):
    from ilrec.training import run as run_module

    if path.stem != "ilrec":  # the run's curves.png takes half the time of these runs
        monkeypatch.setattr(run_module, "plot_curves_safely", lambda run_dir: None)
    # tiny has 3 layers; presets needing more run on a 14-layer version of it
    monkeypatch.setitem(SCRATCH_PRESETS, "tiny_deep", ScratchPreset(16, 32, 14, 2, 1))
    preset = (
        "tiny" if _needed_layers(path) <= SCRATCH_PRESETS["tiny"].num_hidden_layers else "tiny_deep"
    )
    run = tmp_path / "run"
    config = load_config(
        path,
        [
            f"data.path={preset_data}",
            f"train.output_dir={run}",
            f"model.preset={preset}",
            "data.valid_users=10",
            "train.batch_size=8",
            "eval.batch_size=16",
            "train.max_steps=2",
            "train.logging_steps=1",
            "train.threads=1",
        ],
    )
    run_module.train(config, overwrite=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_total" in r]
    assert len(steps) == 2
    n_layers = SCRATCH_PRESETS[preset].num_hidden_layers
    cfg = config.objective
    for record in steps:
        assert math.isfinite(record["loss"]) and math.isfinite(record["loss_total"])
        assert ("cpo" if cfg.cpo else "ce") in record
        assert f"ce_layer_{n_layers}" in record
        layers = candidate_layers(cfg, n_layers)
        assert all(f"ce_layer_{layer}" in record for layer in layers)
        assert ("cpd" in record) == bool(layers)
        assert ("neg_per_pos" in record) == (cfg.cpo and cfg.beta != 0)
    if path.stem == "ilrec":
        from ilrec.evaluation.layer_curves import layer_loss_series, plot_layer_losses

        series = layer_loss_series(run / "metrics.jsonl")
        assert sorted(series) == [n_layers - 1, n_layers] and series[n_layers][0] == [1, 2]
        assert plot_layer_losses(run / "metrics.jsonl", tmp_path / "layers.png").stat().st_size


def test_k_beyond_model_depth_fails_at_build(preset_data, tmp_path):
    from ilrec.training.run import train

    config = load_config(
        CONFIGS / "ablations" / "k7.yaml",
        [f"data.path={preset_data}", f"train.output_dir={tmp_path / 'run'}", "model.preset=tiny"],
    )
    with pytest.raises(ConfigError, match=r"objective\.k=7.*3 layers"):
        train(config)


def test_plot_layer_losses_needs_records(tmp_path):
    from ilrec.evaluation.layer_curves import plot_layer_losses

    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    with pytest.raises(ValueError, match="ce_layer"):
        plot_layer_losses(path, tmp_path / "x.png")


def test_lora_wrapped_model_shared_and_separate_heads():
    from ilrec.config import ModelConfig
    from ilrec.models.backbones import apply_lora

    model = apply_lora(_tiny_model(), ModelConfig(lora=True, lora_r=2))
    batch = _batch()
    ref = ILRecObjective(_cfg(k=2, alpha=0.5), model)(model, batch)
    objective = ILRecObjective(_cfg(k=2, alpha=0.5, head="separate"), model)
    heads = getattr(model.get_base_model(), HEADS_ATTR)
    out = objective(model, batch)
    # initialised from the (PEFT-wrapped) head: the same loss as the shared head at first
    torch.testing.assert_close(out.loss, ref.loss)
    out.loss.backward()
    assert all(p.requires_grad and p.grad is not None for p in heads.parameters())
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None for p in lora)
