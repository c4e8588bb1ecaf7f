"""The answerability signal: what it measures, its fit, and the shipped calibration."""

import json
import random

import pytest

from chatbot.evaluation.calibration import fit
from chatbot.rag.answerability import FIT, SIGNALS, Answerability, load, signals

BLOCKS = [
    "The Zorblax reactor on Kepler station runs at a core temperature of 4812 kelvin.",
    "Tomatoes need six hours of sun and deep watering.",
]


def test_a_question_about_something_no_block_names_is_flagged():
    held = signals("What temperature does the Zorblax reactor run at?", "", BLOCKS, [0.8, 0.2], False)
    swapped = signals("What temperature does the Quelmar reactor run at?", "", BLOCKS, [0.8, 0.2], False)
    assert held["question_missing"] == 0.0
    assert swapped["question_missing"] == 1.0  # its one name is in no block
    assert held["question_coverage"] > 0.5
    assert held["score_margin"] == pytest.approx(0.6) and held["best_score"] == 0.8


def test_an_answer_with_made_up_specifics_is_flagged_and_a_copied_one_is_not():
    question = "What temperature does the Zorblax reactor run at?"
    copied = signals(question, "It runs at 4812 kelvin [1].", BLOCKS, [0.8], True)
    invented = signals(question, "It runs at 5200 kelvin in the Vostok wing.", BLOCKS, [0.8], False)
    assert copied["answer_unfounded"] == 0.0 and copied["answer_support"] == 1.0 and copied["model_cited"] == 1.0
    assert invented["answer_unfounded"] > 0.5 and invented["answer_support"] < 1.0
    assert set(copied) == set(SIGNALS)


def test_probability_follows_the_weights_and_unknown_signals_are_refused():
    model = Answerability({"question_missing": -4.0, "best_score": 2.0}, bias=0.0, threshold=0.5)
    covered = model.probability({"question_missing": 0.0, "best_score": 0.8})
    missing = model.probability({"question_missing": 1.0, "best_score": 0.8})
    assert covered > 0.5 > missing
    assert model.probability({"best_score": 1e6}) == pytest.approx(1.0)  # no overflow
    with pytest.raises(ValueError, match="unknown signals"):
        Answerability.from_json({"weights": {"vibes": 1.0}, "bias": 0.0, "threshold": 0.5})
    assert Answerability.from_json(model.to_json()) == model


def _records(separable: bool, count: int = 200, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        answerable = i % 2 == 0
        missing = (0.0 if answerable else 1.0) if separable else float(rng.random() < 0.5)
        if separable and rng.random() < 0.1:  # some noise: a fit should not be perfect by construction
            missing = 1.0 - missing
        values = {name: rng.random() for name in SIGNALS} | {"question_missing": missing}
        records.append({"answerable": answerable, "gold_in_blocks": answerable, "declined": False, "signals": values})
    return records


def test_a_fit_finds_a_signal_that_separates_and_none_in_noise():
    good = fit(_records(separable=True))
    assert good.about["auc_cross_validated"] > 0.8
    assert good.weights["question_missing"] < -1.0
    probabilities = [good.probability(r["signals"]) for r in _records(separable=True, seed=1)]
    assert 0.0 < good.threshold < 1.0
    declined_answerable = sum(p < good.threshold for p in probabilities[0::2]) / 100
    declined_unanswerable = sum(p < good.threshold for p in probabilities[1::2]) / 100
    assert declined_answerable <= 0.2 and declined_unanswerable > 0.6  # held-out records of the same kind
    noise = fit(_records(separable=False))
    assert 0.3 < noise.about["auc_cross_validated"] < 0.7


def test_a_fit_caps_the_answerable_turns_it_declines():
    records = _records(separable=True)
    for cap in (0.0, 0.05, 0.2):
        fitted = fit(records, max_answerable_declines=cap)
        answerable = [fitted.probability(r["signals"]) for r in records if r["answerable"]]
        assert sum(p < fitted.threshold for p in answerable) / len(answerable) <= cap


def test_a_fit_needs_both_kinds_of_turn():
    records = [r for r in _records(separable=True) if r["answerable"]]
    with pytest.raises(ValueError, match="at least 10"):
        fit(records)


def test_the_shipped_fit_loads_and_says_how_it_was_made():
    shipped = load()
    assert shipped is not None, f"{FIT} is missing (chatbot calibrate writes it)"
    assert set(shipped.weights) <= set(SIGNALS) and 0.0 < shipped.threshold < 1.0
    about = json.loads(FIT.read_text())["about"]
    assert about["skip_articles"] >= 3  # fitted on articles the published eval never asks
    assert about["rows"] >= 100 and about["auc_cross_validated"] > 0.5


def test_chatbot_calibrate_writes_a_fit_that_loads_and_refuses_bad_input_by_name(tmp_path):
    from typer.testing import CliRunner

    from chatbot.cli import app

    results = tmp_path / "results.json"
    config = {"questions": "q.json", "articles": 3, "skip_articles": 3, "limit": 200, "adapters": ["base"]}
    results.write_text(json.dumps({"config": config, "records": _records(separable=True)}))
    out = tmp_path / "fit.json"
    outcome = CliRunner().invoke(app, ["calibrate", str(results), "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert "200 turns (100 answerable)" in outcome.output
    fitted = load(out)
    assert fitted is not None and fitted.about["skip_articles"] == 3 and fitted.about["rows"] == 200
    results.write_text(json.dumps({"records": [r for r in _records(separable=True) if r["answerable"]]}))
    refused = CliRunner().invoke(app, ["calibrate", str(results), "--out", str(tmp_path / "other.json")])
    assert refused.exit_code == 1 and "at least 10" in refused.output
    assert not (tmp_path / "other.json").exists()
    missing = CliRunner().invoke(app, ["calibrate", str(tmp_path / "nope.json")])
    assert missing.exit_code == 1 and "nope.json" in missing.output
    for hostile in ('{"records": [1, 2, 3]}', "[]", '{"records": null}'):
        results.write_text(hostile)
        refused = CliRunner().invoke(app, ["calibrate", str(results), "--out", str(tmp_path / "other.json")])
        assert refused.exit_code == 1 and "cannot calibrate" in refused.output, hostile
    assert not (tmp_path / "other.json").exists()


def test_a_configured_fit_is_used_and_a_bad_one_is_refused_by_name(tmp_path, make_bot):
    from chatbot.config import load_settings
    from chatbot.rag.answerability import AnswerabilityFitError

    own = Answerability({"best_score": 3.0}, bias=-1.0, threshold=0.42, about={"data": "mine"})
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(own.to_json()))
    bot = make_bot(answerability_fit=path)
    assert bot.chain.answerability == own and bot.chain.answerability_threshold == 0.42
    assert load(None) == load() and load() != own  # without the setting: the shipped fit
    with pytest.raises(ValueError, match="answerability_fit.*no such file"):
        load_settings(answerability_fit=tmp_path / "missing.json")
    path.write_text('{"weights": {"best_score": "high"}}')
    with pytest.raises(AnswerabilityFitError, match="fit.json"):
        load(path)
    path.write_text(json.dumps(own.to_json() | {"about": {"padding": "x" * 70_000}}))
    with pytest.raises(AnswerabilityFitError, match="over 65536 bytes"):
        load(path)  # refused before it is parsed
