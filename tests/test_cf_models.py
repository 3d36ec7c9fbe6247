"""Classic recommenders (ilrec.models.cf) and their trainer (ilrec.training.cf).

A small learnable dataset with strong sequential structure (next item = previous + 1 or + 2
modulo the catalogue, else random) is generated in the test; every model must beat popularity
on it after a short run.
"""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pytest
import torch

from ilrec.config import ConfigError
from ilrec.data.dataset import load_dataset
from ilrec.data.split import leave_one_out, popularity_counts
from ilrec.evaluation.result_files import read_rankings
from ilrec.metrics import rank_metrics
from ilrec.models.cf import CF_MODELS, build_cf_model, pad_histories
from ilrec.training import cf as cf_training
from ilrec.training.cf import (
    CFConfig,
    bpr_loss,
    ce_loss,
    cf_item_probs,
    evaluate_cf,
    load_cf_config,
    load_cf_model,
    train_cf,
)
from ilrec.training.signals import TrainingStopped

N_USERS, N_ITEMS = 300, 60
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "cf"
SMALL = {"embedding_size": 32, "batch_size": 32, "lr": 5e-3, "progress": False, "dropout": 0.1}
SMALL_MODEL = {
    "sasrec": {"n_layers": 1},
    "bert4rec": {"n_layers": 1, "mask_prob": 0.4},
    "caser": {"n_horizontal": 8},
}


def write_markov_dataset(
    root: Path, n_users: int = N_USERS, n_items: int = N_ITEMS, seed: int = 0
) -> Path:
    """LC-Rec files for users whose next item is ``prev + 1`` or ``prev + 2`` w.p. 0.8."""
    rng = random.Random(seed)
    sequences = {}
    for user in range(n_users):
        seq = [rng.randrange(n_items)]
        for _ in range(rng.randint(5, 11)):
            step = rng.choice((1, 2)) if rng.random() < 0.8 else rng.randrange(n_items)
            seq.append((seq[-1] + step) % n_items)
        sequences[str(user)] = seq
    root.mkdir(parents=True, exist_ok=True)
    (root / "X.inter.json").write_text(json.dumps(sequences))
    codes = {str(i): [f"<a_{i // 8}>", f"<b_{i % 8}>"] for i in range(n_items)}
    (root / "X.index.json").write_text(json.dumps(codes))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_markov_dataset(tmp_path_factory.mktemp("cf") / "X")


def small_config(model: str, **overrides) -> CFConfig:
    values = {"model": model, **SMALL, "model_kwargs": dict(SMALL_MODEL.get(model, {}))}
    if model == "bpr":
        values["loss"] = "bpr"
        values["lr"] = 1e-2
    return CFConfig(**(values | overrides))


def small_model(name: str, n_items: int = N_ITEMS):
    torch.manual_seed(0)
    extra = {"n_users": 4} if name == "bpr" else {"dropout": 0.0}
    if name in ("sasrec", "bert4rec"):
        extra["max_history"] = 20
    return build_cf_model(name, n_items, embedding_size=16, **extra).eval()


# --- contract -------------------------------------------------------------------------------


def test_pad_histories_right_pads_shifted_ids() -> None:
    item_seq, seq_len = pad_histories([[4, 0], [7], [1, 2, 3, 5]], max_len=3)
    assert item_seq.tolist() == [[5, 1, 0], [8, 0, 0], [3, 4, 6]]
    assert seq_len.tolist() == [2, 1, 3]


