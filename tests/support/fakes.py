"""Stand-ins the unit tests share: a model pool that answers at once, a reward model's pool,
engine replicas and the dispatch's link to them without Ray, ``ray`` and an engine actor for a
loading pool, a DeepSpeed engine over a module."""

from __future__ import annotations

import math
from types import SimpleNamespace

from moaa_ray.engines.base import Answer
from moaa_ray.pools.dispatch import Completion


class FakePool:
    """A model pool that answers at once, without Ray: ``reply(method, item, *args)`` per item;
    remembers every call as ``(method, items)``.

    For ``chat`` a reply is the answers' texts (made into :class:`Answer` objects, as engines give);
    for other methods it is the engine's output as it is.
    """

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def submit(self, method, items, *args):
        self.calls.append((method, items))
        replies = [self.reply(method, item, *args) for item in items]
        if method == "chat":  # engines answer with Answer objects; replies are their texts
            replies = [[Answer(text) for text in reply] for reply in replies]
        return replies

    def collect(self, submitted):
        return [Completion(output) for output in submitted]

    def chat(self, conversations, params):
        return self.collect(self.submit("chat", conversations, params))

    def fit(self, prompt, max_new_tokens):
        return prompt.messages(), 0  # no context window: every prompt goes as it is


class FakeEngine:
    """The slice of a DeepSpeed engine the objectives and the HF save use, over a plain module."""

    def __init__(self, module):
        self.module = module
        self.device = next(module.parameters()).device

    def __call__(self, **inputs):
        return self.module(**inputs)

    def eval(self):
        self.module.eval()

    def train(self):
        self.module.train()

    def zero_optimization_stage(self) -> int:
        return 0


def echo(method, items, *args):
    """A replica's answer to a call: each item as it is."""
    return list(items)


class FakeReplica:
    """An engine replica for the dispatch, without Ray; remembers each call's items in ``calls``.

    ``answer(method, items, *args)`` gives a call's outputs, or raises what the link reports
    (``CallFailed``, ``ReplicaLost``, ``ReplicaUnavailable``); a call takes ``delay_s`` on the fake
    clock. One that does not answer pings is taken as lost when pinged.
    """

    def __init__(self, name, answer=echo, delay_s=0.0, answers_pings=True):
        self.name, self.answer, self.delay_s = name, answer, delay_s
        self.answers_pings = answers_pings
        self.stopped = False
        self.calls: list[list] = []

    def go_silent(self):
        """Answer neither calls nor pings from now on (its node is gone)."""
        self.delay_s, self.answers_pings = math.inf, False

    def __repr__(self):
        return f"FakeReplica({self.name})"


class FakeToken:
    """A call or a load in flight: done once the fake clock reaches ``ready_at``."""

    def __init__(self, ready_at, outputs=None, error=None):
        self.ready_at, self.outputs, self.error = ready_at, outputs, error


class FakeLink:
    """The dispatch's link to :class:`FakeReplica` objects, on a fake clock that only waits move:
    a wait with too few calls done moves the clock to the next answer, or by its timeout."""

    def __init__(self):
        self.clock = 0.0
        self.pings = 0
        self.sent: list[tuple[str, list]] = []  # (replica, items) of every call, in order

    def key(self, replica):
        return replica.name

    def send(self, replica, method, items, args):
        replica.calls.append(list(items))
        self.sent.append((replica.name, list(items)))
        ready_at = self.clock + replica.delay_s
        try:
            return FakeToken(ready_at, outputs=replica.answer(method, items, *args))
        except Exception as exc:
            return FakeToken(ready_at, error=exc)

    def loading(self, load_s, error=None):
        """The ready token of a replica that loads for ``load_s`` (and fails with ``error``)."""
        return FakeToken(self.clock + load_s, error=error)

    def wait(self, tokens, num_returns, timeout_s):
        done = [t for t in tokens if t.ready_at <= self.clock]
        if len(done) < num_returns and timeout_s > 0:
            later = [t.ready_at - self.clock for t in tokens if t.ready_at > self.clock]
            self.clock += min([*later, timeout_s])
            done = [t for t in tokens if t.ready_at <= self.clock]
        return done[:num_returns]

    def result(self, token):
        if token.error is not None:
            raise token.error
        return token.outputs

    def load_error(self, token):
        return token.error

    def alive(self, replicas, timeout_s):
        self.pings += 1
        if not all(r.answers_pings for r in replicas):
            self.clock += timeout_s  # the ping wait ran out
        return {r.name for r in replicas if r.answers_pings}

    def stop(self, replica):
        replica.stopped = True

    def cluster(self):
        return "{} free of {}"

    def now(self):
        return self.clock

    def sleep(self, seconds):
        self.clock += seconds


class FakeRanker:
    """A pool of one reward-model engine (``config.engine``): answers each method from a table,
    records the calls.

    ``compare`` gives ``logits[(a, b)]`` for answers ``a`` and ``b``, or fails for the pair ``fail``;
    ``preference_table`` gives a (conversation, answers) item the table of those logits (0 on the
    diagonal), or fails for answers that hold the pair ``fail``; ``answer_logprobs`` makes a shorter
    answer likelier; any other method scores 0.25.
    """

    def __init__(self, engine: str, logits: dict, fail: tuple | None = None):
        self.name, self.config = "ranker", SimpleNamespace(engine=engine)
        self.calls: list[tuple[str, list]] = []
        self.logits, self.fail = logits, fail

    def submit(self, method, items):
        self.calls.append((method, items))
        if method == "answer_logprobs":  # a shorter answer is likelier here
            return [Completion(-float(len(c[-1]["content"]))) for c in items]
        if method == "compare":
            return [
                Completion(None, "boom") if (a, b) == self.fail else Completion(self.logits[(a, b)])
                for _, a, b in items
            ]
        if method == "preference_table":
            return [
                Completion(None, "boom")
                if self.fail and set(self.fail) <= set(answers)
                else Completion([[self.logits.get((a, b), 0.0) for b in answers] for a in answers])
                for _, answers in items
            ]
        return [Completion(0.25) for _ in items]

    def collect(self, completions):
        return completions


class FakeRay:
    """``ray.wait``/``ray.get`` over ready pings: a pending replica comes up during a timed wait."""

    def __init__(self, up: set[str] | None = None):
        self.up = up or set()
        self.timeouts: list[float] = []

    def wait(self, refs, num_returns=1, timeout=None):
        self.timeouts.append(timeout)
        if timeout:
            self.up |= set(refs)
        ready = [r for r in refs if r in self.up]
        return ready, [r for r in refs if r not in ready]

    def get(self, ref):
        return ref


class FakeActor:
    """An engine actor's handle: ``actor.call.remote(method, batch)`` records the call and returns
    a name for its result."""

    _actor_id = "replica-1"

    def __init__(self):
        self.sent: list[tuple[str, list]] = []
        self.call = self  # actor.call.remote(...)

    def remote(self, method: str, batch: list, *args):
        self.sent.append((method, batch))
        return f"call-{len(self.sent)}"
