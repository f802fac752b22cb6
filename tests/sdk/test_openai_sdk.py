"""The official OpenAI Python SDK talks to aigw unmodified and parses every response."""

import json

import openai
import pytest
from openai import OpenAI

from conftest import KEY

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def client(gateway):
    return OpenAI(base_url=gateway, api_key=KEY, max_retries=0, timeout=20)


def test_non_streaming_chat(client):
    completion = client.chat.completions.create(
        model="chat-default", messages=[{"role": "user", "content": "Hello"}]
    )
    assert completion.object == "chat.completion"
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens > 0


def test_streaming_chat_with_usage(client):
    stream = client.chat.completions.create(
        model="chat-default",
        messages=[{"role": "user", "content": "Hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("usage_on", ["empty_choices", "empty_delta", "finish_chunk"])
def test_a_stream_without_include_usage_is_exactly_the_upstreams_own(mock_upstream, client, usage_on):
    """The gateway asks for usage on every stream and hides it from a client that did not ask:
    whichever chunk the upstream puts it on, the client gets the bytes the upstream would have
    sent it without the gateway's request (ids aside: they count the mock's requests)."""
    import re
    import urllib.request

    def send(method, url, body, key=None):
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, json.dumps(body).encode(), headers, method=method)
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.read().decode()

    send("PATCH", f"http://{mock_upstream}/mock/control", {"usage_on": usage_on})
    try:
        messages = [{"role": "user", "content": "Hello"}]
        through = list(client.chat.completions.create(model="chat-default", messages=messages, stream=True))
        direct_client = OpenAI(base_url=f"http://{mock_upstream}/v1", api_key="unused", max_retries=0, timeout=20)
        direct = list(direct_client.chat.completions.create(model="mock-model", messages=messages, stream=True))
        assert all(c.usage is None for c in through)
        assert [c.model_dump(exclude={"id"}) for c in through] == [c.model_dump(exclude={"id"}) for c in direct]

        def raw(base, key, model):
            body = {"model": model, "messages": messages, "stream": True}
            return re.sub(r"chatcmpl-mock-\d+", "ID", send("POST", f"{base}/chat/completions", body, key))

        assert raw(str(client.base_url).rstrip("/"), KEY, "chat-default") == raw(
            f"http://{mock_upstream}/v1", "unused", "mock-model"
        )

        # A client that asks for usage gets it where the upstream puts it.
        asked = list(
            client.chat.completions.create(
                model="chat-default", messages=messages, stream=True, stream_options={"include_usage": True}
            )
        )
        with_usage = [c for c in asked if c.usage is not None]
        assert len(with_usage) == 1 and with_usage[0].usage.completion_tokens > 0
    finally:
        send("PATCH", f"http://{mock_upstream}/mock/control", {"usage_on": "empty_choices"})


def test_tool_call_round_trip(client):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="chat-default", messages=messages, tools=[WEATHER_TOOL])
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    json.loads(call.function.arguments)

    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 18})})
    second = client.chat.completions.create(model="chat-default", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


def test_streaming_tool_call(client):
    stream = client.chat.completions.create(
        model="chat-default",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            name += call.function.name or "" if call.function else ""
            arguments += call.function.arguments or "" if call.function else ""
        finish = choice.finish_reason or finish
    assert name == "get_weather"
    json.loads(arguments)
    assert finish == "tool_calls"


def test_models_list(client):
    assert [m.id for m in client.models.list()] == [
        "chat-default", "text-embedding-3-small", "gpt-image-1", "whisper-1", "sora-2"]


def test_errors_parse_as_sdk_exceptions(gateway, client):
    bad = OpenAI(base_url=gateway, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="chat-default", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"
