"""The request shapes of the OpenAI-compatible API, its error shape, and the message list as a conversation."""

from __future__ import annotations

from typing import Any, Literal

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chatbot.rag.conversation import Turn
from chatbot.vocabulary import BASE_ADAPTER, MAX_NEW_TOKENS, SEED_RANGE, clean_text


class APIError(Exception):
    """An error answered in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.kind, self.param = status, message, code, kind, param
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "code": self.code, "param": self.param}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str
    param: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error shape, as every refused request is answered."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input; `error.param` names the field."},
    401: {"model": ErrorBody, "description": "Missing or wrong API key."},
    404: {"model": ErrorBody, "description": "Unknown model, conversation or answer."},
    413: {"model": ErrorBody, "description": "The body is over `max_request_kb`."},
    429: {"model": ErrorBody, "description": "Busy (`queue_size`): retry after `Retry-After` seconds."},
    500: {"model": ErrorBody, "description": "The answer failed on the server (`internal_error`, a bug)."},
    503: {"model": ErrorBody, "description": "The server is shutting down (`server_shutting_down`): retry."},
}


def validation_error(exc: RequestValidationError, content_type: str | None = None) -> APIError:
    """A 400 in OpenAI's shape naming the first bad field (the input itself is never echoed).

    A body that is not JSON is ``invalid_body``, with a hint when ``content_type`` (the request's
    header) does not say JSON.
    """
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    media = (content_type or "").split(";")[0].strip().lower()
    if "json" not in media and tuple(first.get("loc", ())) == ("body",):
        sent = f"Content-Type {media!r}" if media else "no Content-Type"
        return APIError(
            400, f"the body must be JSON with Content-Type: application/json ({sent} was sent)", "invalid_body"
        )
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error")
        return APIError(400, "the body is not valid JSON" + (f": {reason}" if reason else ""), "invalid_body")
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    field = ".".join(location) or None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return APIError(400, message, "invalid_value", param=field)


class ContentPart(BaseModel):
    """One part of OpenAI's list-of-parts ``content`` (only text parts are served)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = ""

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: str | list[ContentPart] | None) -> str:
        if isinstance(value, list):
            kinds = sorted({part.type for part in value if part.type != "text"})
            if kinds:
                raise ValueError(f"only text content parts are supported, not {', '.join(kinds)}")
            value = "\n".join(part.text or "" for part in value)
        return clean_text(value or "")


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)  # NaN and Infinity are refused, not passed on

    model: str = Field(BASE_ADAPTER, min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    n: int = 1
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # Asked-for behaviour this server does not have: refused when set, so no client believes it got it.
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    stop: str | list[str] | None = Field(
        None,
        description="Up to 4 strings; the model's text ends before the first of them (the app's citation "
        "markers and decline sentence are added after).",
    )
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    use_retrieval: bool = True
    stream_drafts: bool | None = Field(
        None,
        description="With stream: true, send the model's text as it is written (true) or only the answer the "
        "citation checks let through, at its end (false). Default: the server's stream_drafts.",
    )
    store: bool = Field(True, description="Save the exchange in the caller's conversations.")
    include_record: bool = Field(
        False,
        description="Add the whole answer record (as `chatbot ask --json` prints it) as `record` to the response "
        "or the last stream chunk.",
    )
    conversation_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="Continue this saved conversation (its turns are the history)."
    )

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported (one choice per request)")
        return value

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | int | None) -> bool | int | None:
        if value:  # refused rather than ignored: a client asking for them would get none
            raise ValueError(
                "logprobs are not available: the answer is tidied, cited and checked after generation, so its "
                "tokens are not the model's; the finished answer's answerability says how far to trust it"
            )
        return value

    @field_validator("stop")
    @classmethod
    def _no_stop_is_none(cls, value: str | list[str] | None) -> str | list[str] | None:
        return value or None  # "" and [] mean none; the rest is checked and made a tuple by GenerationParams

    @field_validator("tools", "functions", "logit_bias", "audio")
    @classmethod
    def _not_served(cls, value: Any) -> Any:
        if value:
            raise ValueError(f"not supported: {_UNSERVED}")
        return value

    @field_validator("tool_choice", "function_call")
    @classmethod
    def _no_tool_choice(cls, value: Any) -> Any:
        if value not in (None, "none", "auto"):
            raise ValueError(f"only 'none' or 'auto' (no tools are called): {_UNSERVED}")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and value.get("type", "text") != "text":
            raise ValueError(f"only type 'text' is served: {_UNSERVED}")
        return value

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float | None) -> float | None:
        if value:
            raise ValueError("not supported (only 0): sampling is temperature, top_p and seed")
        return value

    @field_validator("modalities")
    @classmethod
    def _text_modality(cls, value: list[str] | None) -> list[str] | None:
        if value and set(value) != {"text"}:
            raise ValueError("only the 'text' modality is served")
        return value


_UNSERVED = "answers are cited prose from the knowledge base, finished and checked before they are returned"


def split_conversation(messages: list[ChatMessage]) -> tuple[str | None, list[Turn], str | None]:
    """(system prompt, earlier exchanges, last question) of an OpenAI message list.

    System/developer messages replace the domain's system prompt; user/assistant pairs become
    the history; the last message must be the user's question.
    """
    system = [m.content for m in messages if m.role in ("system", "developer") and m.content]
    dialogue = [m for m in messages if m.role in ("user", "assistant")]
    if not dialogue or dialogue[-1].role != "user" or not (dialogue[-1].content or "").strip():
        return None, [], None
    history: list[Turn] = []
    pending: str | None = None
    for message in dialogue[:-1]:
        if message.role == "user":
            pending = message.content or ""
        elif pending is not None:
            history.append(Turn(pending, message.content or ""))
            pending = None
    return ("\n\n".join(system) or None), history, dialogue[-1].content
