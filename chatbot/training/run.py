"""``chatbot train``: gather examples (a chat JSONL or RAFT over a knowledge base), train, save."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot.config import Settings, load_settings
from chatbot.qa import QAItem, write_qa_jsonl
from chatbot.training.examples import Messages, read_chat_jsonl, write_chat_jsonl
from chatbot.training.resume import BuiltExamples, inputs_key, load_built, request_arguments, save_built
from chatbot.training.trainer import TrainConfig, TrainResult

if TYPE_CHECKING:
    from chatbot.training.feedback import FeedbackExamples
    from chatbot.training.grounding import GroundingReport
from chatbot.vocabulary import BASE_ADAPTER

log = logging.getLogger(__name__)

_DOMAIN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_domain_name(name: str) -> str:
    """Adapter names become folder names and API model ids: lowercase letters, digits, - and _."""
    if not _DOMAIN_NAME.match(name) or name == BASE_ADAPTER:
        raise ValueError(f"invalid domain name {name!r}: use a-z, 0-9, - and _ (and not {BASE_ADAPTER!r})")
    return name


@dataclass
class TrainRequest:
    """What to train; exactly one of ``data`` and ``raft`` is set."""

    domain: str
    data: Path | None = None
    raft: Path | None = None
    knowledge: Path | None = None  # the knowledge folder RAFT retrieves from (default: the app's)
    display_name: str = ""
    description: str = ""
    system_prompt: str = ""
    scope_folder: str | None = None
    distractor_only_share: float = 0.2
    limit: int | None = None
    from_feedback: bool = False  # add examples from users' feedback on this domain's answers
    feedback_adapter: str | None = None  # whose answers' feedback (default: the domain's)
    min_feedback: int = 10
    held_out_share: float = 0.2  # of the approved and corrected answers, kept for eval
    grounding: Path | None = None  # a SQuAD 2.0 file: add examples that teach citing and declining
    grounding_examples: int = 2000
    grounding_declines: float = 0.25  # share of grounding examples that decline (the pilot's 0.5 declined nearly all)


def _knowledge_settings(settings: Settings, knowledge: Path | None) -> Settings:
    """Settings whose index covers ``knowledge``; another folder gets its own index beside the app's."""
    if knowledge is None or knowledge.resolve() == settings.knowledge_dir.resolve():
        return settings
    key = hashlib.sha256(str(knowledge.resolve()).encode()).hexdigest()[:10]
    values = settings.model_dump()
    values.update(
        knowledge_dir=knowledge,
        data_dir=settings.data_dir / "training-kb" / f"{knowledge.name}-{key}",
        cache_dir=settings.models_cache_dir,
    )
    return load_settings(**values)


def raft_examples(settings: Settings, request: TrainRequest) -> tuple[list[Messages], dict[str, Any]]:
    """Sync the knowledge folder, then build RAFT examples for the request's questions."""
    from chatbot.app.service import Chatbot
    from chatbot.qa import read_qa
    from chatbot.training.raft import build_raft_examples

    assert request.raft is not None
    bot = Chatbot(_knowledge_settings(settings, request.knowledge))
    report = bot.sync(show_progress=True)
    if report.errors:
        log.warning("knowledge files not indexed: %s", report.errors)
    items = read_qa(request.raft)[: request.limit]
    files = [record.path for record in bot.status().files if record.indexed_at]
    examples, built = build_raft_examples(
        bot.store,
        items,
        files,
        request.system_prompt,
        top_k=settings.top_k,
        distractor_only_share=request.distractor_only_share,
        seed=0,
    )
    if not examples:
        raise ValueError(f"no RAFT example could be built from {request.raft}: {built.skipped}")
    return examples, {
        "recipe": "raft",
        "source": f"{request.raft.name} over {bot.settings.knowledge_dir}",
        "questions": len(items),
        "examples": built.examples,
        "with_gold": built.with_gold,
        "distractors_only": built.distractors_only,
        "skipped_questions": len(built.skipped or {}),
        "top_k": settings.top_k,
    }


