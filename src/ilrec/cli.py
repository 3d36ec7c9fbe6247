"""The ``ilrec`` command line: thin subcommands (parse → load config → build → run).

Heavy libraries are imported inside the subcommands so ``ilrec --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a dataset folder and print its statistics")
    p.add_argument("--data", required=True, type=Path, help="dataset folder (LC-Rec format)")
    p.set_defaults(func=cmd_check)


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare", help="build a dataset folder (Amazon 2018 raw files, LastFM or synthetic)"
    )
    kinds = p.add_subparsers(dest="kind", required=True)
    a = kinds.add_parser("amazon", help="raw Amazon Review Data 2018 files -> LC-Rec format")
    a.add_argument("--reviews", required=True, type=Path, help="<Category>.json[.gz]")
    a.add_argument("--meta", required=True, type=Path, help="meta_<Category>.json[.gz]")
    a.add_argument("--out", required=True, type=Path)
    a.add_argument("--name", default=None, help="dataset name X (default: from the file name)")
    a.add_argument("--min-count", type=int, default=5, help="k of the k-core filter")
    a.add_argument("--strict", action="store_true", help="fail on the first malformed line")
    a.add_argument("--force", action="store_true", help="overwrite existing output files")
    a.set_defaults(func=cmd_prepare_amazon)
    s = kinds.add_parser("synthetic", help="generate the embedded synthetic dataset")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--users", type=int, default=3000)
    s.add_argument("--items", type=int, default=600)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--name", default="Synthetic")
    s.add_argument("--force", action="store_true", help="overwrite existing output files")
    s.set_defaults(func=cmd_prepare_synthetic)
    f = kinds.add_parser(
        "lastfm", help="LLaRA/S-DPO LastFM pickles -> LC-Rec format + 20-candidate files"
    )
    f.add_argument("--src", required=True, type=Path, help="folder with the *.df, id2name.txt")
    f.add_argument("--out", required=True, type=Path, help="writes OUT/LastFM")
    f.add_argument(
        "--protocol",
        choices=["rows", "last", "both"],
        default="both",
        help="evaluation rows: rows = S-DPO (len_seq >= 3), last = LLaRA's last row per user",
    )
    f.add_argument("--force", action="store_true", help="overwrite existing output files")
    f.set_defaults(func=cmd_prepare_lastfm)
    c = kinds.add_parser(
        "candidates",
        help="20-candidate files (S-DPO's sampler) for an LC-Rec dataset's leave-one-out split",
    )
    c.add_argument("--data", required=True, type=Path, help="dataset folder (read only)")
    c.add_argument("--out", required=True, type=Path, help="writes OUT/<X>.candidates.*.jsonl")
    c.add_argument("--n", type=int, default=20, help="candidates per row (target included)")
    c.add_argument("--max-history", type=int, default=20, help="history items kept per row")
    c.add_argument("--force", action="store_true", help="overwrite existing output files")
    c.set_defaults(func=cmd_prepare_candidates)


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build semantic IDs (RQ-VAE) and write X.index.json")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument(
        "--embeddings",
        type=Path,
        default=None,
        help=".npy item embeddings (default: item texts with the sentence encoder)",
    )
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--codebook", type=int, default=256, help="codes per level")
    p.add_argument("--epochs", type=int, default=None, help="RQ-VAE epochs (default 40)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite an existing X.index.json")
    p.set_defaults(func=cmd_index)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune a causal LM as a generative recommender")
    p.add_argument("-c", "--config", type=Path, default=None, help="YAML config (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. objective.beta=0.1")
    _add_run_folder_flags(p)
    p.set_defaults(func=cmd_train)


def _add_run_folder_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run (from step 0 if it had no checkpoint yet)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the run's train.threads; 0 = all cores); use 1 per "
        "process when other jobs share the cores",
    )


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align",
        help="a stage from a finished run: DPO, S-DPO, RosePO, SPRec, GRPO or continued SFT "
        "(align.method)",
    )
    p.add_argument(
        "--from", dest="from_run", required=True, type=Path, help="the finished run to start from"
    )
    p.add_argument("-c", "--config", type=Path, default=None, help="configs/align/*.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. align.beta=0.5")
    _add_run_folder_flags(p)
    p.set_defaults(func=cmd_align)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="full-ranking HR/NDCG (or candidate ranking) of a trained run"
    )
    p.add_argument("--run", required=True, type=Path, help="run folder written by `ilrec train`")
    p.add_argument("--split", choices=["test", "valid"], default="test")
    p.add_argument(
        "--mode",
        choices=["beam", "exact", "ground", "candidates"],
        default="beam",
        help="beam: trie-constrained beam search; exact: score every item; ground: BIGRec "
        "free generation + embedding grounding (title format); candidates: a "
        "data.task=candidates run, exact ranking of the candidates + greedy generation",
    )
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--users",
        type=int,
        default=0,
        help="evaluate only the first N users (0 = all); results go to eval_<split>_<mode>_first<N>.*",
    )
    p.add_argument(
        "--reasoning-tokens",
        type=int,
        default=0,
        help="text formats: the model first writes a greedy rationale of up to N tokens and "
        "' Answer: ' (RLVR-reasoning); results go to eval_<split>_<mode>_reasoning<N>*",
    )
    add_threads_argument(p)
    p.set_defaults(func=cmd_evaluate)


def _add_recommend(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend", help="top-k items for JSONL histories from a trained run (JSONL out)"
    )
    p.add_argument("--run", required=True, type=Path, help="run folder written by `ilrec train`")
    p.add_argument(
        "--input",
        required=True,
        type=Path,
        help='JSONL, one {"user": ..., "history": [item, ...]} per line (oldest first)',
    )
    p.add_argument("--output", type=Path, default=None, help="output JSONL (default: stdout)")
    p.add_argument("--k", type=int, default=10, help="items per history")
    p.add_argument("--mode", choices=["beam", "exact"], default="beam")
    p.add_argument(
        "--beams", type=int, default=20, help="beam width in beam mode (as `evaluate --beams`)"
    )
    p.add_argument(
        "--id-type",
        choices=["internal", "original"],
        default="internal",
        help="input item ids: internal 0..n-1, or original ids from X.item2id",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="report bad input lines on stderr and process the rest (default: fail, write nothing)",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing --output file")
    add_threads_argument(p)
    p.set_defaults(func=cmd_recommend)


def _add_train_cf(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-cf", help="train a classic recommender (SASRec, GRU4Rec, ...)")
    p.add_argument("-c", "--config", type=Path, required=True, help="configs/cf/<model>.yaml")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. epochs=50")
    p.add_argument("--resume", action="store_true")
    p.set_defaults(func=cmd_train_cf)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="evaluated runs side by side: mean ± std over seeds, paired Δ vs baseline"
    )
    p.add_argument(
        "--group",
        nargs="+",
        action="append",
        required=True,
        metavar=("NAME", "RUN"),
        help="a method and its run folders (seeds); repeat per method, the first is the baseline",
    )
    p.add_argument("--split", choices=["test", "valid"], default="test")
    p.add_argument("--mode", choices=["beam", "exact", "ground", "candidates"], default="exact")
    p.add_argument(
        "--users",
        type=int,
        default=0,
        help="the runs' `evaluate --users N` results (else the first N users of a whole-split "
        "evaluation, e.g. a classic model's, or of the smallest `--users M` one with M > N)",
    )
    p.add_argument(
        "--reasoning-tokens",
        type=int,
        default=0,
        help="the runs' `evaluate --reasoning-tokens N` results",
    )
    p.add_argument(
        "--metric",
        default=None,
        help="metric of the paired difference (default ndcg@10; ndcg@5 in candidates mode)",
    )
    p.add_argument("--bootstrap", type=int, default=10_000, help="bootstrap resamples")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    p.add_argument(
        "--plot", type=Path, default=None, help="also draw the comparison into this PNG file"
    )
    p.add_argument(
        "--curves",
        type=Path,
        default=None,
        help="also draw every run's validation curve (the metric by epoch) into this PNG file",
    )
    p.add_argument(
        "--force", action="store_true", help="overwrite an existing --out/--plot/--curves file"
    )
    p.set_defaults(func=cmd_compare)


def _add_archive(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "archive",
        help="copy runs' result files (config, logs, evaluations, rankings) without weights",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run folders")
    p.add_argument("--out", required=True, type=Path, help="writes OUT/<run folder name>/")
    p.add_argument(
        "--top", type=int, default=10, help="keep each user's top TOP ranked items (metrics@k<=TOP)"
    )
    p.add_argument("--force", action="store_true", help="overwrite files of an earlier archive")
    p.add_argument(
        "--root",
        type=Path,
        help="the study folder, written as {root} in archived files (default: each run's parent)",
    )
    p.set_defaults(func=cmd_archive)


def cmd_archive(args: argparse.Namespace) -> int:
    from ilrec.evaluation.archive import archive_runs

    for run, written in archive_runs(args.runs, args.out, args.top, args.force, args.root).items():
        size = sum(p.stat().st_size for p in written)
        print(f"{run} -> {args.out / run.name}: {len(written)} files, {size / 1e6:.2f} MB")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from ilrec.data.dataset import dataset_statistics, load_dataset

    data = load_dataset(args.data, require_index=False)
    print(f"{data.root}: {data.name}")
    for key, value in dataset_statistics(data).items():
        print(f"  {key:>22}: {value}")
    return 0


def cmd_prepare_amazon(args: argparse.Namespace) -> int:
    from ilrec.data.amazon import prepare_amazon

    report = prepare_amazon(
        args.reviews,
        args.meta,
        args.out,
        name=args.name,
        min_count=args.min_count,
        strict=args.strict,
        force=args.force,
    )
    print(report)
    return 0


def cmd_prepare_synthetic(args: argparse.Namespace) -> int:
    from ilrec.data.synthetic import generate_synthetic

    report = generate_synthetic(
        args.out,
        n_users=args.users,
        n_items=args.items,
        seed=args.seed,
        name=args.name,
        force=args.force,
    )
    print(report)
    return 0


def cmd_prepare_lastfm(args: argparse.Namespace) -> int:
    from ilrec.data.lastfm import prepare_lastfm

    report = prepare_lastfm(args.src, args.out, protocol=args.protocol, force=args.force)
    print(report.summary())
    return 0


def cmd_prepare_candidates(args: argparse.Namespace) -> int:
    from ilrec.data.candidates import prepare_candidates

    report = prepare_candidates(args.data, args.out, args.n, args.max_history, args.force)
    print(report)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from ilrec.identifiers.index_command import index_dataset

    index_dataset(
        args.data, args.embeddings, args.levels, args.codebook, args.epochs, args.seed, args.force
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ilrec.config import load_config
    from ilrec.training.run import train

    config = load_config(args.config, args.overrides)
    result = train(config, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(result, indent=2))
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from ilrec.alignment.stage import align
    from ilrec.config import load_stage_config

    config = load_stage_config(args.from_run, args.config, args.overrides)
    result = align(config, resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(result, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ilrec.evaluation.report import evaluate_run

    evaluate_run(
        args.run,
        args.split,
        args.mode,
        args.beams,
        args.batch_size,
        args.users,
        reasoning_tokens=args.reasoning_tokens,
        threads=args.threads,
    )
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from ilrec.serving import recommend_file

    recommend_file(
        args.run,
        args.input,
        args.output,
        k=args.k,
        mode=args.mode,
        id_type=args.id_type,
        batch_size=args.batch_size,
        beams=args.beams,
        skip_bad_lines=args.skip_bad_lines,
        threads=args.threads,
        force=args.force,
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ilrec.data.io import atomic_write_text
    from ilrec.evaluation.compare import compare_runs, format_comparison, plot_comparison

    for path in (args.out, args.plot, args.curves):
        if path is not None and path.exists() and not args.force:
            raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    groups: dict[str, list[Path]] = {}
    for name, *runs in args.group:
        if not runs or name in groups:
            raise ValueError(f"--group {name}: give a new method name, then its run folders")
        groups[name] = [Path(r) for r in runs]
    candidates = args.mode == "candidates"  # HR@1 / HR@5 / NDCG@5 over the candidates
    comparison = compare_runs(
        groups,
        args.split,
        args.mode,
        args.users,
        ks=(1, 5) if candidates else (5, 10),
        delta_metric=args.metric or ("ndcg@5" if candidates else "ndcg@10"),
        n_boot=args.bootstrap,
        reasoning_tokens=args.reasoning_tokens,
    )
    table = format_comparison(comparison)
    print(table, end="")
    if args.out is not None:
        atomic_write_text(args.out, table)
    if args.plot is not None:
        plot_comparison(comparison, args.plot)
    if args.curves is not None:
        from ilrec.evaluation.plots import plot_validation_curves

        plot_validation_curves(groups, comparison.delta_metric, args.curves)
    return 0


def cmd_train_cf(args: argparse.Namespace) -> int:
    from ilrec.training.cf import load_cf_config, train_cf

    config = load_cf_config(args.config, args.overrides)
    result = train_cf(config, args.data, args.out, resume=args.resume)
    print(json.dumps(result, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ilrec",
        description="Causal LMs as generative sequential recommenders, with ILRec.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_check,
        _add_prepare,
        _add_index,
        _add_train,
        _add_align,
        _add_evaluate,
        _add_recommend,
        _add_compare,
        _add_archive,
        _add_train_cf,
    ):
        add(sub)
    return parser


# Errors users cause (bad files, bad configs) are reported in one line, without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, ImportError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.verbose:
        logging.getLogger("ilrec").setLevel(logging.DEBUG)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        if args.verbose:
            raise
        print(f"ilrec {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from ilrec.training.signals import TrainingStopped  # loaded already if it was raised

        if not isinstance(e, TrainingStopped):
            raise
        print(f"ilrec {args.command}: {e}", file=sys.stderr)
        return 128 + e.signum  # the shell's code for a process ended by that signal


if __name__ == "__main__":
    sys.exit(main())
