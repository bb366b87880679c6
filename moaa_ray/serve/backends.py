"""What answers the HTTP routes: a backend renders a conversation to tokens and generates from it.

- ``hf``: :class:`BatchedBackend`, the transformers engine behind Ray Serve's ``@serve.batch``: the
  requests that arrive together share ``generate`` calls, one per group of identical sampling.
- ``vllm``: :class:`moaa_ray.serve.vllm_backend.VLLMBackend`, vLLM's async engine, which batches
  continuously on its own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from moaa_ray.core.conversations import template_accepts_system
from moaa_ray.engines.base import Answer, Conversation, SamplingParams
from moaa_ray.engines.context import context_length_of
from moaa_ray.serve.protocol import GeneratedChoice
from moaa_ray.serve.rendering import Backend, RenderedPrompt, TemplateRendering

if TYPE_CHECKING:
    from moaa_ray.config import ModelConfig
    from moaa_ray.engines.base import Engine

BATCH_WAIT_S = 0.02  # how long a batch waits for more requests once one has arrived


def completion_of(answer: Answer, tokens: int, max_new_tokens: int) -> GeneratedChoice:
    """A completion from the engine's answer and its re-encoded token count.

    Re-encoded text can count more tokens than were generated, so the count is capped at the limit;
    the finish reason is the engine's own (an answer that ends exactly at the limit is no cut).
    """
    return GeneratedChoice(answer.text, min(tokens, max_new_tokens), answer.finish_reason)


def group_requests(params: list[SamplingParams]) -> list[tuple[SamplingParams, list[int]]]:
    """Split a batch into engine calls: the indices of requests with identical sampling, together.

    A seeded request gets a call of its own, so its seed gives the same answer whatever arrived with
    it. Calls are ordered shortest ``max_new_tokens`` first, so short requests are not held up by long
    ones; within a call, and among calls of equal length, arrival order is kept.

    Args:
        params: each request's sampling, in arrival order.

    Returns:
        ``(sampling, request indices)`` per engine call, in the order to run them.
    """
    groups: dict[tuple[SamplingParams, int | None], list[int]] = {}
    for i, request in enumerate(params):
        alone = i if request.seed is not None else None
        groups.setdefault((request, alone), []).append(i)
    calls = [(request, indices) for (request, _), indices in groups.items()]
    return sorted(calls, key=lambda call: call[0].max_new_tokens)


class BatchedBackend(TemplateRendering):
    """An engine whose ``chat`` takes one call at a time, behind Ray Serve's request batching.

    Requests that arrive within :data:`BATCH_WAIT_S` of each other (up to ``max_batch_size``) form a
    batch; each group of identical sampling in it is one ``chat`` call, so its requests share forward
    passes. Batches and calls run one at a time on a worker thread, keeping the event loop free.
    Must be built inside a Serve replica.
    """

    def __init__(
        self, engine: Engine, tokenizer: Any, context_length: int | None, max_batch_size: int
    ):
        from ray import serve

        self.engine, self.tokenizer, self.context_length = engine, tokenizer, context_length
        self.accepts_system = template_accepts_system(tokenizer)
        self._batched = serve.batch(
            max_batch_size=max_batch_size, batch_wait_timeout_s=BATCH_WAIT_S
        )(self._run_batch)

    async def generate(
        self, prompt: RenderedPrompt, params: SamplingParams
    ) -> list[GeneratedChoice]:
        """Queue the request for the next batch and wait for its answers."""
        answers = await self._batched((prompt.conversation, params))
        if isinstance(answers, Exception):
            raise answers
        return [
            completion_of(
                answer,
                len(self.tokenizer.encode(answer.text, add_special_tokens=False)),
                params.max_new_tokens,
            )
            for answer in answers
        ]

    async def _run_batch(
        self, requests: list[tuple[Conversation, SamplingParams]]
    ) -> list[list[Answer] | Exception]:
        """One batch: an engine call per group; a failed call fails only its own requests."""
        answers: list[list[Answer] | Exception] = [[] for _ in requests]
        for params, indices in group_requests([params for _, params in requests]):
            conversations = [requests[i][0] for i in indices]
            try:
                texts: list = await asyncio.to_thread(self.engine.chat, conversations, params)
            except Exception as exc:  # handed to each request of the call, which raises it
                texts = [exc] * len(indices)
            for i, text in zip(indices, texts, strict=True):
                answers[i] = text
        return answers


def build_backend(config: ModelConfig) -> Backend:
    """The backend for ``config.engine`` (``hf`` or ``vllm``), imported only when chosen."""
    if config.engine == "vllm":
        from moaa_ray.serve.vllm_backend import VLLMBackend

        return VLLMBackend(config)
    if config.engine == "hf":
        from transformers import AutoTokenizer

        from moaa_ray.engines.hf import HFEngine
        from moaa_ray.tiny_models import resolve_model_path

        engine = HFEngine(config)
        # A tokenizer of its own: the engine's is busy on the worker thread, and a fast tokenizer
        # used from two threads at once can fail ("Already borrowed").
        tokenizer = AutoTokenizer.from_pretrained(
            resolve_model_path(config.path), trust_remote_code=config.trust_remote_code
        )
        context = context_length_of(engine.model.config)
        return BatchedBackend(engine, tokenizer, context, config.max_batch_size)
    raise ValueError(f"serving supports the hf and vllm engines, not {config.engine!r}")
