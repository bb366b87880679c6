"""A model's pool over Ray: the dispatch of :mod:`moaa_ray.pools.dispatch` sent to engine actors
(:mod:`moaa_ray.pools.actor`), and the prompts fitted to the model's context window.

:class:`RayLink` is where Ray's object refs and errors become the dispatch's tokens and outcomes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from moaa_ray.core.context import Prompt
from moaa_ray.engines.base import Conversation
from moaa_ray.engines.context import context_window
from moaa_ray.pools.dispatch import (
    CallFailed,
    Dispatcher,
    Link,
    ReplicaLost,
    ReplicaUnavailable,
)
from moaa_ray.pools.replica import ReplicaRestarting

# Held by a step while it submits one batch's calls to several pools, so that every pool gets the
# batches in the same order and a batch's calls finish together rather than one behind another.
SUBMIT_IN_ORDER = threading.Lock()


class RayLink:
    """The dispatch's link to engine actors: a call is ``actor.call.remote``, a token its ref."""

    def key(self, replica: Any) -> Hashable:
        return replica._actor_id

    def send(self, replica: Any, method: str, items: list, args: tuple) -> Any:
        return replica.call.remote(method, items, *args)

    def wait(self, tokens: list, num_returns: int, timeout_s: float) -> list:
        ready, _ = ray.wait(tokens, num_returns=num_returns, timeout=timeout_s)
        return ready

    def result(self, token: Any) -> list:
        """The call's outputs; Ray's errors told apart as :class:`~moaa_ray.pools.dispatch.Link`
        says (a replica about to restart answers with :class:`ReplicaRestarting`)."""
        try:
            return ray.get(token)
        except (ActorUnavailableError, RayTaskError) as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(exc, RayTaskError) and not isinstance(cause, ReplicaRestarting):
                raise CallFailed(str(cause)) from None
            raise ReplicaUnavailable(str(exc)) from None
        except RayActorError as exc:
            raise ReplicaLost(type(exc).__name__, str(exc)) from None

    def load_error(self, token: Any) -> BaseException | None:
        try:
            ray.get(token)
        except (RayActorError, RayTaskError) as exc:
            return exc
        return None

    def alive(self, replicas: list, timeout_s: float) -> set[Hashable]:
        pings = {replica.ready.remote(): self.key(replica) for replica in replicas}
        answered, _ = ray.wait(list(pings), num_returns=len(pings), timeout=timeout_s)
        alive = set()
        for ref in answered:
            try:
                ray.get(ref)
                alive.add(pings[ref])
            except (RayActorError, RayTaskError):
                pass
        return alive

    def stop(self, replica: Any) -> None:
        ray.kill(replica)

    def cluster(self) -> str:
        return f"{ray.available_resources()} free of {ray.cluster_resources()}"

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class ModelPool(Dispatcher):
    """Handles to one model's engine actors; picklable, so Ray Data steps carry it."""

    link: Link = field(default_factory=RayLink, kw_only=True, repr=False)

    def fit(self, prompt: Prompt, max_new_tokens: int) -> tuple[Conversation, int]:
        """The prompt fitted to this model's context window beside ``max_new_tokens`` (its parts cut
        evenly, :mod:`moaa_ray.core.context`); as it is where the window is not measured.

        Returns:
            ``(conversation, parts_cut)``.

        Raises:
            PromptTooLong: the prompt does not fit even with every part cut to nothing.
        """
        window = context_window(self.config)
        if window is None:
            return prompt.messages(), 0
        return window.fit(prompt, max_new_tokens)
