"""A saved web page's text as Markdown: its main content (trafilatura), or all visible text for snippets."""

from __future__ import annotations

import re

import trafilatura
from bs4 import BeautifulSoup

_BLOCKS = ["p", "div", "li", "tr", "br", "section", "article", "table", "ul", "ol", "pre", "blockquote"]
_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1|(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")


_NEVER_TEXT = ["script", "style", "noscript", "template", "svg", "head", "iframe", "object", "canvas"]
_FURNITURE = ["nav", "footer", "aside", "form", "button", "dialog", "menu"]
_FURNITURE_ROLES = {"navigation", "contentinfo", "banner", "complementary", "search", "menu", "menubar", "dialog"}


def _drop_furniture(soup: BeautifulSoup) -> None:
    """Remove what is never a page's content: navigation, footers, sidebars, forms, hidden parts.

    A ``<header>`` goes too, unless it is an article's (inside ``<main>`` or ``<article>``),
    where it holds the title.
    """
    for tag in soup(_NEVER_TEXT + _FURNITURE):
        tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed or tag.attrs is None:
            continue
        hidden = tag.has_attr("hidden") or str(tag.get("aria-hidden", "")).lower() == "true"
        if hidden or str(tag.get("role", "")).lower() in _FURNITURE_ROLES:
            tag.decompose()
    for header in soup.find_all("header"):
        if not header.find_parent(["main", "article"]):
            header.decompose()


def visible_markdown(soup: BeautifulSoup) -> str:
    """The page's visible text without its furniture (navigation, footer, sidebars, forms,
    scripts); the text of a short page, and the fallback when no main content is found."""
    _drop_furniture(soup)
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
