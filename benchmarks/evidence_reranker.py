"""An experiment kept for the record: a cross-encoder evidence reranker, trained and measured
against the shipped evidence scorer. It was **not** adopted (docs/evaluation.md, "A cross-encoder
reranker, tried"): it picks the answering sentence less often than the scorer LoRA.

    .venv/bin/python benchmarks/evidence_reranker.py --squad ../shared/data/squad2/dev-v2.0.json [--epochs 1]

The reranker is the embedded all-MiniLM-L6-v2 reading a question and one sentence together (mean
pooled, a one-logit head, a PEFT LoRA of the encoder), trained on SQuAD 2.0 questions of the
articles the evaluation never reads (all but the file's last six), each with the sentences of its
paragraph at once: cross-entropy over those sentences and a "none answers" option
(:func:`group_loss`), whose target an unanswerable question takes, so sigmoid(logit) reads as
P(the sentence answers). A per-pair binary loss stayed at the class prior's loss for 250 steps;
grouping learned in 50. The adapter goes to ``.chatbot/evidence-reranker/`` (not shipped), and the
script prints ``evidence_sentences.py``'s figures (best sentence, best two, the AUC of the best
score between answerable and unanswerable questions) for the reranker alone and blended with the
shipped scorer, beside the shipped scorer, on the held-out and the tuning articles, with the CPU's flags.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from evidence_sentences import cached, measure, questions  # benchmarks/, next to this script
from run import cpu_flags
from tqdm.auto import tqdm

from chatbot.models.sources import resolve_embedding_folder
from chatbot.rag import evidence
from chatbot.rag.evidence import Quote, candidate_sentences
from chatbot.text import content_words

OUT = Path(".chatbot/evidence-reranker")

MAX_TOKENS = 160  # question and sentence together; a quotable sentence is at most 400 characters
BATCH = 32


def load_base() -> tuple[Any, torch.nn.Module]:
    """The embedded MiniLM's tokenizer and the model as a one-logit sequence classifier (head untrained)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = str(resolve_embedding_folder("embedded"))
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights newly initialized": the head, which the adapter holds
    try:
        model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, local_files_only=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return tokenizer, model


def tokenize(tokenizer: Any, questions: list[str], sentences: list[str]) -> dict[str, torch.Tensor]:
    """The pairs as one padded batch, the sentence cut where the pair passes :data:`MAX_TOKENS`."""
    return tokenizer(
        questions, sentences, padding=True, truncation="only_second", max_length=MAX_TOKENS, return_tensors="pt"
    )


def pair_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """One logit per pair of ``batch``: the sequence classifier's head on the mean of the encoder's
    token states (how the embedding model was trained to pool), not on its [CLS] pooler."""
    states = model.bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    return model.classifier((states * mask).sum(1) / mask.sum(1)).squeeze(-1)


