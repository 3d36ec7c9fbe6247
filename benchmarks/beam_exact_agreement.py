"""How much of the exact full ranking beam search recovers, per run, on the same users.

Reads the rankings files two ``ilrec evaluate`` calls wrote (exact on the first N users, beam
on the first M >= N users) and prints the mean top-10 overlap and how often the exact best
item is among the beams.

Example:
    python benchmarks/beam_exact_agreement.py --exact-users 1000 --beam-users 5000 \\
        runs/sft_s0 runs/ilrec_s0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ilrec.evaluation.result_files import eval_stem, read_rankings


def agreement(run: Path, split: str, exact_users: int, beam_users: int) -> tuple[float, float]:
    exact = read_rankings(run / f"{eval_stem(split, 'exact', exact_users)}.rankings.tsv")
    beam = read_rankings(run / f"{eval_stem(split, 'beam', beam_users)}.rankings.tsv")
    n = len(exact.users)
    if beam.users[:n] != exact.users:
        raise ValueError(f"{run}: the beam file does not start with the exact file's users")
    e10, b10, beams = exact.ranked[:, :10], beam.ranked[:n, :10], beam.ranked[:n]
    overlap = (e10[:, :, None] == b10[:, None, :]).any(2).float().mean().item()
    best_found = (beams == e10[:, :1]).any(1).float().mean().item()
    return overlap, best_found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--exact-users", type=int, default=0)
    parser.add_argument("--beam-users", type=int, default=0)
    args = parser.parse_args()
    for run in args.runs:
        overlap, best = agreement(run, args.split, args.exact_users, args.beam_users)
        print(f"{run}: top-10 overlap {overlap:.3f}, exact best among the beams {best:.3f}")


if __name__ == "__main__":
    main()
