"""Simulated backend: no model, deterministic answers after a sleep, and injected faults.

A test instrument for orchestration tests and benchmarks, not a backend to serve with. It imports
nothing heavy, so a pool of these starts in milliseconds and uses no CPU while "generating".
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import threading
import time
from typing import Literal

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import Answer, Conversation, SamplingParams
from moaa_ray.engines.seeding import stable_digest, stable_unit

logger = logging.getLogger(__name__)

# A judge prompt that asks for arena-hard-auto's 5-level labels gets one of them instead.
_ARENA_HARD_ASK = "[[A>>B]]"
_ARENA_HARD_LABELS = ("[[A>>B]]", "[[A>B]]", "[[A=B]]", "[[B>A]]", "[[B>>A]]")
# Neutral filler: none of these words can be read as a verdict ("A", "answer ... better") or a grade.
_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua enim minim veniam quis nostrud exercitation ullamco laboris"
).split()
_VERDICTS = ("[[A]]", "[[B]]", "[[tie]]")


def _was_restarted() -> bool:
    """Whether this process is a Ray actor that Ray has restarted (False outside Ray)."""
    # A Ray worker has imported ray already; and get_runtime_context() would start a local cluster
    # in a process that is not connected to one.
    if "ray" not in sys.modules:
        return False
    try:
        import ray

        return ray.is_initialized() and bool(
            ray.get_runtime_context().was_current_actor_reconstructed
        )
    except Exception:
        return False


class SimulatedEngine:
    """An engine with no model: deterministic text, log-probabilities and scores after a sleep.

    Its faults (``config.simulated``) let tests and benchmarks exercise retries, timeouts, poison
    isolation and replica restarts without a real model.

    Args:
        config: the model's config; ``config.simulated`` holds latency, answer length and faults.
    """

    def __init__(self, config: ModelConfig):
        self.path = config.path
        self.settings = config.simulated
        self.calls = 0  # calls of any method on this instance; faults are counted by it
        time.sleep(self.settings.load_s)

    def _check_faults(self, conversations: list[Conversation]) -> None:
        self.calls += 1
        s, k = self.settings, self.calls
        if s.crash_after_calls is not None and k == s.crash_after_calls and not _was_restarted():
            logger.error("simulated crash on call %d of %s", k, self.path)
            os._exit(1)  # like a segfault or OOM kill: no cleanup, no exception to catch
        texts = [m.get("content", "") for c in conversations for m in c]
        if s.hang_marker is not None and any(s.hang_marker in t for t in texts):
            logger.warning("simulated hang on call %d of %s", k, self.path)
            threading.Event().wait()  # blocks forever without spinning a core
        if s.poison_marker is not None and any(s.poison_marker in t for t in texts):
            raise ValueError(f"poisoned prompt: contains {s.poison_marker!r}")
        if k <= s.fail_first_n:
            raise RuntimeError(f"simulated failure: call {k} of the first {s.fail_first_n}")
        # Seeded by (seed, call) so a rerun of the same test fails on the same calls.
        if s.failure_rate > 0 and random.Random(f"{s.seed}:{k}").random() < s.failure_rate:
            raise RuntimeError("simulated failure")

    def _answer(
        self, conversation: Conversation, index: int, seed: int | None, natural: int, words: int
    ) -> str:
        """The answer of ``natural`` words (verdict tail last), cut to its first ``words``."""
        key = (self.settings.seed, self.path, json.dumps(conversation), index, seed)
        rng = random.Random(stable_digest(*key))
        verdict = rng.choice(_VERDICTS)
        tail = ["Verdict:", verdict, "Rating:", f"[[{rng.randint(1, 10)}]]"]
        if any(_ARENA_HARD_ASK in message["content"] for message in conversation):
            tail = ["Final", "verdict:", rng.choice(_ARENA_HARD_LABELS)]
        filler = [rng.choice(_WORDS) for _ in range(max(0, natural - len(tail)))]
        # A length below the tail's four words cuts the tail: the word count is the contract.
        return " ".join((filler + tail)[:natural][:words])

    def chat(self, conversations: list[Conversation], params: SamplingParams) -> list[list[Answer]]:
        """Return ``params.n`` deterministic answers per conversation after a simulated latency.

        Args:
            conversations: chat messages, one list per conversation.
            params: ``n``, ``seed`` and ``max_new_tokens`` are used; temperature and top_p are
                ignored.

        Returns:
            For each conversation, ``params.n`` answers of ``answer_tokens`` words, ending with
            ``Verdict: [[A|B|tie]] Rating: [[N]]`` when the length leaves room for it (to a prompt
            that asks for arena-hard-auto's labels: ``Final verdict: [[A>B]]`` or another). Unset
            ``answer_tokens`` fills ``max_new_tokens`` exactly and ends there; a longer
            ``answer_tokens`` is cut at ``max_new_tokens`` (finish reason ``length``).
        """
        self._check_faults(conversations)
        natural = self.settings.answer_tokens or params.max_new_tokens
        words = min(natural, params.max_new_tokens)
        finish: Literal["stop", "length"] = "length" if natural > words else "stop"
        # One sleep per call: a batch generates in parallel, as on a GPU.
        time.sleep(self.settings.latency_s + self.settings.latency_per_token_s * words)
        return [
            [
                Answer(self._answer(c, i, params.seed, natural, words), finish)
                for i in range(params.n)
            ]
            for c in conversations
        ]

    def choice_logprobs(
        self, conversations: list[Conversation], prefix: str, choices: list[str]
    ) -> list[list[float]]:
        """Deterministic log-probabilities of each choice after ``prefix``.

        Args:
            conversations: chat messages, one list per conversation.
            prefix: text already in the assistant turn.
            choices: candidate next tokens.

        Returns:
            Per conversation, one negative log-probability per choice; their probabilities sum to
            less than 1 (the rest is mass on other tokens).
        """
        self._check_faults(conversations)
        time.sleep(self.settings.latency_s)
        result = []
        for c in conversations:
            key = (self.settings.seed, self.path, json.dumps(c), prefix)
            # Weights in (0, 1]; the extra 1 in the total stands for every other token.
            weights = [1.0 - stable_unit(*key, choice) for choice in choices]
            total = sum(weights) + 1.0
            result.append([math.log(w / total) for w in weights])
        return result

    def score(self, conversations: list[Conversation]) -> list[float]:
        """Deterministic reward-model scores.

        Args:
            conversations: chat messages, one list per conversation (answer last).

        Returns:
            One float in [-1, 1] per conversation.
        """
        self._check_faults(conversations)
        time.sleep(self.settings.latency_s)
        return [
            2.0 * stable_unit(self.settings.seed, self.path, json.dumps(c)) - 1.0
            for c in conversations
        ]
