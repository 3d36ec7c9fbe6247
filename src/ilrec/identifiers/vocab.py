"""Tokenizers for identifiers: code tokens added to a pretrained tokenizer, or small
tokenizers built from scratch for models trained from scratch.

Semantic-ID paradigm: every code token (``<a_137>``...) becomes one new token. Title paradigm:
titles are plain text tokenized by the backbone's tokenizer; duplicate titles are made unique.
"""

from __future__ import annotations

import re
from collections import defaultdict

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

SPECIAL_TOKENS = {
    "pad_token": "<pad>",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
}
_CODE = re.compile(r"^<([a-z]+)_(\d+)>$")


def code_vocabulary(codes: dict[int, list[str]]) -> list[str]:
    """Every distinct code token, sorted by level letter then code number."""
    tokens = {c for seq in codes.values() for c in seq}

    def key(token: str) -> tuple[str, int]:
        match = _CODE.match(token)
        if match is None:
            raise ValueError(f"code token {token!r} is not of the form <x_N>")
        return match.group(1), int(match.group(2))

    return sorted(tokens, key=key)


def add_code_tokens(tokenizer: PreTrainedTokenizerBase, codes: dict[int, list[str]]) -> int:
    """Add the code tokens to a pretrained tokenizer; returns how many were new."""
    return tokenizer.add_tokens(code_vocabulary(codes))


def build_code_tokenizer(codes: dict[int, list[str]]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer made of the special tokens plus the code tokens.

    For models trained from scratch on the compact sequence format.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS.values()) + code_vocabulary(codes))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"<[^<>]+>"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def build_text_tokenizer(
    corpus: list[str], vocab_size: int = 2000, codes: dict[int, list[str]] | None = None
) -> PreTrainedTokenizerFast:
    """A small byte-level BPE tokenizer trained on ``corpus`` (prompts and item titles).

    Lets models trained from scratch use the instruction formats; code tokens, when given,
    are added as whole tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    if codes:
        add_code_tokens(tokenizer, codes)
    return tokenizer


def unique_titles(titles: list[str]) -> list[str]:
    """Make titles unique: the 2nd, 3rd... item (by id) sharing a title gets `` (2)``, `` (3)``.

    Identical titles cannot be told apart by generation; the suffix keeps every item
    reachable and the identifier table prefix-free (responses end with EOS).
    """
    seen: dict[str, int] = defaultdict(int)
    taken = set(titles)
    result = []
    for title in titles:
        seen[title] += 1
        if seen[title] == 1:
            result.append(title)
            continue
        n = seen[title]
        while f"{title} ({n})" in taken:
            n += 1
        seen[title] = n
        taken.add(f"{title} ({n})")
        result.append(f"{title} ({n})")
    return result