def train_domain(settings: Settings, request: TrainRequest, config: TrainConfig) -> tuple[Path, TrainResult]:
    """Build the examples, train on the configured base model, write ``adapters/<domain>/``."""
    from chatbot.models.base import load_base_model
    from chatbot.training.record import write_adapter
    from chatbot.training.trainer import train_adapter

    check_domain_name(request.domain)
    if request.data is not None and request.raft is not None:
        raise ValueError("give at most one of --data (chat JSONL) and --raft (question file)")
    if request.data is None and request.raft is None and not request.from_feedback and request.grounding is None:
        raise ValueError("give --data (chat JSONL), --raft (question file), --grounding or --from-feedback")
    name = dated_name(settings.adapters_dir, request.domain) if request.from_feedback else request.domain
    training = settings.data_dir / "training"
    checkpoint, saved = training / f"{name}.checkpoint.pt", training / f"{name}.checkpoint-examples.json"
    key = _inputs_key(settings, request)
    # a run that stops goes on from its last validation when the same command is run again, on the
    # examples it built (a rebuild by retrieval can differ in a block)
    built = load_built(saved, key) if checkpoint.is_file() else None
    if built is not None:
        log.info("resuming on the %d examples the stopped run built (%s)", len(built.examples), saved)
    else:
        built = _build_examples(settings, request, name)
        save_built(saved, key, built)
    base = load_base_model(settings.base_model, settings.models_cache_dir, settings.device, "float32")
    result = train_adapter(base, built.examples, config, checkpoint)
    saved.unlink(missing_ok=True)
    folder = write_adapter(
        settings.adapters_dir / name,
        result,
        base,
        display_name=request.display_name or name.replace("-", " ").title(),
        description=request.description,
        system_prompt=built.system_prompt,
        config=config,
        data=built.data,
        knowledge_scope={"folder": request.scope_folder} if request.scope_folder else None,
    )
    return folder, result


def _inputs_key(settings: Settings, request: TrainRequest) -> str:
    """What the built examples depend on: the command, its files, the knowledge and the chats."""
    files = [p for p in (request.data, request.raft, request.grounding) if p is not None]
    folders = [request.knowledge or settings.knowledge_dir] if request.raft or request.from_feedback else []
    arguments = request_arguments(request)
    if request.from_feedback and settings.database_url:  # the feedback lives in the shared database
        from chatbot.chats import open_chats

        arguments["feedback"] = open_chats(settings).feedback_stamp()
    elif request.from_feedback:
        files += [settings.chats_db, settings.chats_db.with_name(settings.chats_db.name + "-wal")]
    return inputs_key(settings, arguments, files, folders)


def _build_examples(settings: Settings, request: TrainRequest, name: str) -> BuiltExamples:
    """The request's examples, in the order: RAFT or a chat file or the earlier ones, feedback, grounding."""
    examples: list[Messages] = []
    data: dict[str, Any] = {}
    if request.from_feedback:
        request.system_prompt = request.system_prompt or _domain_prompt(settings, request.domain)
    if request.raft is not None:
        request.system_prompt = request.system_prompt or settings.system_prompt
        examples, data = raft_examples(settings, request)
    elif request.data is not None:
        examples = read_chat_jsonl(request.data)[: request.limit]
        data = {"recipe": "chat", "source": request.data.name, "examples": len(examples)}
    elif request.from_feedback:
        earlier = settings.data_dir / "training" / f"{request.domain}-examples.jsonl"
        if earlier.is_file():  # the domain's own data, so feedback adds to what it learnt, not replaces it
            examples = read_chat_jsonl(earlier)[: request.limit]
            data = {"recipe": "earlier examples", "source": earlier.name, "examples": len(examples)}
    if request.from_feedback:
        from_feedback, held_out = feedback_training(settings, request)
        examples = [*examples, *from_feedback.examples]
        data = {**data, "recipe": "+".join(filter(None, [data.get("recipe"), "feedback"]))}
        data["feedback"] = {**from_feedback.summary(), "adapter": request.feedback_adapter or request.domain}
        write_qa_jsonl(settings.data_dir / "training" / f"{name}-heldout.jsonl", held_out)
    system_prompt = request.system_prompt or next(
        (m["content"] for m in (examples[0] if examples else []) if m["role"] == "system"), settings.system_prompt
    )
    if request.grounding is not None:
        grounding, report = grounding_training(
            settings, request.grounding, request.grounding_examples, system_prompt, request.grounding_declines
        )
        examples = [*examples, *grounding]
        data = {**data, "recipe": "+".join(filter(None, [data.get("recipe"), "grounding"]))}
        data["grounding"] = report.summary()
    if request.raft is not None or request.from_feedback or request.grounding is not None:
        # keep what the model saw, outside the adapter folder
        write_chat_jsonl(settings.data_dir / "training" / f"{name}-examples.jsonl", examples)
    return BuiltExamples(examples, data, system_prompt)


