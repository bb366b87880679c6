"""Tests for the request checking and response shaping of moaa_ray.serve.openai_app (no Ray)."""

from __future__ import annotations

import pytest

from moaa_ray.engines.base import SamplingParams
from moaa_ray.serve.openai_app import (
    RequestError,
    build_chat_response,
    build_models_response,
    parse_chat_request,
)

NAME = "tiny:llama-a"
USER = {"role": "user", "content": "Hi"}


def test_defaults_follow_openai_and_engine():
    conversation, params = parse_chat_request({"model": NAME, "messages": [USER]}, NAME)
    assert conversation == [USER]
    assert params == SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=512, n=1, seed=None)


def test_sampling_fields_are_honoured_and_model_may_be_left_out():
    body = {
        "messages": [{"role": "system", "content": "Be brief."}, USER],
        "temperature": 0,
        "top_p": 0.9,
        "max_tokens": 7,
        "n": 3,
        "seed": 11,
        "presence_penalty": 0.5,  # unknown to the engines: ignored
    }
    _, params = parse_chat_request(body, NAME)
    assert params == SamplingParams(temperature=0.0, top_p=0.9, max_new_tokens=7, n=3, seed=11)


def test_max_completion_tokens_wins_over_max_tokens():
    body = {"messages": [USER], "max_tokens": 7, "max_completion_tokens": 5}
    assert parse_chat_request(body, NAME)[1].max_new_tokens == 5


def test_text_parts_are_joined_into_one_string():
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]
    conversation, _ = parse_chat_request({"messages": [{"role": "user", "content": parts}]}, NAME)
    assert conversation == [{"role": "user", "content": "Hello, world"}]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ([USER], None, "JSON object"),
        ({"messages": []}, "messages", "non-empty"),
        ({}, "messages", "non-empty"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.[0].role", "one of"),
        ({"messages": [USER, "Hi"]}, "messages.[1].role", "one of"),
        ({"messages": [{"role": "user", "content": None}]}, "messages.[0].content", "string"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, None, "text"),
        ({"messages": [USER], "n": 0}, "n", "integer in [1, 128]"),
        ({"messages": [USER], "n": 1.5}, "n", "integer"),
        ({"messages": [USER], "temperature": 3}, "temperature", "[0, 2]"),
        ({"messages": [USER], "temperature": True}, "temperature", "number"),
        ({"messages": [USER], "top_p": 0}, "top_p", "(0, 1]"),
        ({"messages": [USER], "max_tokens": 0}, "max_tokens", ">= 1"),
        ({"messages": [USER], "seed": "1"}, "seed", "integer"),
        ({"messages": [USER], "stream": True}, "stream", "stream is not supported"),
    ],
)
def test_bad_requests_are_400_with_an_openai_error_body(body, param, words):
    with pytest.raises(RequestError) as caught:
        parse_chat_request(body, NAME)
    error = caught.value.body()["error"]
    assert caught.value.status == 400
    assert words in error["message"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


def test_another_models_name_is_404_model_not_found():
    with pytest.raises(RequestError) as caught:
        parse_chat_request({"model": "gpt-4o", "messages": [USER]}, NAME)
    assert caught.value.status == 404
    assert caught.value.body()["error"]["code"] == "model_not_found"


def test_chat_response_has_the_openai_shape():
    response = build_chat_response(NAME, ["a b", "c"], 10, [2, 5], max_new_tokens=4)
    assert response["object"] == "chat.completion"
    assert response["id"].startswith("chatcmpl-")
    assert response["model"] == NAME
    assert isinstance(response["created"], int)
    assert [c["index"] for c in response["choices"]] == [0, 1]
    assert response["choices"][0]["message"] == {"role": "assistant", "content": "a b"}
    assert [c["finish_reason"] for c in response["choices"]] == ["stop", "length"]
    assert response["usage"] == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}


def test_chat_response_ids_are_unique():
    first, second = (build_chat_response(NAME, ["x"], 0, [0], 8) for _ in range(2))
    assert first["id"] != second["id"]


def test_models_response_lists_the_served_name():
    body = build_models_response(NAME)
    assert body["object"] == "list"
    assert [(m["id"], m["object"]) for m in body["data"]] == [(NAME, "model")]
