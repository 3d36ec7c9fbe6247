"""Candidate-ranking evaluation (S-DPO / LLaRA; paper Figure 6): one of N candidates per row.

Two measurements of the same rows (:class:`ilrec.data.candidates.CandidateExample`):

- **exact ranking**: each candidate's sequence log-probability after the row's prompt (its
  identifier + EOS, :func:`ilrec.models.scoring.score_responses`, all candidates of a row in
  one packed pass), candidates sorted by it (ties keep the candidate order) -> HR@1, HR@5,
  NDCG@5 over the N candidates. Deterministic; the model-selection metric (:data:`SELECTION_METRIC`).
- **greedy generation** as S-DPO evaluates (Hugging Face ``generate``, ``do_sample=False``,
  20 new tokens for titles, identifier length + 1 for semantic IDs), the answer checked
  against the candidates' names (:func:`ilrec.data.lastfm.match_candidates`): ``exact`` (the
  answer, without surrounding whitespace and one pair of quotes, equals a candidate's title or
  identifier string) and S-DPO's ``substring`` rule. HitRatio@1 (``hit@1``) counts answers
  naming exactly one candidate, the target; ValidRatio (``valid``) those naming exactly one.

Under ``torchrun`` rows are sharded across ranks and gathered (each row once).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from transformers import GenerationConfig

from ilrec.data.encoding import Encoder
from ilrec.data.lastfm import match_candidates
from ilrec.distributed import in_lockstep
from ilrec.evaluation.beam import left_pad
from ilrec.evaluation.ranking import shard_rows
from ilrec.metrics import rank_metrics
from ilrec.models.modes import eval_mode
from ilrec.models.scoring import score_responses

__all__ = [
    "MATCH_MODES",
    "METRIC_KEYS",
    "SELECTION_METRIC",
    "candidate_ranker",
    "candidate_table",
    "generate_answers",
    "generation_metrics",
    "popularity_ranking",
    "rank_by_scores",
    "rank_candidates",
    "score_candidates",
]

METRIC_KEYS = ("hit@1", "hit@5", "ndcg@5")
SELECTION_METRIC = "ndcg@5"
"""What a candidate run is selected (and stopped early) on: ``Config.selection_metric``."""
MATCH_MODES = ("exact", "substring")
TITLE_NEW_TOKENS = 20  # S-DPO's max_new_tokens


def candidate_table(examples: Sequence) -> Tensor:
    """``LongTensor[U, N]``: every row's candidates (rows must all have N)."""
    if not examples or not all(getattr(e, "candidates", ()) for e in examples):
        raise ValueError("candidate evaluation needs candidate rows (data.task=candidates)")
    return torch.tensor([list(e.candidates) for e in examples], dtype=torch.long)


def score_candidates(
    model: nn.Module,
    encoder: Encoder,
    examples: Sequence,
    batch_size: int = 16,
    progress: Callable | None = None,
) -> Tensor:
    """``[U, N]`` sequence log-probabilities of each row's candidates after its prompt."""
    rows = [
        (encoder.example_prompt_ids(e), [encoder.response_ids(c) for c in e.candidates])
        for e in examples
    ]
    pad = encoder.tokenizer.pad_token_id
    return shard_rows(
        lambda mine: score_responses(
            model, [p for p, _ in mine], [r for _, r in mine], pad, batch_size, progress
        ),
        rows,
    )


