"""Chat-format training examples: read, validate, and tokenize with loss on assistant tokens only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, str]]
ROLES = ("system", "user", "assistant")
IGNORE = -100  # label of tokens that carry no loss


def validate(messages: object, where: str) -> Messages:
    """Check one example: a list of {role, content} ending with an assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list")
    for message in messages:
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise ValueError(f"{where}: each message needs a role in {ROLES} and a string content")
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"{where}: the last message must be the assistant's answer")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_chat_jsonl(path: Path) -> list[Messages]:
    """Examples from a JSONL file of ``{"messages": [...]}`` lines."""
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: invalid JSON ({exc.msg})") from exc
            examples.append(validate(row.get("messages") if isinstance(row, dict) else None, f"{path}:{number}"))
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


def write_chat_jsonl(path: Path, examples: Sequence[Messages]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in examples), encoding="utf-8")


def supervised_tokens(row: dict[str, list[int]]) -> int:
    """Tokens of a tokenized example that carry loss (the first label is never predicted)."""
    return sum(label != IGNORE for label in row["labels"][1:])


def _ids(tokenizer: PreTrainedTokenizerBase, messages: Messages, add_generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def tokenize(tokenizer: PreTrainedTokenizerBase, messages: Messages, max_tokens: int) -> dict[str, list[int]]:
    """Input ids and labels where only assistant tokens (and their end-of-turn) carry loss.

    Each assistant turn's span is found by rendering the chat up to it with and without the
    turn, so any chat template works without special generation markers. Examples longer than
    ``max_tokens`` are truncated at the end.
    """
    full = _ids(tokenizer, messages, add_generation_prompt=False)
    labels = [IGNORE] * len(full)
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_ids(tokenizer, messages[:index], add_generation_prompt=True))
        end = len(_ids(tokenizer, messages[: index + 1], add_generation_prompt=False))
        labels[start:end] = full[start:end]
    full, labels = full[:max_tokens], labels[:max_tokens]
    return {"input_ids": full, "attention_mask": [1] * len(full), "labels": labels}
