"""Debian's chromium through Playwright (browser downloads are not possible here), and chat-page helpers."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextmanager
def launched() -> Iterator:
    """A headless chromium (the test is skipped where Debian's chromium is not installed)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


def ask(page, question: str, timeout_ms: int = 120_000) -> list[str]:
    """Ask in the Chat tab; returns the answer texts seen while it streamed, the final one last."""
    from playwright.sync_api import expect

    chat = page.locator("#chat")
    before = chat.get_by_text("Sources (", exact=False).count()
    page.locator("#question textarea").fill(question)
    page.locator("#send").click()
    seen: list[str] = []
    for _ in range(timeout_ms // 50):
        if chat.get_by_text("Sources (", exact=False).count() > before:
            break
        bots = chat.locator(".bot")
        if bots.count():
            text = bots.last.inner_text()
            if text.strip() and (not seen or seen[-1] != text):
                seen.append(text)
        page.wait_for_timeout(50)
    expect(chat.get_by_text("Sources (", exact=False).nth(before)).to_be_visible()
    answer = chat.locator(".bot").filter(has_text="answered by").last
    seen.append(answer.inner_text())
    return seen