def rank_by_scores(scores: Tensor, candidates: Tensor) -> Tensor:
    """``[U, N]`` candidate item ids by decreasing score; ties keep the candidate order."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    return candidates.gather(1, order)


def _metrics(ranked: Tensor, examples: Sequence) -> dict[str, float]:
    targets = torch.tensor([e.target for e in examples], dtype=torch.long)
    metrics = rank_metrics(ranked, targets, ks=(1, 5))
    return {key: metrics[key] for key in METRIC_KEYS}


def rank_candidates(
    model: nn.Module,
    encoder: Encoder,
    examples: Sequence,
    batch_size: int = 16,
    progress: Callable | None = None,
) -> tuple[dict[str, float], Tensor]:
    """Exact candidate ranking of ``examples``.

    Returns:
        ``{"hit@1", "hit@5", "ndcg@5"}`` and the ranked candidates ``LongTensor[U, N]``.
    """
    candidates = candidate_table(examples)
    ranked = rank_by_scores(
        score_candidates(model, encoder, examples, batch_size, progress), candidates
    )
    return _metrics(ranked, examples), ranked


def popularity_ranking(
    counts: Sequence[int], examples: Sequence
) -> tuple[dict[str, float], Tensor]:
    """The popularity baseline: candidates by training popularity (ties: candidate order)."""
    candidates = candidate_table(examples)
    scores = torch.as_tensor(counts, dtype=torch.float64)[candidates]
    ranked = rank_by_scores(scores, candidates)
    return _metrics(ranked, examples), ranked


def candidate_ranker(
    examples: Sequence, encoder: Encoder, batch_size: int
) -> Callable[[nn.Module], dict[str, float]]:
    """Model selection on the candidate task: the exact ranking metrics of ``examples``
    (:data:`SELECTION_METRIC` among them)."""

    def rank_metrics_fn(model: nn.Module) -> dict[str, float]:
        return rank_candidates(model, encoder, examples, batch_size)[0]

    return rank_metrics_fn


# ------------------------------------------------------------------------- generation


def default_new_tokens(encoder: Encoder) -> int:
    """20 for titles (S-DPO); the longest identifier plus EOS for semantic IDs."""
    if encoder.fmt == "title":
        return TITLE_NEW_TOKENS
    return max(len(ids) for ids in encoder.identifier_ids) + 1


def _greedy_config(encoder: Encoder, max_new_tokens: int) -> GenerationConfig:
    """Greedy decoding with every sampling or penalty setting at the library's neutral value
    (top-k at its default 50, unused without sampling), so no default of the model's own
    ``generation_config.json`` (a repetition penalty, a temperature) leaks in."""
    tokenizer = encoder.tokenizer
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        temperature=1.0,
        top_p=1.0,
        top_k=50,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


@torch.inference_mode()
def _generate_ids(
    model: nn.Module, encoder: Encoder, prompts: list[list[int]], max_new: int, batch_size: int
) -> Tensor:
    """``LongTensor[U, max_new]`` generated ids, -1 after the first EOS (EOS excluded)."""
    device = next(model.parameters()).device
    config, eos = _greedy_config(encoder, max_new), encoder.tokenizer.eos_token_id
    out = torch.full((len(prompts), max_new), -1, dtype=torch.long)
    for start in range(0, len(prompts), batch_size):
        ids, mask, _ = left_pad(
            prompts[start : start + batch_size], encoder.tokenizer.pad_token_id, device
        )
        new = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=config, synced_gpus=in_lockstep()
        )
        new = new[:, ids.shape[1] :].cpu()
        ended = (new == eos).long().cumsum(1) > 0
        new = new.masked_fill(ended, -1)
        out[start : start + len(new), : new.shape[1]] = new
    return out


def generate_answers(
    model: nn.Module,
    encoder: Encoder,
    examples: Sequence,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
) -> list[str]:
    """Each row's greedy answer after its prompt, decoded (special tokens skipped).

    Args:
        model: the causal LM (eval mode is set for the call).
        encoder: the run's encoder (prompts, tokenizer).
        examples: candidate rows.
        batch_size: prompts per ``generate`` call.
        max_new_tokens: None = :func:`default_new_tokens`.

    Returns:
        The answers, up to (without) the first EOS.
    """
    max_new = max_new_tokens or default_new_tokens(encoder)
    prompts = [encoder.example_prompt_ids(e) for e in examples]
    with eval_mode(model):
        ids = shard_rows(
            lambda mine: _generate_ids(model, encoder, mine, max_new, batch_size), prompts
        )
    return [
        encoder.tokenizer.decode(
            [t for t in row if t >= 0], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        for row in ids.tolist()
    ]


def generation_metrics(
    answers: Sequence[str], examples: Sequence, encoder: Encoder
) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """S-DPO's HitRatio@1 and ValidRatio of the answers, by matching mode.

    Returns:
        ``{mode: {"hit@1", "valid"}}`` for ``exact`` and ``substring``, and per row the
        candidate items each mode found in the answer (a row is valid with exactly one).
    """
    totals = {mode: {"hit@1": 0, "valid": 0} for mode in MATCH_MODES}
    details = []
    for answer, e in zip(answers, examples, strict=True):
        names = [encoder.identifiers[c] for c in e.candidates]
        record = {"user": e.user, "target": e.target, "answer": answer}
        for mode in MATCH_MODES:
            found = [e.candidates[k] for k in match_candidates(answer, names, mode)]
            totals[mode]["valid"] += len(found) == 1
            totals[mode]["hit@1"] += found == [e.target]
            record[mode] = found
        details.append(record)
    n = max(len(examples), 1)
    metrics = {m: {k: v / n for k, v in t.items()} for m, t in totals.items()}
    return metrics, details
