"""Tests for the request checking and response shaping of moaa_ray.serve.protocol (no Ray)."""

from __future__ import annotations

import pytest

from moaa_ray.engines.base import SamplingParams
from moaa_ray.serve.protocol import (
    ChatRequest,
    GeneratedChoice,
    OpenAIError,
    build_chat_response,
    build_models_response,
    engine_params,
    fit_to_context,
    http_error,
    parse_chat_request,
    server_error,
    timeout_error,
)

NAME = "tiny:llama-a"
USER = {"role": "user", "content": "Hi"}


def parse(body: dict) -> ChatRequest:
    return parse_chat_request(body, NAME)


def test_defaults_follow_openai_and_engine():
    request = parse({"model": NAME, "messages": [USER]})
    assert request.conversation == [USER]
    assert request.params == SamplingParams(
        temperature=1.0, top_p=1.0, max_new_tokens=512, n=1, seed=None
    )
    assert request.max_tokens_key is None


def test_sampling_fields_are_honoured_and_model_may_be_left_out():
    body = {
        "messages": [{"role": "system", "content": "Be brief."}, USER],
        "temperature": 0,
        "top_p": 0.9,
        "max_tokens": 7,
        "n": 3,
        "seed": 11,
        "presence_penalty": 0.5,  # unknown to the engines: ignored
        "stream": False,  # unsupported fields may be sent switched off
        "response_format": {"type": "text"},
    }
    request = parse(body)
    assert request.params == SamplingParams(
        temperature=0.0, top_p=0.9, max_new_tokens=7, n=3, seed=11
    )
    assert request.max_tokens_key == "max_tokens"


def test_max_completion_tokens_wins_over_max_tokens():
    request = parse({"messages": [USER], "max_tokens": 7, "max_completion_tokens": 5})
    assert (request.params.max_new_tokens, request.max_tokens_key) == (5, "max_completion_tokens")


def test_seeds_at_the_ends_of_the_int64_range_are_accepted():
    for seed in (-(2**63), 2**63 - 1):
        assert parse({"messages": [USER], "seed": seed}).params.seed == seed


def test_text_parts_are_joined_into_one_string():
    parts = [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}]
    request = parse({"messages": [{"role": "user", "content": parts}]})
    assert request.conversation == [{"role": "user", "content": "Hello, world"}]


def test_the_developer_role_is_the_system_role():
    request = parse({"messages": [{"role": "developer", "content": "Be brief."}, USER]})
    assert request.conversation[0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ([USER], None, "JSON object"),
        ({"messages": []}, "messages", "non-empty"),
        ({}, "messages", "non-empty"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages", "user message"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages", "user message"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.[0].role", "one of"),
        ({"messages": [USER, "Hi"]}, "messages.[1].role", "one of"),
        ({"messages": [{"content": "x"}]}, "messages.[0].role", "one of"),
        ({"messages": [{"role": "user", "content": None}]}, "messages.[0].content", "string"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages.[0].content",
            "text only",
        ),
        ({"messages": [USER], "model": 3}, "model", "string"),
        ({"messages": [USER], "n": 0}, "n", "integer in [1, 128]"),
        ({"messages": [USER], "n": 129}, "n", "integer in [1, 128]"),
        ({"messages": [USER], "n": 1.5}, "n", "integer"),
        ({"messages": [USER], "temperature": 3}, "temperature", "[0, 2]"),
        ({"messages": [USER], "temperature": -0.1}, "temperature", "[0, 2]"),
        ({"messages": [USER], "temperature": float("nan")}, "temperature", "[0, 2]"),
        ({"messages": [USER], "temperature": True}, "temperature", "number"),
        ({"messages": [USER], "top_p": 0}, "top_p", "(0, 1]"),
        ({"messages": [USER], "max_tokens": 0}, "max_tokens", ">= 1"),
        ({"messages": [USER], "max_tokens": "5"}, "max_tokens", "integer"),
        ({"messages": [USER], "max_completion_tokens": -1}, "max_completion_tokens", ">= 1"),
        ({"messages": [USER], "seed": "1"}, "seed", "integer"),
        ({"messages": [USER], "seed": 2**70}, "seed", "integer in [-9223372036854775808"),
        ({"messages": [USER], "seed": -(2**63) - 1}, "seed", "integer in"),
        ({"messages": [USER], "stream": True}, "stream", "stream is not supported"),
        ({"messages": [USER], "stop": ["\n"]}, "stop", "not supported"),
        ({"messages": [USER], "logprobs": True}, "logprobs", "not supported"),
        ({"messages": [USER], "tools": [{"type": "function"}]}, "tools", "not supported"),
        (
            {"messages": [USER], "response_format": {"type": "json_object"}},
            "response_format",
            "not supported",
        ),
    ],
)
def test_bad_requests_are_400_with_an_openai_error_body(body, param, words):
    with pytest.raises(OpenAIError) as caught:
        parse(body)
    error = caught.value.body()["error"]
    assert caught.value.status == 400
    assert words in error["message"]
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param


