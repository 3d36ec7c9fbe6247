"""Turning examples into token ids: prompts, responses and the item identifier table.

Three formats share one interface:

- ``sequence``: ``BOS`` then the codes of every history item, no separators (compact, for
  small models trained from scratch); the response of an item is its codes. A training
  window supervises every item after its context (SASRec-style, one pass per window).
- ``prompt``: the LC-Rec instruction (paraphrase chosen per training example); the response
  is the item's codes followed by EOS.
- ``title``: the BIGRec instruction with quoted titles; the response is the quoted title
  followed by EOS.

Candidate rows (``data.task=candidates``, :class:`ilrec.data.candidates.CandidateExample`)
get the candidate-ranking instruction instead (:func:`ilrec.data.prompts.candidate_prompt`:
history and candidates as quoted titles or identifiers joined by ", "), with the same
response; :meth:`Encoder.example_prompt_ids` picks the prompt from the example.

Labels are -100 on everything that is not a response token. No assumption is made about
BOS: prompt formats use whatever the tokenizer adds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from ilrec.data.prompts import (
    SEQREC_INSTRUCTIONS,
    candidate_prompt,
    quoted,
    seqrec_prompt,
    title_prompt,
)
from ilrec.data.split import Example, Window

IGNORE_INDEX = -100
FORMATS = ("sequence", "prompt", "title")


@dataclass
class Encoder:
    """Encodes histories and items for one format, tokenizer and identifier table.

    Attributes:
        identifiers: the identifier text of every item (codes joined, or the title).
        identifier_ids: the identifier token ids of every item (without EOS).
    """

    fmt: str
    tokenizer: PreTrainedTokenizerBase
    identifiers: list[str]
    identifier_ids: list[list[int]]
    n_paraphrases: int = len(SEQREC_INSTRUCTIONS)
    candidate_domain: str = "items"  # wording of candidate prompts (prompts.CANDIDATE_TEMPLATES)
    _prompt_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {self.fmt!r}")
        if not 1 <= self.n_paraphrases <= len(SEQREC_INSTRUCTIONS):
            raise ValueError(
                f"data.paraphrases must be in 1..{len(SEQREC_INSTRUCTIONS)}, got {self.n_paraphrases}"
            )
        if self.tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token")

    @classmethod
    def for_codes(
        cls, fmt: str, tokenizer: PreTrainedTokenizerBase, codes: dict[int, list[str]], **kw
    ) -> Encoder:
        """Semantic-ID identifiers (code tokens must already be in the tokenizer)."""
        texts = ["".join(codes[i]) for i in range(len(codes))]
        ids = [tokenizer.convert_tokens_to_ids(codes[i]) for i in range(len(codes))]
        unk = tokenizer.unk_token_id
        if any(t is None or (unk is not None and t == unk) for seq in ids for t in seq):
            raise ValueError("some code tokens are not in the tokenizer; call add_code_tokens")
        return cls(fmt, tokenizer, texts, ids, **kw)

    @classmethod
    def for_titles(cls, tokenizer: PreTrainedTokenizerBase, titles: list[str], **kw) -> Encoder:
        """Title identifiers (BIGRec paradigm); titles must already be unique."""
        texts = list(titles)
        ids = [tokenizer.encode(quoted(t), add_special_tokens=False) for t in texts]
        return cls("title", tokenizer, texts, ids, **kw)

    # -- prompts and responses -------------------------------------------------------------
    def prompt_ids(
        self,
        history: tuple[int, ...],
        paraphrase: int = 0,
        candidates: Sequence[int] | None = None,
    ) -> list[int]:
        """Token ids of the prompt for a history (what precedes the response).

        Args:
            history: item ids, oldest first.
            paraphrase: LC-Rec paraphrase (prompt format, full ranking only).
            candidates: the row's candidate items (candidate ranking, text formats): the
                candidate-ranking instruction lists them after the history.

        Returns:
            Token ids, with the tokenizer's special tokens (BOS) in the text formats.
        """
        if candidates is not None:
            if self.fmt == "sequence":
                raise ValueError("candidate prompts need a text format (prompt or title)")
            text = candidate_prompt(
                [self.item_text(i) for i in history],
                [self.item_text(i) for i in candidates],
                self.candidate_domain,
            )
            return self.tokenizer.encode(text, add_special_tokens=True)
        if self.fmt == "sequence":
            ids = [self.tokenizer.bos_token_id]
            for item in history:
                ids.extend(self.identifier_ids[item])
            return ids
        if self.fmt == "prompt":
            text = seqrec_prompt([self.identifiers[i] for i in history], paraphrase)
        else:
            text = title_prompt([self.identifiers[i] for i in history])
        return self.tokenizer.encode(text, add_special_tokens=True)

    def example_prompt_ids(self, example: Example, paraphrase: int = 0) -> list[int]:
        """The prompt of an example: the candidate instruction for a candidate row (an example
        with a ``candidates`` attribute), the format's own prompt otherwise."""
        return self.prompt_ids(example.history, paraphrase, getattr(example, "candidates", None))

    def item_text(self, item: int) -> str:
        """How an item is written in a prompt: its quoted title (title format, as the BIGRec
        prompt and the response write it) or its identifier string."""
        text = self.identifiers[item]
        return quoted(text) if self.fmt == "title" else text

    def response_ids(self, item: int) -> list[int]:
        """Token ids the model must generate for ``item``."""
        if self.fmt == "sequence":
            return list(self.identifier_ids[item])
        return [*self.identifier_ids[item], self.tokenizer.eos_token_id]

    def item_table(self) -> torch.Tensor:
        """``LongTensor[I, D]``: response ids of every item, right-padded with -1."""
        responses = [self.response_ids(i) for i in range(len(self.identifier_ids))]
        width = max(len(r) for r in responses)
        table = torch.full((len(responses), width), -1, dtype=torch.long)
        for i, r in enumerate(responses):
            table[i, : len(r)] = torch.tensor(r)
        return table

    # -- training examples -----------------------------------------------------------------
    def encode_example(self, example: Example, paraphrase: int = 0) -> dict[str, list[int]]:
        """Prompt + response, labels only on the response."""
        prompt = self.example_prompt_ids(example, paraphrase)
        response = self.response_ids(example.target)
        slot = len(example.history)
        return {
            "input_ids": prompt + response,
            "labels": [IGNORE_INDEX] * len(prompt) + response,
            "items": [*example.history, example.target],
            "item_slot": [-1] * len(prompt) + [slot] * len(response),
            "id_pos": [-1] * len(prompt) + list(range(len(response))),
            "user": example.user,
        }

    def encode_window(self, window: Window) -> dict[str, list[int]]:
        """Sequence format: every item from ``window.supervise_from`` on is supervised."""
        if self.fmt != "sequence":
            raise ValueError("training windows exist only in the 'sequence' format")
        input_ids, labels = [self.tokenizer.bos_token_id], [IGNORE_INDEX]
        item_slot, id_pos = [-1], [-1]
        for position, item in enumerate(window.items):
            ids = self.identifier_ids[item]
            input_ids.extend(ids)
            labels.extend(ids if position >= window.supervise_from else [IGNORE_INDEX] * len(ids))
            item_slot.extend([position] * len(ids))
            id_pos.extend(range(len(ids)))
        return {
            "input_ids": input_ids,
            "labels": labels,
            "items": list(window.items),
            "item_slot": item_slot,
            "id_pos": id_pos,
            "user": window.user,
        }

    def encode_training(
        self, examples: list[Example], windows: list[Window], seed: int
    ) -> list[dict[str, list[int]]]:
        """All training features: windows in the sequence format, prefixes otherwise."""
        if self.fmt == "sequence":
            return [self.encode_window(w) for w in windows]
        rng = random.Random(seed)
        return [self.encode_example(e, rng.randrange(self.n_paraphrases)) for e in examples]


