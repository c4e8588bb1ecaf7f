"""How likely the retrieved blocks answer the question: a calibrated signal for the decline decision.

A few signals of one turn (how close the best block is, how much of the question the blocks hold,
whether the question names something no block mentions, how much of the answer the blocks hold)
go through a logistic model fitted on held-out questions (``chatbot calibrate`` on an eval run
over SQuAD 2.0 articles the eval never reads; the fit, its data and figures are in
``answerability.json`` next to this module). Its output is P(the question is answerable from these
blocks); the chain declines below a threshold (``answerability_threshold``, docs/evaluation.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chatbot.rag.grounding import figures, names, plain, share_in, unfounded_specifics
from chatbot.text import sentences, strip_markers

FIT = Path(__file__).with_name("answerability.json")
MAX_FIT_BYTES = 64 * 1024
SIGNALS = (
    "best_score",  # cosine similarity of the best block
    "score_margin",  # best block's similarity minus the second's
    "question_coverage",  # largest share of the question's content words found in one block
    "question_missing",  # names and numbers of the question that no block holds (share)
    "answer_support",  # share of the answer's content words found in the blocks
    "answer_unfounded",  # names and numbers of the answer that no block holds (0..1, 3 or more = 1)
    "model_cited",  # the model wrote a [n] marker itself
    "answer_confidence",  # the model's geometric-mean probability of its answer's tokens
    "opening_confidence",  # the same over the answer's first OPENING tokens (the short answer)
    "decline_first",  # the model's probability of opening with the decline ("I don't know")
)
MODEL_SIGNALS = SIGNALS[-3:]  # from the model's token probabilities: absent where a backend has none
OPENING = 8
DECLINE_OPENING = "I don't know"


def _specifics(text: str) -> int:
    text = plain(text)
    return len(figures(text)) + sum(len(names(sentence)) for sentence, _ in sentences(text))


def _geometric_mean(logprobs: Sequence[float]) -> float:
    return math.exp(sum(logprobs) / len(logprobs))


def model_signals(token_logprobs: Sequence[float], first_choices: Mapping[str, float]) -> dict[str, float]:
    """The :data:`MODEL_SIGNALS` of one answer from its tokens' log-probabilities and the likeliest
    first tokens (text -> probability); empty when the backend reported none."""
    if not token_logprobs:
        return {}
    opening = [
        probability
        for text, probability in first_choices.items()
        if text.strip() and DECLINE_OPENING.startswith(text.strip())
    ]
    return {
        "answer_confidence": _geometric_mean(token_logprobs),
        "opening_confidence": _geometric_mean(token_logprobs[:OPENING]),
        "decline_first": min(sum(opening), 1.0),
    }


def signals(
    question: str,
    answer: str,
    blocks: Sequence[str],
    scores: Sequence[float],
    model_cited: bool,
    model: Mapping[str, float] | None = None,
    unfounded: Sequence[str] | None = None,
) -> dict:
    """The signals of one turn (``answer`` with or without its markers), named as in :data:`SIGNALS`;
    ``model``: its :func:`model_signals` (left out when the backend gave none); ``unfounded``: the
    answer's :func:`unfounded_specifics` when the caller has them already."""
    ranked = sorted(scores, reverse=True)
    asked = _specifics(question)
    claim = strip_markers(answer)
    if unfounded is None:
        unfounded = unfounded_specifics(claim, blocks)
    return {
        **(model or {}),
        "best_score": ranked[0] if ranked else 0.0,
        "score_margin": ranked[0] - ranked[1] if len(ranked) > 1 else (ranked[0] if ranked else 0.0),
        "question_coverage": max((share_in(question, block) for block in blocks), default=0.0),
        "question_missing": len(unfounded_specifics(question, blocks)) / asked if asked else 0.0,
        "answer_support": share_in(claim, "\n\n".join(blocks)) if claim.strip() else 0.0,
        "answer_unfounded": min(len(unfounded), 3) / 3,
        "model_cited": float(model_cited),
    }


@dataclass(frozen=True)
class Answerability:
    """A fitted logistic model over :data:`SIGNALS` and the threshold chosen with it."""

    weights: Mapping[str, float]
    bias: float
    threshold: float  # the calibrated default: decline below it
    about: dict = field(default_factory=dict)  # how it was fitted: data, figures
    fill: Mapping[str, float] = field(default_factory=dict)  # a signal's value where a turn lacks it (its mean)

    def probability(self, values: Mapping[str, float]) -> float:
        """P(answerable from these blocks) for one turn's :func:`signals` (a missing one counts as its fill)."""
        z = self.bias + sum(
            weight * float(values.get(name, self.fill.get(name, 0.0))) for name, weight in self.weights.items()
        )
        return 1.0 / (1.0 + math.exp(-max(min(z, 40.0), -40.0)))

    def to_json(self) -> dict:
        return {
            "weights": dict(self.weights),
            "bias": self.bias,
            "threshold": self.threshold,
            "fill": dict(self.fill),
            "about": self.about,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Answerability:
        weights = {str(name): float(value) for name, value in data["weights"].items()}
        fill = {str(name): float(value) for name, value in (data.get("fill") or {}).items()}
        unknown = (set(weights) | set(fill)) - set(SIGNALS)
        if unknown:
            raise ValueError(f"answerability fit names unknown signals: {sorted(unknown)}")
        about = dict(data.get("about") or {})
        return cls(weights, float(data["bias"]), float(data["threshold"]), about, fill)


def load(path: Path | None = None) -> Answerability | None:
    """The fit at ``path``, or the shipped one (None when none ships); a bad or missing ``path``
    raises :class:`AnswerabilityFitError` naming it."""
    if path is None:
        return read(FIT) if FIT.is_file() else None
    return read(path)


class AnswerabilityFitError(ValueError):
    """A fit file that cannot be read or is not a fit."""


def read(path: Path) -> Answerability:
    """The fit written at ``path`` by ``chatbot calibrate`` (at most ``MAX_FIT_BYTES``)."""
    try:
        if path.stat().st_size > MAX_FIT_BYTES:
            raise ValueError(f"over {MAX_FIT_BYTES} bytes: a fit is a few weights")
        return Answerability.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AnswerabilityFitError(f"answerability_fit: cannot use {path}: {exc}") from exc
