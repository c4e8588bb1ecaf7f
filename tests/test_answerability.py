"""The answerability signal: what it measures, its fit, and the shipped calibration."""

import json
import random
import shutil

import pytest

from chatbot.adapters.domains import FIT_FILE
from chatbot.evaluation.calibration import fit
from chatbot.rag.answerability import FIT, MODEL_SIGNALS, SIGNALS, Answerability, load, model_signals, signals
from tests.conftest import REPO

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
    assert set(copied) == set(SIGNALS) - set(MODEL_SIGNALS)  # no token probabilities given


def test_the_model_signals_read_its_token_probabilities():
    sure = model_signals([-0.01] * 20, {"The": 0.9, "I": 0.05, " I": 0.02, "It": 0.03})
    unsure = model_signals([-0.01] * 4 + [-2.0] * 16, {"I": 0.6, "The": 0.3, "Idaho": 0.1})
    assert sure["answer_confidence"] == pytest.approx(0.99, abs=1e-3)
    assert sure["opening_confidence"] == pytest.approx(0.99, abs=1e-3)
    assert unsure["answer_confidence"] < 0.3 < unsure["opening_confidence"] < sure["opening_confidence"]
    assert sure["decline_first"] == pytest.approx(0.07)  # "I" and " I" open "I don't know"; "It" does not
    assert unsure["decline_first"] == pytest.approx(0.6)  # "Idaho" does not either
    assert model_signals([], {"I": 1.0}) == {}  # a backend without token probabilities
    both = signals("What is it?", "It is 4812 kelvin.", BLOCKS, [0.8], False, sure)
    assert set(both) == set(SIGNALS)


def test_a_signal_a_turn_lacks_counts_as_the_fits_fill():
    model = Answerability({"answer_confidence": 4.0}, bias=-2.0, threshold=0.5, fill={"answer_confidence": 0.5})
    assert model.probability({}) == pytest.approx(0.5)  # bias -2 + 4 x the fill 0.5
    assert model.probability({"answer_confidence": 1.0}) > 0.8
    assert Answerability.from_json(model.to_json()) == model
    with pytest.raises(ValueError, match="unknown signals"):
        Answerability.from_json({"weights": {}, "fill": {"vibes": 1.0}, "bias": 0.0, "threshold": 0.5})


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


def test_a_fit_fills_a_signal_some_turns_lack_with_its_mean():
    records = _records(separable=True)
    for record in records[::2]:
        del record["signals"]["answer_confidence"]  # e.g. turns answered by a backend without token probabilities
    present = [r["signals"]["answer_confidence"] for r in records[1::2]]
    fitted = fit(records)
    assert fitted.fill["answer_confidence"] == pytest.approx(sum(present) / len(present), abs=1e-4)
    assert fitted.fill["best_score"] == pytest.approx(sum(r["signals"]["best_score"] for r in records) / 200, abs=1e-4)


def test_a_fit_needs_both_kinds_of_turn():
    records = [r for r in _records(separable=True) if r["answerable"]]
    with pytest.raises(ValueError, match="at least 10"):
        fit(records)


FINANCE_FIT = REPO / "adapters" / "finance" / FIT_FILE


@pytest.mark.parametrize(("path", "adapters"), [(FIT, ["base"]), (FINANCE_FIT, ["finance"])])
def test_the_shipped_fits_load_and_say_how_they_were_made(path, adapters):
    shipped = load(path)
    assert set(shipped.weights) <= set(SIGNALS) and 0.0 < shipped.threshold < 1.0
    about = json.loads(path.read_text())["about"]
    assert about["skip_articles"] >= 3  # fitted on articles the published eval never asks
    assert about["rows"] >= 100 and about["auc_cross_validated"] > 0.5 and about["adapters"] == adapters


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
    assert bot.chain.answerability == own and bot.chain.threshold(own) == 0.42
    assert load(None) == load() and load() != own  # without the setting: the shipped fit
    with pytest.raises(ValueError, match="answerability_fit.*no such file"):
        load_settings(answerability_fit=tmp_path / "missing.json")
    path.write_text('{"weights": {"best_score": "high"}}')
    with pytest.raises(AnswerabilityFitError, match="fit.json"):
        load(path)
    path.write_text(json.dumps(own.to_json() | {"about": {"padding": "x" * 70_000}}))
    with pytest.raises(AnswerabilityFitError, match="over 65536 bytes"):
        load(path)  # refused before it is parsed


