"""Fault injection against `chatbot serve` for real: clients that vanish, time out or stop reading,
forged uploads, SIGTERM. After each, the server answers, syncs and reports health within seconds."""

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from gradio.utils import get_upload_folder

from tests.conftest import MODEL_CACHE, REPO
from tests.servers import running_server, server_process

QUESTION = "How do I refresh the knowledge base?"
LONG = 300  # tokens asked for by the requests that get abandoned: ~20 s of decoding if never cancelled


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults")
    shutil.copytree(REPO / "knowledge", folder / "knowledge")
    shutil.copytree(REPO / "adapters" / "support", folder / "adapters" / "support")
    # long answers on the page, so a closed tab's answer would visibly run on if it were not cancelled
    with running_server(folder, folder / "knowledge", folder / "adapters", max_new_tokens="400") as url:
        yield url, folder


def body(stream: bool, max_tokens: int = LONG, model: str = "base", question: str = QUESTION) -> dict:
    return {
        "model": model,
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": question}],
    }


def wait_until(check, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def idle(url: str) -> bool:
    return httpx.get(url + "/health", timeout=2).json()["generating"] == 0


def cancelled(url: str) -> int:
    """Answers the engine ended because their reader went away (not by finishing)."""
    return httpx.get(url + "/health", timeout=2).json()["cancelled"]


def ended(url: str) -> tuple[int, int]:
    """Answers the engine ended because their reader went away, and answers that ran to their end."""
    health = httpx.get(url + "/health", timeout=2).json()
    return health["cancelled"], health["finished"]


def assert_serving(url: str) -> None:
    """Health at once, then a whole new answer (the stream ends with [DONE])."""
    started = time.monotonic()
    assert httpx.get(url + "/health", timeout=3).json()["status"] == "ok"
    with httpx.stream("POST", url + "/v1/chat/completions", json=body(True, 12), timeout=60) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.status_code == 200 and lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2].removeprefix("data: "))["choices"][0]["finish_reason"] in ("stop", "length")
    assert time.monotonic() - started < 60


def well_behaved(url: str, results: list) -> None:
    with httpx.stream("POST", url + "/v1/chat/completions", json=body(True, 24, "support"), timeout=120) as response:
        results.append([line for line in response.iter_lines() if line])


@pytest.mark.parametrize("read_lines", [0, 1, 6])
def test_a_client_that_disconnects_mid_stream_cancels_only_its_own_answer(served, read_lines):
    url, _ = served
    neighbour: list = []
    other = threading.Thread(target=well_behaved, args=(url, neighbour))
    other.start()
    before = cancelled(url)
    client = httpx.Client(timeout=60)
    with client.stream("POST", url + "/v1/chat/completions", json=body(True)) as response:
        lines = response.iter_lines()
        for _ in range(read_lines):
            next(lines)
    client.close()  # gone, mid-answer
    other.join(timeout=120)
    assert neighbour and neighbour[0][-1] == "data: [DONE]"  # the other user got the whole answer
    assert wait_until(lambda: cancelled(url) == before + 1, 10)  # the abandoned answer was stopped, not run on
    assert wait_until(lambda: idle(url), 10)
    assert_serving(url)


def test_thirty_clients_that_time_out_leave_the_server_answering_and_syncing(served):
    url, folder = served
    errors: list = []
    timed_out: list = []

    def impatient(number: int) -> None:
        streaming = number % 2 == 0
        try:
            payload = body(streaming, question=f"{QUESTION} ({number})")
            with httpx.stream("POST", url + "/v1/chat/completions", json=payload, timeout=1.0) as response:
                for _ in response.iter_lines():
                    pass
        except httpx.TimeoutException:
            timed_out.append(streaming)
        except httpx.HTTPError as exc:
            errors.append(repr(exc))

    before = ended(url)
    threads = [threading.Thread(target=impatient, args=(number,)) for number in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    # Every request ended, none runs on: cancelled when its client gave up, or finished (a streaming
    # client whose tokens never paused for a second gets its whole answer; seen on a fast machine).
    assert wait_until(lambda: sum(ended(url)) == sum(before) + 30, 20)
    stopped = ended(url)[0] - before[0]
    # a non-streaming client that timed out had no answer yet: its request must have been stopped
    # (most of them are queued behind a full batch for seconds, so the check always has cases)
    assert stopped >= timed_out.count(False) >= 10
    assert wait_until(lambda: idle(url), 10)
    assert_serving(url)
    documents = httpx.get(url + "/health").json()["documents"]
    (folder / "knowledge" / "after-the-storm.md").write_text("# Storm\n\nThe watcher still syncs after the storm.\n")
    assert wait_until(lambda: httpx.get(url + "/health").json()["documents"] == documents + 1, 30)
    env = {
        "CHATBOT_KNOWLEDGE_DIR": str(folder / "knowledge"),
        "CHATBOT_ADAPTERS_DIR": str(folder / "adapters"),
        "CHATBOT_DATA_DIR": str(folder / "data"),
        "CHATBOT_CACHE_DIR": str(MODEL_CACHE),
        "PATH": str(Path(sys.executable).parent),
    }
    sync = subprocess.run(
        [sys.executable, "-m", "chatbot.cli", "sync", "--json"], env=env, capture_output=True, text=True, timeout=180
    )
    assert sync.returncode == 0, sync.stderr
    assert json.loads(sync.stdout)["unchanged"] == documents + 1


def test_a_reader_that_stops_reading_blocks_nobody(served):
    url, _ = served
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body(True)).encode()
    stalled = socket.create_connection((host, int(port)))
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    try:
        time.sleep(1)
        assert_serving(url)  # while the stalled reader holds its stream open
    finally:
        stalled.close()
    assert wait_until(lambda: idle(url), 30)


