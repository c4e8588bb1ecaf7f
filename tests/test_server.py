"""`chatbot serve` for real: a subprocess on a free loopback port, driven by HTTP clients and a browser."""

import shutil
from pathlib import Path

import httpx
import pytest

from tests.browsers import ask
from tests.conftest import REPO
from tests.servers import running_server, server_env

SHOTS = Path(__file__).parent / "artifacts"
QUESTION = "How do I refresh the knowledge base?"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the module: the user guide as knowledge, the shipped support adapter."""
    folder = tmp_path_factory.mktemp("served")
    shutil.copytree(REPO / "knowledge", folder / "knowledge")
    shutil.copytree(REPO / "adapters" / "support", folder / "adapters" / "support")
    with running_server(folder, folder / "knowledge", folder / "adapters") as url:
        yield url, folder


def test_serve_binds_loopback_and_reports_health(served):
    url, _ = served
    assert url.startswith("http://127.0.0.1:")
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and health["documents"] == 5 and health["chunks"] > 5
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "gradio" in page.text.lower()


def test_openai_client_against_the_running_server(served):
    from openai import NotFoundError, OpenAI

    url, _ = served
    client = OpenAI(base_url=url + "/v1", api_key="unused")
    assert [model.id for model in client.models.list()] == ["base", "support"]
    messages = [{"role": "user", "content": QUESTION}]
    whole = client.chat.completions.create(model="support", messages=messages)
    assert whole.model_extra["citations"][0]["source"].startswith("user-guide/")
    chunks = list(client.chat.completions.create(model="support", messages=messages, stream=True))
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert chunks[-1].model_extra["answer"] == whole.choices[0].message.content
    assert streamed.strip() and len(chunks) > 3
    with pytest.raises(NotFoundError, match="unknown adapter 'finance'"):
        client.chat.completions.create(model="finance", messages=messages)


def test_commands_of_the_servers_data_dir_use_the_running_server(served, tmp_path):
    import json
    import subprocess
    import sys

    from chatbot.server.discovery import SERVER_FILE, read_record

    url, folder = served
    env = server_env(folder, folder / "knowledge", folder / "adapters")

    def chatbot(*args: str) -> tuple[int, str, str]:
        done = subprocess.run(
            [sys.executable, "-m", "chatbot.cli", *args], env=env, capture_output=True, text=True, timeout=300
        )
        return done.returncode, done.stdout, done.stderr

    assert read_record(folder / "data").url == url
    code, out, err = chatbot("ask", QUESTION, "--adapter", "support", "--json")
    answer = json.loads(out)
    assert code == 0, err
    assert answer["served_by"] == url and answer["adapter"] == "support" and answer["answer"]
    assert answer["retrieved"] and answer["timings"]["total_s"] > 0  # the whole record, as a local ask gives it
    code, _, err = chatbot("ask", QUESTION, "--adapter", "nope")
    assert code == 1 and "unknown adapter 'nope'" in err
    code, out, err = chatbot("info", "--json")
    info = json.loads(out)
    assert code == 0 and info["served_by"] == url, err
    assert info["base_model"]["engine"] in ("onnx", "torch") and info["base_model"]["precision"]
    assert info["paths"]["data_dir"] == str((folder / "data").resolve())
    served_info = httpx.get(url + "/v1/info").json()
    assert "paths" not in served_info and served_info["base_model"]["folder"] is None  # the server's paths stay in
    # a stale announcement (another instance id, as after a crash and a new process on the port) is ignored
    record = (folder / "data" / SERVER_FILE).read_text()
    (folder / "data" / SERVER_FILE).write_text(record.replace(read_record(folder / "data").instance, "0" * 16))
    try:
        code, out, err = chatbot("info", "--json")
        assert code == 0 and json.loads(out)["served_by"] is None and json.loads(out)["base_model"]["engine"] is None
    finally:
        (folder / "data" / SERVER_FILE).write_text(record)


def test_gradio_client_calls_the_ask_endpoint(served):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, _ = served
    result = Client(url, verbose=False).predict(QUESTION, "support", True, api_name="/ask")
    assert result["adapter"] == "support" and result["question"] == QUESTION
    assert "user-guide/02-knowledge-base.md" in {source["source"] for source in result["retrieved"]}
    with pytest.raises(AppError, match="unknown adapter 'nope'"):  # refusals come back as the caller's error
        Client(url, verbose=False).predict(QUESTION, "nope", True, api_name="/ask")
    with pytest.raises(AppError, match="max_message_chars"):
        Client(url, verbose=False).predict("x" * 50_000, "support", True, api_name="/ask")


def test_remote_generation_backend_gives_the_same_answers(served, tmp_path):
    """A second instance sends generation to the first one's /v1 and keeps retrieval and citations."""
    from openai import OpenAI

    url, folder = served
    local = OpenAI(base_url=url + "/v1", api_key="unused")
    # only the manifest here (system prompt, scope); the weights stay with the generation server
    (tmp_path / "adapters" / "support").mkdir(parents=True)
    shutil.copy(folder / "adapters" / "support" / "domain.toml", tmp_path / "adapters" / "support")
    with running_server(
        tmp_path,
        folder / "knowledge",
        tmp_path / "adapters",
        generation_url=url + "/v1",
        generation_extra_body='{"use_retrieval": false}',
    ) as remote_url:
        remote = OpenAI(base_url=remote_url + "/v1", api_key="unused")
        assert [model.id for model in remote.models.list()] == ["base", "support"]
        for adapter in ("base", "support"):
            messages = [{"role": "user", "content": QUESTION}]
            direct = local.chat.completions.create(model=adapter, messages=messages)
            relayed = remote.chat.completions.create(model=adapter, messages=messages)
            assert relayed.choices[0].message.content == direct.choices[0].message.content
            assert relayed.model_extra["citations"] == direct.model_extra["citations"]
            assert relayed.usage.completion_tokens == direct.usage.completion_tokens > 0


