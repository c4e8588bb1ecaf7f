"""The OpenAI-compatible API, driven by the official openai client over the real FastAPI app."""

import pytest
from fastapi.testclient import TestClient
from openai import APIStatusError, AuthenticationError, NotFoundError, OpenAI


@pytest.fixture
def api(make_bot, user_guide):
    from chatbot.server.app import create_app

    bot = make_bot(api_key="sesame", max_new_tokens=40)
    bot.sync()
    http = TestClient(create_app(bot))
    return OpenAI(base_url="http://testserver/v1", api_key="sesame", http_client=http), http


def test_models_lists_base_and_needs_the_key(api):
    client, http = api
    assert [model.id for model in client.models.list()] == ["base"]
    with pytest.raises(AuthenticationError):
        OpenAI(base_url="http://testserver/v1", api_key="wrong", http_client=http).models.list()


def test_completion_answers_from_the_knowledge_base_with_citations(api):
    client, _ = api
    response = client.chat.completions.create(  # neutral values of unserved fields, as clients send them, pass
        model="base",
        messages=[{"role": "user", "content": "How do I refresh the knowledge base?"}],
        logprobs=False,
        tool_choice="none",
        response_format={"type": "text"},
        presence_penalty=0,
        stop=[],
    )
    extra = response.model_extra
    assert response.choices[0].message.content and response.usage.completion_tokens > 0
    assert extra["citations"] and extra["citations"][0]["source"] == "user-guide/02-knowledge-base.md"
    assert all(f"[{c['n']}]" in response.choices[0].message.content for c in extra["citations"])


def test_streamed_completion_equals_the_whole_one_and_ends_with_citations(api):
    client, _ = api
    messages = [{"role": "user", "content": "How do I refresh the knowledge base?"}]
    whole = client.chat.completions.create(model="base", messages=messages)
    chunks = list(client.chat.completions.create(model="base", messages=messages, stream=True))
    assert len(chunks) > 3 and chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].model_extra["answer"] == whole.choices[0].message.content
    assert chunks[-1].model_extra["citations"] == whole.model_extra["citations"]


def test_an_answer_stopped_at_max_tokens_finishes_with_length_and_a_whole_one_with_stop(api):
    client, _ = api
    messages = [{"role": "user", "content": "Describe how a library organises its books."}]
    off = {"use_retrieval": False}
    cut = client.chat.completions.create(model="base", messages=messages, max_tokens=6, extra_body=off)
    assert cut.usage.completion_tokens == 6 and cut.choices[0].finish_reason == "length"
    streamed = list(
        client.chat.completions.create(
            model="base", messages=messages, max_tokens=6, stream=True, extra_body={"use_retrieval": False}
        )
    )
    assert streamed[-1].choices[0].finish_reason == "length"
    whole = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "Say hello."}], extra_body={"use_retrieval": False}
    )
    assert whole.usage.completion_tokens < 40 and whole.choices[0].finish_reason == "stop"


def test_a_stop_string_ends_the_answer_before_it_whole_and_streamed(api):
    client, _ = api
    asked = {"model": "base", "messages": [{"role": "user", "content": "Describe the sea."}]}
    off = {"use_retrieval": False}
    whole = client.chat.completions.create(**asked, extra_body=off)
    text = whole.choices[0].message.content
    words = text.split()
    stop = f" {words[len(words) // 2]}"  # a word from the middle, with the space before it
    cut = client.chat.completions.create(**asked, stop=stop, extra_body=off)
    assert cut.choices[0].message.content == text[: text.index(stop)].strip()
    assert cut.choices[0].finish_reason == "stop" and cut.usage.completion_tokens < whole.usage.completion_tokens
    chunks = list(client.chat.completions.create(**asked, stop=[stop, "never in it"], stream=True, extra_body=off))
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert stop not in streamed and chunks[-1].model_extra["answer"] == cut.choices[0].message.content
    at_once = client.chat.completions.create(**asked, stop=words[0], extra_body=off)  # an empty answer, not a 500
    assert at_once.choices[0].message.content == "" and at_once.choices[0].finish_reason == "stop"