@pytest.mark.parametrize("name", sorted(CF_MODELS))
def test_contract_shapes_probs_and_padding_invariance(name: str) -> None:
    model = small_model(name)
    short, long = [3, 4, 5], [10, 11, 12, 13, 14, 15, 16, 17, 18]
    users = torch.tensor([0, 1])
    item_seq, seq_len = pad_histories([short, long])
    state = model.encode(item_seq, seq_len, users)
    assert state.shape == (2, 16)
    assert model.item_embeddings().shape == (N_ITEMS, 16)
    assert model.score_all(state).shape == (2, N_ITEMS)
    # The same history alone (T = 3) and next to a longer one (T = 9) scores the same.
    alone_seq, alone_len = pad_histories([short])
    alone = model(alone_seq, alone_len, users[:1])
    together = model(item_seq, seq_len, users)
    torch.testing.assert_close(alone[0], together[0], atol=1e-5, rtol=1e-5)
    model.user_index = {"u0": 0, "u1": 1}
    probs = cf_item_probs(model, [short, long], ["u0", "u1"])
    assert probs.shape == (2, N_ITEMS) and (probs >= 0).all()
    torch.testing.assert_close(probs.sum(1), torch.ones(2))
    # Histories longer than max_history are cut to their most recent items.
    model.max_history = 5
    longer = cf_item_probs(model, [list(range(30, 50))], ["u0"])
    torch.testing.assert_close(longer, cf_item_probs(model, [list(range(45, 50))], ["u0"]))


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "caser", "bpr"])
def test_supervised_states_targets_are_the_supervised_items(name: str) -> None:
    model = small_model(name).train()
    item_seq, seq_len = pad_histories([[3, 4, 5, 6], [7, 8]])
    states, targets = model.supervised_states(
        item_seq, seq_len, torch.tensor([2, 1]), torch.tensor([0, 1])
    )
    assert targets.tolist() == [5, 6, 8]
    assert states.shape == (3, 16)


def test_bert4rec_cloze_masks_only_real_items() -> None:
    model = small_model("bert4rec").train()
    item_seq, seq_len = pad_histories([[3, 4, 5, 6], [7, 8]])
    torch.manual_seed(1)
    states, targets = model.supervised_states(item_seq, seq_len, torch.tensor([1, 1]), None)
    assert len(targets) >= 2 and set(targets.tolist()) <= {3, 4, 5, 6, 7, 8}
    assert states.shape == (len(targets), 16)


def test_losses_match_naive_definitions() -> None:
    model = small_model("gru4rec")
    config = small_config("gru4rec", n_negatives=3)
    states, targets = torch.randn(5, 16), torch.tensor([0, 1, 2, 59, 7])
    logits = states @ model.item_embeddings().T
    naive = -torch.log_softmax(logits, 1)[torch.arange(5), targets].mean()
    torch.testing.assert_close(ce_loss(model, states, targets, config), naive)
    # With two items the only negative of item 0 is item 1 and vice versa.
    two = small_model("gru4rec", n_items=2)
    scores = states @ two.item_embeddings().T
    t = torch.tensor([0, 1, 1, 0, 0])
    naive_bpr = -torch.nn.functional.logsigmoid(
        scores.gather(1, t[:, None]) - scores.gather(1, 1 - t[:, None])
    ).mean()
    torch.testing.assert_close(bpr_loss(two, states, t, config), naive_bpr)


@pytest.mark.parametrize("name", sorted(CF_MODELS))
def test_one_step_updates_every_parameter(name: str) -> None:
    model = small_model(name).train()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    item_seq, seq_len = pad_histories([list(range(i, i + 21)) for i in range(0, 36, 5)])
    users = torch.arange(len(seq_len)) % 4
    states, targets = model.supervised_states(item_seq, seq_len, torch.ones_like(seq_len), users)
    loss = ce_loss(model, states, targets, small_config(name)) + bpr_loss(
        model, states, targets, small_config(name)
    )
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert not unchanged


# --- training -------------------------------------------------------------------------------


def popularity_hit10(data_dir: Path) -> float:
    data = load_dataset(data_dir)
    splits = leave_one_out(data)
    counts = torch.tensor(popularity_counts(splits, data.n_items), dtype=torch.float)
    top = counts.topk(10).indices.expand(len(splits.valid), -1)
    targets = torch.tensor([e.target for e in splits.valid])
    return rank_metrics(top, targets)["hit@10"]


