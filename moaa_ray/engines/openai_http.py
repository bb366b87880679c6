"""Any OpenAI-compatible chat endpoint (Ray Serve, vLLM server, hosted APIs); key from env only."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI
from openai.types.chat.chat_completion import Choice

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Answer, Conversation, SamplingParams, answer_of

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

    def _complete_all(self, conversations: list[Conversation], params: SamplingParams, **extra):
        """One request per conversation, several at a time; responses in order."""
        with ThreadPoolExecutor(MAX_PARALLEL_REQUESTS) as pool:
            return list(pool.map(lambda c: self._complete(c, params, **extra), conversations))

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[Answer]]:
        """Sample ``params.n`` answers per conversation, each with the server's finish reason."""
        responses = self._complete_all(conversations, params)
        return [
            [answer_of(c.message.content or "", c.finish_reason) for c in r.choices]
            for r in responses
        ]

    def first_token_logprobs(
        self, conversations: list[Conversation], params: SamplingParams, top: int
    ) -> list[tuple[str, dict[str, float] | None]]:
        """The reply and its first token's ``top`` most likely tokens, as AlpacaEval 2's judge reads
        them (``logprobs=True``, ``top_logprobs``): what the model writes first after the prompt,
        the one position a chat endpoint can give log-probabilities for.

        Returns:
            Per conversation, the reply's text and ``{token: logprob}`` of its first token's top
            tokens, or None when the server sends no log-probabilities.
        """
        responses = self._complete_all(conversations, params, logprobs=True, top_logprobs=top)
        return [_first_token(r.choices[0]) for r in responses]

    def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        """Not available: a chat endpoint cannot continue an assistant turn that holds ``prefix``.

        Asked with the prefix as an assistant message, the server opens a new assistant turn after
        it, so the numbers would be of the wrong position; a completion of the prompt needs the
        model's chat template, which only the server has.

        Raises:
            NotImplementedError: always, saying to read text verdicts and grades instead.
        """
        raise NotImplementedError(
            f"{self.model}: an openai_http engine cannot give log-probabilities that continue the "
            "assistant's turn; set verdict_mode: text (and grading_mode: text)"
        )


def _first_token(choice: Choice) -> tuple[str, dict[str, float] | None]:
    """A choice's text and its first token's top log-probabilities (None when it has none)."""
    text = choice.message.content or ""
    content = choice.logprobs.content if choice.logprobs is not None else None
    tops = content[0].top_logprobs if content else None
    if not tops:
        return text, None
    return text, {top.token: top.logprob for top in tops}
