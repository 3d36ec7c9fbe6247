"""Write the study files of the Instruments experiments (run them with run_study.py).

    python benchmarks/studies/make_studies.py
    python benchmarks/run_study.py benchmarks/studies/instruments_sft.yaml --root /elsewhere/runs/instruments
    python benchmarks/run_study.py benchmarks/studies/instruments_alignment.yaml --root /elsewhere/runs/instruments

``instruments_sft.yaml``: the converged SFT runs (3 seeds), then ILRec as in the paper with
the same protocol (3 seeds), each evaluated on the whole validation and test splits (beam).
``instruments_ilrec_sweep.yaml``: ILRec's factors one at a time on the `deep` model.
``games.yaml``: one seed of every language-model method on Games (SFT, ILRec, the alignment
methods at their Instruments-selected settings). ``instruments_alignment.yaml``: every
alignment method from the SFT run of seed 0 with a small
validation grid (phase 1), evaluated on the whole validation split; the validation-selected
configuration of each method then runs from seeds 1 and 2 (phase 2: record the selection in
``SELECTED`` once a method's grid has run, and regenerate) and everything selected is evaluated on
test (beam, all users; exact, the first ``EXACT_USERS`` users).
``instruments_exact_grouped.yaml``: the exact-ranking rows of SFT, ILRec and the DPO family
from one SFT run with length-grouped batches (sized to fit one session).
``instruments_grouped_seeds.yaml``: SFT and ILRec with length-grouped batches, three seeds.
``instruments_final.yaml``, ``games_final.yaml``: the final table (issue 11): grouped SFT and
ILRec, three seeds, each ranked by beam on all test users and exactly on the first
``EXACT_USERS`` (on Instruments the runs of ``instruments_grouped_seeds.yaml``).
``instruments_depth_grouped.yaml``: SFT and ILRec points on the `deep` model (grouped, screening),
then the middle layers confirmed over three seeds, then Table 6 and Figure 5's points.
The CF model (RosePO's oracle, ILRec's CRR reward) is ``{root}/cf/sasrec``.

Compare runs trained on one machine: a run retrained on another CPU family drifts by as much as
the effects measured here (SFT seed 0, Intel vs AMD: test NDCG@10 −0.0007), so a study resumed on
a new machine retrains its reference runs instead of reusing their archives.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from ilrec.data.io import atomic_write_text

HERE = Path(__file__).resolve().parent
SEEDS = (0, 1, 2)
# exact ranking of every item for a fixed test subset (issue 11: at least 2,000 users; ~1 s per
# user on one thread for the small model). Seed 0's SFT and ILRec were first run on 1,000.
EXACT_USERS = 2000
ALIGN_EXAMPLES = 30_000  # training prompts per alignment run (a seeded subsample of 131,984)
CF_RUN = "{root}/cf/sasrec"  # the study's SASRec: RosePO's oracle, ILRec's CRR reward
CF_EPOCHS = 100  # a cap only: early stopping (patience 5) ends every classic model before it

# method -> config, common overrides, {tag: grid point overrides}; phase 1 runs the first
# tag of every method, then the second, ... The grid goes down in lr: at 1e-4 (the official
# setting) DPO and S-DPO lowered the validation NDCG@10 of the SFT model they started from
# (the first two runs of phase 1), so the methods run after them start at 1e-5.
GRID = {
    "dpo": (
        "dpo",
        [],
        {
            "b0.1_lr1e-4": ["align.beta=0.1", "train.lr=1e-4"],
            "b0.1_lr1e-5": ["align.beta=0.1", "train.lr=1e-5"],
            "b0.5_lr1e-5": ["align.beta=0.5", "train.lr=1e-5"],
        },
    ),
    "sdpo": (
        "sdpo",
        [],
        {
            "b1_lr1e-4": ["align.beta=1.0", "train.lr=1e-4"],
            "b1_lr1e-5": ["align.beta=1.0", "train.lr=1e-5"],
            "b0.1_lr1e-5": ["align.beta=0.1", "train.lr=1e-5"],
        },
    ),
    "grpo": (
        "grpo",
        ["align.examples=20000", "train.eval_every=400"],
        {
            "lr1e-5": ["train.lr=1e-5"],
            "lr1e-4": ["train.lr=1e-4"],
        },
    ),
    "rosepo": (
        "rosepo",
        [f"align.oracle_run={CF_RUN}"],
        {
            "b0.1_lr1e-5": ["align.beta=0.1", "train.lr=1e-5"],
            "b0.1_lr1e-4": ["align.beta=0.1", "train.lr=1e-4"],
        },
    ),
    "sprec": (
        "sprec",
        ["align.examples=10000"],
        {
            "lr1e-5": ["train.lr=1e-5"],
            "lr1e-4": ["train.lr=1e-4"],
        },
    ),
}


# phase 1's selection on the whole validation split (BENCHMARKS.md, "Alignment baselines ..."):
# method -> grid tag; a method enters phase 2 (seeds 1-2, test) once its grid has run
SELECTED = {
    "grpo": "lr1e-5",  # -0.0007 vs -0.0044 (lr 1e-4) NDCG@10 against SFT
    "rosepo": "b0.1_lr1e-5",  # -0.0045 vs -0.0173 (lr 1e-4)
    "dpo": "b0.5_lr1e-5",  # -0.0021 vs -0.0029 (beta 0.1), -0.0177 (beta 0.1, lr 1e-4)
    "sdpo": "b1_lr1e-5",  # -0.0022 vs -0.0040 (beta 0.1), -0.0031 (beta 1, lr 1e-4)
    "sprec": "lr1e-5",  # -0.0025 vs -0.0229 (lr 1e-4)
}


def step(name: str, args: list[str], done: str, after: str | list[str] | None = None) -> dict:
    record = {"name": name, "args": args, "done": done}
    if after:
        record["after"] = after
    return record


def evaluate(run: str, split: str, mode: str = "beam", users: int = 0, name: str = "") -> dict:
    """``ilrec evaluate``; the step is named after the run folder unless ``name`` is given (two
    studies sharing a root and a folder name would share the step's log and claim)."""
    args = ["evaluate", "--run", run, "--split", split, "--mode", mode]
    args += ["--batch-size", "4" if mode == "exact" else "32"]
    stem = f"eval_{split}_{mode}"
    if users:
        args += ["--users", str(users)]
        stem += f"_first{users}"
    name = name or f"{Path(run).name}_{split}_{mode}" + (f"_{users}" if users else "")
    return step(name, args, f"{run}/{stem}.json")


def train_step(name: str, config: str, run: str, seed: int = 0, overrides=()) -> dict:
    """``ilrec train -c configs/study/<config>.yaml``; an ILRec config gets the study's CF run
    as its CRR reward and waits for it."""
    args = ["train", "-c", f"configs/study/{config}.yaml", f"train.seed={seed}"]
    args += [f"train.output_dir={run}", *overrides]
    after = None
    if "ilrec" in config:
        args.append(f"objective.cf_run={CF_RUN}")
        after = f"{CF_RUN}/final.json"
    return step(name, args, f"{run}/train_summary.json", after)


def cf_step(model: str, dataset: str, *overrides: str) -> dict:
    """``ilrec train-cf``: a classic model on ``../shared/data/<dataset>``, in
    ``{root}/cf/<model>`` (its final evaluation writes the per-user rankings ``ilrec compare``
    pairs with the language models')."""
    run = f"{{root}}/cf/{model}"
    args = ["train-cf", "-c", f"configs/cf/{model}.yaml", "--data", f"../shared/data/{dataset}"]
    args += ["--out", run, *overrides, "progress=false"]
    return step(f"cf_{model}", args, f"{run}/final.json")


def sasrec_step(dataset: str, *overrides: str) -> dict:
    """The study's SASRec (``CF_RUN``: the CRR reward of every ILRec run)."""
    return cf_step("sasrec", dataset, *overrides)


def align_after(method: str) -> list[str]:
    """What a seed-0 alignment step waits for: the SFT run, and RosePO also its CF oracle."""
    sft = "{root}/sft_s0/train_summary.json"
    return [sft, f"{CF_RUN}/final.json"] if method == "rosepo" else [sft]


def sft_study() -> dict:
    """Seed-major (SFT and ILRec of seed 0, then of seed 1, ...) so that a paired comparison
    exists after the first two runs; the slow exact evaluations come last."""
    steps, exact = [], []
    for seed in SEEDS:
        for kind, config in (("sft", "instruments_sft"), ("ilrec", "instruments_ilrec")):
            run = f"{{root}}/{kind}_s{seed}"
            steps.append(train_step(f"{kind}_s{seed}", config, run, seed))
            steps.append(evaluate(run, "valid"))
            steps.append(evaluate(run, "test"))
            exact.append(evaluate(run, "test", "exact", EXACT_USERS))
    steps += exact
    return {
        "root": "runs/instruments",
        "env": {"OMP_NUM_THREADS": "1"},
        "steps": steps,
    }


def align_run(method: str, tag: str, seed: int) -> tuple[str, list[str]]:
    config, common, grid = GRID[method]
    run = f"{{root}}/align/{method}_{tag}_s{seed}"
    args = ["align", "--from", f"{{root}}/sft_s{seed}", "-c", f"configs/align/{config}.yaml"]
    args += [f"train.output_dir={run}", f"train.seed={seed}", f"align.seed={seed}"]
    examples = (
        []
        if any(a.startswith("align.examples=") for a in common)
        else [f"align.examples={ALIGN_EXAMPLES}"]
    )
    args += ["train.threads=1", *examples, *common, *grid[tag]]
    return run, args


SWEEP_BUDGET = ["model.preset=deep", "train.epochs=3", "train.patience=0"]
# One factor at a time around the centre (configs/study/instruments_ilrec.yaml: k 1, alpha 0.8,
# beta 0.2, lambda 0.1, mu 0.1) on the 12-layer `deep` model: the paper's ranges (Table 6,
# Figure 5), layer choices (Appendix A.5 scaled to 12 layers), heads, negatives, the project's
# own options. Layers count from the end: -2 is the layer just below the final one.
TABLE6_ALPHAS = (0.1, 0.5, 1.0, 1.2)  # the paper's Table 6, one at a time around the centre
TABLE6_BETAS = (0.005, 0.01, 0.05, 0.1)
SWEEP = {
    "center": [],
    **{f"alpha{a}": [f"objective.alpha={a}"] for a in TABLE6_ALPHAS},
    **{f"beta{b}": [f"objective.beta={b}"] for b in TABLE6_BETAS},
    "sign_aware": ["objective.penalty=sign_aware"],
    **{f"k{k}": [f"objective.k={k}"] for k in (0, 2, 4)},
    "layers_upper": ["objective.layers=[-2,-3,-4]"],
    "layers_middle": ["objective.layers=[-5,-6,-7]"],
    "layers_lower": ["objective.layers=[-8,-9,-10]"],
    "separate_head": ["objective.head=separate"],
    **{f"lambda{v}": [f"objective.lambda_cpd={v}"] for v in (0.01, 0.001)},
    **{f"mu{v}": [f"objective.mu_crr={v}"] for v in (0.01, 0.0)},
    **{f"max_neg{n}": [f"objective.max_negatives={n}"] for n in (4, 16)},
}
# Item 4's two options of the project's own (hardness weights, an additive margin) were points
# here and in the depth and final studies until they lost on validation; they were removed
# after commit 94bbfe2, which still generates those studies with them.


def ilrec_sweep_study() -> dict:
    """Where does ILRec's gain appear (issue 11 items 2-4)? SFT and every sweep point of ILRec
    on the `deep` model at a screening budget (3 epochs, seed 0), each evaluated on the whole
    validation split; compare each with SFT by `ilrec compare --split valid`."""
    sft = "{root}/sweep/sft"
    steps = [train_step("sweep_sft", "instruments_sft", sft, overrides=SWEEP_BUDGET)]
    steps.append(evaluate(sft, "valid"))
    for name, overrides in SWEEP.items():
        run = f"{{root}}/sweep/ilrec_{name}"
        steps.append(
            train_step(
                f"sweep_ilrec_{name}",
                "instruments_ilrec",
                run,
                overrides=[*SWEEP_BUDGET, *overrides],
            )
        )
        steps.append(evaluate(run, "valid"))
    return {"root": "runs/instruments", "env": {"OMP_NUM_THREADS": "1"}, "steps": steps}


def point_train_step(step_name: str, run: str, point: str | None, seed: int, budget) -> dict:
    """The training step of SFT (``point`` None) or of ILRec at sweep point ``point``."""
    config, overrides = (
        ("instruments_sft", []) if point is None else ("instruments_ilrec", SWEEP[point])
    )
    return train_step(step_name, config, run, seed, [*budget, *overrides])


# the last: shared vs separate heads (item 2)
DEPTH_POINTS = ("center", "k4", "k2", "layers_middle", "separate_head")
# phase 2 (after the first screen, 2026-12-01): the point whose paired interval was above 0,
# from two more seeds with SFT's, then the rest of Appendix A.5's layer choices
DEPTH_CONFIRM = "layers_middle"
DEPTH_MORE_POINTS = ("layers_upper", "layers_lower")
# phase 3 (2026-12-02): the rest of Figure 5 (k 0; k 3 is `layers_upper`) and Table 6's one-at-a-
# time alpha and beta values (the centre is alpha 0.8, beta 0.2), then item 2's remaining
# factors
DEPTH_PHASE3_POINTS = (
    "k0",
    *(f"alpha{a}" for a in TABLE6_ALPHAS),
    *(f"beta{b}" for b in TABLE6_BETAS),
    "sign_aware",
    "lambda0.01",
    "mu0.0",
    "max_neg4",
)


def depth_screen_study() -> dict:
    """A session-sized look at depth (issue 11 item 2) on the 12-layer `deep` model, the
    sweep's screening budget with length-grouped batches (3x cheaper), each run evaluated on
    the whole validation split. Phase 1: SFT and ILRec at k 1, 4, 2, the middle layers and a
    separate head (seed 0). Phase 2: SFT and the middle layers from seeds 1 and 2
    (``sft_s<seed>``, ``ilrec_layers_middle_s<seed>``), then the upper and lower layers
    (seed 0). Phase 3: Figure 5's k 0 and Table 6's alpha and beta values, then the remaining
    factors of item 2 (seed 0). The study's own SASRec (the CRR reward) comes first."""
    budget = [*SWEEP_BUDGET, "train.group_by_length=true"]
    folder = "{root}/depth_grouped"
    steps = [sasrec_step("Instruments", "epochs=60")]

    def pair(name: str, point: str | None, seed: int = 0) -> None:
        run = f"{folder}/{name}"
        steps.append(point_train_step(f"depth_{name}", run, point, seed, budget))
        steps.append(evaluate(run, "valid"))

    pair("sft", None)
    for point in DEPTH_POINTS:
        pair(f"ilrec_{point}", point)
    for seed in (1, 2):
        pair(f"sft_s{seed}", None, seed)
        pair(f"ilrec_{DEPTH_CONFIRM}_s{seed}", DEPTH_CONFIRM, seed)
    for point in (*DEPTH_MORE_POINTS, *DEPTH_PHASE3_POINTS):
        pair(f"ilrec_{point}", point)
    return {"root": "runs/instruments_grouped", "env": {"OMP_NUM_THREADS": "1"}, "steps": steps}


def depth_full_study() -> dict:
    """The depth screen's finalist at the full budget (issue 11: screen at a reduced budget,
    confirm only the finalists at the full one). At 3 epochs the 12-layer model was far from
    converged and SFT's validation NDCG@10 spread 0.068-0.081 over three seeds, twice the
    middle layers' gain: here the `deep` model trains like the converged protocol (10-epoch
    cosine, early stopping, patience 3), length-grouped batches. Seed 0 first: SFT, the middle
    layers and the paper's centre (k 1), each on the whole validation and test splits; then SFT
    and the middle layers from seeds 1 and 2. Last, the size question (is capacity the limit?):
    SFT on the `wide` preset (hidden 256, 4 layers) under the same protocol, seeds 0-2, to set
    beside this `deep` SFT and the `small` SFT of ``instruments_grouped_seeds.yaml``; then the
    paper's centre from seeds 1 and 2, and exact ranking (the first ``EXACT_USERS`` test users)
    of seeds 1 and 2's runs. Shares the depth screen's root and SASRec."""
    folder = "{root}/depth_full"
    steps = [sasrec_step("Instruments", "epochs=60")]

    def run(name: str, point: str | None, seed: int, preset: str = "deep") -> None:
        path = f"{folder}/{name}"
        budget = [f"model.preset={preset}", "train.group_by_length=true"]
        steps.append(point_train_step(f"full_{name}", path, point, seed, budget))
        for split in ("valid", "test"):  # named apart from the screen's steps (same root)
            steps.append(evaluate(path, split, name=f"full_{name}_{split}_beam"))

    run("sft", None, 0)
    run(f"ilrec_{DEPTH_CONFIRM}", DEPTH_CONFIRM, 0)
    run("ilrec_center", "center", 0)
    for seed in (1, 2):
        run(f"sft_s{seed}", None, seed)
        run(f"ilrec_{DEPTH_CONFIRM}_s{seed}", DEPTH_CONFIRM, seed)
    run("sft_wide", None, 0, preset="wide")
    for seed in (1, 2):
        run(f"sft_wide_s{seed}", None, seed, preset="wide")
    for seed in (1, 2):  # the paper's centre beside the SFT pairs above
        run(f"ilrec_center_s{seed}", "center", seed)
    for seed in (1, 2):  # exact ranking (resumable; seed 0's runs were on another machine)
        for name in ("sft", f"ilrec_{DEPTH_CONFIRM}", "ilrec_center"):
            path, stem = f"{folder}/{name}_s{seed}", f"full_{name}_s{seed}_test_exact"
            steps.append(evaluate(path, "test", "exact", EXACT_USERS, name=stem))
    return {"root": "runs/instruments_grouped", "env": {"OMP_NUM_THREADS": "1"}, "steps": steps}


def alignment_study(selected: dict[str, str]) -> dict:
    steps = []
    # phase 1: the grid on seed 0, first tags first
    for rank in range(max(len(g[2]) for g in GRID.values())):
        for method, (_, _, grid) in GRID.items():
            tags = list(grid)
            if rank >= len(tags):
                continue
            run, args = align_run(method, tags[rank], 0)
            steps.append(
                step(
                    f"{method}_{tags[rank]}_s0",
                    args,
                    f"{run}/train_summary.json",
                    align_after(method),
                )
            )
            steps.append(evaluate(run, "valid"))
    # phase 2: the selected point of each method from every seed, on test; seed-major, so
    # that the seed-0 test rows do not wait for the SFT runs of the later seeds, and the
    # slow exact evaluations after every beam row
    for seed in SEEDS:
        for method, tag in selected.items():
            run, args = align_run(method, tag, seed)
            if seed:
                steps.append(
                    step(
                        f"{method}_{tag}_s{seed}",
                        args,
                        f"{run}/train_summary.json",
                        f"{{root}}/sft_s{seed}/train_summary.json",
                    )
                )
                steps.append(evaluate(run, "valid"))
            steps.append(evaluate(run, "test"))
    for seed in SEEDS:
        for method, tag in selected.items():
            steps.append(evaluate(align_run(method, tag, seed)[0], "test", "exact", EXACT_USERS))
    return {"root": "runs/instruments", "env": {"OMP_NUM_THREADS": "1"}, "steps": steps}


def games_study(selected: dict[str, str]) -> dict:
    """One seed of every language-model method on Games: SFT and ILRec (the Instruments
    protocol), the classic SASRec (RosePO's oracle, ILRec's CRR reward), and each alignment
    method at the configuration selected on Instruments' validation split (the default
    grid point when phase 1 has not selected one)."""
    steps = [sasrec_step("Games")]
    for kind in ("sft", "ilrec"):
        run = f"{{root}}/{kind}_s0"
        steps.append(train_step(f"{kind}_s0", f"games_{kind}", run))
        steps += [
            evaluate(run, "valid"),
            evaluate(run, "test"),
            evaluate(run, "test", "exact", EXACT_USERS),
        ]
    for method in GRID:
        tag = selected.get(method, next(iter(GRID[method][2])))
        run, args = align_run(method, tag, 0)
        steps.append(step(f"{method}_{tag}_s0", args, f"{run}/train_summary.json"))
        steps += [
            evaluate(run, "valid"),
            evaluate(run, "test"),
            evaluate(run, "test", "exact", EXACT_USERS),
        ]
    return {"root": "runs/games", "env": {"OMP_NUM_THREADS": "1"}, "steps": steps}


GROUPED_EXACT_USERS = 1000  # a session's budget: 11-15 min per model on one shared thread
GROUPED_METHODS = ("dpo", "sdpo", "rosepo", "sprec")


def grouped_exact_study(selected: dict[str, str]) -> dict:
    """Issue 10's exact rows: SFT with length-grouped batches (seed 0; 3x faster, test NDCG@10
    no lower than the random-order runs'), ILRec on the same protocol, and each DPO-family method
    at its selected setting from that SFT run (their own batches in random order, as in the
    beam rows), each ranked exactly on the first ``GROUPED_EXACT_USERS`` test users and by
    beam on all of them. Fits one session on two cores."""
    grouped = ["train.group_by_length=true"]
    steps = [
        sasrec_step("Instruments", "epochs=60"),
        train_step("sft_s0", "instruments_sft", "{root}/sft_s0", overrides=grouped),
        train_step("ilrec_s0", "instruments_ilrec", "{root}/ilrec_s0", overrides=grouped),
    ]
    runs = ["{root}/sft_s0", "{root}/ilrec_s0"]
    for method in GROUPED_METHODS:
        run, args = align_run(method, selected[method], 0)
        args.append("train.group_by_length=false")  # the SFT run's setting is inherited
        steps.append(
            step(
                f"{method}_{selected[method]}_s0",
                args,
                f"{run}/train_summary.json",
                align_after(method),
            )
        )
        runs.append(run)
    steps += [evaluate(run, "test", "exact", GROUPED_EXACT_USERS) for run in runs]
    steps += [evaluate(run, "test") for run in runs]
    return {"root": "runs/instruments_grouped", "env": {"OMP_NUM_THREADS": "1"}, "steps": steps}


def grouped_seeds_study() -> dict:
    """Does ILRec's gain over SFT survive length-grouped batches (issue 11)? SFT and ILRec,
    both grouped, seeds 0-2, each evaluated by beam on the whole test split, then on the whole
    validation split. Seed-major, so a paired comparison exists after the first pair; about
    80 min on two cores (two runners sharing the study)."""
    grouped = ["train.group_by_length=true"]
    steps = [sasrec_step("Instruments", "epochs=60")]
    valid = []
    for seed in SEEDS:
        for kind in ("sft", "ilrec"):
            run = f"{{root}}/{kind}_s{seed}"
            steps.append(train_step(f"{kind}_s{seed}", f"instruments_{kind}", run, seed, grouped))
            steps.append(evaluate(run, "test"))
            valid.append(evaluate(run, "valid"))
    return {
        "root": "runs/instruments_grouped",
        "env": {"OMP_NUM_THREADS": "1"},
        "steps": steps + valid,
    }


def final_study(dataset: str, root: str, *sasrec_overrides: str, cap_check: int = 0) -> dict:
    """Issue 11's final table on ``dataset``: SFT and ILRec as in the paper with length-grouped
    batches, seeds 0-2, each ranked by beam on every test user and exactly on the first
    ``EXACT_USERS``. On Instruments these are the runs of ``grouped_seeds_study`` (same root,
    same step names, so a run trained by either study is not trained again); a retrained run
    is not bit-identical to an earlier one (float reductions), so both rows are taken from the
    same model. Seed-major, so two runners sharing the study finish a paired SFT/ILRec seed
    before starting the next. The other classic models come last, trained to convergence
    (patience 5, at most ``CF_EPOCHS`` epochs) on the same machine, for the table's classic rows
    paired over the same users.

    ``cap_check`` epochs: after seed 0, SFT and ILRec of seed 0 again with that epoch cap (the
    cosine schedule stretched to it), and all four runs ranked on the whole validation split,
    which decides whether the cap of the remaining seeds is raised (Games SFT peaked at its
    10th and last epoch)."""
    grouped = ["train.group_by_length=true"]
    steps = [sasrec_step(dataset.capitalize(), *sasrec_overrides)]
    for seed in SEEDS:
        for kind in ("sft", "ilrec"):
            run = f"{{root}}/{kind}_s{seed}"
            config = f"{dataset}_{kind}"
            steps.append(train_step(f"{kind}_s{seed}", config, run, seed, grouped))
            steps.append(evaluate(run, "test"))
            steps.append(evaluate(run, "test", "exact", EXACT_USERS))
        if seed == 0 and cap_check:
            steps += cap_check_steps(dataset, cap_check, grouped)
    for model in ("gru4rec", "bert4rec", "caser", "bpr"):
        steps.append(cf_step(model, dataset.capitalize(), f"epochs={CF_EPOCHS}"))
    return {"root": root, "env": {"OMP_NUM_THREADS": "1"}, "steps": steps}


def cap_check_steps(dataset: str, epochs: int, overrides: list[str]) -> list[dict]:
    """Seed 0 of SFT and ILRec with ``epochs`` as the cap, and the validation ranking of these
    and of the seed-0 runs at the config's cap (the comparison that selects the cap)."""
    steps = []
    for kind in ("sft", "ilrec"):
        run = f"{{root}}/{kind}_e{epochs}_s0"
        cap = [*overrides, f"train.epochs={epochs}"]
        steps.append(train_step(f"{kind}_e{epochs}_s0", f"{dataset}_{kind}", run, 0, cap))
        steps += [evaluate(run, "valid"), evaluate(f"{{root}}/{kind}_s0", "valid")]
        steps.append(evaluate(run, "test"))
    return steps


def write(name: str, header: str, study: dict) -> None:
    """Replace the file atomically: a running ``run_study.py`` re-reads it before each step."""
    atomic_write_text(HERE / name, header + yaml.safe_dump(study, sort_keys=False, width=200))
    print(f"wrote {HERE / name} ({len(study['steps'])} steps)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--selected", nargs="*", default=[], help="method=tag: try a selection beyond SELECTED"
    )
    args = parser.parse_args()
    selected = SELECTED | dict(item.split("=", 1) for item in args.selected)
    for method, tag in selected.items():
        if method not in GRID or tag not in GRID[method][2]:
            raise SystemExit(f"--selected {method}={tag}: not in the grid")
    note = "# Generated by benchmarks/studies/make_studies.py; edit that script, not this file.\n"
    write("instruments_sft.yaml", note, sft_study())
    write("instruments_alignment.yaml", note, alignment_study(selected))
    write("instruments_ilrec_sweep.yaml", note, ilrec_sweep_study())
    write("games.yaml", note, games_study(selected))
    write("instruments_exact_grouped.yaml", note, grouped_exact_study(selected))
    write("instruments_grouped_seeds.yaml", note, grouped_seeds_study())
    write(
        "instruments_final.yaml",
        note,
        final_study("instruments", "runs/instruments_grouped", "epochs=60"),
    )
    write("games_final.yaml", note, final_study("games", "runs/games_grouped", cap_check=15))
    write("instruments_depth_grouped.yaml", note, depth_screen_study())
    write("instruments_depth_full.yaml", note, depth_full_study())


if __name__ == "__main__":
    main()
