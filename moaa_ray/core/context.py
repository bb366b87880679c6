"""Fitting prompts into a model's context window: the rule every stage applies before a call.

A prompt is rendered from fixed text (the instructions and the user's conversation) and parts that may
be shortened: the references of an MoA aggregator, the evaluations an aggregator judge reads, the
answers a judge compares. When the rendered prompt and the answer's ``max_new_tokens`` do not fit the
window, the parts are cut evenly: every part keeps at most the same number of characters, the longest
ones are cut first, and each cut part ends with :data:`CUT_MARKER`. The fixed text is never cut; a
prompt that does not fit even with every part emptied is rejected (:class:`PromptTooLong`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from moaa_ray.core.conversations import Messages

CUT_MARKER = " [... cut to fit the context window]"


class PromptTooLong(ValueError):
    """The prompt's fixed text alone leaves no room in the context window."""


@dataclass(frozen=True)
class Prompt:
    """A prompt as its renderer and the parts of it that may be cut (none: only the whole fits)."""

    render: Callable[[list[str]], Messages]
    parts: tuple[str, ...] = ()

    @classmethod
    def fixed(cls, messages: Messages) -> Prompt:
        """A prompt with nothing to cut, such as a user's conversation."""
        return cls(lambda _: messages)

    def messages(self) -> Messages:
        """The prompt uncut."""
        return self.render(list(self.parts))


def cut_to(part: str, max_chars: int) -> str:
    """``part`` unchanged if it has at most ``max_chars`` characters, else its start and the marker."""
    return part if len(part) <= max_chars else part[:max_chars] + CUT_MARKER


def fit_parts(
    render: Callable[[list[str]], Messages],
    parts: list[str],
    count_tokens: Callable[[Messages], int],
    budget: int,
) -> tuple[Messages, int]:
    """The prompt with its parts cut evenly until it counts at most ``budget`` tokens.

    Args:
        render: the prompt from its (possibly cut) parts.
        parts: the texts that may be cut, in the order ``render`` takes them.
        count_tokens: the prompt's tokens as the model will see them (chat template included).
        budget: tokens the prompt may use (the context window minus ``max_new_tokens``).

    Returns:
        ``(prompt, parts_cut)``; ``parts_cut`` is 0 when the prompt fit as it was.

    Raises:
        PromptTooLong: the prompt does not fit even with every part cut to nothing.
    """
    prompt = render(parts)
    if count_tokens(prompt) <= budget:
        return prompt, 0
    emptied = count_tokens(render([cut_to(p, 0) for p in parts]))
    if emptied > budget:
        raise PromptTooLong(
            f"the prompt needs {emptied} tokens without the parts that may be cut; the context "
            f"window leaves {budget} beside the answer's max_new_tokens"
        )
    fits, too_long = 0, max(map(len, parts))  # characters each part may keep
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if count_tokens(render([cut_to(p, middle) for p in parts])) <= budget:
            fits = middle
        else:
            too_long = middle
    return render([cut_to(p, fits) for p in parts]), sum(len(p) > fits for p in parts)
