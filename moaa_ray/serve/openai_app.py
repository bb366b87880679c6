"""One model behind OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models`` on Ray Serve.

The HTTP app (:func:`build_http_app`) is plain FastAPI over a backend (see
:mod:`moaa_ray.serve.backends`); a Serve replica (:class:`ChatServer`) builds one of each. Ray is
imported only when a deployment is built, so the app also runs without Ray (the vLLM tests do).
``ray.serve.llm`` is not used because it does not import without vLLM.

Every error is answered in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400 for
a bad request, 401 without the API key (when one is set), 404 for another model's name
(``model_not_found``, as OpenAI answers) or an unknown route, 504 past the request timeout, and 500
only for a fault of the server itself.
"""

# No `from __future__ import annotations`: FastAPI must evaluate the routes' `Request`
# annotation, which is imported inside a function.
import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moaa_ray.config import ModelConfig
from moaa_ray.serve.backends import build_backend
from moaa_ray.serve.protocol import (
    DEFAULT_REQUEST_TIMEOUT_S,
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
from moaa_ray.serve.rendering import Backend
from moaa_ray.serve.security import auth_error, key_matches

if TYPE_CHECKING:
    from fastapi import FastAPI
    from ray.serve import Application

logger = logging.getLogger(__name__)

APP_NAME = "moaa"
# Requests a replica takes at once. They wait in its batch queue (or vLLM's scheduler), where the
# request timeout runs, rather than in Serve's router, where it would not.
MAX_ONGOING_REQUESTS = 256


@dataclass(frozen=True)
class ServeSettings:
    """How the HTTP app answers: the model's public name, the timeout, and the API key's digest."""

    served_model_name: str
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    api_key_sha256: str | None = None  # None: no key needed; see moaa_ray.serve.security


async def answer_chat(backend: Backend, served_model_name: str, body: Any) -> dict[str, Any]:
    """The response body for a chat-completions request body.

    Raises:
        OpenAIError: for a request the server refuses.
    """
    request = parse_chat_request(body, served_model_name)
    prompt = backend.render(request.conversation)
    params = fit_to_context(request, len(prompt.token_ids), backend.context_length)
    sampling, copies = engine_params(params)
    completions = await backend.generate(prompt, sampling)
    return build_chat_response(served_model_name, completions * copies, len(prompt.token_ids))


def build_http_app(backend: Backend, settings: ServeSettings) -> "FastAPI":
    """The FastAPI app serving one backend.

    Args:
        backend: the model.
        settings: its public name, the request timeout and the API key's digest.

    Returns:
        The ASGI app.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    app = FastAPI(title="moaa_ray")

    def reply(error: OpenAIError, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    digest = settings.api_key_sha256
    if digest is not None:

        @app.middleware("http")
        async def require_api_key(request: Request, call_next):
            authorization = request.headers.get("authorization")
            if key_matches(authorization, digest):
                return await call_next(request)
            return reply(auth_error(authorization), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(HTTPException)
    async def http_exception(request: Request, exc: HTTPException) -> JSONResponse:
        return reply(http_error(exc.status_code, str(exc.detail)), exc.headers)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return build_models_response(settings.served_model_name)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            body = None  # refused as not a JSON object
        try:
            return await asyncio.wait_for(
                answer_chat(backend, settings.served_model_name, body),
                settings.request_timeout_s,
            )
        except OpenAIError as exc:
            return reply(exc)
        except asyncio.TimeoutError:
            # Told not to retry: the same request would most likely time out again.
            return reply(timeout_error(settings.request_timeout_s), {"x-should-retry": "false"})
        except Exception:
            logger.exception("a chat completion failed")
            return reply(server_error())

    return app


class ChatServer:
    """A Serve replica: one backend, and the HTTP app over it (built on the replica)."""

    def __init__(self, config: ModelConfig, settings: ServeSettings):
        self.backend = build_backend(config)
        self.settings = settings

    def __serve_build_asgi_app__(self) -> "FastAPI":
        return build_http_app(self.backend, self.settings)


def build_app(config: ModelConfig, settings: ServeSettings) -> "Application":
    """The Serve application: ``config.num_replicas`` replicas of :class:`ChatServer`.

    Args:
        config: the model; ``num_gpus`` and ``num_cpus`` are per replica, ``num_replicas``
            ``[min, max]`` autoscales when min < max, and ``max_batch_size`` caps an hf batch.
        settings: how the HTTP app answers.

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
        max_ongoing_requests=max(MAX_ONGOING_REQUESTS, config.max_batch_size),
        **scaling,
    )
    return deployment.bind(config, settings)


def run_server(
    config: ModelConfig, settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000
) -> str:
    """Deploy the app and return its base URL once every replica is up; Serve keeps it running.

    Joins the cluster at ``$RAY_ADDRESS`` or starts a local one, unless Ray is already initialized.
    Stop it with ``serve.delete(APP_NAME)`` (or by ending a local cluster).

    Args:
        config: the model to serve.
        settings: how the HTTP app answers.
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
    serve.run(build_app(config, settings), name=APP_NAME, route_prefix="/")
    url = f"http://{host}:{port}/v1"
    logger.info("serving %s (%s engine) at %s", settings.served_model_name, config.engine, url)
    return url
