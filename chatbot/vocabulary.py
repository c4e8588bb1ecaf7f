"""Words every layer shares, free of torch: adapter identity, generation parameters and statistics,
a chat model call's options, input errors."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts
MAX_NEW_TOKENS = 32768
MAX_STOPS = 4  # stop strings a request may set (OpenAI's limit)
MAX_STOP_CHARS = 200


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


class AdapterId(str):
    """Which adapter a request runs on: a ``str`` (a dict key, a JSON string, a column as it is)
    that is never empty nor holds control characters; :data:`BASE_ADAPTER` is the base model alone.
    The adapter registry names them (a folder's name) and resolves a user's choice to one."""

    __slots__ = ()
    MAX_CHARS = 200

    def __new__(cls, name: object) -> AdapterId:
        if isinstance(name, AdapterId):
            return name
        if not isinstance(name, str) or not name or len(name) > cls.MAX_CHARS or not name.isprintable():
            shown = repr(name)[:60]
            raise InputError(f"an adapter name is 1 to {cls.MAX_CHARS} printable characters, not {shown}", "adapter")
        return super().__new__(cls, name)

    @classmethod
    def valid(cls, name: object) -> bool:
        """Whether ``name`` can be an adapter's."""
        try:
            cls(name)
        except InputError:
            return False
        return True

    @property
    def is_base(self) -> bool:
        """True for the base model without an adapter."""
        return self == BASE_ADAPTER


BASE_ADAPTER = AdapterId("base")


@dataclass(frozen=True)
class GenerationParams:
    """Decoding limits; ``temperature == 0`` means greedy decoding. Invalid values raise :class:`InputError`."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.9
    seed: int | None = None
    stop: tuple[str, ...] = ()  # the model's text ends before the first of these (a str or list is taken too)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
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


@dataclass
class GenerationStats:
    """Filled in while a stream runs."""

    prompt_tokens: int = 0
    new_tokens: int = 0
    first_token_s: float | None = None
    seconds: float = 0.0
    token_logprobs: list[float] = field(default_factory=list)  # the answer's tokens, as the model rated them
    first_choices: dict[str, float] = field(default_factory=dict)  # likeliest first tokens' text -> probability
    ended_by: str | None = None  # "stop" (its own end or a stop string), "length" (max_new_tokens) or "loop"

    @property
    def cut_off(self) -> bool:
        """Stopped at its token limit or in a loop rather than at its own end: the last sentence may be unfinished."""
        return self.ended_by in ("length", "loop")


@dataclass(frozen=True)
class ModelCall:
    """One chat model call's options beside the messages (LangChain's per-call ``call=`` argument)."""

    adapter: AdapterId = BASE_ADAPTER
    overrides: Mapping[str, Any] = field(default_factory=dict)  # generation settings over the model's defaults
    stats: GenerationStats = field(default_factory=GenerationStats)  # filled in while generating
    cancelled: threading.Event | None = None  # set to stop the generation

    def __post_init__(self) -> None:
        object.__setattr__(self, "adapter", AdapterId(self.adapter))

    @classmethod
    def of(cls, kwargs: Mapping[str, Any]) -> ModelCall:
        """The ``call`` among LangChain's call arguments, or one made of ``bind()``-style ones
        (``adapter=``, ``stats=``, ``cancelled=`` and generation settings; others are LangChain's own)."""
        if isinstance(kwargs.get("call"), ModelCall):
            return kwargs["call"]
        overrides = {name: kwargs[name] for name in GenerationParams.__dataclass_fields__ if name in kwargs}
        return cls(
            adapter=AdapterId(kwargs.get("adapter") or BASE_ADAPTER),
            overrides=overrides,
            stats=kwargs.get("stats") or GenerationStats(),
            cancelled=kwargs.get("cancelled"),
        )


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
    stops = params.stop
    if not isinstance(stops, tuple) or len(stops) > MAX_STOPS or not all(_is_stop(stop) for stop in stops):
        problems.append(("stop", f"must be at most {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} characters"))
    return problems


def _is_stop(value: object) -> bool:
    return isinstance(value, str) and 1 <= len(value) <= MAX_STOP_CHARS


def clean_text(text: str) -> str:
    """``text`` as valid Unicode: lone surrogates (which no encoder accepts) become U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
