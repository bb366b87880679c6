"""One model behind OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models`` on Ray Serve.

Request checking and response shaping are plain functions; Ray and FastAPI are imported only when an
app is built or a replica starts, so those functions are importable (and tested) without either.
``ray.serve.llm`` is not used because it does not import without vLLM.
"""

# No `from __future__ import annotations`: FastAPI must evaluate the routes' `Request`
# annotation, which is imported inside a method.
import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Conversation, SamplingParams, build_engine

if TYPE_CHECKING:
    from ray.serve import Application

logger = logging.getLogger(__name__)

APP_NAME = "moaa"
ROLES = ("system", "user", "assistant")
MAX_CHOICES = 128  # OpenAI's own limit on n


class RequestError(ValueError):
    """A request the server refuses, with the HTTP status and the offending parameter."""

    def __init__(
        self, message: str, param: str | None = None, status: int = 400, code: str | None = None
    ):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code

    def body(self) -> dict[str, Any]:
        """The OpenAI-style error JSON body."""
        error = {"message": str(self), "type": "invalid_request_error", "param": self.param}
        return {"error": {**error, "code": self.code}}


def parse_chat_request(body: Any, served_model_name: str) -> tuple[Conversation, SamplingParams]:
    """Check a chat-completions request body and turn it into engine inputs.

    Honours ``messages``, ``temperature``, ``top_p``, ``max_completion_tokens`` (or ``max_tokens``),
    ``n`` and ``seed``; other fields are ignored, as OpenAI-compatible servers commonly do.

    Args:
        body: the decoded JSON body.
        served_model_name: the only model name accepted in ``model`` (which may be left out).

    Returns:
        The conversation and the sampling parameters.

    Raises:
        RequestError: status 400 for a malformed request, 404 for another model's name.
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if body.get("stream"):
        raise RequestError("stream is not supported", "stream")
    if body.get("model") not in (None, served_model_name):
        message = f"model {body['model']!r} is not served here; use {served_model_name!r}"
        raise RequestError(message, "model", status=404, code="model_not_found")
    key = "max_tokens" if body.get("max_completion_tokens") is None else "max_completion_tokens"
    params = SamplingParams(
        temperature=_read_number(body, "temperature", 1.0, " in [0, 2]", lambda v: 0 <= v <= 2),
        top_p=_read_number(body, "top_p", 1.0, " in (0, 1]", lambda v: 0 < v <= 1),
        max_new_tokens=_read_number(
            body, key, SamplingParams().max_new_tokens, " >= 1", lambda v: v >= 1, integer=True
        ),
        n=_read_number(
            body, "n", 1, f" in [1, {MAX_CHOICES}]", lambda v: 1 <= v <= MAX_CHOICES, integer=True
        ),
        seed=_read_number(body, "seed", None, integer=True),
    )
    return _read_messages(body.get("messages")), params


def _read_messages(messages: Any) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", "messages")
    conversation = []
    for i, message in enumerate(messages):
        param = f"messages.[{i}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise RequestError(f"{param}.role must be one of {list(ROLES)}", f"{param}.role")
        conversation.append({"role": message["role"], "content": _read_text(message, param)})
    return conversation


def _read_text(message: dict, param: str) -> str:
    # Clients may send content as a list of parts; only text parts can be served.
    content = message.get("content")
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        for part in content
    ):
        content = "".join(part["text"] for part in content)
    if not isinstance(content, str):
        raise RequestError(f"{param}.content must be a string or text parts", f"{param}.content")
    return content


def _read_number(
    body: dict,
    key: str,
    default: Any,
    rule: str = "",
    valid: Callable[[Any], bool] | None = None,
    integer: bool = False,
) -> Any:
    value = body.get(key)
    if value is None:
        return default
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (valid and not valid(value)):
        noun = "an integer" if integer else "a number"
        raise RequestError(f"{key} must be {noun}{rule}, got {value!r}", key)
    return value if integer else float(value)


def build_chat_response(
    served_model_name: str,
    answers: list[str],
    prompt_tokens: int,
    completion_tokens: list[int],
    max_new_tokens: int,
) -> dict[str, Any]:
    """Shape answers as an OpenAI ``chat.completion`` object.

    Args:
        served_model_name: reported as ``model``.
        answers: one text per choice.
        prompt_tokens: tokens in the templated prompt (0 if unknown).
        completion_tokens: tokens of each answer (0 if unknown), capped at ``max_new_tokens``
            since re-encoded text can count more tokens than were generated; an answer at the cap
            is reported with ``finish_reason`` ``length``.
        max_new_tokens: the request's token limit.

    Returns:
        The response body.
    """
    completion_tokens = [min(tokens, max_new_tokens) for tokens in completion_tokens]
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": text},
            "finish_reason": "length" if tokens >= max_new_tokens else "stop",
            "logprobs": None,
        }
        for i, (text, tokens) in enumerate(zip(answers, completion_tokens, strict=True))
    ]
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": sum(completion_tokens),
        "total_tokens": prompt_tokens + sum(completion_tokens),
    }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": served_model_name,
        "choices": choices,
        "usage": usage,
    }


def build_models_response(served_model_name: str) -> dict[str, Any]:
    """The ``GET /v1/models`` body: a list holding the one served model."""
    model = {"id": served_model_name, "object": "model", "created": 0, "owned_by": "moaa_ray"}
    return {"object": "list", "data": [model]}


class ChatServer:
    """A Serve replica holding one engine; its FastAPI app is built on the replica (late-bound)."""

    def __init__(self, config: ModelConfig, served_model_name: str):
        self.engine = build_engine(config)
        self.served_model_name = served_model_name
        # Engines are not thread-safe: one generate call at a time per replica.
        self.lock = asyncio.Lock()

    def __serve_build_asgi_app__(self):
        from fastapi import FastAPI, Request
        from fastapi.responses import JSONResponse

        app = FastAPI(title="moaa_ray")

        @app.get("/v1/models")
        async def list_models() -> dict:
            return build_models_response(self.served_model_name)

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request):
            try:
                body = await request.json()
            except ValueError:
                body = None  # rejected below as not a JSON object
            try:
                conversation, params = parse_chat_request(body, self.served_model_name)
            except RequestError as exc:
                return JSONResponse(exc.body(), status_code=exc.status)
            async with self.lock:
                answers = await asyncio.to_thread(self.engine.chat, [conversation], params)
            prompt_tokens, completion_tokens = self.count_tokens(conversation, answers[0])
            return build_chat_response(
                self.served_model_name,
                answers[0],
                prompt_tokens,
                completion_tokens,
                params.max_new_tokens,
            )

        return app

    def count_tokens(self, conversation: Conversation, answers: list[str]) -> tuple[int, list[int]]:
        """Token counts of the templated prompt and each answer; zeros if the engine has no tokenizer.

        Args:
            conversation: the request's messages.
            answers: the generated texts.

        Returns:
            The prompt's token count and each answer's (re-encoded, so approximate).
        """
        tokenizer = getattr(self.engine, "tokenizer", None)  # the hf and vllm engines have one
        if tokenizer is None:
            return 0, [0] * len(answers)
        prompt = tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True
        )
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        return len(prompt_ids), [
            len(tokenizer.encode(a, add_special_tokens=False)) for a in answers
        ]


def build_app(config: ModelConfig, served_model_name: str) -> "Application":
    """The Serve application: ``config.num_replicas`` replicas of :class:`ChatServer`.

    Args:
        config: the model; ``num_gpus`` and ``num_cpus`` are per replica, and ``num_replicas``
            ``[min, max]`` autoscales when min < max.
        served_model_name: the name clients pass as ``model``.

    Returns:
        A bound ``ray.serve`` Application for ``serve.run``.
    """
    from ray import serve

    low, high = config.num_replicas
    scaling = (
        {"num_replicas": low}
        if low == high
        else {"autoscaling_config": {"min_replicas": low, "max_replicas": high}}
    )
    deployment = serve.deployment(serve.ingress()(ChatServer), name="ChatServer").options(
        ray_actor_options={"num_gpus": config.num_gpus, "num_cpus": config.num_cpus},
        **scaling,
    )
    return deployment.bind(config, served_model_name)


def run_server(
    config: ModelConfig, served_model_name: str, host: str = "127.0.0.1", port: int = 8000
) -> str:
    """Deploy the app and return its base URL once every replica is up; Serve keeps it running.

    Joins the cluster at ``$RAY_ADDRESS`` or starts a local one, unless Ray is already initialized.
    Stop it with ``serve.delete(APP_NAME)`` (or by ending a local cluster).

    Args:
        config: the model to serve.
        served_model_name: the name clients pass as ``model``.
        host: the interface Serve's HTTP proxy binds (loopback by default).
        port: its port.

    Returns:
        The OpenAI base URL, ``http://host:port/v1``.
    """
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local")
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(config, served_model_name), name=APP_NAME, route_prefix="/")
    url = f"http://{host}:{port}/v1"
    logger.info("serving %s (%s engine) at %s", served_model_name, config.engine, url)
    return url
