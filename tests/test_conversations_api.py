"""Saved conversations over the API: conversation ids, isolation per API key, feedback, export."""

import json

import pytest
from fastapi.testclient import TestClient
from openai import NotFoundError, OpenAI
from typer.testing import CliRunner

QUESTION = "How do I refresh the knowledge base?"
GUIDE = "user-guide/02-knowledge-base.md"


@pytest.fixture
def served(make_bot, user_guide):
    from chatbot.server.app import create_app

    bot = make_bot(api_keys={"ann": "key-ann", "bob": "key-bob"}, max_new_tokens=40)
    bot.sync()
    http = TestClient(create_app(bot))

    def client(key: str) -> OpenAI:
        return OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http)

    def call(method: str, path: str, key: str, **kwargs):  # noqa: ANN202
        return http.request(method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs)

    return bot, client, call


def test_each_exchange_is_saved_and_a_conversation_id_continues_it_with_its_history(served):
    _bot, client, call = served
    first = client("key-ann").chat.completions.create(model="base", messages=[{"role": "user", "content": QUESTION}])
    conversation_id, first_turn = first.model_extra["conversation_id"], first.model_extra["turn_id"]
    chunks = list(
        client("key-ann").chat.completions.create(
            model="base",
            messages=[{"role": "user", "content": "and how do I remove a file from it?"}],
            stream=True,
            extra_body={"conversation_id": conversation_id},
        )
    )
    last = chunks[-1].model_extra
    assert last["conversation_id"] == conversation_id and last["turn_id"] != first_turn
    listed = call("GET", "/v1/conversations", "key-ann").json()["data"]
    assert [(c["id"], c["turns"], c["title"]) for c in listed] == [(conversation_id, 2, QUESTION)]
    saved = call("GET", f"/v1/conversations/{conversation_id}", "key-ann").json()
    one, two = saved["messages"]
    assert one["reply"] == first.choices[0].message.content and one["sources"][0]["source"] == GUIDE
    assert one["reply"].startswith(one["answer"]) and two["reply"] == last["answer"]  # as shown, evidence included
    # the follow-up was searched with the saved first question: the history came from the store
    assert two["search_query"] == f"{QUESTION} and how do I remove a file from it?"
    assert one["source_changes"] == {} and one["feedback"] is None


def test_a_key_never_sees_or_touches_another_keys_conversation(served):
    bot, client, call = served
    reply = client("key-ann").chat.completions.create(model="base", messages=[{"role": "user", "content": QUESTION}])
    conversation_id, turn_id = reply.model_extra["conversation_id"], reply.model_extra["turn_id"]
    assert call("GET", "/v1/conversations", "key-bob").json()["data"] == []
    for method, path, body in (
        ("GET", f"/v1/conversations/{conversation_id}", None),
        ("PATCH", f"/v1/conversations/{conversation_id}", {"title": "bob's now"}),
        ("PUT", f"/v1/conversations/{conversation_id}/turns/{turn_id}/feedback", {"verdict": "down"}),
        ("DELETE", f"/v1/conversations/{conversation_id}", None),
    ):
        response = call(method, path, "key-bob", json=body)
        assert response.status_code == 404, (method, response.text)
        assert response.json()["error"]["code"] == "conversation_not_found"
    with pytest.raises(NotFoundError, match="no conversation"):
        client("key-bob").chat.completions.create(
            model="base", messages=[{"role": "user", "content": "hi"}], extra_body={"conversation_id": conversation_id}
        )
    assert call("GET", "/v1/conversations", "key-wrong").status_code == 401
    (saved,) = bot.chats.turns("ann", conversation_id)  # untouched
    assert saved.feedback is None and bot.chats.get("ann", conversation_id).title == QUESTION


