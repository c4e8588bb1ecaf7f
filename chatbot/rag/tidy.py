"""Turn a small model's raw answer into sentences: no pasted headings or table rows, markers at
sentence ends, no repeated or cut-off sentences; and tell a context dump from an answer."""

from __future__ import annotations

import re
from collections.abc import Sequence

from chatbot.text import LIST_NUMBER, MARKER, collapse_repeats, sentences, strip_markers

_STRUCTURE_LINE = re.compile(r"^\s*(?:#{1,6}\s.*|\|.*\||[-|: ]{3,}|(?:\[\d{1,3}\]\s*)+)$")
_INLINE_HEADING = re.compile(r"(?:^|(?<=\]))\s*#{1,6}\s[^\n\[]*")  # "[1] # Title [2] # Title" on one line
_END = re.compile(r"[.!?][\"')\]]*$")
DUMP_SHARE = 0.8  # share of copied sentences (and of a sentence's word 6-grams) that makes a dump
DUMP_SENTENCES = 3


def drop_structure(text: str) -> str:
    """Without heading lines, table rows and lines of bare markers (pasted from the blocks)."""
    lines = (_INLINE_HEADING.sub("", line) for line in text.splitlines() if not _STRUCTURE_LINE.match(line))
    return "\n".join(line for line in lines if not _STRUCTURE_LINE.match(line)).strip()


_WRAPPED = re.compile(r"(?<=[^\s.!?:;])[ \t]*\n[ \t]*(?=[a-z`(\[])")


def join_wrapped_lines(text: str) -> str:
    """Lines broken mid-sentence (copied from hard-wrapped sources) joined with a space."""
    return _WRAPPED.sub(" ", text)


_ENUMERATED = re.compile(rf"(?m){LIST_NUMBER}[ \t]+")
_EMPTY_ITEM = re.compile(rf"(?m){LIST_NUMBER}[ \t]*(?:\n|$)")  # "2." and nothing after it


def drop_lone_enumerator(text: str) -> str:
    """Without list numbers that number nothing ("2." where the model stopped) and without a "1."
    that numbers a list of one (the model starting a list it never continues)."""
    text = _EMPTY_ITEM.sub("", text).strip()
    return _ENUMERATED.sub("", text, count=1) if len(_ENUMERATED.findall(text)) == 1 else text


def markers_to_sentence_end(text: str) -> str:
    """Each sentence's ``[n]`` markers moved to its end, before the final punctuation."""
    out = []
    for sentence, separator in sentences(text):
        found = []
        for match in MARKER.finditer(sentence):
            for number in re.findall(r"\d+", match.group(1)):
                if number not in found:
                    found.append(number)
        if not found:
            out.append(sentence + separator)
            continue
        body = strip_markers(sentence).rstrip()
        if not body:  # markers alone: they belong to the sentence before
            if out:
                previous = out.pop().rstrip()
                out.append(_with_markers(previous, [n for n in found if f"[{n}]" not in previous]) + separator)
            continue
        out.append(_with_markers(body, found) + separator)
    return "".join(out).strip()


def _with_markers(sentence: str, numbers: list[str]) -> str:
    end = _END.search(sentence)
    stop = end.group(0) if end else ""
    return sentence[: len(sentence) - len(stop)] + "".join(f" [{n}]" for n in numbers) + stop


def trim_cut_off(text: str, truncated: bool = False) -> str:
    """Without a last sentence that stops mid-way (the token limit) after a complete one.

    A last line of its own (a list item, a label) is left alone, unless the model is known to
    have been stopped (``truncated``: its token limit or a loop) rather than to have ended.
    """
    parts = sentences(text.strip())
    if len(parts) < 2 or ("\n" in parts[-2][1] and not truncated):
        return text.strip()
    if _END.search(strip_markers(parts[-1][0]).rstrip()):
        return text.strip()
    return "".join(sentence + separator for sentence, separator in parts[:-1]).strip()


def tidy(raw: str, truncated: bool = False) -> str:
    """The answer a user should see from the model's raw text (``truncated``: the model was stopped
    at its token limit or in a loop, so an unfinished last sentence is cut off, not an ending)."""
    text = collapse_repeats(markers_to_sentence_end(join_wrapped_lines(drop_structure(raw))))
    return drop_lone_enumerator(trim_cut_off(text, truncated))  # after the trim: a cut-off item leaves its "2."


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", strip_markers(text).lower())


def _copied_from(sentence: str, blocks: Sequence[str]) -> int | None:
    """The index of a block that holds ``sentence`` (80 % of its word 6-grams, or all of a short one)."""
    words = _words(sentence)
    size = min(6, len(words))
    grams = {tuple(words[i : i + size]) for i in range(len(words) - size + 1)}
    for index, block in enumerate(blocks):
        found = _words(block)
        held = {tuple(found[i : i + size]) for i in range(len(found) - size + 1)}
        if grams and len(grams & held) >= DUMP_SHARE * len(grams):
            return index
    return None


def is_context_dump(raw: str, blocks: Sequence[str]) -> bool:
    """Whether the raw answer is the blocks pasted back rather than an answer.

    Either nothing but headings, table rows and markers, or at least ``DUMP_SENTENCES``
    sentences nearly all copied, from more than one block. Quoting the sentences of one block
    that answer is an extractive answer, not a dump.
    """
    if raw.strip() and not drop_structure(raw):
        return True
    parts = [sentence for sentence, _ in sentences(join_wrapped_lines(raw.strip())) if len(_words(sentence)) >= 4]
    if len(parts) < DUMP_SENTENCES:
        return False
    origins = [_copied_from(sentence, blocks) for sentence in parts]
    copied = [origin for origin in origins if origin is not None]
    return len(copied) >= DUMP_SHARE * len(parts) and len(set(copied)) >= 2