def test_a_forged_upload_path_is_refused_and_nothing_is_indexed(served, tmp_path):
    """A FileData naming a server file (never uploaded) must not be copied into the knowledge folder."""
    url, folder = served
    secret = tmp_path / "server-secret.md"
    token = f"zq{uuid.uuid4().hex[:10]}"
    secret.write_text(f"# Secret\n\nThe server password is {token}.\n")
    config = httpx.get(url + "/config").json()
    upload_id = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "kb-upload")
    dependency = next(d for d in config["dependencies"] if [upload_id, "upload"] in [list(t) for t in d["targets"]])
    session = uuid.uuid4().hex[:10]
    forged = {"path": str(secret), "orig_name": "notes.md", "meta": {"_type": "gradio.FileData"}}
    join = httpx.post(
        url + "/gradio_api/queue/join",
        json={"data": [[forged], ""], "fn_index": dependency["id"], "trigger_id": upload_id, "session_hash": session},
    )
    assert join.status_code == 200, join.text
    outputs = None
    with httpx.stream("GET", url + f"/gradio_api/queue/data?session_hash={session}", timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line.removeprefix("data:"))
                if message.get("msg") == "process_completed":
                    outputs = message.get("output", {})
                    break
    assert outputs is not None and ("not uploaded" in json.dumps(outputs) or "not an uploaded" in json.dumps(outputs))
    assert not any(token in path.read_text(errors="ignore") for path in (folder / "knowledge").rglob("*.md"))
    assert not any(token in path.read_text(errors="ignore") for path in Path(get_upload_folder()).rglob("*.md"))
    assert httpx.get(url + "/files/notes.md").status_code == 404


def test_the_first_sigterm_stops_the_server_with_a_stream_open(tmp_path):
    shutil.copytree(REPO / "knowledge", tmp_path / "knowledge")
    with server_process(tmp_path, tmp_path / "knowledge", tmp_path / "adapters") as (url, process):
        client = httpx.Client(timeout=60)
        with client.stream("POST", url + "/v1/chat/completions", json=body(True, 2000)) as response:
            lines = response.iter_lines()
            next(lines)
            next(lines)
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            rest: list[str] = []
            with contextlib.suppress(httpx.HTTPError):  # the connection was closed: also an end
                rest.extend(line for line in lines if line)
        process.wait(timeout=20)
        assert time.monotonic() - started < 20
        if rest:
            assert rest[-1] == "data: [DONE]" and "shutting down" in " ".join(rest)
        log = next(tmp_path.glob("serve-*.log")).read_text()
        assert "Traceback" not in log


@pytest.mark.browser
def test_a_closed_browser_tab_cancels_its_answer(served):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    url, _ = served
    before = cancelled(url)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_context().new_page()
        page.goto(url)
        page.locator("#use-retrieval input").uncheck()  # the model alone: a long story, nothing to decline
        page.locator("#question textarea").fill("Write a long, detailed story about a lighthouse keeper.")
        page.locator("#send").click()
        answer = page.locator("#chat .bot")
        assert wait_until(lambda: answer.count() > 0 and len(answer.last.inner_text()) > 20, 60)
        browser.close()  # the tab is gone mid-answer
    assert wait_until(lambda: cancelled(url) == before + 1, 20)
    assert wait_until(lambda: idle(url), 10)
    assert_serving(url)
