"""Instruction prompts of the two paradigms (paper Section 2.1; LC-Rec and BIGRec formats).

LC-Rec: an Alpaca wrapper around a sequential-recommendation instruction; the history is the
identifiers of the last items joined by ", " and ``### Response:`` is directly followed by the
target identifier. Training picks one paraphrase per example; evaluation uses paraphrase 0.
BIGRec: Alpaca with an ``### Input:`` section listing quoted titles; the response is the
quoted target title.
Candidate ranking (S-DPO / LLaRA, paper Figure 6): the history and the N candidates in one
instruction ending with ``Answer:``, no Alpaca wrapper (as S-DPO); the response is the target's
identifier (quoted title or semantic ID) followed by EOS.
"""

from __future__ import annotations

ALPACA_HEADER = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)

# Paraphrase 0 is LC-Rec's; the others are this project's own paraphrases of it.
SEQREC_INSTRUCTIONS = (
    "The user has interacted with items {inters} in chronological order. "
    "Can you predict the next possible item that the user may expect?",
    "Here is the user's interaction history in chronological order: {inters}. "
    "Which item is the user most likely to interact with next?",
    "Given the items {inters} that the user interacted with, in this order, "
    "recommend the next item for the user.",
    "A user has engaged with the following items, oldest first: {inters}. "
    "Predict the item the user will engage with next.",
    "Based on the sequence of items {inters}, what item should be recommended to the user next?",
    "The user's purchase history is {inters}, listed chronologically. "
    "Please suggest the next item this user is likely to buy.",
    "Using the chronological interaction record {inters}, identify the user's next item.",
    "From the user's past interactions {inters}, in time order, "
    "infer which item the user will choose next.",
)

TITLE_INSTRUCTION = (
    "Given a list of items the user has interacted with before, "
    "please recommend a new item that the user likes to the user."
)
TITLE_INPUT = "The user has interacted with the following items before: {inters}"


def seqrec_prompt(history_identifiers: list[str], paraphrase: int = 0) -> str:
    """LC-Rec prompt text, ending with ``### Response:`` (the identifier follows directly)."""
    instruction = SEQREC_INSTRUCTIONS[paraphrase].format(inters=", ".join(history_identifiers))
    return f"{ALPACA_HEADER}\n\n### Instruction:\n{instruction}\n\n### Response:"


def title_prompt(history_titles: list[str]) -> str:
    """BIGRec prompt text with quoted titles, ending with ``### Response:\\n``."""
    inters = ", ".join(f'"{t}"' for t in history_titles)
    return (
        f"{ALPACA_HEADER}\n\n### Instruction:\n{TITLE_INSTRUCTION}\n\n"
        f"### Input:\n{TITLE_INPUT.format(inters=inters)}\n\n### Response:\n"
    )


def quoted(title: str) -> str:
    """The BIGRec response text of an item."""
    return f'"{title}"'


# Candidate-ranking instructions by domain. "music" is S-DPO's `prompt/music.txt` template 0
# verbatim (S-DPO draws one of 10 per example; here it is always this one); "items" is the
# same sentence with generic domain words.
CANDIDATE_TEMPLATES = {
    "items": (
        "This user has interacted with these items {history} recently. Please predict the "
        "next item this user will interact with. Choose the answer from the following {n} "
        "items: {candidates}. Answer:"
    ),
    "music": (
        "This person has listened some musics from these bands {history} recently. Please "
        "predict the next band or artist this person will listen to. Choose the answer from "
        "the following {n} band names: {candidates}. Answer:"
    ),
}


def candidate_prompt(history: list[str], candidates: list[str], domain: str = "items") -> str:
    """The candidate-ranking instruction.

    Args:
        history: the history items' texts (quoted titles or identifiers), oldest first.
        candidates: the candidates' texts, in the row's order.
        domain: a key of :data:`CANDIDATE_TEMPLATES` (``items`` or ``music``).

    Returns:
        The prompt text, ending with ``Answer:`` (the response follows directly).
    """
    if domain not in CANDIDATE_TEMPLATES:
        raise ValueError(f"domain must be one of {sorted(CANDIDATE_TEMPLATES)}, got {domain!r}")
    return CANDIDATE_TEMPLATES[domain].format(
        history=", ".join(history), n=len(candidates), candidates=", ".join(candidates)
    )