def test_unknown_model_and_bad_requests_get_openai_errors(api):
    client, _ = api
    with pytest.raises(NotFoundError, match="unknown adapter 'nope'"):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(APIStatusError) as error:
        client.chat.completions.create(model="base", messages=[{"role": "system", "content": "only a system"}])
    assert error.value.status_code == 400


def test_a_declined_answer_says_so_and_why_whole_and_streamed(api):
    from chatbot.rag.chain import DONT_KNOW, NOTHING_RETRIEVED

    client, _ = api
    messages = [{"role": "user", "content": "Who won the 1966 football world cup final?"}]
    whole = client.chat.completions.create(model="base", messages=messages)
    assert whole.choices[0].message.content == DONT_KNOW
    assert whole.model_extra["declined"] is True and whole.model_extra["decline_reason"] == NOTHING_RETRIEVED
    assert whole.model_extra["considered"] == [] and whole.model_extra["citations"] == []
    last = list(client.chat.completions.create(model="base", messages=messages, stream=True))[-1]
    assert last.model_extra["declined"] is True and last.model_extra["answer"] == DONT_KNOW
    answered = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "How do I refresh the knowledge base?"}]
    )
    assert answered.model_extra["declined"] is False and answered.model_extra["decline_reason"] is None
    assert 0.0 < answered.model_extra["answerability"] <= 1.0  # the calibrated estimate it was shown with
    assert "answerability" not in whole.model_extra  # nothing retrieved: nothing to estimate


def _streamed_text(chunks) -> str:
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


def test_a_checked_only_stream_sends_the_answer_the_checks_let_through(api):
    client, http = api
    messages = [{"role": "user", "content": "How do I refresh the knowledge base?"}]
    whole = client.chat.completions.create(model="base", messages=messages)
    drafts = list(client.chat.completions.create(model="base", messages=messages, stream=True))
    checked = list(
        client.chat.completions.create(
            model="base", messages=messages, stream=True, extra_body={"stream_drafts": False}
        )
    )
    assert "[1]" in whole.choices[0].message.content and "[1]" not in _streamed_text(drafts)  # markers come after
    assert _streamed_text(checked) == whole.choices[0].message.content == checked[-1].model_extra["answer"]
    assert len(checked) == 3  # the role, the answer whole, the verdict with its citations
    body = {"model": "base", "messages": messages, "stream": True, "stream_drafts": False}
    with http.stream("POST", "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sesame"}) as raw:
        lines = list(raw.iter_lines())
    assert ": writing" in lines  # a comment keeps the connection alive while the model writes


def test_a_server_that_streams_no_drafts_never_sends_a_withheld_answer(make_bot, user_guide):
    from chatbot.rag.chain import QUOTE_OPENING
    from chatbot.server.app import create_app

    bot = make_bot(api_key="sesame", max_new_tokens=40, stream_drafts=False, answerability_threshold=0.999)
    bot.sync()
    client = OpenAI(base_url="http://testserver/v1", api_key="sesame", http_client=TestClient(create_app(bot)))
    messages = [{"role": "user", "content": "How do I refresh the knowledge base?"}]
    whole = client.chat.completions.create(model="base", messages=messages)
    reply = whole.choices[0].message.content  # the checked reply: the closest passage, quoted
    assert reply.startswith(QUOTE_OPENING) and whole.model_extra["declined"] is True
    assert whole.model_extra["quoted"] is True and whole.model_extra["evidence"][0]["text"] in reply
    chunks = list(client.chat.completions.create(model="base", messages=messages, stream=True))
    assert _streamed_text(chunks) == reply and chunks[-1].model_extra["declined"] is True
    drafted = client.chat.completions.create(
        model="base", messages=messages, stream=True, extra_body={"stream_drafts": True}
    )
    assert not _streamed_text(list(drafted)).startswith(QUOTE_OPENING)  # a request may ask for the draft
