"""The openai_http engine against a local OpenAI-style endpoint: what it asks for and what it reads."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import SamplingParams
from moaa_ray.engines.openai_http import OpenAIHTTPEngine

# The judge's first token as OpenAI sends it (alpaca_eval's example), keyed by the user's message.
TOP_LOGPROBS = {
    "ranked": [("M", -0.017597131), ("m", -4.048847), ("Both", -14.908222), ("The", -15.705097)],
    "no logprobs": None,
}


class _Endpoint(BaseHTTPRequestHandler):
    """Answers every chat request with its first token's top log-probabilities, if asked for."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        top = TOP_LOGPROBS[body["messages"][-1]["content"]] if body.get("logprobs") else None
        logprobs = None
        if top is not None:
            tops = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
            logprobs = {"content": [{**tops[0], "top_logprobs": tops[: body["top_logprobs"]]}]}
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": top[0][0] if top else "m"},
            "finish_reason": "length",
            "logprobs": logprobs,
        }
        answer = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"]}
        data = json.dumps(answer | {"choices": [choice]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    server.bodies = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_first_tokens_top_logprobs_are_asked_for_and_read(endpoint):
    config = ModelConfig(
        path="gpt-4-1106-preview",
        engine="openai_http",
        api_base=f"http://127.0.0.1:{endpoint.server_port}/v1",
    )
    engine = OpenAIHTTPEngine(config)
    conversations = [
        [{"role": "system", "content": "judge"}, {"role": "user", "content": question}]
        for question in ("ranked", "no logprobs")
    ]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=1, n=1, seed=None)
    ranked, bare = engine.first_token_logprobs(conversations, params, 3)
    assert ranked == ("M", {"M": -0.017597131, "m": -4.048847, "Both": -14.908222})
    assert bare == ("m", None)
    [body] = [b for b in endpoint.bodies if b["messages"] == conversations[0]]  # sent in parallel
    assert (body["logprobs"], body["top_logprobs"], body["max_completion_tokens"]) == (True, 3, 1)
    assert body["temperature"] == 1.0
