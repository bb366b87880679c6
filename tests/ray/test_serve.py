"""`moaa serve`'s app on a local Ray cluster: the hf engine on a tiny model, called by the openai client."""

from __future__ import annotations

import socket

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.serve.openai_app import run_server

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

NAME = "tiny-chat"


def find_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def client(ray_cluster):
    from openai import OpenAI
    from ray import serve

    config = ModelConfig(path="tiny:llama-a", num_cpus=0.25)
    url = run_server(config, NAME, host="127.0.0.1", port=find_free_port())
    yield OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    serve.shutdown()


def test_chat_completion_returns_n_non_empty_choices(client):
    response = client.chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": "Say something."}],
        n=2,
        max_tokens=8,
        temperature=1.0,
        seed=0,
    )
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


def test_bad_request_is_a_400_openai_error(client):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=NAME, messages=[], n=1)
    assert "messages" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="stream is not supported"):
        client.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
