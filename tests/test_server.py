"""`chatbot serve` for real: a subprocess on a free loopback port, driven by HTTP and a browser."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODEL_CACHE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path, user_guide):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env.update(
        CHATBOT_KNOWLEDGE_DIR=str(user_guide),
        CHATBOT_ADAPTERS_DIR=str(tmp_path / "adapters"),
        CHATBOT_DATA_DIR=str(tmp_path / "data"),
        CHATBOT_CACHE_DIR=str(MODEL_CACHE),
        CHATBOT_MAX_NEW_TOKENS="40",
        CHATBOT_PORT=str(port),
    )
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "chatbot.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if process.poll() is not None:
                pytest.fail("server exited: " + (tmp_path / "serve.log").read_text())
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("server did not start: " + (tmp_path / "serve.log").read_text())
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_binds_loopback_and_reports_health(server):
    assert server.startswith("http://127.0.0.1:")
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ok" and health["documents"] == 5 and health["chunks"] > 5
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "gradio" in page.text.lower()


@pytest.mark.browser
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_browser_question_streams_an_answer_with_sources(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server)
        page.locator("#question textarea").fill("How do I refresh the knowledge base?")
        page.locator("#send").click()
        chat = page.locator("#chat")
        expect(chat.get_by_text("Sources (", exact=False)).to_be_visible(timeout=120_000)
        answer = chat.locator(".message").filter(has_text="[1]").first
        expect(answer).to_be_visible()
        chat.get_by_text("Sources (", exact=False).click()
        expect(chat.get_by_text("user-guide/02-knowledge-base.md").first).to_be_visible()
        page.wait_for_timeout(800)  # let the panel finish opening before the screenshot
        shots = Path(__file__).parent / "artifacts"
        shots.mkdir(exist_ok=True)
        page.screenshot(path=str(shots / "chat.png"), full_page=True)
        browser.close()
