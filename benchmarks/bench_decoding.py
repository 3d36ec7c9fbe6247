"""Benchmark: trie beam search vs Hugging Face ``generate`` vs exact scoring, on the same users.

Usage:
    python benchmarks/bench_decoding.py --tiny --users 16 --beams 20
    python benchmarks/bench_decoding.py --model-dir runs/x/checkpoint --data eval.pt --users 200

``--data`` is a ``torch.save``d dict with keys ``prompts`` (list of token-id lists, whatever
the model reads before the identifier), ``item_tokens`` (LongTensor[I, D], response tokens
right-padded with -1), ``pad_token_id`` and ``eos_token_id`` (ints). Rows that do not end
with EOS get EOS appended for every method, so that Hugging Face beams can finish and all
three methods score the same token sequences. Prints measured numbers only.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationConfig, LlamaConfig, LlamaForCausalLM

from ilrec.evaluation.beam import constrained_beam_search, left_pad
from ilrec.evaluation.exact import internal_positions, rank_items, score_all_items
from ilrec.identifiers.trie import PrefixTrie, prefix_allowed_tokens_fn


@dataclass
class BenchData:
    prompts: list[list[int]]
    item_tokens: torch.Tensor  # [I, D], -1 padded
    pad_token_id: int
    eos_token_id: int


def load_data(path: str) -> BenchData:
    raw = torch.load(path, weights_only=False)
    return BenchData(
        prompts=[list(map(int, p)) for p in raw["prompts"]],
        item_tokens=torch.as_tensor(raw["item_tokens"], dtype=torch.long),
        pad_token_id=int(raw["pad_token_id"]),
        eos_token_id=int(raw["eos_token_id"]),
    )


def synthetic_data(n_users: int, n_items: int, levels: int, codebook: int, seed: int = 0):
    """Semantic-ID-like data: pad 0, BOS 1, EOS 2, level-l code c is token 3 + l*codebook + c.

    Returns ``(BenchData, vocab_size)``; prompts are BOS + up to 20 random items' codes.
    """
    gen = torch.Generator().manual_seed(seed)
    if n_items > codebook**levels:
        raise ValueError("n_items exceeds codebook ** levels")
    codes: set[tuple[int, ...]] = set()
    while len(codes) < n_items:
        codes.add(tuple(torch.randint(0, codebook, (levels,), generator=gen).tolist()))
    offsets = torch.arange(levels) * codebook + 3
    ids = torch.tensor(sorted(codes)) + offsets  # [I, levels]
    table = torch.cat([ids, torch.full((n_items, 1), 2)], dim=1)
    prompts = []
    for _ in range(n_users):
        n_hist = int(torch.randint(1, 21, (1,), generator=gen))
        hist = torch.randint(0, n_items, (n_hist,), generator=gen)
        prompts.append([1] + ids[hist].flatten().tolist())
    return BenchData(prompts, table, pad_token_id=0, eos_token_id=2), 3 + levels * codebook


def tiny_model(vocab_size: int) -> nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def with_eos(item_tokens: torch.Tensor, eos: int) -> torch.Tensor:
    """Append EOS to every identifier unless all already end with it."""
    lengths = (item_tokens >= 0).sum(1)
    if bool((item_tokens[torch.arange(len(lengths)), lengths - 1] == eos).all()):
        return item_tokens
    out = torch.cat([item_tokens, torch.full((len(lengths), 1), -1)], dim=1)
    out[torch.arange(len(lengths)), lengths] = eos
    return out


def hf_generate(model, prompts, trie, num_beams, batch_size, pad, eos) -> torch.Tensor:
    """Top ``num_beams`` items per prompt from ``generate`` with a trie constraint."""
    config = GenerationConfig(  # a fresh config, so no model defaults (sampling...) leak in
        num_beams=num_beams,
        num_return_sequences=num_beams,
        do_sample=False,
        length_penalty=0.0,
        early_stopping=True,
        max_new_tokens=trie.depth,
        pad_token_id=pad,
        eos_token_id=eos,
    )
    out = []
    device = next(model.parameters()).device  # inputs follow the model (GPU runs)
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            ids, mask, _ = left_pad(prompts[start : start + batch_size], pad, device)
            width = ids.shape[1]
            seqs = model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                prefix_allowed_tokens_fn=prefix_allowed_tokens_fn(trie, width, end_token_id=eos),
            )
            out.append(trie.match(seqs[:, width:]).reshape(ids.shape[0], num_beams).cpu())
    return torch.cat(out)


def flops_per_token(model: nn.Module) -> int:
    """Matmul FLOPs of one token-forward (2 x weights used, LM head included)."""
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    n = sum(p.numel() for p in model.parameters()) - embed.numel()
    if head.data_ptr() == embed.data_ptr():
        n += head.numel()
    return 2 * n


def dense_tokens_per_s(model: nn.Module, vocab_size: int, rows: int = 512, reps: int = 3) -> float:
    """Throughput of independent one-token forwards (no attention context): the floor's speed."""
    ids = torch.randint(3, vocab_size, (rows, 1))
    with torch.inference_mode():
        model(input_ids=ids, use_cache=False)
        t0 = time.perf_counter()
        for _ in range(reps):
            logits = model(input_ids=ids, use_cache=False).logits
            torch.log_softmax(logits.float(), -1)
    return rows * reps / (time.perf_counter() - t0)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean |a_u ∩ b_u| / k over rows of two ``[U, k]`` item lists."""
    return (
        sum(len(set(x) & set(y)) for x, y in zip(a.tolist(), b.tolist(), strict=True)) / a.numel()
    )


def run(model, data: BenchData, users: int, beams: int, args) -> None:
    prompts = data.prompts[:users]
    # HF generate needs an end token to finish variable-length identifiers; --no-eos scores
    # the identifiers as the evaluation does for the sequence format (no EOS), without it.
    table = data.item_tokens if args.no_eos else with_eos(data.item_tokens, data.eos_token_id)
    trie, build_s = timed(lambda: PrefixTrie.from_item_tokens(table))
    vocab = model.get_output_embeddings().weight.shape[0]
    pad, eos = data.pad_token_id, data.eos_token_id
    n_users = len(prompts)
    print(
        f"threads {torch.get_num_threads()}, users {n_users}, items {trie.n_items}, "
        f"beams {beams}, identifier depth {trie.depth} "
        f"({'no EOS' if args.no_eos else 'EOS included'}), trie nodes {trie.n_nodes} "
        f"(built in {build_s * 1e3:.1f} ms), mean prompt length "
        f"{sum(map(len, prompts)) / n_users:.1f}"
    )
    # warm-up on one user so that one-time costs do not land on the first method
    constrained_beam_search(model, prompts[:1], trie, num_beams=beams, pad_token_id=pad)
    (beam_items, _), t_beam = timed(
        lambda: constrained_beam_search(
            model, prompts, trie, num_beams=beams, batch_size=args.batch_size, pad_token_id=pad
        )
    )
    print(f"beam     : {n_users / t_beam:9.2f} users/s ({t_beam:.2f} s)")
    results = {"beam": t_beam}
    if not args.skip_generate:
        gen_items, t_gen = timed(
            lambda: hf_generate(model, prompts, trie, beams, args.generate_batch_size, pad, eos)
        )
        results["generate"] = t_gen
        print(f"generate : {n_users / t_gen:9.2f} users/s ({t_gen:.2f} s)")
    if not args.skip_exact:
        exact, t_exact = timed(
            lambda: score_all_items(
                model,
                prompts,
                trie,
                batch_size=args.exact_batch_size,
                node_chunk=args.node_chunk,
                pad_token_id=pad,
            )
        )
        results["exact"] = t_exact
        print(f"exact    : {n_users / t_exact:9.2f} users/s ({t_exact:.2f} s)")
    for name, t in results.items():
        if name != "beam":
            print(f"speedup beam vs {name}: {t / t_beam:.2f}x")
    k = min(10, beams)
    if not args.skip_generate:
        same = (beam_items[:, :k] == gen_items[:, :k]).all(1).float().mean()
        print(
            f"top-{k} overlap beam vs generate: {overlap(beam_items[:, :k], gen_items[:, :k]):.3f}"
            f" (identical ordered lists for {same:.1%} of users)"
        )
    if not args.skip_exact:
        ex_top = rank_items(exact, k)
        best_in = (beam_items == ex_top[:, :1]).any(1).float().mean()
        print(f"top-{k} overlap beam vs exact: {overlap(beam_items[:, :k], ex_top):.3f}")
        print(f"exact best item among the {beams} beams: {best_in:.1%} of users")
        _print_floor(model, trie, prompts, vocab, t_exact)


def _print_floor(model, trie, prompts, vocab, t_exact) -> None:
    positions = internal_positions(trie)
    prompt_tokens = sum(map(len, prompts)) / len(prompts)
    per_user = positions + prompt_tokens
    tok_s = dense_tokens_per_s(model, vocab)
    floor_s = per_user / tok_s
    actual_s = t_exact / len(prompts)
    print(
        f"exact floor: {positions} trie positions + {prompt_tokens:.1f} prompt tokens per user, "
        f"{per_user * flops_per_token(model) / 1e9:.3f} GFLOP/user; dense one-token forwards run "
        f"at {tok_s:.0f} tokens/s -> floor {floor_s * 1e3:.1f} ms/user, achieved "
        f"{actual_s * 1e3:.1f} ms/user ({floor_s / actual_s:.1%} of floor speed)"
    )


def run_folder_data(run_dir: str) -> tuple[nn.Module, BenchData]:
    """The selected model of a run and its test users' prompts (paraphrase 0)."""
    from ilrec.runs.setup import load_setup, load_trained, make_encoder, read_run

    run, config = read_run(run_dir)
    setup = load_setup(config)
    model, tokenizer = load_trained(run)
    encoder = make_encoder(setup, tokenizer)
    prompts = [encoder.prompt_ids(e.history) for e in setup.splits.test]
    data = BenchData(prompts, encoder.item_table(), tokenizer.pad_token_id, tokenizer.eos_token_id)
    return model.float().eval(), data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", help="saved Hugging Face causal LM folder")
    src.add_argument("--tiny", action="store_true", help="random small Llama + synthetic data")
    src.add_argument("--run", help="an `ilrec train` run folder: its model, test prompts, items")
    parser.add_argument("--data", help=".pt file (keys: prompts, item_tokens, pad/eos_token_id)")
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--beams", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16, help="users per beam batch")
    parser.add_argument("--generate-batch-size", type=int, default=16)
    parser.add_argument("--exact-batch-size", type=int, default=4)
    parser.add_argument("--node-chunk", type=int, default=128)
    parser.add_argument("--tiny-items", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--skip-exact", action="store_true")
    parser.add_argument(
        "--no-eos", action="store_true", help="score identifiers without EOS (skips generate)"
    )
    args = parser.parse_args()
    args.skip_generate = args.skip_generate or args.no_eos
    torch.set_num_threads(args.threads)
    if args.run:
        model, data = run_folder_data(args.run)
    elif args.tiny and args.data is None:
        data, vocab = synthetic_data(args.users, args.tiny_items, levels=3, codebook=12)
        model = tiny_model(vocab)
    else:
        if args.data is None:
            parser.error("--model-dir needs --data")
        data = load_data(args.data)
        if args.tiny:
            model = tiny_model(int(data.item_tokens.max()) + 1)
        else:
            model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32).eval()
    run(model, data, args.users, args.beams, args)


if __name__ == "__main__":
    main()
