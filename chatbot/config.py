"""One settings object, read from ``chatbot.toml`` (optional) and ``CHATBOT_*`` variables.

Precedence, highest first: keyword arguments, environment variables, ``chatbot.toml``,
defaults. Unknown keys and bad values fail at start with a message naming the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "CHATBOT_"
CONFIG_ENV = "CHATBOT_CONFIG"
DEFAULT_CONFIG_FILE = "chatbot.toml"
EMBEDDED = "embedded"

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."


class ConfigError(ValueError):
    """A setting is unknown or has a bad value; the message names the key."""


class Settings(BaseSettings):
    """Everything the app can be told. See ``docs/configuration.md`` for each key."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )

    # Paths
    knowledge_dir: Path = Field(Path("knowledge"), description="Folder of documents to chat with.")
    adapters_dir: Path = Field(Path("adapters"), description="Folder of domain adapters.")
    data_dir: Path = Field(Path(".chatbot"), description="Chroma, record manager, caches.")
    cache_dir: Path | None = Field(None, description="Converted models; default DATA_DIR/cache.")

    # Models
    base_model: str = Field(
        EMBEDDED, description="'embedded', a model folder, a .gguf file, or a hub id (owner/name[@revision])."
    )
    embedding_model: str = Field(EMBEDDED, description="'embedded' or a sentence-transformers folder.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights of the chat model; auto: bf16 on CPUs with native bf16 and on GPUs, else fp32."
    )
    embedding_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights of the embedding model; auto as for dtype (bf16 embeds ~3x faster on such CPUs)."
    )
    engine: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description=(
            "auto: onnx on a CPU, torch on a GPU (or with quantize = int8); torch: transformers + PEFT; "
            "onnx: onnxruntime, rows on mixed adapters batched (model converted once with onnxruntime-genai's "
            "builder; ~4-7x transformers' decode on a CPU, see docs/performance.md)."
        ),
    )
    onnx_precision: Literal["int4", "int8", "fp32"] = Field(
        "int8",
        description="Weights of the ONNX engine's model: int8 (eval equal to transformers), int4 (fastest, "
        "declines more), fp32 (same answers as transformers).",
    )
    exact_batches: bool = Field(
        False,
        description="An answer never depends on what else runs, bit for bit: the ONNX engine decodes a lone "
        "request beside a padding row; the torch engine (CPU) packs every linear layer for oneDNN and runs it on "
        "two rows or more. Costs decode speed for one user (docs/performance.md).",
    )
    quantize: Literal["none", "int8"] = Field(
        "none", description="int8: int8 weights for the chat model's linear layers (CPU; faster decode, see the eval)."
    )
    prepack: bool = Field(
        True,
        description="CPU, bf16: keep the chat model's linear weights in oneDNN's packed layout (same answers, faster).",
    )
    threads: int = Field(
        0, ge=0, description="CPU threads of the chat engine; 0: torch's default, and every usable CPU for onnx."
    )
    max_batch: int = Field(8, ge=1, le=64, description="Requests decoded together in one batch.")
    prefill_chunk_tokens: int = Field(
        256,
        ge=16,
        le=8192,
        description="Prompt tokens read between two decode steps (long prompts never stall the batch).",
    )

    # Knowledge
    collection: str = Field("knowledge", min_length=1, max_length=60)
    chroma_url: str | None = Field(None, description="A Chroma server (chroma run) instead of the embedded store.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of one database for all state (conversations, feedback, the record manager, "
        "the manifest, the keyword index, the sync lease), shared by instances; none: SQLite files in DATA_DIR.",
    )
    record_db_url: str | None = Field(
        None, description="SQLAlchemy URL of the record manager alone (database_url covers it)."
    )
    sync_lease_s: float = Field(
        10.0, ge=2.0, le=600.0, description="Instances sharing database_url: a dead syncer's lease lapses after this."
    )
    chunk_size: int = Field(200, ge=16, le=8192, description="Chunk size in embedding tokens.")
    chunk_overlap: int = Field(30, ge=0, description="Overlap between chunks in tokens.")
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are skipped.")
    max_file_chars: int = Field(
        5_000_000, ge=1000, description="Text per file; a file that extracts to more is refused."
    )
    max_pdf_pages: int = Field(2000, ge=1, description="PDFs with more pages are refused.")
    max_unzipped_mb: float = Field(
        200.0, gt=0, description="Zip-based files (.docx): total uncompressed size allowed before reading."
    )
    max_zip_entries: int = Field(10_000, ge=1, description="Zip-based files (.docx): most entries allowed.")
    read_in_worker: bool = Field(
        True, description="Read files in a worker process with load_memory_mb and load_timeout_s as its limits."
    )
    load_memory_mb: int = Field(
        2048, ge=256, description="Address space of the file-reading worker: a file that needs more is refused."
    )
    load_timeout_s: float = Field(120.0, gt=0, description="Longest a file may take to read before it is refused.")

    # Retrieval
    top_k: int = Field(4, ge=1, le=50)
    min_relevance: float = Field(0.35, ge=-1.0, le=1.0, description="Chunks below this cosine similarity are ignored.")
    quote_relevance: float = Field(
        0.2,
        ge=-1.0,
        le=1.0,
        description="When no chunk reaches min_relevance, the reply quotes the nearest sentence of the chunks "
        "down to this similarity, labelled as the nearest passage (the model never reads them); at or above "
        "min_relevance: a bare 'I don't know' (docs/evaluation.md, 'Quoting the nearest passage').",
    )
    retrieval_mode: Literal["vector", "hybrid"] = Field(
        "vector", description="vector: embeddings only; hybrid: BM25 keywords + vectors, fused by rank."
    )
    keyword_weight: float = Field(0.5, ge=0.0, le=4.0, description="Hybrid: BM25 ranking weight (vector = 1).")
    context_tokens: int = Field(
        1500, ge=0, description="Token budget of the retrieved blocks in the prompt (0: no limit)."
    )
    quote_evidence: bool = Field(
        True,
        description="Pick the retrieved sentence that best answers each question (the answer's evidence); a "
        "declined answer quotes it instead of a bare 'I don't know' (docs/evaluation.md, 'Evidence sentences').",
    )
    evidence_margin: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Quote the second-best evidence sentence too when its score is within this of the best "
        "(the picker cannot tell them apart); 0: always one sentence (docs/evaluation.md, 'Two sentences when "
        "the picker is unsure').",
    )
    evidence_agreement: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Show the model's answer only when its evidence sentence holds at least this share of the "
        "content words the answer adds to the question; otherwise quote the sentence (None: 0.5 for the embedded "
        "model, 0 (off) for any other; docs/evaluation.md, 'Answers that agree with their evidence').",
    )
    decline_unsupported: bool = Field(
        True,
        description="Answer 'I don't know' instead of an answer that is a paste of the passages, states a "
        "number or name no passage holds, or whose citations all fail the check (docs/evaluation.md).",
    )
    answerability_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Decline when the calibrated estimate that the passages answer the question is below "
        "this (None: the fit's own threshold; 0: never). See docs/evaluation.md.",
    )
    answerability_fit: Path | None = Field(
        None, description="A fit written by `chatbot calibrate --out` (None: the shipped one, rag/answerability.json)."
    )
    followup_query: Literal["auto", "history", "model", "off"] = Field(
        "auto", description="How a follow-up becomes a standalone search query (see docs/configuration.md)."
    )
    history_turns: int = Field(2, ge=0, le=20, description="Earlier exchanges the model sees in a conversation.")
    history_content: Literal["auto", "questions", "full"] = Field(
        "auto",
        description="What the model sees of earlier exchanges: their questions only, or questions and answers; "
        "auto: questions for the embedded model (it copied earlier answers), full for any other.",
    )

    # Generation
    max_new_tokens: int = Field(256, ge=1, le=32768)
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 means greedy decoding.")
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    default_adapter: str = Field("base", description="Adapter a new conversation starts with.")

    # Remote generation (an OpenAI-compatible server that serves the adapters by model name)
    generation_url: str | None = Field(None, description="Base URL such as http://gpu-box:8000/v1; None: local.")
    generation_api_key: str | None = None
    generation_base_model: str = Field("base", description="The remote model id used for 'base'.")
    generation_extra_body: dict[str, Any] = Field(
        default_factory=dict, description="Extra JSON fields sent with every remote completion request."
    )

    # Server
    api_key: str | None = Field(None, description="When set, /v1 requests need 'Authorization: Bearer <key>'.")
    api_keys: dict[str, str] | None = Field(
        None, description="name = key pairs: several API keys, each with its own saved conversations."
    )
    ui_auth: dict[str, str] | None = Field(None, description="user = password pairs; when set the UI needs a login.")
    save_conversations: bool = Field(
        True, description="Keep every conversation and its feedback in DATA_DIR/chats.sqlite (per user / API key)."
    )
    stream_drafts: bool = Field(
        True,
        description="API streams carry the model's text as it is written; false: only the answer the checks "
        "let through, at its end (a request's stream_drafts overrides it).",
    )
    max_upload_mb: float = Field(50.0, gt=0, description="Largest file the Knowledge tab accepts.")
    concurrency_limit: int = Field(
        8, ge=1, le=64, description="Chat requests worked on at once (decoded as one batch); others queue."
    )
    queue_size: int = Field(64, ge=1, description="Chat requests that may wait; more are refused.")
    max_request_kb: int = Field(
        1024, ge=1, description="Largest request body (API and page events; uploads have max_upload_mb)."
    )
    max_message_chars: int = Field(
        16_000, ge=1, description="Longest question, history message or system prompt, in characters."
    )
    max_prompt_tokens: int = Field(
        0, ge=0, description="Longest prompt in tokens; 0: the model's context window less the answer's max tokens."
    )
    shutdown_timeout_s: float = Field(5.0, ge=0, description="On SIGTERM, how long open requests may finish.")
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=1, le=65535)
    allow_unauthenticated: bool = Field(
        False,
        description="Serve on a non-loopback host although the page has no login (ui_auth) or the API no key "
        "(api_key); without it such a start is refused, naming what would be open.",
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
            raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("collection")
    @classmethod
    def _check_collection(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,58}[A-Za-z0-9]", value):
            raise ValueError("3-60 characters: letters, digits, '.', '_' or '-'")
        return value

    @field_validator("answerability_fit")
    @classmethod
    def _check_fit(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value} (chatbot calibrate --out writes one)")
        return value

    @model_validator(mode="after")
    def _check_chunking(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError("chunk_overlap must be smaller than chunk_size")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_FILE))
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_path)

    @property
    def api_credentials(self) -> dict[str, str]:
        """Every accepted API key by its name (``api_key`` is named "api")."""
        keys = dict(self.api_keys or {})
        if self.api_key:
            keys.setdefault("api", self.api_key)
        return keys

    # Derived locations
    @property
    def models_cache_dir(self) -> Path:
        """Where converted base models are cached."""
        return self.cache_dir or self.data_dir / "cache"

    @property
    def chroma_dir(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def chats_db(self) -> Path:
        """Saved conversations and feedback (without ``database_url``)."""
        return self.data_dir / "chats.sqlite"

    @property
    def record_db(self) -> Path:
        return self.data_dir / "records.sqlite"

    @property
    def manifest_db(self) -> Path:
        """What the last sync saw of each file, for ``collection``: one per collection, so switching
        the name never lets one collection's manifest vouch for another's contents."""
        return self.data_dir / _per_collection("manifest", self.collection)

    @property
    def keywords_db(self) -> Path:
        """The BM25 index of ``collection``'s chunks."""
        return self.data_dir / _per_collection("keywords", self.collection)


def _per_collection(stem: str, collection: str) -> str:
    # the default collection keeps the file name of the versions before collections had their own
    return f"{stem}.sqlite" if collection == "knowledge" else f"{stem}-{collection}.sqlite"


def _unknown_env_keys(environ: dict[str, str]) -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    return sorted(
        key
        for key in environ
        if key.upper().startswith(ENV_PREFIX)
        and key.upper() != CONFIG_ENV
        and key.upper()[len(ENV_PREFIX) :] not in known
    )


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "settings"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    return f"{key} ({ENV_PREFIX}{key.upper()}): {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, raising :class:`ConfigError` that names every bad key."""
    problems = [f"{key}: unknown setting" for key in _unknown_env_keys(dict(os.environ))]
    config_file = os.environ.get(CONFIG_ENV)
    if config_file and not Path(config_file).is_file():
        problems.append(f"{CONFIG_ENV}: no such file: {config_file}")
    settings = None
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems.extend(_describe(error) for error in exc.errors())
    except ValueError as exc:  # e.g. malformed TOML
        problems.append(f"{config_file or DEFAULT_CONFIG_FILE}: {exc}")
    if problems or settings is None:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return settings