def test_another_models_name_is_404_model_not_found():
    with pytest.raises(OpenAIError) as caught:
        parse({"model": "gpt-4o", "messages": [USER]})
    assert caught.value.status == 404
    assert caught.value.body()["error"]["code"] == "model_not_found"
    assert caught.value.body()["error"]["param"] == "model"


def test_a_limit_that_fits_the_context_is_kept():
    request = parse({"messages": [USER], "max_tokens": 100})
    assert fit_to_context(request, prompt_tokens=10, context_length=110) == request.params


def test_a_limit_past_the_context_is_400_context_length_exceeded():
    request = parse({"messages": [USER], "max_completion_tokens": 200_000})
    with pytest.raises(OpenAIError) as caught:
        fit_to_context(request, prompt_tokens=13, context_length=2048)
    error = caught.value.body()["error"]
    assert caught.value.status == 400
    assert (error["param"], error["code"]) == ("max_completion_tokens", "context_length_exceeded")
    assert "2048" in error["message"] and "at most 2035" in error["message"]


def test_a_limit_left_to_the_server_shrinks_to_the_room_left():
    request = parse({"messages": [USER]})
    assert fit_to_context(request, prompt_tokens=2000, context_length=2048).max_new_tokens == 48
    assert fit_to_context(request, prompt_tokens=10, context_length=2048).max_new_tokens == 512


def test_messages_that_fill_the_context_are_400():
    request = parse({"messages": [USER]})
    with pytest.raises(OpenAIError) as caught:
        fit_to_context(request, prompt_tokens=2048, context_length=2048)
    assert caught.value.param == "messages"
    assert caught.value.code == "context_length_exceeded"


def test_an_unknown_context_checks_nothing():
    request = parse({"messages": [USER], "max_tokens": 10**9})
    assert fit_to_context(request, prompt_tokens=5, context_length=None) == request.params


def test_greedy_choices_are_one_engine_answer_copied_n_times():
    params = SamplingParams(temperature=0.0, top_p=0.5, max_new_tokens=9, n=4, seed=3)
    assert engine_params(params) == (SamplingParams(temperature=0.0, max_new_tokens=9), 4)


def test_sampled_choices_come_from_the_engine():
    params = SamplingParams(temperature=0.7, top_p=0.5, max_new_tokens=9, n=4, seed=3)
    assert engine_params(params) == (params, 1)


def test_chat_response_has_the_openai_shape():
    completions = [GeneratedChoice("a b", 2, "stop"), GeneratedChoice("c", 4, "length")]
    response = build_chat_response(NAME, completions, prompt_tokens=10)
    assert response["object"] == "chat.completion"
    assert response["id"].startswith("chatcmpl-")
    assert response["model"] == NAME
    assert isinstance(response["created"], int)
    assert [c["index"] for c in response["choices"]] == [0, 1]
    assert response["choices"][0]["message"] == {"role": "assistant", "content": "a b"}
    assert [c["finish_reason"] for c in response["choices"]] == ["stop", "length"]
    assert response["usage"] == {"prompt_tokens": 10, "completion_tokens": 6, "total_tokens": 16}


def test_chat_response_ids_are_unique():
    first, second = (
        build_chat_response(NAME, [GeneratedChoice("x", 1, "stop")], 0) for _ in range(2)
    )
    assert first["id"] != second["id"]


def test_models_response_lists_the_served_name():
    body = build_models_response(NAME)
    assert body["object"] == "list"
    assert [(m["id"], m["object"]) for m in body["data"]] == [(NAME, "model")]


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (timeout_error(2.5), 504, "server_error", "timeout"),
        (server_error(), 500, "server_error", None),
        (http_error(404, "Not Found"), 404, "invalid_request_error", None),
        (http_error(503, "Unavailable"), 503, "server_error", None),
    ],
)
def test_server_side_errors_have_the_openai_shape(error, status, kind, code):
    body = error.body()["error"]
    assert error.status == status
    assert (body["type"], body["code"], body["param"]) == (kind, code, None)
    assert body["message"]


def test_the_timeout_error_names_the_limit():
    assert "2.5 s" in str(timeout_error(2.5))
