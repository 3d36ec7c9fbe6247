"""Tests of prompts, tokenizers and feature encoding (ilrec.data.prompts, ilrec.data.encoding,
ilrec.identifiers.vocab)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ilrec.data.dataset import InteractionData
from ilrec.data.encoding import IGNORE_INDEX, Encoder, PaddingCollator
from ilrec.data.prompts import SEQREC_INSTRUCTIONS, quoted, seqrec_prompt, title_prompt
from ilrec.data.split import Example, Window, leave_one_out
from ilrec.identifiers.vocab import (
    build_code_tokenizer,
    build_text_tokenizer,
    code_vocabulary,
    unique_titles,
)

# Items 0 and 3 collide on two levels and are told apart by a third one.
CODES = {
    0: ["<a_1>", "<b_2>", "<c_0>"],
    1: ["<a_3>", "<b_4>"],
    2: ["<a_2>", "<b_1>"],
    3: ["<a_1>", "<b_2>", "<c_1>"],
    4: ["<a_10>", "<b_1>"],
}
# build_code_tokenizer: <pad>=0 <s>=1 </s>=2 <unk>=3, then the codes in level/number order:
# <a_1>=4 <a_2>=5 <a_3>=6 <a_10>=7 <b_1>=8 <b_2>=9 <b_4>=10 <c_0>=11 <c_1>=12
PROMPT_CODES = {0: ["<a_1>", "<b_2>"], 1: ["<a_3>", "<b_4>"], 2: ["<a_2>", "<b_1>"]}
TITLES = ["Guitar Strings", "Capo", "Clip Tuner", "Drum Sticks"]

LCREC_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nThe user has interacted with items "
    "<a_1><b_2>, <a_3><b_4> in chronological order. Can you predict the next possible item "
    "that the user may expect?\n\n### Response:"
)
TITLE_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nGiven a list of items the user has interacted "
    "with before, please recommend a new item that the user likes to the user.\n\n"
    '### Input:\nThe user has interacted with the following items before: "Guitar Strings", '
    '"Capo"\n\n### Response:\n'
)


@pytest.fixture(scope="module")
def code_tokenizer():
    return build_code_tokenizer(CODES)


@pytest.fixture(scope="module")
def text_tokenizer():
    corpus = [seqrec_prompt(["<a_1><b_2>", "<a_3><b_4>"], p) for p in range(8)]
    corpus += [title_prompt(TITLES)] + [quoted(t) for t in TITLES]
    return build_text_tokenizer(corpus, vocab_size=400, codes=PROMPT_CODES)


# -- vocabulary ------------------------------------------------------------------------------
def test_code_vocabulary_order() -> None:
    codes = {0: ["<b_10>", "<a_2>"], 1: ["<a_10>", "<b_2>"], 2: ["<c_1>", "<a_2>"], 3: ["<a_0>"]}
    assert code_vocabulary(codes) == ["<a_0>", "<a_2>", "<a_10>", "<b_2>", "<b_10>", "<c_1>"]
    with pytest.raises(ValueError, match=r"code token 'a_1' is not of the form <x_N>"):
        code_vocabulary({0: ["a_1"]})


def test_code_tokenizer_vocabulary(code_tokenizer) -> None:
    assert code_tokenizer.convert_ids_to_tokens(list(range(13))) == [
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
        "<a_1>",
        "<a_2>",
        "<a_3>",
        "<a_10>",
        "<b_1>",
        "<b_2>",
        "<b_4>",
        "<c_0>",
        "<c_1>",
    ]
    assert len(code_tokenizer) == 13
    assert code_tokenizer.encode("<a_10><b_1>", add_special_tokens=False) == [7, 8]


def test_unique_titles() -> None:
    titles = ["Capo", "Tuner", "Capo", "Capo (2)", "Capo", "Tuner", "Pick"]
    assert unique_titles(titles) == [
        "Capo",
        "Tuner",
        "Capo (3)",
        "Capo (2)",
        "Capo (4)",
        "Tuner (2)",
        "Pick",
    ]
    assert unique_titles(["A", "B"]) == ["A", "B"]


def test_unknown_code_token_raises(code_tokenizer, text_tokenizer) -> None:
    with pytest.raises(ValueError, match="not in the tokenizer"):
        Encoder.for_codes("sequence", code_tokenizer, {0: ["<a_1>"], 1: ["<z_9>"]})
    with pytest.raises(ValueError, match="not in the tokenizer"):
        Encoder.for_codes("prompt", text_tokenizer, {0: ["<a_1>", "<d_7>"]})
    plain = build_text_tokenizer(["some text"], vocab_size=300)
    with pytest.raises(ValueError, match="not in the tokenizer"):
        Encoder.for_codes("prompt", plain, PROMPT_CODES)


def test_encoder_rejects_bad_settings(code_tokenizer) -> None:
    with pytest.raises(ValueError, match="data.format must be one of"):
        Encoder.for_codes("json", code_tokenizer, CODES)
    with pytest.raises(ValueError, match=r"data.paraphrases must be in 1..8, got 0"):
        Encoder.for_codes("prompt", code_tokenizer, CODES, n_paraphrases=0)
    with pytest.raises(ValueError, match=r"data.paraphrases must be in 1..8, got 9"):
        Encoder.for_codes("prompt", code_tokenizer, CODES, n_paraphrases=9)


# -- sequence format -------------------------------------------------------------------------
def test_sequence_format(code_tokenizer) -> None:
    enc = Encoder.for_codes("sequence", code_tokenizer, CODES)
    assert enc.identifiers == [
        "<a_1><b_2><c_0>",
        "<a_3><b_4>",
        "<a_2><b_1>",
        "<a_1><b_2><c_1>",
        "<a_10><b_1>",
    ]
    assert enc.identifier_ids == [[4, 9, 11], [6, 10], [5, 8], [4, 9, 12], [7, 8]]
    assert enc.prompt_ids((1, 2)) == [1, 6, 10, 5, 8]
    assert enc.prompt_ids(()) == [1]
    assert enc.response_ids(4) == [7, 8]  # no EOS in the compact format
    assert enc.response_ids(3) == [4, 9, 12]
    assert enc.encode_example(Example("u", (2, 0), 4)) == {
        "input_ids": [1, 5, 8, 4, 9, 11, 7, 8],
        "labels": [-100, -100, -100, -100, -100, -100, 7, 8],
        "items": [2, 0, 4],
        "item_slot": [-1, -1, -1, -1, -1, -1, 2, 2],
        "id_pos": [-1, -1, -1, -1, -1, -1, 0, 1],
        "user": "u",
    }


def test_sequence_item_table(code_tokenizer) -> None:
    table = Encoder.for_codes("sequence", code_tokenizer, CODES).item_table()
    expected = torch.tensor(
        [[4, 9, 11], [6, 10, -1], [5, 8, -1], [4, 9, 12], [7, 8, -1]], dtype=torch.long
    )
    assert table.dtype == torch.long
    assert torch.equal(table, expected)


def test_encode_window(code_tokenizer) -> None:
    enc = Encoder.for_codes("sequence", code_tokenizer, CODES)
    assert enc.encode_window(Window("u", (0, 1, 2), 1)) == {
        "input_ids": [1, 4, 9, 11, 6, 10, 5, 8],
        "labels": [-100, -100, -100, -100, 6, 10, 5, 8],
        "items": [0, 1, 2],
        "item_slot": [-1, 0, 0, 0, 1, 1, 2, 2],
        "id_pos": [-1, 0, 1, 2, 0, 1, 0, 1],
        "user": "u",
    }
    assert enc.encode_window(Window("u", (3, 1, 4), 2)) == {
        "input_ids": [1, 4, 9, 12, 6, 10, 7, 8],
        "labels": [-100, -100, -100, -100, -100, -100, 7, 8],
        "items": [3, 1, 4],
        "item_slot": [-1, 0, 0, 0, 1, 1, 2, 2],
        "id_pos": [-1, 0, 1, 2, 0, 1, 0, 1],
        "user": "u",
    }
    prompt = Encoder.for_codes("prompt", code_tokenizer, CODES)
    with pytest.raises(ValueError, match="only in the 'sequence' format"):
        prompt.encode_window(Window("u", (0, 1), 1))


def test_encode_training_sequence(code_tokenizer) -> None:
    data = InteractionData("T", Path("T"), {"u1": [0, 1, 2, 3, 4], "u2": [4, 3, 2]}, n_items=5)
    splits = leave_one_out(data, max_history=1)
    windows = splits.train_windows()
    assert windows == [Window("u1", (0, 1), 1), Window("u1", (1, 2), 1)]
    enc = Encoder.for_codes("sequence", code_tokenizer, CODES)
    assert enc.encode_training(splits.train_prefixes(), windows, seed=0) == [
        {
            "input_ids": [1, 4, 9, 11, 6, 10],
            "labels": [-100, -100, -100, -100, 6, 10],
            "items": [0, 1],
            "item_slot": [-1, 0, 0, 0, 1, 1],
            "id_pos": [-1, 0, 1, 2, 0, 1],
            "user": "u1",
        },
        {
            "input_ids": [1, 6, 10, 5, 8],
            "labels": [-100, -100, -100, 5, 8],
            "items": [1, 2],
            "item_slot": [-1, 0, 0, 1, 1],
            "id_pos": [-1, 0, 1, 0, 1],
            "user": "u1",
        },
    ]


# -- prompt format (LC-Rec) ------------------------------------------------------------------
def test_lcrec_prompt_text() -> None:
    assert seqrec_prompt(["<a_1><b_2>", "<a_3><b_4>"]) == LCREC_PROMPT
    assert len(SEQREC_INSTRUCTIONS) == 8
    assert all("{inters}" in p for p in SEQREC_INSTRUCTIONS)


def test_prompt_format(text_tokenizer) -> None:
    tok = text_tokenizer
    enc = Encoder.for_codes("prompt", tok, PROMPT_CODES)
    eos = tok.eos_token_id
    assert eos == 2
    code_ids = tok.convert_tokens_to_ids(["<a_2>", "<b_1>"])
    assert enc.response_ids(2) == [*code_ids, eos]

    prompt = enc.prompt_ids((0, 1))
    assert tok.decode(prompt) == LCREC_PROMPT

    features = enc.encode_example(Example("u", (0, 1), 2))
    n = len(prompt)
    assert features["input_ids"] == [*prompt, *code_ids, eos]
    assert features["labels"] == [IGNORE_INDEX] * n + [*code_ids, eos]
    assert tok.decode(features["input_ids"]) == LCREC_PROMPT + "<a_2><b_1></s>"
    # "### Response:" is directly followed by the first code token: no space, no newline
    assert tok.decode(features["input_ids"][: n + 1]).endswith("### Response:<a_2>")
    assert tok.convert_ids_to_tokens(features["input_ids"][n]) == "<a_2>"


def test_prompt_item_table(text_tokenizer) -> None:
    enc = Encoder.for_codes("prompt", text_tokenizer, {**PROMPT_CODES, 3: ["<a_1>"]})
    a1, b2, a3, b4, a2, b1 = text_tokenizer.convert_tokens_to_ids(
        ["<a_1>", "<b_2>", "<a_3>", "<b_4>", "<a_2>", "<b_1>"]
    )
    expected = torch.tensor([[a1, b2, 2], [a3, b4, 2], [a2, b1, 2], [a1, 2, -1]])
    assert torch.equal(enc.item_table(), expected)


def _instruction(tokenizer, input_ids: list[int]) -> str:
    text = tokenizer.decode(input_ids)
    return text.split("### Instruction:\n", 1)[1].split("\n\n### Response:", 1)[0]


def test_paraphrases_drawn_by_seed(text_tokenizer) -> None:
    enc = Encoder.for_codes("prompt", text_tokenizer, PROMPT_CODES)
    examples = [Example(f"u{i}", (0, 1), 2) for i in range(12)]

    def drawn(seed: int, encoder: Encoder = enc) -> list[int]:
        features = encoder.encode_training(examples, [], seed=seed)
        rendered = [
            SEQREC_INSTRUCTIONS[p].format(inters="<a_1><b_2>, <a_3><b_4>") for p in range(8)
        ]
        return [rendered.index(_instruction(text_tokenizer, f["input_ids"])) for f in features]

    # random.Random(seed).randrange(n_paraphrases), one draw per example
    assert drawn(0) == [6, 6, 0, 4, 7, 6, 4, 7, 5, 3, 2, 4]
    assert drawn(0) == drawn(0)
    assert drawn(1) == [2, 1, 4, 1, 7, 7, 7, 6, 3, 1, 7, 0]
    three = Encoder.for_codes("prompt", text_tokenizer, PROMPT_CODES, n_paraphrases=3)
    assert drawn(0, three) == [1, 1, 0, 1, 2, 1, 1, 1, 1, 1, 2, 0]
    one = Encoder.for_codes("prompt", text_tokenizer, PROMPT_CODES, n_paraphrases=1)
    assert drawn(5, one) == [0] * 12
    # whatever the paraphrase, the labels cover only the response and EOS
    for f in enc.encode_training(examples, [], seed=0):
        supervised = [t for t in f["labels"] if t != IGNORE_INDEX]
        assert supervised == enc.response_ids(2)
        assert f["input_ids"][-3:] == supervised


# -- title format (BIGRec) -------------------------------------------------------------------
def test_title_format(text_tokenizer) -> None:
    tok = text_tokenizer
    enc = Encoder.for_titles(tok, TITLES)
    assert enc.fmt == "title"
    assert enc.identifiers == TITLES
    prompt = enc.prompt_ids((0, 1))
    assert tok.decode(prompt) == TITLE_PROMPT
    response = enc.response_ids(2)
    assert response[-1] == tok.eos_token_id
    assert tok.decode(response) == '"Clip Tuner"</s>'
    assert response[:-1] == tok.encode('"Clip Tuner"', add_special_tokens=False)
    features = enc.encode_example(Example("u", (0, 1), 2))
    assert features["input_ids"] == prompt + response
    assert features["labels"] == [IGNORE_INDEX] * len(prompt) + response
    assert tok.decode(features["input_ids"]) == TITLE_PROMPT + '"Clip Tuner"</s>'

    table = enc.item_table()
    lengths = [len(enc.response_ids(i)) for i in range(4)]
    assert table.shape == (4, max(lengths))
    for i, n in enumerate(lengths):
        assert table[i, :n].tolist() == enc.response_ids(i)
        assert table[i, n:].tolist() == [-1] * (max(lengths) - n)


# -- collator --------------------------------------------------------------------------------
def test_padding_collator() -> None:
    features = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
        {"input_ids": [8], "labels": [8]},
        {"input_ids": [9, 10], "labels": [-100, -100]},
    ]
    batch = PaddingCollator(pad_token_id=0)(features)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7], [8, 0, 0], [9, 10, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]]))
    assert torch.equal(
        batch["labels"], torch.tensor([[-100, 6, 7], [8, -100, -100], [-100, -100, -100]])
    )
    assert all(t.dtype == torch.long for t in batch.values())

    batch = PaddingCollator(pad_token_id=3, pad_to_multiple_of=4)(features[:2])
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7, 3], [8, 3, 3, 3]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[-100, 6, 7, -100], [8, -100, -100, -100]]))


def test_padding_collator_item_fields() -> None:
    features = [
        {
            "input_ids": [1, 5, 6],
            "labels": [-100, 5, 6],
            "items": [3, 4],
            "item_slot": [-1, 1, 1],
            "id_pos": [-1, 0, 1],
            "user": "a",
        },
        {
            "input_ids": [1, 7],
            "labels": [-100, 7],
            "items": [2],
            "item_slot": [-1, 0],
            "id_pos": [-1, 0],
            "user": "b",
        },
    ]
    batch = PaddingCollator(pad_token_id=0)(features)
    assert torch.equal(batch["items"], torch.tensor([[3, 4], [2, -1]]))
    assert torch.equal(batch["item_slot"], torch.tensor([[-1, 1, 1], [-1, 0, -1]]))
    assert torch.equal(batch["id_pos"], torch.tensor([[-1, 0, 1], [-1, 0, -1]]))
    assert batch["user"] == ["a", "b"]