# Per-token fields and their padding values (besides input_ids).
TOKEN_FIELDS = {"labels": IGNORE_INDEX, "item_slot": -1, "id_pos": -1}


@dataclass
class PaddingCollator:
    """Right-pads ``input_ids`` (with ``pad_token_id``), ``labels`` (with -100) and the
    per-token item bookkeeping used by the collaborative reward (``item_slot``: index into
    ``items`` of the item a token belongs to; ``id_pos``: position inside its identifier;
    both -1 on prompt tokens and padding). ``items`` is padded with -1; ``user`` stays a list.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        rows = len(features)
        batch = {
            "input_ids": torch.full((rows, length), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((rows, length), dtype=torch.long),
        }
        fields = [k for k in TOKEN_FIELDS if k in features[0]]
        for key in fields:
            batch[key] = torch.full((rows, length), TOKEN_FIELDS[key], dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            batch["input_ids"][row, :n] = torch.tensor(f["input_ids"])
            batch["attention_mask"][row, :n] = 1
            for key in fields:
                batch[key][row, :n] = torch.tensor(f[key])
        if "items" in features[0]:
            width = max(len(f["items"]) for f in features)
            batch["items"] = torch.full((rows, width), -1, dtype=torch.long)
            for row, f in enumerate(features):
                batch["items"][row, : len(f["items"])] = torch.tensor(f["items"])
        if "user" in features[0]:
            batch["user"] = [f["user"] for f in features]
        return batch