def test_an_adapters_own_fit_scores_its_turns_and_a_bad_one_is_refused(tmp_path, make_bot, knowledge, lora_folder):
    from chatbot.adapters.domains import UnknownAdapterError
    from chatbot.rag.chain import UNLIKELY
    from chatbot.ui.adapters_tab import card_html

    (knowledge / "reactor.txt").write_text("The Zorblax reactor on Kepler station runs at 4812 kelvin.\n")
    adapters = tmp_path / "adapters"
    shutil.copytree(lora_folder, adapters / "strict")
    never = Answerability({"best_score": 1.0}, bias=-12.0, threshold=0.5)  # P(answerable) near 0 on any turn
    (adapters / "strict" / FIT_FILE).write_text(json.dumps(never.to_json()))
    bot = make_bot(adapters_dir=adapters, decline_unsupported=False)  # the random adapter writes nonsense
    bot.sync()
    question = "What temperature does the Zorblax reactor run at?"
    strict, base = bot.ask(question, adapter="strict"), bot.ask(question)
    listed = {row.name: row for row in bot.adapter_rows()}
    assert listed["strict"].answerability_fit == str(adapters / "strict" / FIT_FILE)
    assert "its own answerability fit" in card_html(listed["strict"]) and listed["base"].answerability_fit is None
    assert strict.abstained and strict.decline_reason == UNLIKELY.format(strict.answerability, 0.5)
    assert strict.answerability < 0.01 and strict.withheld
    assert base.answerability is not None and base.answerability > 0.01  # the app's fit, not the adapter's
    (adapters / "strict" / FIT_FILE).write_text('{"weights": {"best_score": "high"}}')
    with pytest.raises(UnknownAdapterError, match=f"strict.*{FIT_FILE}"):
        bot.ask(question, adapter="strict")
    assert bot.ask(question).answerability == base.answerability  # the rest keeps working
    (adapters / "strict" / FIT_FILE).unlink()
    again = bot.ask(question, adapter="strict")  # back to the app's fit
    assert {row.name: row for row in bot.adapter_rows()}["strict"].answerability_fit is None
    assert again.answerability == round(bot.chain.answerability.probability(again.signals), 4) > 0.01


def _run(records: list[dict]) -> list[dict]:
    """Synthetic records shaped like an eval run's, signal off: every answer shown."""
    for number, record in enumerate(records):
        right = record["answerable"] and number % 4 == 0
        record.update(
            id=str(number),
            cell="base + retrieval",
            answer=f"answer {number} [1]",
            decline_reason=None,
            f1=(1.0 if right else 0.0) if record["answerable"] else None,
            contains=right if record["answerable"] else None,
            citations=[{"gold": right, "supported": True, "cited_by": "model"}],
            seconds=1.0,
        )
    return records


def test_a_fit_applied_to_a_run_withholds_exactly_the_turns_under_its_threshold():
    from chatbot.evaluation.calibration import apply, compare
    from chatbot.rag.chain import NOT_ANSWERED

    records = _run(_records(separable=True, seed=3))
    fitted = fit(_records(separable=True))
    below = [fitted.probability(r["signals"]) < fitted.threshold for r in records]
    applied = apply(records, fitted)
    assert [r["declined"] for r in applied] == below and any(below) and not all(below)
    withheld = next(r for r in applied if r["declined"])
    assert withheld["answer"] == NOT_ANSWERED and withheld["withheld"].startswith("answer ")
    assert withheld["citations"] == [] and "answerability" in withheld["decline_reason"]
    assert not records[below.index(True)]["declined"]  # the run's own records are left as they were
    row = compare(records, fitted)["base + retrieval"]
    assert row["withheld"] == sum(below) and row["shown"] == len(records)
    assert row["on"]["declined_unanswerable"] > row["off"]["declined_unanswerable"] == 0.0
    assert row["on"]["wrong_shown"] < row["off"]["wrong_shown"]  # it withholds mostly wrong answers here
    assert 0.8 < row["auc"] <= 1.0
    nothing = compare(records, fitted, threshold=0.0)["base + retrieval"]  # threshold 0: the signal is off
    assert nothing["withheld"] == 0 and nothing["on"] == nothing["off"]


def test_chatbot_calibrate_check_reports_a_fit_on_records_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from chatbot.cli import app

    results = tmp_path / "results.json"
    results.write_text(json.dumps({"records": _run(_records(separable=True, seed=3))}))
    fitted = tmp_path / "fit.json"
    fitted.write_text(json.dumps(fit(_records(separable=True)).to_json()))
    before = FIT.read_bytes()
    outcome = CliRunner().invoke(app, ["calibrate", str(results), "--check", str(fitted), "--json"])
    assert outcome.exit_code == 0, outcome.output
    row = json.loads(outcome.output)["cells"]["base + retrieval"]
    assert row["withheld"] > 0 and row["on"]["declined_unanswerable"] > 0.5
    assert FIT.read_bytes() == before  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["fit.json", "results.json"]
    missing = CliRunner().invoke(app, ["calibrate", str(results), "--check", str(tmp_path / "nofit.json")])
    assert missing.exit_code == 1 and "nofit.json" in missing.output
