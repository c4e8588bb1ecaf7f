"""A labelled set of (sentence, block, supported?) pairs built by script from SQuAD 2.0, and the
citation check's precision and recall on it.

Supported pairs are what an honest answer cites: the block's own sentence holding the answer,
a clause of it, the bare short answer, and the sentence with its numbers written another way.
Unsupported pairs are hard negatives made from those same sentences: a number changed, a name
swapped for one from another article, the sentence paired with the most similar paragraph of
another article or of the same one (a block about another entity), negated, the question echoed
back, and the article's heading pasted back. "Positive" in the figures means *unsupported*: the
check's job is to flag them.

A second set (:func:`build_answer_pairs`) holds whole answers in a conversation, for the
answer-level checks (:func:`answer_flags`: the citation check, then ``rag/vacuous.py``): answers
that restate the question, that add only words no block holds, and an earlier answer of the
conversation given again for another question of the same paragraph; beside answers that must
pass them (the sentence after an earlier turn on another question, the same question asked
again, the question's words with the short answer).

    python -m chatbot.evaluation.citation_set ../shared/data/squad2/dev-v2.0.json
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from chatbot.rag.grounding import SUPPORTED, judge, share_in
from chatbot.rag.vacuous import adds_nothing, repeats_earlier
from chatbot.text import content_words, sentences

HELD_OUT_ARTICLES = 3  # the eval's articles (the file's last three) are left out
_AUXILIARY = re.compile(r"\b(is|was|are|were|has|had|can|could|will|would|did|does|do)\b")
_NUMBER = re.compile(r"(?<![\w.,])\d[\d,]*(?<!,)(?![\w,]|\.\d)")
_CAPITAL = re.compile(r"\b[A-Z][a-z]{3,}\b")


@dataclass(frozen=True)
class Pair:
    """One labelled pair; ``kind`` says how it was made."""

    sentence: str
    block: str
    supported: bool
    kind: str
    question: str = ""
    earlier: tuple[tuple[str, str], ...] = ()  # earlier (question, answer) turns of the conversation


def _answer_sentence(context: str, start: int) -> str | None:
    offset = 0
    for sentence, separator in sentences(context):
        if offset <= start < offset + len(sentence):
            return sentence.strip()
        offset += len(sentence) + len(separator)
    return None


def _clause(sentence: str, answer: str) -> str | None:
    words = sentence.rstrip(".").split()
    at = next((i for i, word in enumerate(words) if answer.split()[0] in word), None)
    if at is None or len(words) <= 12:
        return None
    start = max(0, at - 6)
    return " ".join(words[start : start + 12]).rstrip(",;:") + "."


_SMALL = "zero one two three four five six seven eight nine ten eleven twelve".split()


def _reformat_number(sentence: str) -> str | None:
    """The sentence with one number written another way (2018 / 2,018, 3 / three)."""
    for match in _NUMBER.finditer(sentence):
        text = match.group(0)
        digits = text.replace(",", "")
        if not digits.isdigit():
            continue
        if len(digits) >= 4 and "," not in text:
            return sentence[: match.start()] + f"{int(digits):,}" + sentence[match.end() :]
        if "," in text:
            return sentence[: match.start()] + digits + sentence[match.end() :]
        if 2 <= int(digits) < len(_SMALL):
            return sentence[: match.start()] + _SMALL[int(digits)] + sentence[match.end() :]
    for index, word in enumerate(_SMALL[2:], 2):
        if match := re.search(rf"\b{word}\b", sentence):
            return sentence[: match.start()] + str(index) + sentence[match.end() :]
    return None


def _change_number(sentence: str, block: str, rng: random.Random) -> str | None:
    present = set(_NUMBER.findall(block))
    for match in _NUMBER.finditer(sentence):
        digits = match.group(0).replace(",", "")
        if not digits.isdigit():
            continue
        value = int(digits)
        for candidate in (value + rng.choice([1, 2, 3, 7]), value * 2 + 1, value + 10):
            if str(candidate) not in present and f"{candidate:,}" not in present:
                return sentence[: match.start()] + str(candidate) + sentence[match.end() :]
    return None


def _swap_name(sentence: str, block: str, names: list[str], rng: random.Random) -> str | None:
    inside = [m for m in _CAPITAL.finditer(sentence) if m.start() > 0]
    if not inside:
        return None
    target = rng.choice(inside)
    lowered = block.lower()
    for _ in range(20):
        name = rng.choice(names)
        if name.lower() not in lowered:
            return sentence[: target.start()] + name + sentence[target.end() :]
    return None


def _negate(sentence: str) -> str | None:
    if re.search(r"\b(not|never|no)\b|n't", sentence):
        return None
    match = _AUXILIARY.search(sentence)
    return sentence[: match.end()] + " not" + sentence[match.end() :] if match else None


def _most_similar(sentence: str, paragraphs: list[str]) -> str | None:
    words = content_words(sentence)
    return max(paragraphs, key=lambda p: len(words & content_words(p)), default=None)


@dataclass(frozen=True)
class _Source:
    """One answerable question and where it comes from."""

    article: int
    title: str
    context: str
    qa: dict
    paragraphs: list[str]


def _questions(data: list[dict]) -> list[_Source]:
    found = []
    for index, article in enumerate(data):
        paragraphs = [p["context"].strip() for p in article["paragraphs"]]
        title = article["title"].replace("_", " ")
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if not qa.get("is_impossible") and qa["answers"]:
                    found.append(_Source(index, title, paragraph["context"].strip(), qa, paragraphs))
    return found


def _answered(sources: list[_Source]) -> Iterator[tuple[_Source, dict, str]]:
    """Each source with its first answer and the sentence holding it (sources without one left out)."""
    for source in sources:
        answer = source.qa["answers"][0]
        sentence = _answer_sentence(source.context, answer["answer_start"])
        if sentence and len(sentence) <= 400:
            yield source, answer, sentence


def _hard_negatives(
    sentence: str, source: _Source, data: list[dict], names: list[str], rng: random.Random
) -> list[tuple[str, str | None, str]]:
    """(kind, sentence or None when it cannot be made, block) for every kind of hard negative."""
    context, question = source.context, source.qa["question"].strip()
    other_article = _other_article(sentence, data, source.article, rng)
    other_paragraph = _other_paragraph(sentence, context, source.paragraphs)
    return [
        ("number changed", _change_number(sentence, context, rng), context),
        ("name swapped", _swap_name(sentence, context, names, rng), context),
        ("other article's block", sentence if other_article else None, other_article or ""),
        ("same article, other paragraph", sentence if other_paragraph else None, other_paragraph or ""),
        ("negated", _negate(sentence), context),
        ("question echoed", question.rstrip("?") + ".", context),
        ("heading pasted", f"# {source.title}", f"# {source.title}\n\n{context}"),
    ]


def build_pairs(squad: Path, questions: int = 150, seed: int = 0) -> list[Pair]:
    """Labelled pairs from the answerable questions of ``squad`` (held-out articles excluded)."""
    data = json.loads(squad.read_text(encoding="utf-8"))["data"][:-HELD_OUT_ARTICLES]
    rng = random.Random(seed)
    names = sorted({m.group(0) for a in data for p in a["paragraphs"] for m in _CAPITAL.finditer(p["context"])})
    sources = _questions(data)
    rng.shuffle(sources)
    pairs: list[Pair] = []
    for source, answer, sentence in _answered(sources[:questions]):
        question, context = source.qa["question"].strip(), source.context
        supported = [("verbatim", sentence)]
        clause = _clause(sentence, answer["text"])
        supported.append(("clause", clause) if clause else ("short answer", answer["text"].strip().rstrip(".") + "."))
        if reformatted := _reformat_number(sentence):
            supported.append(("number written differently", reformatted))
        pairs += [Pair(text, context, True, kind, question) for kind, text in supported]
        negatives = [negative for negative in _hard_negatives(sentence, source, data, names, rng) if negative[1]]
        rng.shuffle(negatives)
        pairs += [Pair(text, block, False, kind, question) for kind, text, block in negatives[: len(supported)]]
    return pairs


_RESTATEMENTS = (
    "The answer is that {}.",
    "The passage answers the question of {}.",
    "{}, as the question asks and the context says.",
)
ANSWER_KINDS = ("question restated", "only words no block holds", "earlier answer repeated")


def _statement(question: str) -> str:
    """The question as a clause: its question mark gone, its first letter lowered."""
    text = question.strip().rstrip("?").strip()
    return text[:1].lower() + text[1:]


def _foreign_words(block: str, question: str, pool: list[str], rng: random.Random, count: int = 3) -> str | None:
    """``count`` content words of other articles that neither the block nor the question holds."""
    known = content_words(block) | content_words(question)
    words = [word for word in rng.sample(pool, min(len(pool), 200)) if word not in known]
    return " ".join(words[:count]) if len(words) >= count else None


def build_answer_pairs(squad: Path, questions: int = 150, seed: int = 0) -> list[Pair]:
    """Labelled whole answers for the answer-level checks (held-out articles excluded)."""
    data = json.loads(squad.read_text(encoding="utf-8"))["data"][:-HELD_OUT_ARTICLES]
    rng = random.Random(seed + 1)
    pool = sorted({w for a in data[:20] for p in a["paragraphs"] for w in content_words(p["context"]) if len(w) > 4})
    sources = _questions(data)
    by_paragraph: dict[str, list[_Source]] = {}
    for source in sources:
        by_paragraph.setdefault(source.context, []).append(source)
    rng.shuffle(sources)
    pairs: list[Pair] = []
    for source, answer, sentence in _answered(sources[:questions]):
        question, context = source.qa["question"].strip(), source.context
        siblings = [
            (other.qa["question"].strip(), other_sentence)
            for other in by_paragraph[context]
            if other.qa["question"].strip() != question
            and (other_sentence := _answer_sentence(context, other.qa["answers"][0]["answer_start"]))
            and other_sentence != sentence
        ]
        unrelated = rng.choice(sources)
        unrelated_turn = (unrelated.qa["question"].strip(), unrelated.qa["answers"][0]["text"].strip() + ".")
        short = answer["text"].strip().rstrip(".")
        supported = [
            Pair(sentence, context, True, "after a turn on another question", question, (unrelated_turn,)),
            Pair(sentence, context, True, "same question asked again", question, ((question, sentence),)),
            Pair(
                f"{_statement(question).capitalize()}: {short}.",
                context,
                True,
                "question words and the answer",
                question,
            ),
        ]
        negatives = [
            Pair(rng.choice(_RESTATEMENTS).format(_statement(question)), context, False, "question restated", question),
        ]
        if foreign := _foreign_words(context, question, pool, rng):
            text = f"{_statement(question).capitalize()}: {foreign}."
            negatives.append(Pair(text, context, False, "only words no block holds", question))
        if siblings:
            other_question, other_sentence = rng.choice(siblings)
            negatives.append(
                Pair(
                    other_sentence,
                    context,
                    False,
                    "earlier answer repeated",
                    question,
                    ((other_question, other_sentence),),
                )
            )
        pairs += supported + negatives
    return pairs


def answer_flags(pair: Pair) -> bool:
    """The app's checks of a whole answer: the citation check, then a restated question or an
    answer adding nothing a block holds, then an earlier answer of the conversation repeated."""
    return (
        check_flags(pair)
        or adds_nothing(pair.sentence, pair.question, [pair.block])
        or repeats_earlier(pair.sentence, pair.question, list(pair.earlier))
    )


def score_kinds(pairs: list[Pair], flags: Callable[[Pair], bool]) -> dict[str, dict[str, float]]:
    """Per unsupported kind: recall (its pairs flagged) and precision (among its pairs and the
    supported pairs of the same questions, the flagged ones that are unsupported)."""
    flagged = {id(pair): flags(pair) for pair in pairs}
    result = {}
    for kind in sorted({pair.kind for pair in pairs if not pair.supported}):
        negatives = [pair for pair in pairs if pair.kind == kind]
        asked = {pair.question for pair in negatives}
        positives = [pair for pair in pairs if pair.supported and pair.question in asked]
        caught = sum(flagged[id(pair)] for pair in negatives)
        false_alarms = sum(flagged[id(pair)] for pair in positives)
        result[kind] = {
            "precision": round(caught / max(1, caught + false_alarms), 3),
            "recall": round(caught / max(1, len(negatives)), 3),
            "pairs": len(negatives),
        }
    return result


def _other_article(sentence: str, data: list[dict], own: int, rng: random.Random) -> str | None:
    """The paragraph most like ``sentence`` among four other articles: a block about another entity."""
    others = [i for i in range(len(data)) if i != own]
    chosen = rng.sample(others, min(4, len(others)))
    return _most_similar(sentence, [p["context"] for i in chosen for p in data[i]["paragraphs"]])


def _other_paragraph(sentence: str, context: str, own: list[str]) -> str | None:
    """The most similar paragraph of the same article that does not hold the sentence's facts."""
    return _most_similar(sentence, [p for p in own if p != context and share_in(sentence, p) < 0.9])