HELD_OUT = 6  # the eval's 3 articles and the 3 the reranker is tuned on
MAX_GROUP = 8  # sentences of one paragraph scored together (the answer's is always among them)
TARGETS = r".*encoder\.layer\.\d+\..*(query|key|value|dense)"  # the encoder's linears, not the pooler


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces: how a gold answer is found inside a sentence."""
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def holds(sentence: str, answers: list[str]) -> bool:
    """Whether ``sentence`` holds one of ``answers`` (normalised, whole words)."""
    padded = f" {normalise(sentence)} "
    return any(f" {normalise(answer)} " in padded for answer in answers if normalise(answer))


Group = tuple[str, list[str], int]  # question, its paragraph's sentences, the answering one's index (-1: none)


def examples(articles: list[dict], seed: int = 0) -> list[Group]:
    """One group per question of ``articles`` with a content word, shuffled: an answerable one with
    the index of the first sentence holding its answer, an unanswerable one with -1."""
    rng = random.Random(seed)
    found: list[Group] = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            sentences = [text for _, text in candidate_sentences([paragraph["context"].strip()])]
            if len(sentences) < 2:
                continue
            for qa in paragraph["qas"]:
                question = qa["question"].strip()
                if not content_words(question):
                    continue
                group = list(sentences)
                rng.shuffle(group)
                if len(group) > MAX_GROUP:  # keep the answer's sentence
                    keep = [s for s in group if holds(s, [a["text"] for a in qa["answers"]])][:1]
                    group = keep + [s for s in group if s not in keep][: MAX_GROUP - len(keep)]
                    rng.shuffle(group)
                if qa.get("is_impossible"):
                    found.append((question, group, -1))
                    continue
                answering = [i for i, s in enumerate(group) if holds(s, [a["text"] for a in qa["answers"]])]
                if answering:
                    found.append((question, group, answering[0]))
    rng.shuffle(found)
    return found


def group_loss(logits: torch.Tensor, answer: int) -> torch.Tensor:
    """Cross-entropy over a group's sentences and a "none answers" option fixed at logit 0, whose
    target is the answering sentence or, for an unanswerable question, that option; the head's
    bias thereby learns where a sentence stops answering, so sigmoid(logit) reads as P(answers)."""
    options = torch.cat([logits, logits.new_zeros(1)])
    target = torch.tensor([answer if answer >= 0 else len(logits)])
    return torch.nn.functional.cross_entropy(options.unsqueeze(0), target)


def train(
    squad: Path,
    out: Path,
    rank: int = 16,
    epochs: float = 1.0,
    learning_rate: float = 3e-4,
    groups_per_step: int = 6,
    seed: int = 0,
) -> dict:
    """Train the reranker and write its adapter and record to the folder ``out``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    articles = json.loads(squad.read_text(encoding="utf-8"))["data"][:-HELD_OUT]
    groups = examples(articles, seed)
    tokenizer, model = load_base()
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=rank, lora_alpha=2 * rank, target_modules=TARGETS))
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    steps = max(1, int(len(groups) * epochs / groups_per_step))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, learning_rate, total_steps=steps, pct_start=0.1)
    classifier = model.base_model.model
    model.train()
    started, losses = time.perf_counter(), []
    progress = tqdm(range(steps), desc="evidence reranker", unit="step")
    for step in progress:
        batch = [groups[(step * groups_per_step + i) % len(groups)] for i in range(groups_per_step)]
        questions = [question for question, sentences, _ in batch for _ in sentences]
        texts = [sentence for _, sentences, _ in batch for sentence in sentences]
        logits = pair_logits(classifier, tokenize(tokenizer, questions, texts))
        loss, offset = logits.new_zeros(()), 0
        for _, sentences, answer in batch:
            loss = loss + group_loss(logits[offset : offset + len(sentences)], answer)
            offset += len(sentences)
        loss = loss / len(batch)
        loss.backward()
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
        losses.append(round(loss.item(), 4))
        if step % 20 == 0:
            progress.set_postfix(loss=sum(losses[-20:]) / len(losses[-20:]))
    model = model.to(torch.bfloat16)  # halves the shipped bytes
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    window = max(1, steps // 10)
    record = {
        "base": "sentence-transformers/all-MiniLM-L6-v2 (the embedded model), as a cross-encoder, mean pooled",
        "rank": rank,
        "targets": TARGETS,
        "questions": len(groups),
        "answerable": sum(1 for *_, answer in groups if answer >= 0),
        "epochs": epochs,
        "groups_per_step": groups_per_step,
        "learning_rate": learning_rate,
        "seed": seed,
        "steps": steps,
        "loss_first_last_tenth": [
            round(sum(losses[:window]) / window, 4),
            round(sum(losses[-window:]) / window, 4),
        ],
        "seconds": round(time.perf_counter() - started, 1),
        "data": f"SQuAD 2.0 dev (half, ../shared/data): every article but the last {HELD_OUT}",
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def load(folder: Path) -> tuple[Any, torch.nn.Module]:
    """The trained reranker, its LoRA merged."""
    from peft import PeftModel

    tokenizer, base = load_base()
    return tokenizer, PeftModel.from_pretrained(base, str(folder)).merge_and_unload().eval()


def probabilities(loaded: tuple[Any, torch.nn.Module], question: str, sentences: list[str]) -> list[float]:
    """P(answers ``question``) of each of ``sentences``."""
    tokenizer, model = loaded
    found: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(sentences), BATCH):
            part = sentences[start : start + BATCH]
            logits = pair_logits(model, tokenize(tokenizer, [question] * len(part), part))
            found.extend(torch.sigmoid(logits.float()).tolist())
    return found


def _tidy_saved(out: Path) -> None:
    """The adapter's config names the base by its public id, not this machine's path; PEFT's
    generated model card goes (``training.json`` says how it was made)."""
    config_file = out / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = "sentence-transformers/all-MiniLM-L6-v2"
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--questions", type=int, default=150)
    parser.add_argument("--train", action=argparse.BooleanOptionalAction, default=True, help="train, or reuse --out")
    args = parser.parse_args()
    from chatbot.models.embeddings import EVIDENCE_LORA, LazyEmbeddings

    if args.train:
        print(json.dumps(train(args.squad, args.out, epochs=args.epochs), indent=2))
    loaded = load(args.out)
    embed = cached(LazyEmbeddings("embedded", "cpu", "float32", EVIDENCE_LORA))  # the shipped scorer

    def scorer(blend: float | None):  # noqa: ANN202 - None: the shipped scorer alone
        def score(question: str, candidates: list[tuple[int, str]]) -> list[Quote]:
            shipped = evidence.score_sentences(question, candidates, embed)
            if blend is None:
                return shipped
            by_text = {quote.text: quote.score for quote in shipped}
            p = probabilities(loaded, question, [text for _, text in candidates])
            scored = [Quote(n, t, pi + blend * by_text[t]) for (n, t), pi in zip(candidates, p, strict=True)]
            return sorted(scored, key=lambda quote: quote.score, reverse=True)

        return score

    scorers = {"shipped scorer (scorer LoRA: cosine + 0.5 x overlap)": scorer(None), "reranker alone": scorer(0.0)}
    for blend in (0.5, 1.0, 2.0):
        scorers[f"reranker + {blend} x shipped scorer"] = scorer(blend)
    data = json.loads(args.squad.read_text(encoding="utf-8"))["data"]
    print(f"CPU flags: {cpu_flags()}")
    for label, articles in {"held-out (eval's last 3)": data[-3:], "tuning (the 3 before)": data[-6:-3]}.items():
        paragraphs = [p["context"].strip() for article in articles for p in article["paragraphs"]]
        items = questions(articles, args.questions, 0)
        unanswerable = questions(articles, args.questions, 0, answerable=False)
        print(f"\n{label}: {len(items)} answerable, {len(unanswerable)} unanswerable questions")
        for name, value in measure(paragraphs, items, unanswerable, embed, scorers).items():
            print(f"  {name:<60} {value:.3f}")


if __name__ == "__main__":
    main()
