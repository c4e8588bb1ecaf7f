"""Markdown for the chat page: answers with clickable [n] markers, and the sources panel."""

from __future__ import annotations

import html
import re
from urllib.parse import quote

from chatbot.rag.answer import Answer, SourceRef
from chatbot.text import MARKER
from chatbot.vocabulary import BASE_ADAPTER

_FRAGMENT_WORDS = 6
_PROBLEMS = {  # grounding.Verdict.reasons, as a reader would say them
    "number": "a number it states is not in the block",
    "name": "a name it states is not in the block",
    "structure": "a pasted heading or table row",
    "echo": "it repeats the question",
    "negation": "the block says otherwise",
    "words": "few of its words are in the block",
}


def document_url(source: SourceRef) -> str:
    """Where a source opens: the file itself, a PDF at its page, text scrolled to the quote."""
    url = "/files/" + quote(source.source)
    if source.source.lower().endswith(".pdf"):
        return url + (f"#page={source.page}" if source.page else "")
    if source.quote:
        # a text fragment: the browser scrolls to and highlights the first words of the quote
        words = source.quote.split()[:_FRAGMENT_WORDS]
        return url + "#:~:text=" + quote(" ".join(words), safe="")
    return url


def link_citations(text: str, sources: list[SourceRef], gone: frozenset[str] = frozenset()) -> str:
    """Turn each ``[n]`` of ``text`` into a link to block n's document (unknown numbers, files ``gone``: text)."""
    by_number = {source.n: source for source in sources if source.source not in gone}

    def linked(match: re.Match[str]) -> str:
        parts = []
        for part in match.group(1).split(","):
            source = by_number.get(int(part))
            label = f"[{int(part)}]"
            parts.append(f"[{label}]({document_url(source)})" if source else label)
        return "".join(parts)

    return MARKER.sub(linked, text)


def answer_markdown(answer: Answer, domain_label: str, changes: dict[str, str] | None = None) -> str:
    """The answer with linked citations and a line naming the domain that wrote it.

    ``changes`` (files deleted or changed since a saved answer was given) are named in that line.
    """
    changes = changes or {}
    seconds = answer.timings.get("total_s")
    facts = [f"answered by **{domain_label}**"]
    if answer.abstained:
        label = "quoted instead" if answer.quoted else "declined"
        facts.append(label + (f": {html.escape(answer.why)}" if answer.why else ""))
        if answer.retrieved:
            facts.append(f"{len(answer.retrieved)} passages considered")
    elif answer.used_retrieval:
        facts.append(f"{len(answer.sources)} of {len(answer.retrieved)} sources cited")
        if answer.unsupported:
            facts.append("⚠️ unsupported citation " + ", ".join(f"[{n}]" for n in answer.unsupported))
        if answer.answerability is not None:
            facts.append(f"answerability {answer.answerability:.2f}")
    else:
        facts.append("knowledge base off")
    if answer.truncated and not answer.abstained:
        facts.append("cut short at the token limit")
    if seconds is not None:
        facts.append(f"{seconds:.1f} s")
    cited = {source.source for source in answer.sources}
    for kind in ("deleted", "changed"):
        files = sorted(name for name, change in changes.items() if change == kind and name in cited)
        if files:
            facts.append(f"⚠️ {kind} since: " + ", ".join(html.escape(name) for name in files))
    gone = frozenset(name for name, change in changes.items() if change == "deleted")
    cited_numbers = {source.n for source in answer.sources}
    # the evidence line's [n] links to its block too, cited or not
    linked = [*answer.sources, *(block for block in answer.retrieved if block.n not in cited_numbers)]
    return f"{link_citations(answer.reply, linked, gone)}\n\n<sub>{' · '.join(facts)}</sub>"


def highlighted(source: SourceRef) -> str:
    """The snippet, HTML-escaped, with the supporting passage marked."""
    snippet = html.escape(source.snippet)
    if source.quote:
        passage = html.escape(source.quote)
        if passage in snippet:
            return snippet.replace(passage, f"<mark>{passage}</mark>", 1)
    return snippet


_CHANGES = {
    "deleted": "⚠️ this file was deleted after the answer was given",
    "changed": "⚠️ this file changed after the answer was given",
}


def _source_line(source: SourceRef, change: str | None = None) -> str:
    where = f" · {source.place}" if source.place else ""
    if source.section:
        where += f" · {html.escape(source.section)}"
    if source.supported is False:
        why = ", ".join(_PROBLEMS.get(problem, problem) for problem in source.problems or [])
        where += " · ⚠️ the cited sentence is not supported by this block" + (f" ({why})" if why else "")
    name = html.escape(source.source)
    link = name if change == "deleted" else f"[{name}]({document_url(source)})"
    if change:
        where += f" · {_CHANGES[change]}"
    # an HTML block, so the snippet's own Markdown (headings, lists, backticks) is shown as text
    return (
        f"**[{source.n}]** {link}{where} · score {source.score:.2f}\n\n"
        f"<blockquote class='source-quote'>{highlighted(source)}</blockquote>"
    )


def sources_markdown(answer: Answer, changes: dict[str, str] | None = None) -> str:
    """The sources panel of one answer: cited blocks first, other retrieved blocks after.

    ``changes``: files deleted or changed since a saved answer was given (their blocks say so).
    """
    changes = changes or {}

    def line(source: SourceRef) -> str:
        return _source_line(source, changes.get(source.source))

    if not answer.used_retrieval:
        return "_Retrieval was off for this answer._"
    if not answer.retrieved and answer.quoted and answer.sources:  # nothing reached min_relevance
        nearest = [f"_Quoted instead: {html.escape(answer.why or 'the nearest passage')}._"]
        return "\n\n".join(nearest + [line(source) for source in answer.sources])
    if not answer.retrieved:
        return "_Nothing in the knowledge base was relevant._"
    if answer.abstained:
        parts = [f"_Declined: {html.escape(answer.why or 'no answer in these passages')}._"]
        if answer.withheld:
            withheld = html.escape(answer.withheld)
            parts.append(f"<details><summary>The withheld answer</summary>\n\n{withheld}\n\n</details>")
        parts.append(f"<details open><summary>Passages considered ({len(answer.retrieved)})</summary>\n")
        parts.extend(line(source) for source in answer.retrieved)
        parts.append("</details>")
        return "\n\n".join(parts)
    cited = {source.n for source in answer.sources}
    parts = [line(source) for source in answer.sources] or ["_No source was cited._"]
    if answer.dropped:
        left_out = "\n".join(f"- {html.escape(sentence)}" for sentence in answer.dropped)
        summary = f"Left out of the answer: no passage supports them ({len(answer.dropped)})"
        parts.append(f"<details><summary>{summary}</summary>\n\n{left_out}\n\n</details>")
    others = [source for source in answer.retrieved if source.n not in cited]
    if others:
        parts.append(f"<details><summary>Also retrieved, not cited ({len(others)})</summary>\n")
        parts.extend(line(source) for source in others)
        parts.append("</details>")
    return "\n\n".join(parts)


def sources_title(answer: Answer) -> str:
    label = "" if answer.adapter == BASE_ADAPTER else f"{answer.adapter} · "
    if answer.abstained and answer.retrieved:
        return f"{label}Sources (declined · {len(answer.retrieved)} passages considered)"
    if answer.quoted:
        return f"{label}Sources (the nearest passage, quoted · {len(answer.sources)})"
    return f"{label}Sources ({len(answer.sources)} cited)"