def score(pairs: list[Pair], flags: Callable[[Pair], bool]) -> dict[str, float]:
    """Precision and recall of ``flags`` (True: unsupported) against the labels."""
    flagged = [flags(pair) for pair in pairs]
    true_positive = sum(f and not p.supported for f, p in zip(flagged, pairs, strict=True))
    negatives = sum(not p.supported for p in pairs)
    precision = true_positive / max(1, sum(flagged))
    recall = true_positive / max(1, negatives)
    return {"precision": round(precision, 3), "recall": round(recall, 3), "pairs": len(pairs), "unsupported": negatives}


def check_flags(pair: Pair) -> bool:
    """The app's citation check."""
    return not judge(pair.sentence, pair.block, pair.question).supported


def overlap_flags(pair: Pair) -> bool:
    """The word-overlap check the app used before, for comparison."""
    return len(content_words(pair.sentence)) >= 3 and share_in(pair.sentence, pair.block) < SUPPORTED


def per_kind(pairs: list[Pair], flags: Callable[[Pair], bool]) -> dict[str, str]:
    """For each kind of pair, how many the check judged as labelled."""
    right, total = Counter(), Counter()
    for pair in pairs:
        total[pair.kind] += 1
        right[pair.kind] += flags(pair) != pair.supported
    return {kind: f"{right[kind]}/{total[kind]}" for kind in sorted(total)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("squad", type=Path)
    parser.add_argument("--questions", type=int, default=150)
    parser.add_argument("--out", type=Path, help="write the pairs here as JSON lines")
    args = parser.parse_args()
    pairs = build_pairs(args.squad, args.questions)
    if args.out:
        args.out.write_text("".join(json.dumps(asdict(pair)) + "\n" for pair in pairs), encoding="utf-8")
    print(json.dumps({"check": score(pairs, check_flags), "word overlap": score(pairs, overlap_flags)}, indent=2))
    print(json.dumps(per_kind(pairs, check_flags), indent=2))
    answers = build_answer_pairs(args.squad, args.questions)
    print(json.dumps({"answer checks": score(answers, answer_flags)}, indent=2))
    print(json.dumps(score_kinds(answers, answer_flags), indent=2))
    print(json.dumps(per_kind(answers, answer_flags), indent=2))


if __name__ == "__main__":
    main()