@pytest.mark.parametrize(
    ("name", "epochs"),
    [
        ("sasrec", 4),
        ("gru4rec", 6),
        ("caser", 8),
        ("bert4rec", 20),
        ("bpr", 12),
    ],
)
def test_model_beats_popularity(name: str, epochs: int, data_dir: Path, tmp_path: Path) -> None:
    result = train_cf(small_config(name, epochs=epochs), data_dir, tmp_path / name)
    baseline = popularity_hit10(data_dir)
    assert result["valid"]["hit@10"] > baseline + 0.1, (result, baseline)
    assert set(result["test"]) == {"hit@5", "ndcg@5", "hit@10", "ndcg@10"}
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == list(range(1, result["epochs"] + 1))
    model, config = load_cf_model(tmp_path / name)
    assert config.model == name
    splits = leave_one_out(load_dataset(data_dir))
    assert evaluate_cf(model, splits.valid, N_ITEMS, 64) == result["valid"]
    for split in ("valid", "test"):  # the per-user rankings ``ilrec compare`` pairs
        rankings = read_rankings(tmp_path / name / f"eval_{split}_exact.rankings.tsv")
        assert rankings.users == tuple(e.user for e in splits.examples(split))
        assert rankings.ranked.shape[1] == 20
        per_user = rankings.user_metrics((5, 10))
        for key, value in result[split].items():
            assert per_user[key].mean().item() == pytest.approx(value, abs=1e-6)


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
def test_resume_equals_straight_run(name: str, data_dir: Path, tmp_path: Path) -> None:
    straight = train_cf(small_config(name, epochs=2, patience=10), data_dir, tmp_path / "a")
    train_cf(small_config(name, epochs=1, patience=10), data_dir, tmp_path / "b")
    resumed = train_cf(
        small_config(name, epochs=2, patience=10), data_dir, tmp_path / "b", resume=True
    )
    assert resumed == straight
    a, b = torch.load(tmp_path / "a" / "last.pt"), torch.load(tmp_path / "b" / "last.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert (tmp_path / "a" / "metrics.jsonl").read_text().count("\n") == 2
    assert (tmp_path / "b" / "metrics.jsonl").read_text().count("\n") == 2
    with pytest.raises(FileExistsError):
        train_cf(small_config(name, epochs=2), data_dir, tmp_path / "b")
    with pytest.raises(ValueError, match="lr"):
        train_cf(small_config(name, epochs=3, lr=1e-4), data_dir, tmp_path / "b", resume=True)


def test_a_signal_stops_after_the_epoch_and_resume_finishes_the_run(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = train_cf(small_config("sasrec", epochs=2, patience=10), data_dir, tmp_path / "a")
    train_one_epoch = cf_training._train_epoch

    def signalled_epoch(model, optimizer, windows, config, epoch):
        if epoch == 1:  # a Ctrl-C in the middle of the first epoch
            os.kill(os.getpid(), signal.SIGINT)
        return train_one_epoch(model, optimizer, windows, config, epoch)

    monkeypatch.setattr(cf_training, "_train_epoch", signalled_epoch)
    config = small_config("sasrec", epochs=2, patience=10)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingStopped, match="SIGINT after epoch 1") as stopped:
        train_cf(config, data_dir, tmp_path / "b")
    assert stopped.value.checkpoint == str(tmp_path / "b" / "last.pt")
    assert (tmp_path / "b" / "metrics.jsonl").read_text().count("\n") == 1
    assert signal.getsignal(signal.SIGINT) is before
    monkeypatch.undo()
    assert train_cf(config, data_dir, tmp_path / "b", resume=True) == straight


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CF_MODELS))
def test_shipped_configs_load(name: str) -> None:
    config = load_cf_config(CONFIG_DIR / f"{name}.yaml", ["epochs=3", "lr=1e-4"])
    assert config.model == name and config.epochs == 3 and config.lr == 1e-4
    assert config.embedding_size == 128


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("embeding_size=64", "embeding_size"),
        ("epochs=many", "epochs: expected int"),
        ("dropout=true", "dropout: expected float"),
        ("model_kwargs.n_layer=3", "model_kwargs.n_layer"),
        ("model_kwargs.n_heads=2.5", "model_kwargs.n_heads: expected int"),
        ("model_kwargs.dropout=0.1", "model_kwargs.dropout"),
        ("loss=hinge", "loss"),
    ],
)
def test_bad_config_names_the_key(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_cf_config(CONFIG_DIR / "sasrec.yaml", [override])
    assert issubclass(ConfigError, ValueError)


def test_early_stopping_after_patience_epochs_without_improvement(
    data_dir: Path, tmp_path: Path
) -> None:
    # lr far below float resolution: the weights never change, so epoch 1 stays the best.
    config = small_config("gru4rec", epochs=10, patience=2, lr=1e-12)
    result = train_cf(config, data_dir, tmp_path / "run")
    assert (result["best_epoch"], result["epochs"]) == (1, 3)
    saved = torch.load(tmp_path / "run" / "best.pt")
    assert saved["epoch"] == 1 and saved["valid"] == result["valid"]
