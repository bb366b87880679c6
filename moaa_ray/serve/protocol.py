"""The OpenAI chat-completions protocol as plain functions: checking requests, shaping responses and errors.

Nothing here imports Ray, FastAPI or a model library, so all of it is tested without them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from moaa_ray.core.conversations import ROLES
from moaa_ray.engines.base import Conversation, SamplingParams

ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
MAX_CHOICES = 128  # OpenAI's own limit on n
DEFAULT_REQUEST_TIMEOUT_S = 300.0  # under the openai client's own 600 s, so clients see the 504
SEED_RANGE = (-(2**63), 2**63 - 1)  # a signed 64-bit integer, as OpenAI and both engines take it
# Fields the server cannot honour: refused when set, rather than silently ignored.
UNSUPPORTED = (
    "stream",
    "stop",
    "tools",
    "functions",
    "logprobs",
    "top_logprobs",
    "response_format",
)


class OpenAIError(Exception):
    """An error the server answers with, in OpenAI's shape: HTTP status, type, param and code."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        status: int = 400,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.param, self.status, self.code, self.kind = param, status, code, kind

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {"message", "type", "param", "code"}}``."""
        error = {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}
        return {"error": error}


@dataclass(frozen=True)
class ChatRequest:
    """A checked request: the conversation, its sampling, and which field set the token limit."""

    conversation: Conversation
    params: SamplingParams
    max_tokens_key: str | None  # None: the client left the limit to the server


@dataclass(frozen=True)
class GeneratedChoice:
    """One generated answer, its token count and why it ended."""

    text: str
    tokens: int
    finish_reason: Literal["stop", "length"]


def parse_chat_request(body: Any, served_model_name: str) -> ChatRequest:
    """Check a chat-completions request body and turn it into engine inputs.

    Honours ``messages``, ``temperature``, ``top_p``, ``max_completion_tokens`` (or ``max_tokens``),
    ``n`` and ``seed``; refuses the :data:`UNSUPPORTED` fields when set; ignores the rest (penalties,
    ``user``, ...), as OpenAI-compatible servers commonly do.

    Args:
        body: the decoded JSON body.
        served_model_name: the only model name accepted in ``model`` (which may be left out).

    Returns:
        The checked request.

    Raises:
        OpenAIError: status 400 for a malformed request, 404 (``model_not_found``) for another
            model's name, as OpenAI answers.
    """
    if not isinstance(body, dict):
        raise OpenAIError("the request body must be a JSON object")
    _refuse_unsupported(body)
    _check_model(body.get("model"), served_model_name)
    key = next(
        (k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None), None
    )
    params = SamplingParams(
        temperature=_read_number(body, "temperature", 1.0, " in [0, 2]", lambda v: 0 <= v <= 2),
        top_p=_read_number(body, "top_p", 1.0, " in (0, 1]", lambda v: 0 < v <= 1),
        max_new_tokens=SamplingParams().max_new_tokens
        if key is None
        else _read_number(body, key, None, " >= 1", lambda v: v >= 1, integer=True),
        n=_read_number(
            body, "n", 1, f" in [1, {MAX_CHOICES}]", lambda v: 1 <= v <= MAX_CHOICES, integer=True
        ),
        seed=_read_number(
            body,
            "seed",
            None,
            f" in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]",
            lambda v: SEED_RANGE[0] <= v <= SEED_RANGE[1],
            integer=True,
        ),
    )
    return ChatRequest(_read_messages(body.get("messages")), params, key)


def _refuse_unsupported(body: dict) -> None:
    for key in UNSUPPORTED:
        value = body.get(key)
        if value and value != {"type": "text"}:  # a plain-text response_format asks for nothing
            raise OpenAIError(f"{key} is not supported", key)


def _check_model(model: Any, served_model_name: str) -> None:
    if model is None or model == served_model_name:
        return
    if not isinstance(model, str):
        raise OpenAIError(f"model must be a string, got {model!r}", "model")
    message = f"The model {model!r} does not exist; this server serves {served_model_name!r}"
    raise OpenAIError(message, "model", status=404, code="model_not_found")


def _read_messages(messages: Any) -> Conversation:
    if not isinstance(messages, list) or not messages:
        raise OpenAIError("messages must be a non-empty list", "messages")
    conversation = []
    for i, message in enumerate(messages):
        param = f"messages.[{i}]"
        role = message.get("role") if isinstance(message, dict) else None
        role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else None
        if role not in ROLES:
            roles = [*ROLES, *ROLE_ALIASES]
            raise OpenAIError(f"{param}.role must be one of {roles}", f"{param}.role")
        conversation.append({"role": role, "content": _read_text(message, param)})
    if not any(message["role"] == "user" for message in conversation):
        raise OpenAIError("messages must include a user message", "messages")
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
        raise OpenAIError(
            f"{param}.content must be a string or text parts (this model reads text only)",
            f"{param}.content",
        )
    return content


def _read_number(
    body: dict,
    key: str,
    default: Any,
    rule: str,
    valid: Callable[[Any], bool],
    integer: bool = False,
) -> Any:
    value = body.get(key)
    if value is None:
        return default
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not valid(value):
        noun = "an integer" if integer else "a number"
        raise OpenAIError(f"{key} must be {noun}{rule}, got {value!r}", key)
    return value if integer else float(value)


def fit_to_context(
    request: ChatRequest, prompt_tokens: int, context_length: int | None
) -> SamplingParams:
    """The request's sampling, checked against the model's context.

    A limit the client set must fit beside the prompt (else 400, as OpenAI answers); a limit left to
    the server shrinks to the room there is.

    Args:
        request: the checked request.
        prompt_tokens: tokens of its templated prompt.
        context_length: the model's context in tokens; None if unknown (nothing is checked).

    Returns:
        The sampling parameters to generate with.

    Raises:
        OpenAIError: 400 ``context_length_exceeded`` when prompt and limit do not fit.
    """
    params = request.params
    if context_length is None:
        return params
    room = context_length - prompt_tokens
    if room < 1:
        message = (
            f"This model's maximum context length is {context_length} tokens, and the messages "
            f"take {prompt_tokens}; shorten them."
        )
        raise OpenAIError(message, "messages", code="context_length_exceeded")
    if request.max_tokens_key is None:
        return replace(params, max_new_tokens=min(params.max_new_tokens, room))
    if params.max_new_tokens > room:
        message = (
            f"This model's maximum context length is {context_length} tokens. However, you "
            f"requested {prompt_tokens + params.max_new_tokens} tokens ({prompt_tokens} in the "
            f"messages, {params.max_new_tokens} in the completion); set "
            f"{request.max_tokens_key} to at most {room}."
        )
        raise OpenAIError(message, request.max_tokens_key, code="context_length_exceeded")
    return params


def engine_params(params: SamplingParams) -> tuple[SamplingParams, int]:
    """What to ask the engine for, and how many copies of its answers make the ``n`` choices.

    Greedy decoding (temperature 0) is deterministic, so its ``n`` choices are one answer copied;
    ``top_p`` and ``seed`` do not change it, so they are dropped and such requests batch together.

    Args:
        params: the request's sampling.

    Returns:
        The engine's sampling and the number of copies of each of its answers.
    """
    if params.temperature > 0:
        return params, 1
    greedy = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=params.max_new_tokens)
    return greedy, params.n


def build_chat_response(
    served_model_name: str, completions: list[GeneratedChoice], prompt_tokens: int
) -> dict[str, Any]:
    """Shape answers as an OpenAI ``chat.completion`` object.

    Args:
        served_model_name: reported as ``model``.
        completions: one per choice.
        prompt_tokens: tokens in the templated prompt (0 if unknown).

    Returns:
        The response body.
    """
    choices = [
        {
            "index": i,
            "message": {"role": "assistant", "content": completion.text},
            "finish_reason": completion.finish_reason,
            "logprobs": None,
        }
        for i, completion in enumerate(completions)
    ]
    completion_tokens = sum(completion.tokens for completion in completions)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
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


def timeout_error(timeout_s: float) -> OpenAIError:
    """The 504 a request gets when it outlives the server's ``--request-timeout-s``."""
    message = f"the request took longer than the server's limit of {timeout_s:g} s"
    return OpenAIError(message, status=504, code="timeout", kind="server_error")


def server_error() -> OpenAIError:
    """The 500 for a fault of the server (its details go to the server's log, not the client)."""
    message = "the server failed to answer; see its log"
    return OpenAIError(message, status=500, kind="server_error")


def http_error(status: int, detail: str) -> OpenAIError:
    """An HTTP-level error (unknown route, wrong method) in OpenAI's shape."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return OpenAIError(detail, status=status, kind=kind)
