"""Random vs length-grouped training batches (``train.group_by_length``): padding and speed.

For one config and dataset: the share of padding tokens in one epoch of batches drawn each
way (exact, from the encoded training examples), and the time of full optimizer steps
(forward, loss, backward, AdamW) on batches of each kind, alternated step by step on two
copies of the same model, so machine-speed drifts hit both alike. Prints a markdown table:
padding, median step time, and the projected time of one epoch each way with their ratio.

    python benchmarks/bench_batching.py --config configs/study/instruments_sft.yaml --threads 1
    python benchmarks/bench_batching.py --config configs/demo.yaml --steps 10   # after make demo

Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from ilrec.config import load_config
from ilrec.data.encoding import PaddingCollator
from ilrec.runs.setup import build_model, load_setup, make_encoder, set_threads
from ilrec.training.objectives import build_objective
from ilrec.training.sampling import length_grouped_order


def epoch_batches(lengths: list[int], batch_size: int, grouped: bool, seed: int) -> list[list]:
    """One epoch of example indices cut into batches, random or length-grouped."""
    generator = torch.Generator().manual_seed(seed)
    if grouped:
        order = length_grouped_order(lengths, batch_size, generator)
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def padded_tokens(lengths: list[int], batches: list[list]) -> int:
    """Tokens of ``batches`` once each is padded to its longest example."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def padding_share(lengths: list[int], batches: list[list]) -> tuple[float, int]:
    """(share of padding among the padded tokens, padded tokens) of one epoch of ``batches``."""
    padded = padded_tokens(lengths, batches)
    return 1 - sum(lengths) / padded, padded


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per kind")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    threads = set_threads(args.threads)
    config = load_config(args.config, args.overrides)
    setup = load_setup(config)
    torch.manual_seed(config.train.seed)
    model, tokenizer = build_model(setup)
    encoder = make_encoder(setup, tokenizer)
    features = encoder.encode_training(
        setup.splits.train_prefixes(), setup.splits.train_windows(), seed=config.train.seed
    )
    lengths = [len(f["input_ids"]) for f in features]
    batch_size, seed = config.train.batch_size, config.train.seed
    kinds = {"random": False, "grouped": True}
    batches = {k: epoch_batches(lengths, batch_size, g, seed) for k, g in kinds.items()}
    padding = {k: padding_share(lengths, b) for k, b in batches.items()}

    collate = PaddingCollator(tokenizer.pad_token_id)
    runners = {}
    for kind in kinds:
        copy_ = copy.deepcopy(model).train()
        objective = build_objective(config.objective.name, config, copy_, encoder)
        params = [p for p in copy_.parameters() if p.requires_grad]
        runners[kind] = (copy_, objective, torch.optim.AdamW(params, lr=config.train.lr))
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for step in range(args.warmup + args.steps):
        for j in range(len(kinds)):
            kind = list(kinds)[(step + j) % len(kinds)]
            rows = batches[kind][step % len(batches[kind])]
            batch = collate([features[i] for i in rows])
            model_, objective, optimizer = runners[kind]
            started = time.perf_counter()
            objective(model_, batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= args.warmup:
                times[kind].append(time.perf_counter() - started)

    # step time grows with the padded tokens of the batch: project an epoch from the time per
    # padded token of the timed steps
    per_token = {}
    for kind in kinds:
        timed = [
            batches[kind][s % len(batches[kind])]
            for s in range(args.warmup, args.warmup + args.steps)
        ]
        per_token[kind] = sum(times[kind]) / padded_tokens(lengths, timed)
    epoch = {k: per_token[k] * padding[k][1] for k in kinds}
    print(
        f"{args.config} ({len(features):,} training examples, batch {batch_size}, "
        f"{threads} thread(s), {args.steps} timed steps per kind after {args.warmup} warm-up)\n"
    )
    print("| batches | padding share | padded tokens / epoch | median step | projected epoch |")
    print("|---|---|---|---|---|")
    for kind in kinds:
        print(
            f"| {kind} | {padding[kind][0]:.1%} | {padding[kind][1]:,} | "
            f"{statistics.median(times[kind]) * 1000:.0f} ms | {epoch[kind]:.0f} s |"
        )
    print(f"\nprojected epoch, random / grouped: {epoch['random'] / epoch['grouped']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
