"""A saved web page's text as Markdown: its main content (trafilatura), or all visible text for snippets."""

from __future__ import annotations

import re

import trafilatura
from bs4 import BeautifulSoup

_BLOCKS = ["p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol", "pre", "blockquote"]
_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1|(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")


def visible_markdown(soup: BeautifulSoup) -> str:
    """Every visible text of the page; the fallback when no main content is found."""
    for tag in soup(["script", "style", "noscript", "template", "svg", "head"]):
        tag.decompose()
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * min(level, 3)} {heading.get_text(' ', strip=True)}\n\n")
    for block in soup.find_all(_BLOCKS):
        block.append("\n")  # inline tags (links, emphasis) stay inside their paragraph
    lines = (re.sub(r"[ \t\xa0]+", " ", line).strip() for line in soup.get_text().splitlines())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def main_content(html: str) -> str | None:
    """The page's main text as Markdown (headings, paragraphs, tables), without navigation,
    sidebars, footers or scripts; emphasis markers are dropped so they never reach a quote."""
    text = trafilatura.extract(
        html,
        output_format="markdown",
        include_formatting=True,  # keeps headings as '#', which become each chunk's section
        include_links=False,
        include_images=False,
        include_comments=False,
        include_tables=True,
        with_metadata=False,
    )
    return _EMPHASIS.sub(lambda m: m.group(2) or m.group(3), text).strip() if text else None


# Below this much visible text a page is a snippet, not an article with furniture around it:
# trafilatura's fallback extractor then loses its headings and splits it at every bold word.
MAIN_CONTENT_FROM = 500


def page_text(html: str) -> str:
    """Main content of the page (no navigation, sidebars, footers, scripts); all visible text for
    snippets, or when no main content is found."""
    visible = visible_markdown(BeautifulSoup(html, "html.parser"))
    main = main_content(html) if len(visible) >= MAIN_CONTENT_FROM else None
    return main or visible
