"""Train the evidence scorer: a LoRA on the embedded all-MiniLM-L6-v2 that brings a question and
the sentence answering it closer than the other sentences of the same paragraph.

    .venv/bin/python -m chatbot.training.evidence_scorer ../shared/data/squad2/dev-v2.0.json [--epochs 1]

The examples are SQuAD 2.0 questions of the articles the evaluation never reads (all but the file's
last six: the last three are the published eval's, the three before them tune the scorer), each
with the sentence of its paragraph holding the answer and one other sentence of that paragraph.
The loss is in-batch contrastive (every other question's sentences are negatives too). Only the
LoRA weights are written (``chatbot/models/evidence_lora.safetensors``, ~1.4 MB, with its
``.json``); :class:`chatbot.models.embeddings.LazyEmbeddings` merges them into the model when it
loads. Measured by ``benchmarks/evidence_sentences.py``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from chatbot.models.embeddings import EVIDENCE_LORA
from chatbot.models.sources import resolve_embedding_folder
from chatbot.rag.evidence import candidate_sentences
from chatbot.text import content_words

HELD_OUT = 6  # the eval's 3 articles and the 3 the scorer is tuned on
TARGETS = ["query", "key", "value", "dense"]


def _normalise(text: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def examples(squad: Path, seed: int = 0) -> list[tuple[str, str, str]]:
    """(question, the sentence holding its answer, another sentence of its paragraph)."""
    articles = json.loads(squad.read_text(encoding="utf-8"))["data"][:-HELD_OUT]
    rng = random.Random(seed)
    found = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            sentences = [text for _, text in candidate_sentences([paragraph["context"].strip()])]
            for qa in paragraph["qas"]:
                if qa.get("is_impossible") or not qa["answers"] or not content_words(qa["question"]):
                    continue
                gold = _normalise(qa["answers"][0]["text"])
                holding = [s for s in sentences if gold in _normalise(s)]
                others = [s for s in sentences if gold not in _normalise(s)]
                if holding and others:
                    found.append((qa["question"].strip(), holding[0], rng.choice(others)))
    rng.shuffle(found)
    return found


def train(
    squad: Path, out: Path, rank: int = 8, epochs: float = 1.0, learning_rate: float = 5e-4, seed: int = 0
) -> dict:
    """Train the LoRA and write its weights and record to ``out`` (``.safetensors`` and ``.json``)."""
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(seed)
    model = SentenceTransformer(str(resolve_embedding_folder("embedded")), device="cpu")
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS)
    model[0].auto_model = get_peft_model(model[0].auto_model, config)
    triples = examples(squad, seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=learning_rate)
    batch = 32
    steps = max(1, int(len(triples) * epochs / batch))
    model.train()
    started, losses = time.perf_counter(), []

    def encode(texts: tuple[str, ...]) -> torch.Tensor:
        features = model.preprocess(list(texts))
        return torch.nn.functional.normalize(model(features)["sentence_embedding"], dim=-1)

    for step in tqdm(range(steps), desc="evidence scorer", unit="step"):
        chunk = [triples[(step * batch + i) % len(triples)] for i in range(batch)]
        questions, holding, others = zip(*chunk, strict=True)
        scores = encode(questions) @ torch.cat([encode(holding), encode(others)]).T * 20.0
        loss = torch.nn.functional.cross_entropy(scores, torch.arange(len(questions)))
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        losses.append(round(loss.item(), 4))
    weights = {
        name.removeprefix("base_model.model."): tensor.detach().contiguous()
        for name, tensor in model[0].auto_model.state_dict().items()
        if "lora_" in name
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out.with_suffix(".safetensors")))
    record = {
        "base": "sentence-transformers/all-MiniLM-L6-v2 (the embedded model)",
        "rank": rank,
        "alpha": 2 * rank,
        "targets": TARGETS,
        "examples": len(triples),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "seed": seed,
        "steps": steps,
        "loss_first_last": [losses[0], losses[-1]],
        "seconds": round(time.perf_counter() - started, 1),
        "data": "SQuAD 2.0 dev (half, ../shared/data): every article but the last six",
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("squad", type=Path)
    parser.add_argument("--out", type=Path, default=EVIDENCE_LORA)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    args = parser.parse_args()
    print(json.dumps(train(args.squad, args.out, args.rank, args.epochs, args.learning_rate), indent=2))


if __name__ == "__main__":
    main()
