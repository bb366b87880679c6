"""The Engine interface every backend implements, and the types their calls share.

The factory that picks a backend is :mod:`moaa_ray.engines.factory`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingParams:
    """Sampling for one engine call; ``n`` answers per conversation."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    n: int = 1
    seed: int | None = None


@dataclass(frozen=True)
class Answer:
    """One generated answer and why generation ended: ``stop`` (the model ended it) or ``length``
    (cut at ``max_new_tokens``), as OpenAI's ``finish_reason`` says it."""

    text: str
    finish_reason: Literal["stop", "length"] = "stop"

    @property
    def truncated(self) -> bool:
        """Whether the answer was cut at ``max_new_tokens`` rather than finished."""
        return self.finish_reason == "length"


def answer_of(text: str, finish_reason: str | None) -> Answer:
    """An :class:`Answer` from a server's finish reason: ``length`` is a cut, anything else an end."""
    return Answer(text, "length" if finish_reason == "length" else "stop")


class Engine(Protocol):
    """A chat model. Each backend applies the model's own chat template.

    A backend whose methods are coroutines (``vllm``) takes many calls at once and batches them
    itself; one with ``batches_items = True`` (``hf``) has its waiting calls merged into one
    (:mod:`moaa_ray.pools.replica`).
    """

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[Answer]]:
        """Return ``params.n`` answers for each conversation, in order."""
        ...

    def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        """Log-probability of each choice's first token right after ``prefix`` in the assistant turn."""
        ...


def merges_calls(engine: object) -> bool:
    """Whether an engine runs a call's items as one batch, at about the cost of one item per step
    (``hf``, reward models, rankers): calls waiting on its replica are then merged into one."""
    return bool(getattr(engine, "batches_items", False))
