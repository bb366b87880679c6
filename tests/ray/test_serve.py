"""`moaa serve`'s app on a local Ray cluster: the hf engine on a tiny model, called by the openai client.

Two apps share the Serve instance on 127.0.0.1: ``moaa`` at ``/`` as ``moaa serve`` deploys it
(no key, default timeout), and ``guarded`` at ``/guarded`` with an API key and a short timeout.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.serve.openai_app import ServeSettings, build_app, run_server
from moaa_ray.serve.security import key_digest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

NAME = "tiny-chat"
KEY = "sk-moaa-test-0123456789"
GUARDED_TIMEOUT_S = 2.0
USER = {"role": "user", "content": "Say something."}


def find_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def base_url(ray_cluster):
    from ray import serve

    config = ModelConfig(path="tiny:llama-a", num_cpus=0.25)
    url = run_server(config, ServeSettings(NAME), host="127.0.0.1", port=find_free_port())
    guarded = ServeSettings(NAME, GUARDED_TIMEOUT_S, key_digest(KEY))
    serve.run(build_app(config, guarded), name="guarded", route_prefix="/guarded")
    yield url
    serve.shutdown()


@pytest.fixture(scope="module")
def client(base_url):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def guarded_url(base_url):
    return base_url.replace("/v1", "/guarded/v1")


def guarded_client(guarded_url: str, api_key: str, max_retries: int = 0):
    from openai import OpenAI

    return OpenAI(base_url=guarded_url, api_key=api_key, max_retries=max_retries, timeout=120)


def raw_request(url: str, data: bytes | None = None) -> tuple[int, dict, dict]:
    """Status, JSON body and headers of a request sent without the openai client (nor any key)."""
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), dict(error.headers)


def ask(client, content: str = "Say something.", **kwargs):
    kwargs.setdefault("max_tokens", 8)
    messages = [{"role": "user", "content": content}]
    return client.chat.completions.create(model=NAME, messages=messages, **kwargs)


def test_chat_completion_returns_n_non_empty_choices(client):
    response = ask(client, n=2, temperature=1.0, seed=0)
    assert response.object == "chat.completion"
    assert response.model == NAME
    assert [choice.index for choice in response.choices] == [0, 1]
    for choice in response.choices:
        assert choice.message.role == "assistant"
        assert choice.message.content.strip()
        assert choice.finish_reason in ("stop", "length")
    assert response.usage.prompt_tokens > 0
    assert 0 < response.usage.completion_tokens <= 16


def test_models_lists_the_served_name(client):
    assert [model.id for model in client.models.list()] == [NAME]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "Hi"}]}, "messages"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:,"}}],
                    }
                ]
            },
            "messages.[0].content",
        ),
        (
            {"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
            "messages.[0].role",
        ),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 0}, "n"),
        ({"seed": 2**70}, "seed"),
        ({"max_tokens": 200_000}, "max_tokens"),
        ({"max_completion_tokens": 200_000}, "max_completion_tokens"),
        ({"stream": True}, "stream"),
        ({"stop": ["."]}, "stop"),
    ],
)
def test_each_bad_parameter_is_a_400_openai_error(client, kwargs, param):
    import openai

    request = {"model": NAME, "messages": [USER], "max_tokens": 8, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    assert caught.value.status_code == 400
    error = caught.value.body
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


def test_a_limit_past_the_context_says_how_much_fits(client):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, max_tokens=200_000)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert "maximum context length is 2048 tokens" in caught.value.body["message"]


def test_another_models_name_is_404_model_not_found(client):
    import openai

    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[USER])
    assert caught.value.body["code"] == "model_not_found"


def test_a_body_that_is_not_json_and_an_unknown_route_get_openai_errors(base_url):
    status, body, _ = raw_request(f"{base_url}/chat/completions", data=b"{not json")
    assert (status, body["error"]["type"]) == (400, "invalid_request_error")
    status, body, _ = raw_request(f"{base_url}/completions", data=b"{}")
    assert status == 404 and set(body["error"]) == {"message", "type", "param", "code"}


def test_greedy_n_gives_n_identical_choices(client):
    one = ask(client, temperature=0, max_tokens=12).choices[0].message.content
    response = ask(client, temperature=0, max_tokens=12, n=3)
    assert [choice.message.content for choice in response.choices] == [one] * 3
    assert (
        response.usage.completion_tokens
        == 3 * ask(client, temperature=0, max_tokens=12).usage.completion_tokens
    )


def test_concurrent_requests_are_each_answered_as_if_alone(client):
    """Mixed requests batched together: greedy of two lengths and seeded sampling (each its own call)."""
    requests = [
        {
            "content": f"Question {i}: " + "why? " * i,
            "temperature": 0,
            "max_tokens": 8 + 8 * (i % 2),
        }
        if i % 3
        else {"content": f"Tell me {i}.", "temperature": 1.0, "seed": i, "max_tokens": 12}
        for i in range(8)
    ]
    alone = [ask(client, **request).choices[0].message.content for request in requests]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda request: ask(client, **request), requests))
    assert [response.choices[0].message.content for response in together] == alone


def test_without_the_key_every_route_is_401(guarded_url):
    for url, data in ((f"{guarded_url}/models", None), (f"{guarded_url}/chat/completions", b"{}")):
        status, body, headers = raw_request(url, data)
        assert status == 401
        assert body["error"]["code"] == "invalid_api_key"
        assert headers["www-authenticate"] == "Bearer"


def test_a_wrong_key_is_401(guarded_url):
    import openai

    wrong = guarded_client(guarded_url, KEY + "x")
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert caught.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        ask(wrong)


def test_the_right_key_is_served(guarded_url):
    right = guarded_client(guarded_url, KEY)
    assert [model.id for model in right.models.list()] == [NAME]
    assert ask(right, max_tokens=4).choices[0].message.content


def test_a_request_past_the_timeout_is_a_504_and_the_server_recovers(guarded_url):
    """n=8 answers of 1200 tokens take several seconds on the tiny model; the limit is 2 s."""
    import openai

    client = guarded_client(guarded_url, KEY, max_retries=2)
    started = time.monotonic()
    with pytest.raises(openai.InternalServerError) as caught:
        ask(client, n=8, temperature=1.0, seed=0, max_tokens=1200)
    assert caught.value.status_code == 504
    assert caught.value.body["code"] == "timeout"
    assert caught.value.response.headers["x-should-retry"] == "false"  # so the client did not
    assert time.monotonic() - started < 60
    deadline = time.monotonic() + 120
    while True:  # the engine finishes the abandoned batch, then answers again
        try:
            assert ask(guarded_client(guarded_url, KEY), max_tokens=2).choices
            break
        except openai.InternalServerError:
            assert time.monotonic() < deadline
