"""Function backend: a Python function writes the answers or scores, with no model at all.

For tasks with a programmatic judge, aggregator or verifier (e.g. ``moaa_ray.tasks.addition``), so a
whole run can use exact, cheap and controllably noisy roles in place of models. The function is
named by ``config.path`` as ``package.module:function`` and is called as::

    fn(messages: list[dict[str, str]], *, rng: random.Random, **engine_kwargs) -> str | float

``messages`` is one conversation; ``rng`` is seeded from the call's seed, the conversation, the
sample index and the spec, so equal inputs give equal outputs in every process; ``engine_kwargs``
come from the model's config. ``chat`` needs a str, ``score`` a number.
"""

from __future__ import annotations

import numbers
import random
from typing import Any

from moaa_ray.callables import load_callable
from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Answer, Conversation, SamplingParams
from moaa_ray.engines.seeding import stable_digest


class FunctionEngine:
    """An engine whose answers and scores come from a Python function.

    Args:
        config: the model's config; ``path`` is the function's ``package.module:function`` and
            ``engine_kwargs`` are its keyword arguments.

    Raises:
        ValueError: naming the spec, when the function cannot be imported.
    """

    def __init__(self, config: ModelConfig):
        self.spec = config.path
        self.kwargs = dict(config.engine_kwargs)
        self.function = load_callable(config.path)

    def _call(self, conversation: Conversation, index: int, seed: int | None) -> Any:
        rng = random.Random(stable_digest(seed, conversation, index, self.spec))
        messages = [dict(message) for message in conversation]  # the function may not edit ours
        return self.function(messages, rng=rng, **self.kwargs)

    def _answer(self, conversation: Conversation, index: int, seed: int | None) -> str:
        text = self._call(conversation, index, seed)
        if not isinstance(text, str):
            raise TypeError(f"{self.spec} returned {type(text).__name__}; an answer must be a str")
        return text

    def _score(self, conversation: Conversation) -> float:
        value = self._call(conversation, 0, None)
        if not isinstance(value, numbers.Real):
            raise TypeError(
                f"{self.spec} returned {type(value).__name__}; a score must be a number"
            )
        return float(value)

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[Answer]]:
        """Call the function ``params.n`` times per conversation.

        Args:
            conversations: chat messages, one list per conversation.
            params: ``n`` and ``seed`` are used; temperature, top_p and max_new_tokens are ignored.

        Returns:
            For each conversation, the function's ``params.n`` answers (sample index 0 to n - 1),
            each finished (``stop``): a function's answer is never cut.

        Raises:
            TypeError: naming the function, when it returns something other than a str.
        """
        return [
            [Answer(self._answer(c, i, params.seed)) for i in range(params.n)]
            for c in conversations
        ]

    def score(self, conversations: list[Conversation]) -> list[float]:
        """Call the function once per conversation (sample index 0, no seed) for a reward.

        Args:
            conversations: chat messages, one list per conversation (answer last).

        Returns:
            The function's number per conversation, as a float.

        Raises:
            TypeError: naming the function, when it returns something other than a number.
        """
        return [self._score(c) for c in conversations]

    def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        """Not available: a function writes text and has no token probabilities.

        Raises:
            NotImplementedError: always, saying to read text verdicts and grades instead.
        """
        raise NotImplementedError(
            f"{self.spec}: a function engine writes text verdicts and has no log-probabilities; "
            "set verdict_mode: text (and grading_mode: text)"
        )
