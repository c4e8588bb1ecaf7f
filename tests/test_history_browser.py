"""Saved conversations and feedback in a real browser, on a real server with two logins."""

import shutil

import pytest

from chatbot.chats import ChatStore
from tests.browsers import ask
from tests.conftest import REPO
from tests.servers import running_server

USERS = {"ann": "pw-ann", "bob": "pw-bob"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One server for the module: the user guide as knowledge, logins for ann and bob."""
    folder = tmp_path_factory.mktemp("history")
    shutil.copytree(REPO / "knowledge", folder / "knowledge")
    (folder / "adapters").mkdir()
    auth = '{"ann": "pw-ann", "bob": "pw-bob"}'
    with running_server(folder, folder / "knowledge", folder / "adapters", ui_auth=auth) as url:
        yield url, folder


def login(browser, url: str, user: str):  # noqa: ANN201 - a Playwright page
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.locator("input[type=text]").fill(user)
    page.locator("input[type=password]").fill(USERS[user])
    page.get_by_role("button", name="Login").click()
    expect(page.locator("#question textarea")).to_be_visible(timeout=30_000)
    return page


@pytest.mark.browser
def test_browser_history_survives_a_reload_and_each_login_sees_only_its_own(browser, served):
    from playwright.sync_api import expect

    url, _ = served
    ann = login(browser, url, "ann")
    ask(ann, "Which file types can I index?")
    history = ann.locator("#history")
    expect(history).to_contain_text("Which file types can I index?")
    ann.reload()
    expect(ann.locator("#chat .bot").filter(has_text="answered by")).to_have_count(1, timeout=30_000)  # reopened
    expect(ann.locator("#chat")).to_contain_text("Which file types can I index?")

    bob = login(browser, url, "bob")
    expect(bob.locator("#history")).not_to_contain_text("Which file types")
    expect(bob.locator("#chat .bot")).to_have_count(0)
    ask(bob, "How do I switch the domain adapter?")
    expect(bob.locator("#history")).to_contain_text("How do I switch the domain adapter?")

    ann.reload()
    expect(ann.locator("#history")).to_contain_text("Which file types can I index?")
    expect(ann.locator("#history")).not_to_contain_text("switch the domain adapter")
    # a new conversation, then the old one opened from the list and continued
    ann.get_by_role("button", name="New conversation").click()
    expect(ann.locator("#chat .bot")).to_have_count(0)
    ann.locator("#history label", has_text="Which file types can I index?").click()
    expect(ann.locator("#chat")).to_contain_text("Which file types can I index?", timeout=30_000)
    ask(ann, "And PDFs?")
    expect(ann.locator("#chat .bot").filter(has_text="answered by")).to_have_count(2)
    expect(ann.locator("#history label")).to_have_count(1)  # the same conversation, not a new one
    for page in (ann, bob):
        page.context.close()


@pytest.mark.browser
def test_browser_thumbs_correction_wrong_source_and_the_feedback_view(browser, served):
    from playwright.sync_api import expect

    url, folder = served
    page = login(browser, url, "ann")
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("#conversation-title textarea")).to_have_value("")
    ask(page, "How do I refresh the knowledge base?")
    page.locator("#chat").get_by_role("button", name="Dislike").last.click()
    page.get_by_text("Feedback on an answer").click()
    expect(page.locator("#feedback-answer input")).to_have_value("1. How do I refresh the knowledge base?")
    page.locator("#feedback-wrong label").first.click()
    page.locator("#feedback-correction textarea").fill("Drop the files into knowledge/ and run chatbot sync.")
    page.locator("#feedback-save").click()
    expect(page.locator("#feedback-note")).to_contain_text("Feedback saved.")

    (record,) = [r for r in ChatStore(folder / "data" / "chats.sqlite").feedback(owner="ann")]
    assert record.answer.question == "How do I refresh the knowledge base?"
    assert record.feedback.verdict == "down" and record.feedback.correction.startswith("Drop the files")
    assert record.feedback.wrong_sources == (record.answer.sources[0].n,)

    page.get_by_role("tab", name="Feedback").click()
    recent = page.locator("#feedback-recent")
    expect(recent).to_contain_text("How do I refresh the knowledge base?")
    expect(recent).to_contain_text("👎")
    expect(recent).to_contain_text("Drop the files into knowledge/")
    expect(page.locator("#feedback-summary")).to_contain_text("base")

    bob = login(browser, url, "bob")
    bob.get_by_role("tab", name="Feedback").click()
    expect(bob.locator("#feedback-summary")).to_contain_text("base")  # counts are everyone's
    expect(bob.locator("#feedback-recent")).not_to_contain_text("refresh the knowledge base")  # verdicts are not
    for each in (page, bob):
        each.context.close()


@pytest.mark.browser
def test_browser_rename_search_and_delete_a_conversation(browser, served):
    from playwright.sync_api import expect

    url, _ = served
    page = login(browser, url, "bob")
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("#conversation-title textarea")).to_have_value("")
    ask(page, "Can I use a GGUF model?")
    page.locator("#conversation-title textarea").fill("Model formats")
    page.locator("#rename-conversation").click()
    history = page.locator("#history")
    expect(history).to_contain_text("Model formats")
    page.locator("#history-search textarea").fill("gguf")  # matches the question, not the title
    expect(history.locator("label")).to_have_count(1)
    expect(history).to_contain_text("Model formats")
    page.locator("#history-search textarea").fill("no conversation says this")
    expect(history.locator("label")).to_have_count(0)
    page.locator("#history-search textarea").fill("")
    expect(history).to_contain_text("Model formats")
    page.locator("#delete-conversation").click()
    expect(history).not_to_contain_text("Model formats")
    expect(page.locator("#chat .bot")).to_have_count(0)
    page.reload()
    expect(page.locator("#question textarea")).to_be_visible()
    expect(page.locator("#history")).not_to_contain_text("Model formats")
    page.context.close()
