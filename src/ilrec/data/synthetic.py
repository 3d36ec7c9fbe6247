"""A deterministic, learnable synthetic dataset in the LC-Rec format (demo and tests).

The catalogue mimics a musical-instrument shop: 6 top categories x 4 subcategories, fictional
brands that each sell in 1-2 top categories, titles "<brand> <adjective> <product> <model no.>"
(unique), short descriptions, and long-tailed (Zipf) item popularity. Users have a latent style
vector and favourite brands. Each next item follows one of these moves (probabilities in
:data:`MOVES`): a fixed *successor* of the previous item (every item has two, in complementary
subcategories, e.g. a guitar -> its strings), any item of a *complementary* subcategory
(:data:`COMPLEMENTS`, e.g. electric guitars -> strings, picks, amps, pedals), another item of
the *same* subcategory or top category, a *jump* to a random top category, or popularity *noise*.
Within a candidate set, items are drawn by popularity x style match x a bonus for brands the user
likes or already bought. Items never repeat within a history.

A first-order Markov model therefore clearly beats popularity, while taste, brands and noise
leave room for (and a ceiling on) sequential models. Files: ``X.inter.json``, ``X.item.json``,
``X.item2id``, ``X.user2id``, ``X.item_features.npy`` (one-hot top category, subcategory and
brand, plus the style vector) and ``X.index.json`` (RQ-VAE semantic IDs of the features).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ilrec.data.io import atomic_write_bytes, atomic_write_json, atomic_write_text, refuse_overwrite

__all__ = ["COMPLEMENTS", "MOVES", "TAXONOMY", "SyntheticReport", "generate_synthetic"]

# top category -> subcategory -> product nouns
TAXONOMY: dict[str, dict[str, list[str]]] = {
    "Guitars & Basses": {
        "Electric Guitars": ["Electric Guitar", "Solid-Body Guitar", "Semi-Hollow Guitar"],
        "Acoustic Guitars": ["Acoustic Guitar", "Dreadnought Guitar", "Parlor Guitar"],
        "Bass Guitars": ["Bass Guitar", "5-String Bass", "Short-Scale Bass"],
        "Ukuleles": ["Concert Ukulele", "Soprano Ukulele", "Tenor Ukulele"],
    },
    "Amplifiers & Effects": {
        "Guitar Amplifiers": ["Combo Amp", "Tube Amp Head", "Practice Amp"],
        "Bass Amplifiers": ["Bass Combo Amp", "Bass Amp Head", "Bass Cabinet"],
        "Effects Pedals": ["Overdrive Pedal", "Delay Pedal", "Chorus Pedal", "Fuzz Pedal"],
        "Multi-Effects": ["Multi-Effects Processor", "Amp Modeler", "Looper Pedal"],
    },
    "Guitar Accessories": {
        "Strings": ["Electric Guitar Strings", "Acoustic Guitar Strings", "Bass Strings"],
        "Picks": ["Guitar Picks 12-Pack", "Celluloid Picks", "Nylon Picks Variety Pack"],
        "Straps": ["Leather Guitar Strap", "Padded Strap", "Woven Strap"],
        "Tuners": ["Clip-On Tuner", "Chromatic Pedal Tuner", "Tuner Metronome"],
    },
    "Keyboards & Synthesizers": {
        "Digital Pianos": ["88-Key Digital Piano", "Stage Piano", "Console Piano"],
        "Synthesizers": ["Analog Synthesizer", "Polyphonic Synth", "Desktop Synth Module"],
        "MIDI Controllers": ["49-Key MIDI Controller", "Pad Controller", "Mini MIDI Keyboard"],
        "Keyboard Stands": ["X-Style Keyboard Stand", "Z-Stand", "Keyboard Bench"],
    },
    "Drums & Percussion": {
        "Drum Kits": ["5-Piece Drum Kit", "Snare Drum", "Shell Pack"],
        "Cymbals": ["Crash Cymbal", "Ride Cymbal", "Hi-Hat Pair"],
        "Drumsticks": ["5A Drumsticks", "7A Drumsticks", "Brushes"],
        "Electronic Drums": ["Electronic Drum Kit", "Drum Pad", "Drum Module"],
    },
    "Studio & Recording": {
        "Microphones": ["Dynamic Vocal Microphone", "Condenser Microphone", "Instrument Mic"],
        "Audio Interfaces": ["USB Audio Interface", "4-Channel Audio Interface", "Mic Preamp"],
        "Studio Headphones": ["Closed-Back Headphones", "Open-Back Headphones", "In-Ear Monitors"],
        "Studio Monitors": ["5-Inch Studio Monitors", "8-Inch Powered Monitor", "Subwoofer"],
    },
}
# subcategory -> subcategories bought next (complements)
COMPLEMENTS: dict[str, list[str]] = {
    "Electric Guitars": ["Strings", "Picks", "Guitar Amplifiers", "Effects Pedals", "Straps"],
    "Acoustic Guitars": ["Strings", "Picks", "Tuners", "Straps"],
    "Bass Guitars": ["Strings", "Bass Amplifiers", "Straps", "Tuners"],
    "Ukuleles": ["Strings", "Tuners", "Picks"],
    "Guitar Amplifiers": ["Effects Pedals", "Multi-Effects", "Electric Guitars"],
    "Bass Amplifiers": ["Bass Guitars", "Effects Pedals"],
    "Effects Pedals": ["Effects Pedals", "Multi-Effects", "Tuners"],
    "Multi-Effects": ["Effects Pedals", "Studio Headphones", "Audio Interfaces"],
    "Strings": ["Picks", "Tuners", "Straps"],
    "Picks": ["Strings", "Straps"],
    "Straps": ["Picks", "Strings"],
    "Tuners": ["Strings", "Picks"],
    "Digital Pianos": ["Keyboard Stands", "Studio Headphones"],
    "Synthesizers": ["MIDI Controllers", "Audio Interfaces", "Studio Monitors"],
    "MIDI Controllers": ["Audio Interfaces", "Synthesizers", "Studio Monitors"],
    "Keyboard Stands": ["Digital Pianos", "Studio Headphones"],
    "Drum Kits": ["Cymbals", "Drumsticks"],
    "Cymbals": ["Drumsticks", "Cymbals"],
    "Drumsticks": ["Cymbals", "Drum Kits"],
    "Electronic Drums": ["Drumsticks", "Studio Headphones"],
    "Microphones": ["Audio Interfaces", "Studio Headphones"],
    "Audio Interfaces": ["Studio Monitors", "Microphones", "Studio Headphones"],
    "Studio Headphones": ["Studio Monitors", "Audio Interfaces"],
    "Studio Monitors": ["Audio Interfaces", "Microphones"],
}
# fictional brand -> indices of the top categories it sells in
BRANDS: dict[str, tuple[int, ...]] = {
    "Halden": (0, 1), "Corvane": (0,), "Stratton": (0,), "Marlowe": (0, 2), "Kestrel": (0, 3),
    "Vantor": (1,), "Orrin": (1,), "Greymoor": (1, 5), "Blackjet": (1,),
    "Tessaro": (2,), "Dovetail": (2,), "Pickwick": (2,), "Lumen": (2, 5),
    "Novaline": (3,), "Aurelia": (3, 5), "Ostrander": (3,), "Synthex": (3, 4),
    "Thunderline": (4,), "Brassworks": (4,), "Rimshot": (4,), "Paloma": (4,),
    "Signal Peak": (5,), "Clearwave": (5,), "Monarch": (5,),
}  # fmt: skip
ADJECTIVES = [
    "Vintage", "Classic", "Pro", "Studio", "Deluxe", "Standard", "Compact", "Signature",
    "Custom", "Elite", "Modern", "Premium", "Essential", "Artist", "Heritage", "Player",
]  # fmt: skip
AUDIENCES = [
    "beginners", "students", "home studios", "gigging musicians", "touring professionals",
    "collectors",
]  # fmt: skip
FEATURES = [
    "Built to last with road-tested hardware.", "Lightweight and easy to carry.",
    "Delivers a warm, articulate tone.", "Simple controls get you playing in minutes.",
    "Backed by a two-year warranty.", "Hand-finished and inspected before shipping.",
    "Low noise for clean recordings.", "A favourite on stages and in studios.",
]  # fmt: skip
# next-item moves and their probabilities (see the module docstring)
MOVES: dict[str, float] = {
    "successor": 0.30,
    "complement": 0.22,
    "same_sub": 0.18,
    "same_top": 0.10,
    "jump": 0.10,
    "noise": 0.10,
}
_SUB_TOP = [t for t, subs in enumerate(TAXONOMY.values()) for _ in subs]  # subcategory -> top
_SUB_NAMES = [sub for subs in TAXONOMY.values() for sub in subs]
_SUB_COMPLEMENTS = [[_SUB_NAMES.index(c) for c in COMPLEMENTS[s]] for s in _SUB_NAMES]
_TOP_SUBS = [[k for k, t in enumerate(_SUB_TOP) if t == top] for top in range(len(TAXONOMY))]
STYLE_DIM = 8
ZIPF_EXPONENT = 0.6
BRAND_BONUS = 3.0
SUCCESSOR_WEIGHTS = (0.7, 0.3)
SUCCESSOR_POP_POWER = 0.5
MIN_HISTORY, MEAN_HISTORY, MAX_HISTORY = 5, 9.0, 40


@dataclass
class SyntheticReport:
    """Statistics of a generated dataset and its semantic index."""

    name: str
    out: str
    users: int
    items: int
    interactions: int
    mean_history: float
    max_history: int
    files: list[str] = field(default_factory=list)
    index_utilisation: list[float] = field(default_factory=list)
    collision_rate_before: float = float("nan")
    collision_rate_after: float = float("nan")
    n_extra_level: int = 0

    def summary(self) -> str:
        """One human-readable paragraph."""
        text = (
            f"{self.name}: {self.users} users, {self.items} items, {self.interactions} "
            f"interactions (mean history {self.mean_history:.2f}, max {self.max_history}) -> "
            f"{self.out}"
        )
        if self.index_utilisation:
            util = ", ".join(f"{u:.0%}" for u in self.index_utilisation)
            text += (
                f"; index utilisation {util}, collisions {self.collision_rate_before:.1%} -> "
                f"{self.collision_rate_after:.1%}, {self.n_extra_level} items with an extra level"
            )
        return text


@dataclass
class _Catalogue:
    tops: np.ndarray  # item -> top category index
    subs: np.ndarray  # item -> global subcategory index
    brands: np.ndarray  # item -> brand index
    style: np.ndarray  # [items, STYLE_DIM]
    pop: np.ndarray  # popularity weight
    successors: np.ndarray  # [items, 2]
    items: list[dict]  # X.item.json entries
    top_weights: np.ndarray
    sub_items: list[np.ndarray]  # global subcategory -> its items

    @property
    def features(self) -> np.ndarray:
        """One-hot top category, subcategory and brand, then the style vector (float32)."""
        n = len(self.tops)
        blocks = [
            np.zeros((n, k), np.float32) for k in (len(TAXONOMY), len(COMPLEMENTS), len(BRANDS))
        ]
        for block, col in zip(blocks, (self.tops, self.subs, self.brands), strict=True):
            block[np.arange(n), col] = 1.0
        return np.concatenate([*blocks, self.style.astype(np.float32)], axis=1)


def _split_counts(n_items: int, weights: np.ndarray) -> np.ndarray:
    """Items per subcategory: proportional to ``weights`` (largest remainder), at least 2."""
    base = np.full(len(weights), 2)
    share = weights / weights.sum() * (n_items - base.sum())
    counts = base + np.floor(share).astype(int)
    rest = n_items - counts.sum()
    counts[np.argsort(-(share - np.floor(share)), kind="stable")[:rest]] += 1
    return counts


def _title(rng: np.random.Generator, brand: str, noun: str, seen: set[str]) -> tuple[str, str]:
    """A unique title (the model number is redrawn on a clash) and its adjective."""
    prefix = "".join(w[0] for w in brand.split()) if " " in brand else brand[:2]
    while True:
        adj = ADJECTIVES[rng.integers(len(ADJECTIVES))]
        title = f"{brand} {adj} {noun} {prefix.upper()}-{rng.integers(100, 1000)}"
        if title not in seen:
            seen.add(title)
            return title, adj


def _describe(rng: np.random.Generator, brand: str, adj: str, noun: str, style: np.ndarray) -> str:
    features = rng.choice(len(FEATURES), size=2, replace=False)
    audience = AUDIENCES[int(np.argmax(style[: len(AUDIENCES)]))]  # text hints at the style
    return (
        f"The {adj.lower()} {noun.lower()} from {brand}. {FEATURES[features[0]]} "
        f"{FEATURES[features[1]]} Ideal for {audience}."
    )


def _successors(rng, subs, brands, pop, sub_items) -> np.ndarray:
    """Two fixed next items per item, in complementary subcategories (same brand preferred)."""
    weight = pop**SUCCESSOR_POP_POWER  # flatter than popularity: keeps the head from dominating
    out = np.zeros((len(subs), 2), dtype=np.int64)
    for item in range(len(subs)):
        pool = np.concatenate([sub_items[c] for c in _SUB_COMPLEMENTS[subs[item]]])
        pool = pool[pool != item]
        same = pool[brands[pool] == brands[item]]
        first_pool = same if len(same) else pool
        first = rng.choice(first_pool, p=weight[first_pool] / weight[first_pool].sum())
        rest = pool[pool != first]
        second = rng.choice(rest, p=weight[rest] / weight[rest].sum()) if len(rest) else first
        out[item] = first, second
    return out


def _catalogue(rng: np.random.Generator, n_items: int) -> _Catalogue:
    n_subs = len(_SUB_NAMES)
    counts = _split_counts(n_items, rng.dirichlet(np.full(n_subs, 6.0)))
    subs = rng.permutation(np.repeat(np.arange(n_subs), counts))  # ids carry no category
    tops = np.array([_SUB_TOP[s] for s in subs])
    brand_names = list(BRANDS)
    brand_weight = rng.uniform(0.5, 2.0, size=len(brand_names))
    brands = np.zeros(n_items, dtype=np.int64)
    for item, top in enumerate(tops):
        sellers = np.array([b for b, n in enumerate(brand_names) if top in BRANDS[n]])
        brands[item] = rng.choice(sellers, p=brand_weight[sellers] / brand_weight[sellers].sum())
    style = rng.normal(size=(n_items, STYLE_DIM)) / np.sqrt(STYLE_DIM)
    pop = (rng.permutation(n_items) + 1.0) ** -ZIPF_EXPONENT
    sub_items = [np.flatnonzero(subs == s) for s in range(n_subs)]
    top_names = list(TAXONOMY)
    seen: set[str] = set()
    items = []
    for item in range(n_items):
        top, sub, brand = top_names[tops[item]], _SUB_NAMES[subs[item]], brand_names[brands[item]]
        nouns = TAXONOMY[top][sub]
        noun = nouns[rng.integers(len(nouns))]
        title, adj = _title(rng, brand, noun, seen)
        description = _describe(rng, brand, adj, noun, style[item])
        items.append(
            {"title": title, "description": description, "brand": brand, "categories": [top, sub]}
        )
    successors = _successors(rng, subs, brands, pop, sub_items)
    top_weights = rng.dirichlet(np.full(len(TAXONOMY), 4.0))
    return _Catalogue(tops, subs, brands, style, pop, successors, items, top_weights, sub_items)


class _Shopper:
    """Draws one user's history from the catalogue."""

    def __init__(self, rng: np.random.Generator, cat: _Catalogue):
        self.rng, self.cat = rng, cat
        self.taste = rng.normal(size=STYLE_DIM)
        self.liked = np.zeros(len(BRANDS), dtype=bool)
        self.seen = np.zeros(len(cat.tops), dtype=bool)
        self.moves, self.thresholds = list(MOVES), np.cumsum(list(MOVES.values()))

    def pick(self, candidates: np.ndarray, personal: bool = True) -> int | None:
        """An unseen item of ``candidates``: popularity x style match x liked-brand bonus."""
        cat = self.cat
        weight = cat.pop[candidates] * ~self.seen[candidates]
        if personal:
            weight = weight * np.exp(cat.style[candidates] @ self.taste)
            weight = weight * np.where(self.liked[cat.brands[candidates]], BRAND_BONUS, 1.0)
        total = weight.sum()
        return None if total <= 0 else int(self.rng.choice(candidates, p=weight / total))

    def in_top(self, top: int) -> int | None:
        """An item of a random subcategory of ``top``."""
        subs = _TOP_SUBS[top]
        return self.pick(self.cat.sub_items[subs[self.rng.integers(len(subs))]])

    def step(self, prev: int) -> int | None:
        """The next item after ``prev`` (``None`` when the chosen move finds nothing unseen)."""
        rng, cat = self.rng, self.cat
        move = self.moves[int(np.searchsorted(self.thresholds, rng.random() * self.thresholds[-1]))]
        sub = cat.subs[prev]
        if move == "successor":
            nxt = int(cat.successors[prev, 0 if rng.random() < SUCCESSOR_WEIGHTS[0] else 1])
            return None if self.seen[nxt] else nxt
        if move == "complement":
            comps = _SUB_COMPLEMENTS[sub]
            return self.pick(cat.sub_items[comps[rng.integers(len(comps))]])
        if move == "same_sub":
            return self.pick(cat.sub_items[sub])
        if move == "same_top":
            return self.in_top(int(cat.tops[prev]))
        if move == "jump":
            return self.in_top(int(rng.choice(len(TAXONOMY), p=cat.top_weights)))
        return None  # noise

    def history(self, length: int) -> list[int]:
        """A history of ``length`` distinct items, starting in a random home category."""
        home = int(self.rng.choice(len(TAXONOMY), p=self.cat.top_weights))
        sellers = [b for b, tops in enumerate(BRANDS.values()) if home in tops]
        self.liked[sellers[self.rng.integers(len(sellers))]] = True
        items: list[int] = []
        nxt = self.in_top(home)
        while True:
            if nxt is None:  # noise, or the move found nothing new
                nxt = self.pick(np.arange(len(self.cat.tops)), personal=False)
            items.append(nxt)
            self.seen[nxt] = True
            self.liked[self.cat.brands[nxt]] = True
            if len(items) >= length:
                return items
            nxt = self.step(nxt)