# Browser tests: Debian's chromium through Playwright (browser downloads are not possible here).


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(served[0])
    yield page
    context.close()


@pytest.mark.browser
def test_browser_streams_an_answer_whose_citation_opens_the_source(page):
    from playwright.sync_api import expect

    seen = ask(page, QUESTION)
    assert len(seen) >= 3, "the answer should arrive in pieces"  # partial texts, then the final one
    assert "[1]" in seen[-1] and "answered by Base model" in seen[-1]
    chat = page.locator("#chat")
    chat.get_by_text("Sources (", exact=False).last.click()
    expect(chat.locator("mark").first).to_be_visible()  # the supporting passage is highlighted
    with page.context.expect_page() as opened:
        chat.locator("a", has_text="[1]").first.click()
    source = opened.value
    source.wait_for_load_state()
    assert "/files/user-guide/02-knowledge-base.md" in source.url
    assert "chatbot sync" in source.locator("body").inner_text()


@pytest.mark.browser
def test_browser_adapter_switch_labels_answers_and_compares_with_base(page):
    from playwright.sync_api import expect

    page.locator("#adapter input").click()
    page.get_by_role("option", name="Helpdesk (support)").click()
    expect(page.locator("#adapter-about")).to_contain_text("helpdesk voice")
    page.locator("#compare-with input").click()
    page.locator("#compare-with").get_by_role("option", name="Base model (base)").click()
    seen = ask(page, QUESTION)
    assert "answered by Helpdesk" in seen[-1]
    base_answer = page.locator("#compare .bot").filter(has_text="answered by Base model")
    expect(base_answer).to_be_visible(timeout=120_000)
    page.locator("#chat").get_by_text("Sources (", exact=False).last.click()
    page.wait_for_timeout(500)  # let the panel finish opening before the screenshot
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "chat.png"), full_page=True)


def _pick(page, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option).click()


@pytest.mark.browser
def test_browser_upload_is_cited_and_delete_asks_first_and_can_be_undone(page, served, tmp_path):
    from playwright.sync_api import expect

    _, folder = served
    fact = tmp_path / "zorblat manual!.md"
    fact.write_text("# Zorblat 9000\n\nThe Zorblat 9000 espresso machine must be descaled every 37 days.\n")
    question = "How often must the Zorblat 9000 espresso machine be descaled?"
    saved = folder / "knowledge" / "zorblat manual.md"

    page.get_by_role("tab", name="Knowledge").click()
    expect(page.locator("#kb-table")).to_contain_text("01-getting-started.md")
    assert page.locator("#kb-doc input").input_value() == ""  # nothing is pre-selected for deletion
    page.locator("#kb-delete").click()
    expect(page.locator("#kb-message")).to_contain_text("Choose a document first")
    page.locator("#kb-upload input[type=file]").set_input_files(str(fact))
    expect(page.locator("#kb-table")).to_contain_text("zorblat manual.md", timeout=60_000)
    assert saved.read_bytes() == fact.read_bytes()

    page.get_by_role("tab", name="Chat").click()
    ask(page, question)
    page.locator("#chat").get_by_text("Sources (", exact=False).last.click()
    expect(page.locator("#chat a", has_text="zorblat manual.md").first).to_be_visible()

    page.get_by_role("tab", name="Knowledge").click()
    _pick(page, "#kb-doc", "zorblat manual.md")
    page.locator("#kb-delete").click()
    expect(page.locator("#kb-confirm-text")).to_contain_text("Move zorblat manual.md to the trash?")
    page.locator("#kb-cancel-delete").click()
    expect(page.locator("#kb-confirm-delete")).to_be_hidden()
    assert saved.exists()  # a click alone never deletes
    page.locator("#kb-delete").click()
    page.locator("#kb-confirm-delete").click()
    expect(page.locator("#kb-message")).to_contain_text("moved zorblat manual.md to the trash", timeout=60_000)
    expect(page.locator("#kb-table")).not_to_contain_text("zorblat")
    assert not saved.exists()

    page.get_by_role("tab", name="Chat").click()
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("#chat").get_by_text("Sources (", exact=False)).to_have_count(0)
    ask(page, question)
    expect(page.locator("#chat")).not_to_contain_text("zorblat manual.md")

    page.get_by_role("tab", name="Knowledge").click()
    page.locator("#kb-trash-box").get_by_text("Trash: deleted and replaced documents").click()
    page.locator("#kb-trash input").click()
    page.get_by_role("option", name="zorblat manual.md (deleted", exact=False).click()
    page.locator("#kb-restore").click()
    expect(page.locator("#kb-message")).to_contain_text("restored zorblat manual.md", timeout=60_000)
    expect(page.locator("#kb-table")).to_contain_text("zorblat manual.md")
    assert saved.read_bytes() == fact.read_bytes()

    _pick(page, "#kb-doc", "zorblat manual.md")  # and away for good, so the other tests never see it
    page.locator("#kb-delete").click()
    page.locator("#kb-confirm-delete").click()
    expect(page.locator("#kb-table")).not_to_contain_text("zorblat", timeout=60_000)
    page.locator("#kb-empty").click()
    page.locator("#kb-confirm-empty").click()
    expect(page.locator("#kb-message")).to_contain_text("from the trash for good")
    assert not any((folder / "data" / "trash").iterdir())


