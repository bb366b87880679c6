"""What every serving backend shares: the interface the HTTP routes call, and rendering a conversation
to token ids under the model's chat template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from moaa_ray.core.conversations import conform
from moaa_ray.engines.base import Conversation, SamplingParams
from moaa_ray.serve.protocol import GeneratedChoice, OpenAIError


@dataclass(frozen=True)
class RenderedPrompt:
    """A conversation and its templated prompt's token ids."""

    conversation: Conversation
    token_ids: list[int]


class Backend(Protocol):
    """A served model: ``context_length`` is in tokens (None if unknown)."""

    context_length: int | None

    def render(self, conversation: Conversation) -> RenderedPrompt:
        """Apply the chat template; a template that refuses the messages raises OpenAIError (400)."""
        ...

    async def generate(
        self, prompt: RenderedPrompt, params: SamplingParams
    ) -> list[GeneratedChoice]:
        """``params.n`` completions of the prompt."""
        ...


def render_prompt(tokenizer: Any, conversation: Conversation, *, accepts_system: bool) -> list[int]:
    """Token ids of the conversation under the model's chat template, as the engines build them
    (a system message folded into the first user turn where the template takes none).

    Raises:
        OpenAIError: 400 when the template refuses the messages (e.g. roles that must alternate).
    """
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(
            conform(conversation, accepts_system=accepts_system),
            tokenize=False,
            add_generation_prompt=True,
        )
    except TemplateError as exc:
        message = f"the model's chat template refused the messages: {exc}"
        raise OpenAIError(message, "messages") from exc
    return tokenizer.encode(text, add_special_tokens=False)


class TemplateRendering:
    """``render`` for a backend that holds its model's ``tokenizer`` and ``accepts_system`` (whether
    the chat template takes a system message)."""

    tokenizer: Any
    accepts_system: bool

    def render(self, conversation: Conversation) -> RenderedPrompt:
        """Apply the chat template; the engine then gets token ids, so counts and generation agree.

        Raises:
            OpenAIError: 400 when the template refuses the messages (see :func:`render_prompt`).
        """
        ids = render_prompt(self.tokenizer, conversation, accepts_system=self.accepts_system)
        return RenderedPrompt(conversation, ids)