def _random_ids(rng: np.random.Generator, n: int, prefix: str, length: int) -> list[str]:
    """``n`` distinct Amazon-like ids: ``prefix`` + random upper-case letters and digits."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    ids: dict[str, None] = {}
    while len(ids) < n:
        ids.setdefault(prefix + "".join(alphabet[rng.integers(len(alphabet), size=length)]))
    return list(ids)


def _history_length(rng: np.random.Generator) -> int:
    extra = rng.geometric(1.0 / (MEAN_HISTORY - MIN_HISTORY + 1))  # >= 1, mean MEAN - MIN + 1
    return int(min(MIN_HISTORY - 1 + extra, MAX_HISTORY))


def generate_synthetic(
    out: str | Path,
    n_users: int = 3000,
    n_items: int = 600,
    seed: int = 0,
    name: str = "Synthetic",
    *,
    index: bool = True,
    index_levels: int = 3,
    index_codebook: int = 32,
    index_epochs: int = 200,
    force: bool = False,
    progress: bool = False,
) -> SyntheticReport:
    """Generate the synthetic dataset into ``out`` (see the module docstring).

    Same arguments -> byte-identical files (on one platform and torch version).

    Args:
        out: output folder (created if needed).
        n_users, n_items: dataset size (``n_items >= 48``: at least 2 items per subcategory).
        seed: seeds everything (catalogue, users, ids, RQ-VAE).
        name: the ``X`` of the file names.
        index: also build ``X.index.json`` with :func:`ilrec.identifiers.semantic.build_index`.
        index_levels, index_codebook, index_epochs: RQ-VAE levels, codes per level, epochs.
        force: overwrite existing files.
        progress: show the RQ-VAE progress bar.

    Returns:
        A :class:`SyntheticReport`.

    Raises:
        FileExistsError: an output file exists and ``force`` is not set.
    """
    n_subs = len(_SUB_NAMES)
    if n_items < 2 * n_subs or n_users < 1:
        raise ValueError(f"need n_items >= {2 * n_subs} and n_users >= 1, got {n_items}, {n_users}")
    out = Path(out)
    suffixes = ["inter.json", "item.json", "item2id", "user2id", "item_features.npy"]
    suffixes += ["index.json"] if index else []
    refuse_overwrite(out, [f"{name}.{s}" for s in suffixes], force)

    cat_seq, user_seq, id_seq = np.random.SeedSequence(seed).spawn(3)
    cat = _catalogue(np.random.default_rng(cat_seq), n_items)
    user_rng = np.random.default_rng(user_seq)
    histories = [_Shopper(user_rng, cat).history(_history_length(user_rng)) for _ in range(n_users)]
    id_rng = np.random.default_rng(id_seq)
    asins, reviewers = _random_ids(id_rng, n_items, "B0", 8), _random_ids(id_rng, n_users, "A", 13)
    features = cat.features
    lengths = [len(h) for h in histories]
    report = SyntheticReport(
        name, str(out), n_users, n_items, sum(lengths), sum(lengths) / n_users, max(lengths)
    )
    codes = None
    if index:  # built before anything is written: a failure leaves no partial dataset
        codes = _build_index(
            features, report, index_levels, index_codebook, index_epochs, seed, progress
        )

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.{s}" for s in suffixes]
    atomic_write_json(paths[0], {str(u): h for u, h in enumerate(histories)})
    atomic_write_json(paths[1], {str(i): info for i, info in enumerate(cat.items)})
    atomic_write_text(paths[2], "".join(f"{a}\t{i}\n" for i, a in enumerate(asins)))
    atomic_write_text(paths[3], "".join(f"{r}\t{u}\n" for u, r in enumerate(reviewers)))
    buffer = io.BytesIO()
    np.save(buffer, features)
    atomic_write_bytes(paths[4], buffer.getvalue())
    if codes is not None:
        from ilrec.identifiers.semantic import write_index

        write_index(paths[5], codes)
    report.files = [str(p) for p in paths]
    return report


def _build_index(features, report, levels, codebook, epochs, seed, progress=False):
    """Unique semantic IDs (item -> tokens) of the features; fills the index fields of ``report``."""
    from ilrec.identifiers.semantic import build_index, make_unique

    result = build_index(
        features, levels=levels, codebook_size=codebook, epochs=epochs, seed=seed, progress=progress
    )
    report.index_utilisation = list(result.utilisation)
    report.collision_rate_before = result.collision_rate_before
    report.collision_rate_after = result.collision_rate_after
    report.n_extra_level = result.n_extra_level
    return make_unique(result.codes)
