"""Words every layer shares, free of torch: the base adapter's name, generation parameters, input errors."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

BASE_ADAPTER = "base"
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
MAX_NEW_TOKENS = 32768


class InputError(ValueError):
    """Input that is refused before any work starts; the message says what to change (HTTP 400)."""

    code = "invalid_request"
    param: str | None = None

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class PromptTooLongError(InputError):
    """The prompt does not fit the model's context with room for the answer."""

    code = "context_length_exceeded"


@dataclass(frozen=True)
class GenerationParams:
    """Decoding limits; ``temperature == 0`` means greedy decoding. Invalid values raise :class:`InputError`."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.9
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            name, message = problems[0]
            raise InputError(f"{name} {message}", param=name)

    @classmethod
    def merged(cls, base: GenerationParams, overrides: dict[str, Any]) -> GenerationParams:
        """``base`` with ``overrides`` (unknown names refused, None values ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InputError(f"unknown generation setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {**base.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _problems(params: GenerationParams) -> list[tuple[str, str]]:
    problems = []
    if not _is_int(params.max_new_tokens) or not 1 <= params.max_new_tokens <= MAX_NEW_TOKENS:
        problems.append(("max_new_tokens", f"must be a whole number from 1 to {MAX_NEW_TOKENS}"))
    if not _is_number(params.temperature) or not 0 <= params.temperature <= 5:
        problems.append(("temperature", "must be a finite number from 0 to 5"))
    if not _is_number(params.top_p) or not 0 < params.top_p <= 1:
        problems.append(("top_p", "must be a finite number above 0 and at most 1"))
    if params.seed is not None and (not _is_int(params.seed) or not SEED_RANGE[0] <= params.seed <= SEED_RANGE[1]):
        problems.append(("seed", f"must be a whole number from {SEED_RANGE[0]} to {SEED_RANGE[1]}"))
    return problems


def clean_text(text: str) -> str:
    """``text`` as valid Unicode: lone surrogates (which no encoder accepts) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
