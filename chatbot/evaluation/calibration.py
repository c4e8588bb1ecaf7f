"""Fit the answerability signal (``chatbot/rag/answerability.json``) on an eval run's records.

The records must come from questions the published eval never asks (SQuAD: ``--skip-articles 3``)
and from a run with the signal off (``CHATBOT_ANSWERABILITY_THRESHOLD=0``), so every answer shows
what the signal alone would decline. A turn is *answerable* when its question has an answer and a
block the model was given holds it; everything else (SQuAD 2.0's unanswerable questions, answerable
ones whose passage was not retrieved) is not. The fit uses the turns the signal acts on: answers
the model gave and the other checks let through (the model's own declines and the checks come
first). A logistic regression over the signals estimates P(answerable); the threshold is the one
that declines the most unanswerable turns while declining at most ``max_answerable_declines`` of
the answerable ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from chatbot.rag.answerability import SIGNALS, Answerability


def _label(record: dict) -> bool:
    return bool(record["answerable"] and record.get("gold_in_blocks"))


def _shown(record: dict) -> bool:
    """A turn the signal acts on: an answer the model gave that the other checks let through."""
    return bool(record.get("signals")) and record.get("use_retrieval", True) and not record.get("declined")


def _threshold(probabilities: Sequence[float], labels: Sequence[bool], cap: float) -> float:
    """The highest-gain threshold: most negatives declined, positives declined at most ``cap``."""
    positives = [p for p, label in zip(probabilities, labels, strict=True) if label]
    negatives = [p for p, label in zip(probabilities, labels, strict=True) if not label]
    best, best_gain = 0.0, 0.0
    for candidate in sorted(set(probabilities)):
        lost = sum(p < candidate for p in positives) / max(len(positives), 1)
        if lost > cap:
            break
        gain = sum(p < candidate for p in negatives) / max(len(negatives), 1) - lost
        if gain > best_gain:
            best, best_gain = candidate, gain
    return best


def fit(records: Sequence[dict], max_answerable_declines: float = 0.1, about: dict | None = None) -> Answerability:
    """Fit :class:`Answerability` on eval ``records`` (those with signals); see the module docstring.

    Its ``about`` holds ``about`` plus the turns fitted on (``rows``, ``answerable``) and the
    cross-validated AUC."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    rows = [record for record in records if _shown(record)]
    labels = [_label(record) for record in rows]
    if len(set(labels)) < 2 or min(labels.count(True), labels.count(False)) < 10:
        raise ValueError("need at least 10 answerable and 10 unanswerable turns with signals to fit")
    present = {name: [r["signals"][name] for r in rows if name in r["signals"]] for name in SIGNALS}
    fill = {name: round(float(np.mean(values)), 4) for name, values in present.items() if values}
    features = np.array(
        [[float(record["signals"].get(name, fill.get(name, 0.0))) for name in SIGNALS] for record in rows]
    )
    target = np.array(labels, dtype=int)
    model = LogisticRegression(C=1.0, max_iter=1000)
    held_out = cross_val_predict(model, features, target, cv=5, method="predict_proba")[:, 1]
    model.fit(features, target)
    weights = {name: round(float(w), 4) for name, w in zip(SIGNALS, model.coef_[0], strict=True)}
    rounded = Answerability(weights, round(float(model.intercept_[0]), 4), 0.0, fill=fill)
    # the threshold is chosen on what the written (rounded) fit computes, so its cap holds for it
    probabilities = [rounded.probability(record["signals"]) for record in rows]
    threshold = _threshold(probabilities, labels, max_answerable_declines)
    auc = float(roc_auc_score(target, held_out))
    details = dict(about or {})
    details.update(
        rows=len(rows),
        answerable=int(target.sum()),
        auc_cross_validated=round(auc, 3),
        max_answerable_declines=max_answerable_declines,
    )
    return replace(rounded, threshold=threshold, about=details)


def apply(records: Sequence[dict], fitted: Answerability, threshold: float | None = None) -> list[dict]:
    """``records`` of a run with the signal off as the chain would have answered with ``fitted`` on.

    The signal changes no generated token, only whether a shown answer is withheld, so this is
    exactly the run with it on, without running the model again.
    """
    from chatbot.rag.chain import NOT_ANSWERED, UNLIKELY

    threshold = fitted.threshold if threshold is None else threshold
    applied = []
    for record in records:
        estimate = fitted.probability(record["signals"]) if record.get("signals") else None
        if estimate is not None and estimate < threshold and _shown(record):
            record = record | {
                "answer": NOT_ANSWERED,
                "withheld": record["answer"],
                "declined": True,
                "decline_reason": UNLIKELY.format(estimate, threshold),
                "f1": 0.0 if record["answerable"] else None,
                "contains": False if record["answerable"] else None,
                "citations": [],
                "context_dump": False,
                "stale": False if record.get("stale") is not None else None,
            }
        applied.append(record | {"answerability": estimate})
    return applied


COMPARED = (
    "declined_unanswerable",
    "declined_answerable",
    "answer_contains",
    "citation_precision",
    "wrong_shown",
)


def compare(records: Sequence[dict], fitted: Answerability, threshold: float | None = None) -> dict[str, dict]:
    """Per cell of a run with the signal off: the :data:`COMPARED` figures off and with ``fitted`` on,
    the answers shown and withheld (and how many of those held the gold answer), and the fit's AUC
    on the shown turns (None when they are all of one kind)."""
    from sklearn.metrics import roc_auc_score

    from chatbot.evaluation.runner import summarize

    applied = apply(records, fitted, threshold)
    off, on = (summarize(rows, {}, [], 0)["cells"] for rows in (records, applied))
    table = {}
    for cell in off:
        pairs = [(b, a) for b, a in zip(records, applied, strict=True) if b["cell"] == cell and _shown(b)]
        withheld = [before for before, after in pairs if after["declined"]]
        labels = [_label(before) for before, _ in pairs]
        estimates = [after["answerability"] for _, after in pairs]
        table[cell] = {
            "off": {key: off[cell][key] for key in COMPARED},
            "on": {key: on[cell][key] for key in COMPARED},
            "shown": len(pairs),
            "withheld": len(withheld),
            "withheld_with_gold": sum(bool(r["answerable"] and r["contains"]) for r in withheld),
            "auc": float(roc_auc_score(labels, estimates)) if len(set(labels)) == 2 else None,
        }
    return table
