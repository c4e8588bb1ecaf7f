"""The retrieval chain: question -> retriever -> numbered blocks -> prompt -> model -> cited answer."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnablePassthrough

from chatbot.rag.answer import Answer, Evidence, SourceRef, last_answer, quoted_sentences
from chatbot.rag.answerability import Answerability, model_signals, signals
from chatbot.rag.checked import keep_checked
from chatbot.rag.citations import (
    attribute,
    cited_numbers,
    claims_by_block,
    drop_unknown_markers,
    supporting_passage,
)
from chatbot.rag.conversation import (
    CONDENSE_PROMPT,
    Turn,
    conversation_text,
    history_messages,
    joined_query,
    refers_back,
    usable_rewrite,
)
from chatbot.rag.evidence import SECOND_MARGIN, Embed, best_quotes, shown_quotes
from chatbot.rag.grounding import check_citations, judge, unfounded_specifics
from chatbot.rag.prompting import PLAIN_PROMPT, RAG_PROMPT, fit_blocks, format_blocks
from chatbot.rag.tidy import is_context_dump, tidy
from chatbot.rag.vacuous import adds_nothing, evidence_agreement, repeats_earlier
from chatbot.vocabulary import BASE_ADAPTER, AdapterId, GenerationStats, ModelCall

DONT_KNOW = "I don't know. The knowledge base has nothing relevant to this question."
NOT_ANSWERED = "I don't know. The passages I found do not answer this question."  # an answer withheld
QUOTE_OPENING = "I couldn't write an answer I can check."  # ... then the passage that best answers
QUOTED = QUOTE_OPENING + " The closest passage in your documents says: {}"  # then quoted_sentences
QUOTED_TWO = QUOTE_OPENING + " The closest passages in your documents say: {}"
NEAR_OPENING = "No passage in your documents is close enough to answer from."  # nothing reached min_relevance
NEAR_QUOTED = NEAR_OPENING + " The nearest passage says: {}"
NEAR_QUOTED_TWO = NEAR_OPENING + " The nearest passages say: {}"
# Why an answer was declined (Answer.decline_reason); the UI and API show them as they are.
NOTHING_RETRIEVED = "no passage of the knowledge base matched the question"
ONLY_NEAR = "only passages below min_relevance matched the question: the nearest is quoted, unread by the model"
MODEL_DECLINED = "the model found no answer in the passages"
CONTEXT_DUMP = "the model pasted the passages back instead of answering"
UNFOUNDED = "the answer states numbers or names that no passage holds: {}"
UNSUPPORTED = "no passage supports what the answer says"
RESTATED = "the draft answer only restated the question: it said nothing the passages hold"
REPEATED = "the draft answer repeated an earlier answer of this conversation"
UNLIKELY = "the passages are unlikely to answer this question (answerability {:.3f} < {:.3f})"
EMPTY = "the model gave no answer"
DISAGREES = "the draft answer says what the passage that best answers the question does not"
ECHO_STOPS = ("\nQuestion:", "\nContext:")  # the model starting the prompt's next turn: it stops generating there
_ECHO = re.compile(r"\n\s*(?:Question|Context):")  # the same with space between, cut after the fact
_DECLINE = re.compile(
    r"^\W*(?:no\W+)?(?:I (?:do not|don't|dont) know|I'm not sure|"
    r"the (?:context(?: blocks?)?|blocks?|passages?|documents?) (?:do(?:es)?n[o']t|do(?:es)? not|did not))",
    re.I,
)


@dataclass
class ChainRequest:
    """One turn: the question and how to answer it."""

    question: str
    adapter: AdapterId = BASE_ADAPTER
    use_retrieval: bool = True
    system_prompt: str = ""
    scope: dict[str, Any] | None = None  # Chroma where-filter of the adapter's knowledge scope
    generation: dict[str, Any] = field(default_factory=dict)  # GenerationParams overrides
    history: list[Turn] = field(default_factory=list)  # earlier exchanges, oldest first
    history_turns: int = 2  # how many of them the model sees
    history_answers: bool = True  # whether it sees their answers too, or their questions only
    followup_query: str = "auto"  # how a follow-up becomes standalone: "auto", "history", "model" or "off"
    search_query: str | None = None  # the standalone query (None: the chain makes one, see standalone_query)
    cancelled: threading.Event | None = None  # set it (any thread) to stop generating: the reader went away
    answerability: Answerability | None = None  # the adapter's own fit (None: the chain's)


def is_decline(text: str) -> bool:
    """Whether an answer opens by saying it does not know (quoting the phrase later does not count)."""
    return bool(_DECLINE.search(text))


class RagChain:
    """LCEL prompts for the retrieval and the no-retrieval paths, the model's stream, and the answer's
    tidying, citation check and decline decision."""

    def __init__(
        self,
        retriever: BaseRetriever,
        llm: BaseChatModel,
        context_tokens: int | None = None,
        decline_unsupported: bool = True,
        answerability: Answerability | None = None,
        answerability_threshold: float | None = None,
        evidence: Embed | None = None,
        evidence_agreement: float = 0.0,
        evidence_margin: float = SECOND_MARGIN,
        quote_relevance: float | None = None,
    ) -> None:
        """``evidence``: the embedding function that picks the quoted sentences (None: no quotes);
        ``evidence_agreement``: the share of an answer's new content words its evidence sentence must
        hold for the answer to be shown (0: no such check); ``evidence_margin``: how close the second
        best sentence must score to the best to be quoted too (0: one sentence); ``quote_relevance``:
        when no block reaches the retriever's floor, the reply quotes the nearest sentence of the
        blocks down to this similarity, which the model never reads (None: a bare decline)."""
        self.retriever = retriever
        self.quote_relevance = quote_relevance
        self.evidence_margin = evidence_margin
        self.evidence = evidence
        self.evidence_agreement = evidence_agreement
        self.llm = llm
        self.context_tokens = context_tokens  # budget of the numbered blocks in the prompt
        self.decline_unsupported = decline_unsupported  # withhold answers the passages do not back
        self.answerability = answerability  # P(answerable from the blocks); None: no such signal
        self.answerability_threshold = answerability_threshold  # decline below it (0: never; None: the fit's own)

    def threshold(self, fit: Answerability) -> float:
        """The answerability under which a turn scored by ``fit`` is declined (the setting, else the fit's own)."""
        return fit.threshold if self.answerability_threshold is None else self.answerability_threshold

    def fit(self, blocks: list[Document]) -> list[Document]:
        """The blocks that fit the context budget (all of them when there is none)."""
        if not self.context_tokens or not blocks:
            return blocks
        return fit_blocks(blocks, self.context_tokens, self.llm.count_tokens)

    def prompt(self, use_retrieval: bool) -> Runnable:
        """The LCEL prompt of one turn (inputs: question, system_prompt, blocks, history)."""
        if use_retrieval:
            return RunnablePassthrough.assign(context=lambda x: format_blocks(x["blocks"])) | RAG_PROMPT
        return PLAIN_PROMPT

    def retrieve(self, question: str, scope: dict[str, Any] | None = None, **options: Any) -> list[Document]:
        """The blocks for ``question`` within ``scope``; ``options`` go to the retriever (``floor=``)."""
        return (
            self.retriever.invoke(question, filter=scope, **options)
            if scope
            else self.retriever.invoke(question, **options)
        )

    def near(self, query: str, scope: dict[str, Any] | None = None) -> list[Document]:
        """The blocks between ``quote_relevance`` and the floor, for a quote when none reached the floor."""
        if self.quote_relevance is None or self.evidence is None:
            return []
        return self.retrieve(query, scope, floor=self.quote_relevance)

    def condense(self, history: list[Turn], question: str, turns: int = 2, max_new_tokens: int = 48) -> str | None:
        """The model's standalone rewrite of a follow-up question (None when unusable)."""
        call = ModelCall(overrides={"max_new_tokens": max_new_tokens, "temperature": 0.0})
        pipeline = CONDENSE_PROMPT | self.llm.bind(call=call) | StrOutputParser()
        return usable_rewrite(
            pipeline.invoke({"conversation": conversation_text(history, turns), "question": question}), question
        )

    def standalone_query(self, request: ChainRequest) -> str | None:
        """The search query of a follow-up (None for a first question, or with ``followup_query`` "off").

        "history": the last question joined to this one; "auto": the same, only when this one
        refers back (a new topic is searched alone); "model": the model's rewrite (condensed from
        the conversation), else as "auto".
        """
        if not request.history or request.followup_query == "off":
            return None
        if request.followup_query == "model":
            rewrite = self.condense(request.history, request.question, request.history_turns)
            if rewrite:
                return rewrite
        if request.followup_query == "history" or refers_back(request.question):
            return joined_query(request.history, request.question)
        return None

    def stream(self, request: ChainRequest) -> Iterator[str | Answer]:
        """Yield answer text pieces as they are generated, then the finished :class:`Answer`."""
        started = time.perf_counter()
        timings: dict[str, float] = {}
        blocks: list[Document] = []
        if request.use_retrieval:
            if request.search_query is None:
                request = replace(request, search_query=self.standalone_query(request))
            query = request.search_query or request.question
            blocks = self.fit(self.retrieve(query, request.scope))
            timings["retrieval_s"] = time.perf_counter() - started
            if not blocks:
                answer = self._nearest(request, self.near(query, request.scope), timings)
                timings["total_s"] = time.perf_counter() - started
                yield answer.answer
                yield answer
                return
        stats = GenerationStats()
        call = ModelCall(request.adapter, request.generation, stats, request.cancelled)
        inputs = {
            "question": request.question,
            "system_prompt": request.system_prompt,
            "blocks": blocks,
            "history": history_messages(request.history, request.history_turns, request.history_answers),
        }
        # The model's stream is read directly, not through an LCEL pipeline's stream: a closed
        # pipeline stream drains its upstream to the end (LangChain's tracing), which made an
        # abandoned answer run on, or block the thread that closed it, until the model finished.
        messages = self.prompt(request.use_retrieval).invoke(inputs)
        pieces: list[str] = []
        for chunk in self.llm.stream(messages, stop=list(ECHO_STOPS), call=call):
            piece = chunk.text
            if not piece:
                continue
            pieces.append(piece)
            yield piece
        raw = _ECHO.split("".join(pieces))[0]
        timings.update(
            generation_s=stats.seconds,
            first_token_s=(stats.first_token_s or stats.seconds) + timings.get("retrieval_s", 0.0),
            total_s=time.perf_counter() - started,
        )
        decode_s = stats.seconds - (stats.first_token_s or stats.seconds)
        if stats.new_tokens > 1 and decode_s > 0:
            timings["decode_tokens_per_s"] = (stats.new_tokens - 1) / decode_s
        yield self._finish(request, raw, blocks, timings, stats)

    def _finish(
        self, request: ChainRequest, raw: str, blocks: list[Document], timings: dict[str, float], stats: GenerationStats
    ) -> Answer:
        retrieved = [SourceRef.from_document(n, doc) for n, doc in enumerate(blocks, 1)]
        texts = [doc.page_content for doc in blocks]
        question = request.question
        text = drop_unknown_markers(tidy(raw, stats.cut_off), len(blocks))
        model_cited = cited_numbers(text, len(blocks))
        declined = is_decline(text)

        def accept(sentence: str, block: str) -> bool:
            return judge(sentence, block, question).supported

        checking = bool(blocks) and not declined and self.decline_unsupported
        if blocks and not declined:
            text = attribute(text, texts, accept)[0]
        attributed, dropped = text, []  # the model's answer as the answerability fit saw it
        if checking:
            checked = keep_checked(text, texts, accept, question)
            text, dropped = checked.text, checked.dropped
        claims = claims_by_block(text, len(blocks))
        verdicts = check_citations(claims, texts, question)
        sources = []
        for number in cited_numbers(text, len(blocks)):
            quote = supporting_passage(claims.get(number, []), texts[number - 1])
            verdict = verdicts[number]
            source = replace(
                SourceRef.from_document(number, blocks[number - 1], quote),
                cited_by="model" if number in model_cited else "attribution",
                support=verdict.share,
                supported=verdict.supported,
                problems=list(verdict.reasons) or None,
            )
            sources.append(source)
        answer = Answer(
            question=question,
            answer=text,
            adapter=request.adapter,
            sources=sources,
            retrieved=retrieved,
            timings=timings,
            used_retrieval=request.use_retrieval,
            abstained=declined,
            decline_reason=MODEL_DECLINED if declined and blocks else None,
            model_citations=len(model_cited),
            search_query=request.search_query,
            truncated=stats.ended_by == "length",  # a loop was cut: its repeats are gone, the answer is whole
            dropped=dropped,
        )
        unfounded = unfounded_specifics(attributed, texts) if blocks else []  # the answerability fit's signal
        # the question's own words are not invented; with nothing checked left, the reason names what was
        invented = unfounded_specifics(text or attributed, texts, question) if unfounded else []
        if checking:
            reason = self.decline_reason(raw, text, texts, sources, invented, dropped)
            earlier = [(turn.question, turn.answer) for turn in request.history]
            if reason is None and adds_nothing(text, question, texts):
                reason = RESTATED
            elif reason is None and repeats_earlier(text, question, earlier):
                reason = REPEATED
            if reason:
                _withhold(answer, attributed, reason)
        if blocks:
            scores = [float(doc.metadata.get("score", 0.0)) for doc in blocks]
            model = model_signals(stats.token_logprobs, stats.first_choices)
            answer.signals = signals(question, attributed, texts, scores, bool(model_cited), model, unfounded)
        fit = request.answerability or self.answerability
        if answer.signals and fit is not None:
            answer.answerability = round(fit.probability(answer.signals), 4)
            threshold = self.threshold(fit)
            if not answer.abstained and answer.answerability < threshold:
                _withhold(answer, attributed, UNLIKELY.format(answer.answerability, threshold))
        answer.usage = {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.new_tokens}
        if blocks and self.evidence is not None:
            answer.evidence = self._evidence(answer.question, blocks, texts)
            best = answer.evidence[0].text if answer.evidence else None
            checked = best and not answer.abstained and self.decline_unsupported and self.evidence_agreement > 0
            if checked and evidence_agreement(text, question, best) < self.evidence_agreement:
                _withhold(answer, attributed, DISAGREES)
            self._quote(answer, blocks)
        return answer

    def _nearest(self, request: ChainRequest, near: list[Document], timings: dict[str, float]) -> Answer:
        """The reply when no block reached the floor: the nearest passage's best sentences quoted, else
        a bare "I don't know"."""
        answer = Answer(
            request.question,
            DONT_KNOW,
            request.adapter,
            timings=timings,
            abstained=True,
            decline_reason=NOTHING_RETRIEVED,
            search_query=request.search_query,
        )
        if near:
            answer.evidence = self._evidence(request.question, near, [doc.page_content for doc in near])
            if answer.evidence:
                answer.decline_reason = ONLY_NEAR
                self._quote(answer, near, NEAR_QUOTED, NEAR_QUOTED_TWO)
        return answer

    def _evidence(self, question: str, blocks: list[Document], texts: list[str]) -> list[Evidence]:
        """The sentences of ``blocks`` that best answer ``question``: the best, and the second when it
        scores within ``evidence_margin`` of it (none without a candidate)."""
        assert self.evidence is not None
        return [
            Evidence(
                quote.n,
                str(blocks[quote.n - 1].metadata.get("source", "")),
                blocks[quote.n - 1].metadata.get("page"),
                blocks[quote.n - 1].metadata.get("section"),
                quote.text,
                quote.score,
            )
            for quote in shown_quotes(best_quotes(question, texts, self.evidence, count=2), self.evidence_margin)
        ]

    @staticmethod
    def _quote(answer: Answer, blocks: list[Document], one: str = QUOTED, two: str = QUOTED_TWO) -> None:
        """A declined answer shows its best evidence sentences (``one`` or ``two``: the reply around
        them) instead of a bare "I don't know"."""
        if not answer.abstained or not answer.evidence:
            return
        if answer.withheld is None and answer.answer not in (NOT_ANSWERED, DONT_KNOW):
            answer.withheld = answer.answer  # the model's own decline
        shown = answer.evidence
        answer.answer = (one if len(shown) == 1 else two).format(quoted_sentences(shown))
        quotes: dict[int, list[str]] = {}
        for quote in shown:
            quotes.setdefault(quote.n, []).append(quote.text)
        answer.sources = [
            replace(SourceRef.from_document(n, blocks[n - 1], " ".join(texts)), cited_by="quote")
            for n, texts in quotes.items()
        ]
        answer.quoted = True

    @staticmethod
    def decline_reason(
        raw: str,
        text: str,
        blocks: list[str],
        sources: list[SourceRef],
        unfounded: Sequence[str],
        dropped: Sequence[str] = (),
    ) -> str | None:
        """Why an answer from ``blocks`` should be withheld (``unfounded``: its specifics no block
        states; ``dropped``: its sentences no block supports), or None when it may be shown."""
        if is_context_dump(raw, blocks):
            return CONTEXT_DUMP
        if unfounded:
            return UNFOUNDED.format(", ".join(dict.fromkeys(unfounded)))
        if not text.strip():
            return UNSUPPORTED if dropped else EMPTY  # every sentence it wrote was left out, or it wrote none
        if sources and not any(source.supported for source in sources):
            return UNSUPPORTED
        return None

    def ask(self, request: ChainRequest) -> Answer:
        """Run the chain to the end and return the answer."""
        return last_answer(self.stream(request))


def _withhold(answer: Answer, text: str, reason: str) -> None:
    """Decline in the model's place: ``text`` (all it wrote) is kept as ``withheld``, for ``reason``."""
    answer.answer, answer.withheld, answer.sources, answer.dropped = NOT_ANSWERED, text, [], []
    answer.abstained, answer.decline_reason = True, reason