@pytest.mark.browser
def test_browser_an_empty_chat_suggests_questions_from_the_documents_and_a_click_asks_one(page):
    from playwright.sync_api import expect

    suggestions = page.locator("#suggestions")
    expect(suggestions).to_be_visible(timeout=30_000)
    # drawn from the user guide's headings (a heading that asks is asked as it is), never hard-coded
    expect(suggestions).to_contain_text("How do I refresh the knowledge base?")
    expect(suggestions).to_contain_text("What do my documents say about")
    suggestions.get_by_text("How do I refresh the knowledge base?").click()
    chat = page.locator("#chat")
    expect(chat.locator(".user").first).to_contain_text("How do I refresh the knowledge base?", timeout=60_000)
    expect(chat.get_by_text("Sources (", exact=False).first).to_be_visible(timeout=120_000)
    expect(suggestions).to_be_hidden()  # a conversation under way needs no suggestions
    page.get_by_role("button", name="New conversation").click()
    expect(suggestions).to_be_visible(timeout=30_000)


@pytest.mark.browser
def test_browser_knowledge_table_follows_a_file_dropped_while_the_page_is_open(page, served):
    from playwright.sync_api import expect

    _, folder = served
    page.get_by_role("tab", name="Knowledge").click()
    expect(page.locator("#kb-table")).to_contain_text("01-getting-started.md")
    dropped = folder / "knowledge" / "dropped-notes.md"
    dropped.write_text("# Dropped\n\nThe night porter's desk closes at 23:00.\n")
    try:
        expect(page.locator("#kb-table")).to_contain_text("dropped-notes.md", timeout=30_000)  # no reload
        page.locator("#kb-doc input").click()
        expect(page.get_by_role("option", name="dropped-notes.md")).to_be_visible()
    finally:
        dropped.unlink()
    expect(page.locator("#kb-table")).not_to_contain_text("dropped-notes.md", timeout=30_000)


@pytest.mark.browser
def test_browser_two_users_at_once_keep_their_own_conversation_and_adapter(browser, served):
    from playwright.sync_api import expect

    pages = []
    for _ in range(2):
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        page.goto(served[0])
        pages.append(page)
    helpdesk, plain = pages
    helpdesk.locator("#adapter input").click()
    helpdesk.get_by_role("option", name="Helpdesk (support)").click()
    questions = {helpdesk: "How do I switch the domain adapter?", plain: "Which file types can I index?"}
    for page, question in questions.items():  # both queued before either answer is done
        page.locator("#question textarea").fill(question)
        page.locator("#send").click()
    for page, label in ((helpdesk, "answered by Helpdesk"), (plain, "answered by Base model")):
        expect(page.locator("#chat .bot").filter(has_text=label)).to_be_visible(timeout=180_000)
    for page, question in questions.items():
        other = next(q for p, q in questions.items() if p is not page)
        chat = page.locator("#chat")
        expect(chat).to_contain_text(question)
        expect(chat).not_to_contain_text(other)
        expect(chat.locator(".bot").filter(has_text="answered by")).to_have_count(1)
    for page in pages:
        page.context.close()
