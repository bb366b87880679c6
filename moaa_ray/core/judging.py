"""Pairwise LLM judging: prompts, verdict parsing and A/B order swapping.

In MoAA (arXiv 2505.03059) several judges compare two answers, an aggregator judge reads their
evaluations and gives the final verdict, and every pair is judged in both orders to cancel position bias.
Throughout, ``x`` and ``y`` are the two samples of a pair: the "ab" order shows x as Answer A and the
"ba" order shows y as Answer A.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from moaa_ray.core.criteria import Criterion, format_conversation, format_criteria
from moaa_ray.core.templates import render_template, split_numbered

logger = logging.getLogger(__name__)

Verdict = Literal["A", "B", "tie"]

JUDGE_TEMPLATE = "judge_pairwise.txt"
AGGREGATOR_TEMPLATE = "aggregate_judgments.txt"

# "Verdict: A", "**Verdict:** B", "Final verdict: [[tie]]", "Verdict: Answer A"; not "Verdict: A/B/tie".
_VERDICT_LINE = re.compile(
    r"(?<![A-Za-z])(?i:verdict)[\s*_:=\[(\"'`-]*(?:(?i:answer|response|assistant)\s*)?"
    r"(?P<verdict>A|B|(?i:tied|tie|draw))(?![A-Za-z0-9])(?!\s*(?:[/|]|(?i:or)\b))"
)
# MT-Bench style "[[A]]".
_BRACKETED_VERDICT = re.compile(r"\[\[\s*(?P<verdict>A|B|(?i:tie))\s*\]\]")
# "Answer A is better", accepted only when no other answer is also called better.
_BETTER_CLAIM = re.compile(
    r"(?i:answer|response|assistant)\s+(?P<verdict>A|B)(?![A-Za-z0-9])\s+"
    r"(?i:is\s+(?:clearly\s+|slightly\s+|much\s+|significantly\s+|overall\s+)?"
    r"(?:better|superior|preferred|stronger))"
)
_SCORE_OF_FIRST_SHOWN = {"A": 1.0, "B": 0.0, "tie": 0.5}
# The marked blocks of both packaged judge templates, as their renderers fill them.
_JUDGE_BLOCKS = re.compile(
    r"\[Conversation\]\n(?P<conversation>.*?)\n\[End of conversation\]\n\n"
    r"\[Answer A\]\n(?P<answer_a>.*?)\n\[End of Answer A\]\n\n"
    r"\[Answer B\]\n(?P<answer_b>.*?)\n\[End of Answer B\]\n",
    re.DOTALL,
)
_EVALUATIONS_BLOCK = re.compile(
    r"\n\[Judge evaluations\]\n(?P<evaluations>.*)\n\[End of judge evaluations\]\n", re.DOTALL
)
_EVALUATION_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class JudgePrompt:
    """What a judge prompt shows, read back from its text by ``parse_judge_prompt``."""

    conversation: str  # the formatted conversation (``format_conversation``'s text)
    answer_a: str
    answer_b: str
    evaluations: list[str]  # the judges' replies in an aggregator prompt; empty in a judge prompt


def _evaluation_label(number: int) -> str:
    return f"Evaluation {number}:\n"


def render_judge_prompt(
    messages: Sequence[Mapping[str, str]],
    answer_a: str,
    answer_b: str,
    criteria: Sequence[Criterion | str],
    template: str = JUDGE_TEMPLATE,
) -> list[dict[str, str]]:
    """Build the chat request asking one judge to compare two answers.

    Args:
        messages: the conversation the answers reply to (its last message is the user's request).
        answer_a: the answer shown as Answer A.
        answer_b: the answer shown as Answer B.
        criteria: the criteria (or bare names) to judge on.
        template: a packaged template name or a path to a user's template with ``$conversation``,
            ``$answer_a``, ``$answer_b`` and ``$criteria``.

    Returns:
        A single user message for the judge model.
    """
    content = render_template(
        template,
        conversation=format_conversation(messages),
        answer_a=answer_a.strip(),
        answer_b=answer_b.strip(),
        criteria=format_criteria(criteria),
    )
    return [{"role": "user", "content": content}]


def render_aggregator_prompt(
    messages: Sequence[Mapping[str, str]],
    answer_a: str,
    answer_b: str,
    criteria: Sequence[Criterion | str],
    evaluations: Sequence[str],
    template: str = AGGREGATOR_TEMPLATE,
) -> list[dict[str, str]]:
    """Build the chat request asking the aggregator judge for the final verdict.

    Args:
        messages: the conversation the answers reply to.
        answer_a: the answer shown as Answer A (the same order the judges saw).
        answer_b: the answer shown as Answer B.
        criteria: the criteria (or bare names) to judge on.
        evaluations: the judges' replies for this order; at least one.
        template: a packaged template name or a path to a user's template with the judge template's
            placeholders plus ``$evaluations``.

    Returns:
        A single user message for the aggregator judge.
    """
    if not evaluations:
        raise ValueError("the aggregator judge needs at least one judge evaluation")
    numbered = _EVALUATION_SEPARATOR.join(
        f"{_evaluation_label(number)}{evaluation.strip()}"
        for number, evaluation in enumerate(evaluations, start=1)
    )
    content = render_template(
        template,
        conversation=format_conversation(messages),
        answer_a=answer_a.strip(),
        answer_b=answer_b.strip(),
        criteria=format_criteria(criteria),
        evaluations=numbered,
    )
    return [{"role": "user", "content": content}]


def parse_judge_prompt(text: str) -> JudgePrompt | None:
    """Read the conversation, answers and judge evaluations back from a rendered judge prompt.

    The inverse of ``render_judge_prompt`` and ``render_aggregator_prompt`` with the packaged
    templates (or own templates that keep their marker lines): the answers and evaluations come
    back stripped, as the renderers show them. Each block ends at the first closing marker that the
    template's next markers follow, so a block that itself contains that sequence is cut there, and
    an evaluation is cut where it contains the next evaluation's ``Evaluation N:`` line.

    Args:
        text: a judge's or the aggregator judge's prompt (the user message's content).

    Returns:
        The prompt's parts; None when ``text`` is no such prompt.
    """
    blocks = _JUDGE_BLOCKS.search(text)
    if blocks is None:
        return None
    evaluations: list[str] = []
    evaluations_block = _EVALUATIONS_BLOCK.search(text, blocks.end())
    if evaluations_block is not None:
        evaluations = split_numbered(
            evaluations_block.group("evaluations"), _evaluation_label, _EVALUATION_SEPARATOR
        )
        if not evaluations:
            return None
    return JudgePrompt(
        conversation=blocks.group("conversation"),
        answer_a=blocks.group("answer_a"),
        answer_b=blocks.group("answer_b"),
        evaluations=evaluations,
    )


def parse_verdict(text: str) -> Verdict | None:
    """Read a judge's verdict from its reply.

    The last ``Verdict: A|B|tie`` line (markdown and ``[[A]]`` brackets allowed) or bare ``[[A]]``
    wins; failing both, a lone "Answer A is better" claim counts if no other answer is also called better.

    Args:
        text: the judge's reply.

    Returns:
        ``"A"``, ``"B"`` or ``"tie"``, or None when the reply gives no clear verdict (an abstention).
    """
    markers = [*_VERDICT_LINE.finditer(text), *_BRACKETED_VERDICT.finditer(text)]
    if markers:
        last = max(markers, key=lambda match: match.start())
        return _to_verdict(last.group("verdict"))
    claimed = {match.group("verdict") for match in _BETTER_CLAIM.finditer(text)}
    if len(claimed) == 1:
        return _to_verdict(claimed.pop())
    logger.debug("no clear verdict in judge reply ending %r", text[-200:])
    return None


def verdict_from_logprobs(logprob_a: float, logprob_b: float) -> float:
    """Turn the judge's log-probabilities of the tokens "A" and "B" into P(Answer A wins).

    Args:
        logprob_a: log-probability of the verdict token "A" (may be ``-inf``).
        logprob_b: log-probability of the verdict token "B" (may be ``-inf``).

    Returns:
        The softmax over the two, ``exp(a) / (exp(a) + exp(b))``; 0.5 when both are ``-inf``.
    """
    if math.isnan(logprob_a) or math.isnan(logprob_b):
        raise ValueError(f"log-probabilities must not be NaN, got {logprob_a}, {logprob_b}")
    if logprob_a == logprob_b:
        return 0.5
    difference = logprob_a - logprob_b
    # Two branches keep exp() from overflowing for large or infinite differences.
    if difference >= 0:
        return 1.0 / (1.0 + math.exp(-difference))
    exp_difference = math.exp(difference)
    return exp_difference / (1.0 + exp_difference)


def score_from_orders(verdict_ab: Verdict | None, verdict_ba: Verdict | None) -> float | None:
    """Combine the verdicts of both A/B orders into x's score against y.

    Args:
        verdict_ab: the verdict with x shown as Answer A, or None for an abstention.
        verdict_ba: the verdict with y shown as Answer A, or None for an abstention.

    Returns:
        x's win score in [0, 1] (1 win, 0.5 tie, 0 loss) averaged over the orders that gave a verdict,
        or None when both abstained.
    """
    scores = []
    if verdict_ab is not None:
        scores.append(_SCORE_OF_FIRST_SHOWN[verdict_ab])
    if verdict_ba is not None:
        scores.append(1.0 - _SCORE_OF_FIRST_SHOWN[verdict_ba])
    if not scores:
        return None
    return sum(scores) / len(scores)


def is_position_flip(verdict_ab: Verdict | None, verdict_ba: Verdict | None) -> bool:
    """Tell whether the same position won in both orders, i.e. the preference followed the order.

    Args:
        verdict_ab: the verdict with x shown as Answer A.
        verdict_ba: the verdict with y shown as Answer A.

    Returns:
        True when both verdicts are "A" or both are "B"; ties and abstentions are never flips.
    """
    return verdict_ab == verdict_ba and verdict_ab in ("A", "B")


def probability_from_orders(p_ab: float, p_ba: float) -> float:
    """Combine both orders' P(Answer A wins) into the probability that x beats y.

    Args:
        p_ab: P("A") with x shown as Answer A.
        p_ba: P("A") with y shown as Answer A.

    Returns:
        The mean of ``p_ab`` and ``1 - p_ba``.
    """
    for probability in (p_ab, p_ba):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probabilities must lie in [0, 1], got {p_ab}, {p_ba}")
    return (p_ab + (1.0 - p_ba)) / 2.0


def _to_verdict(token: str) -> Verdict:
    if token == "A":
        return "A"
    if token == "B":
        return "B"
    return "tie"
