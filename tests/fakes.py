"""Stand-ins the unit tests share: a model pool that answers at once, a DeepSpeed engine over a module."""

from __future__ import annotations

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