def test_feedback_rename_store_false_and_a_deleted_source_file(served, user_guide):
    bot, client, call = served
    unsaved = client("key-ann").chat.completions.create(
        model="base", messages=[{"role": "user", "content": QUESTION}], extra_body={"store": False}
    )
    assert "conversation_id" not in unsaved.model_extra
    assert call("GET", "/v1/conversations", "key-ann").json()["data"] == []
    reply = client("key-ann").chat.completions.create(model="base", messages=[{"role": "user", "content": QUESTION}])
    conversation_id, turn_id = reply.model_extra["conversation_id"], reply.model_extra["turn_id"]
    feedback = f"/v1/conversations/{conversation_id}/turns/{turn_id}/feedback"
    cited = reply.model_extra["citations"][0]["n"]
    ok = call("PUT", feedback, "key-ann", json={"verdict": "down", "wrong_sources": [cited]})
    assert ok.json() == {"turn_id": turn_id, "verdict": "down", "correction": None, "wrong_sources": [cited]}
    ok = call("PUT", feedback, "key-ann", json={"correction": "Run `chatbot sync`."})
    assert ok.json()["verdict"] == "down" and ok.json()["wrong_sources"] == [cited]  # only the correction changed
    assert call("PUT", feedback, "key-ann", json={"wrong_sources": [99]}).status_code == 400
    assert call("PUT", feedback, "key-ann", json={"verdict": "meh"}).status_code == 400
    assert call("PUT", feedback, "key-ann", json={"wrong_sources": [2**64]}).status_code == 400
    beyond_sqlite = f"/v1/conversations/{conversation_id}/turns/{2**70}/feedback"  # was a 500 (OverflowError)
    assert call("PUT", beyond_sqlite, "key-ann", json={}).status_code == 400
    from chatbot.chats import ConversationNotFoundError

    with pytest.raises(ConversationNotFoundError):  # the store itself, as the UI calls it
        bot.chats.set_feedback("ann", 2**70, verdict="up")
    assert (
        call(
            "PUT", f"/v1/conversations/{conversation_id}/turns/{turn_id + 99}/feedback", "key-ann", json={}
        ).status_code
        == 404
    )
    assert (
        call("PATCH", f"/v1/conversations/{conversation_id}", "key-ann", json={"title": "Sync"}).json()["title"]
        == "Sync"
    )
    assert [c["id"] for c in call("GET", "/v1/conversations?search=sync", "key-ann").json()["data"]] == [
        conversation_id
    ]

    (user_guide / GUIDE).unlink()
    bot.sync()
    message = call("GET", f"/v1/conversations/{conversation_id}", "key-ann").json()["messages"][0]
    assert message["source_changes"][GUIDE] == "deleted"  # the old answer still opens, and says so
    assert message["reply"] == reply.choices[0].message.content

    from chatbot.cli import app

    out = user_guide.parent / "feedback.jsonl"
    result = CliRunner().invoke(
        app, ["feedback", "export", "--out", str(out)], env={"CHATBOT_DATA_DIR": str(bot.settings.data_dir)}
    )
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(text) for text in out.read_text().splitlines()]
    assert (line["owner"], line["verdict"], line["correction"]) == ("ann", "down", "Run `chatbot sync`.")
    assert line["question"] == QUESTION and line["sources"][0]["source"] == GUIDE

    assert call("DELETE", f"/v1/conversations/{conversation_id}", "key-ann").json()["deleted"] is True
    assert call("GET", f"/v1/conversations/{conversation_id}", "key-ann").status_code == 404
    assert list(bot.chats.feedback()) == []


def test_without_api_keys_conversations_are_not_listed_but_reachable_by_their_id(make_bot, user_guide):
    from chatbot.server.app import create_app

    bot = make_bot(max_new_tokens=16)
    bot.sync()
    http = TestClient(create_app(bot))
    mine = http.post(
        "/v1/chat/completions", json={"model": "base", "messages": [{"role": "user", "content": QUESTION}]}
    )
    conversation_id = mine.json()["conversation_id"]
    listed = http.get("/v1/conversations")  # another keyless client would see everyone's
    assert listed.status_code == 403 and listed.json()["error"]["code"] == "api_key_required"
    assert conversation_id not in listed.text
    assert len(conversation_id) == 32  # a random 128-bit id: what a keyless client holds is its capability
    assert http.get(f"/v1/conversations/{conversation_id}").json()["messages"][0]["question"] == QUESTION


def test_serving_beyond_loopback_without_login_or_key_needs_the_flag_and_says_what_is_open(make_settings):
    from chatbot.server.app import ExposureError, check_exposure

    assert check_exposure(make_settings(host="127.0.0.1")) == []
    assert check_exposure(make_settings(host="::1")) == []
    with pytest.raises(ExposureError, match="chat page .* the /v1 API .*--allow-unauthenticated"):
        check_exposure(make_settings(host="0.0.0.0"))
    with pytest.raises(ExposureError, match=r"/v1 API \(no api_key\)"):
        check_exposure(make_settings(host="192.0.2.7", ui_auth={"ann": "pw"}))
    assert check_exposure(make_settings(host="0.0.0.0", ui_auth={"ann": "pw"}, api_key="k")) == []
    opened = check_exposure(make_settings(host="0.0.0.0", allow_unauthenticated=True))
    assert len(opened) == 2 and "upload files" in opened[0]


def test_chatbot_serve_refuses_an_open_network_address_before_loading_anything(make_settings, monkeypatch):
    from chatbot.cli import app

    settings = make_settings()
    monkeypatch.setenv("CHATBOT_KNOWLEDGE_DIR", str(settings.knowledge_dir))
    monkeypatch.setenv("CHATBOT_DATA_DIR", str(settings.data_dir))
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2 and "refusing to serve on 0.0.0.0 without a login or key" in result.output
    assert not settings.data_dir.exists()  # nothing was synced or loaded