def dated_name(adapters_dir: Path, domain: str) -> str:
    """``<domain>-YYYY-MM-DD`` (``-2``, ``-3``... when taken): a retrained adapter lands beside the old one."""
    base = f"{domain}-{time.strftime('%Y-%m-%d')}"
    name, number = base, 1
    while (adapters_dir / name).exists():
        number += 1
        name = f"{base}-{number}"
    return check_domain_name(name)


def _domain_prompt(settings: Settings, domain: str) -> str:
    """The system prompt of the existing domain (the settings' default for a new one)."""
    import tomllib

    manifest = settings.adapters_dir / domain / "domain.toml"
    try:
        prompt = tomllib.loads(manifest.read_text(encoding="utf-8")).get("system_prompt")
    except (OSError, tomllib.TOMLDecodeError):
        prompt = None
    return prompt if isinstance(prompt, str) and prompt.strip() else settings.system_prompt


def grounding_training(
    settings: Settings, squad: Path, count: int, system_prompt: str, declines: float
) -> tuple[list[Messages], GroundingReport]:
    """Grounding examples over SQuAD's training articles, indexed beside the app's own index.

    ``declines``: share of the examples whose target is the decline, four fifths of them
    unanswerable questions and one fifth answerable ones with their gold block left out.
    """
    from chatbot.app.service import Chatbot
    from chatbot.training.grounding import grounding_examples, squad_knowledge

    if not squad.is_file():
        raise FileNotFoundError(f"{squad} not found (a SQuAD 2.0 .json file)")
    knowledge = settings.data_dir / "training" / "grounding" / squad.stem
    items, articles = squad_knowledge(squad, knowledge)
    bot = Chatbot(_knowledge_settings(settings, knowledge))
    bot.sync(show_progress=True)
    examples, report = grounding_examples(
        bot.store,
        items,
        system_prompt,
        count,
        top_k=settings.top_k,
        unanswerable_share=0.8 * declines,
        without_gold_share=0.2 * declines,
    )
    report.source, report.articles = squad.name, articles
    log.info("grounding: %s", report.summary())
    return examples, report


def feedback_training(settings: Settings, request: TrainRequest) -> tuple[FeedbackExamples, list[QAItem]]:
    """Examples from the feedback on the domain's answers, over the knowledge base as it is now."""
    from chatbot.app.service import Chatbot
    from chatbot.chats import ChatStoreError, open_chats
    from chatbot.training.feedback import feedback_examples

    try:
        chats = open_chats(settings, existing=True)
    except ChatStoreError as exc:
        raise ValueError(f"{exc}: chat, give feedback, then train") from exc
    adapter = request.feedback_adapter or request.domain
    records = list(chats.feedback(adapter=adapter))
    bot = Chatbot(settings)
    report = bot.sync(show_progress=True)  # the facts come from the knowledge folder as it is now
    if report.errors:
        log.warning("knowledge files not indexed: %s", report.errors)
    built = feedback_examples(
        bot.store, records, request.system_prompt, top_k=settings.top_k, held_out_share=request.held_out_share
    )
    log.info("feedback on %s: %s", adapter, built.summary())
    if len(built.examples) < request.min_feedback:
        kinds = ", ".join(f"{count} {kind}" for kind, count in built.kinds.items()) or "none"
        skipped = ", ".join(f"{count} {why}" for why, count in built.skipped.items()) or "none"
        raise ValueError(
            f"only {len(built.examples)} training examples from {len(records)} answers with feedback on "
            f"{adapter!r} (usable: {kinds}; held out for eval: {len(built.held_out)}; skipped: {skipped}); "
            f"at least {request.min_feedback} are needed (--min-feedback)"
        )
    return built, built.held_out
