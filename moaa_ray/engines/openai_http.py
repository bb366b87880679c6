"""Any OpenAI-compatible chat endpoint (Ray Serve, vLLM server, hosted APIs); key from env only."""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Conversation, SamplingParams

MAX_PARALLEL_REQUESTS = 16


class OpenAIHTTPEngine:
    """Sends one chat-completions request per conversation, several at a time."""

    def __init__(self, config: ModelConfig):
        if not config.api_base:
            raise ValueError(f"openai_http engine for {config.path!r} needs api_base")
        api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else "unused"
        if config.api_key_env and not api_key:
            raise ValueError(f"environment variable {config.api_key_env} (api_key_env) is not set")
        self.model = config.path
        self.client = OpenAI(
            base_url=config.api_base,
            api_key=api_key,
            timeout=config.request_timeout_s,
            max_retries=2,
        )
        self.extra = dict(config.engine_kwargs)

    def _complete(self, conversation: Conversation, params: SamplingParams, **extra):
        return self.client.chat.completions.create(
            model=self.model,
            messages=conversation,
            temperature=params.temperature,
            top_p=params.top_p,
            max_completion_tokens=params.max_new_tokens,
            n=params.n,
            seed=params.seed,
            **self.extra,
            **extra,
        )

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[str]]:
        """Sample ``params.n`` answers per conversation."""
        with ThreadPoolExecutor(MAX_PARALLEL_REQUESTS) as pool:
            responses = list(pool.map(lambda c: self._complete(c, params), conversations))
        return [[choice.message.content or "" for choice in r.choices] for r in responses]

    def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        """Top-20 logprobs of the first answer token; the prefix is asked for in the prompt."""
        params = SamplingParams(temperature=0.0, max_new_tokens=1, n=1)
        asked = [
            c + [{"role": "assistant", "content": prefix}] if prefix else c for c in conversations
        ]

        def score(conversation: Conversation) -> list[float]:
            response = self._complete(conversation, params, logprobs=True, top_logprobs=20)
            top = response.choices[0].logprobs.content[0].top_logprobs
            found = {t.token.strip(): t.logprob for t in top}
            return [found.get(c, -math.inf) for c in choices]

        with ThreadPoolExecutor(MAX_PARALLEL_REQUESTS) as pool:
            return list(pool.map(score, asked))
