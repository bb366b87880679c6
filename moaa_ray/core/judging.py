"""Pairwise LLM judging: prompts, verdict parsing and A/B order swapping.

In MoAA (arXiv 2505.03059) several judges compare two answers and an aggregator judge reads their
evaluations and gives the final verdict; here every pair is judged in both orders to cancel position bias.
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
OrderPolicy = Literal["both_required", "average", "any"]

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
ANSWER_A_SCORE: dict[Verdict, float] = {"A": 1.0, "B": 0.0, "tie": 0.5}
"""What a verdict is worth to the answer shown as Answer A: 1 win, 0.5 tie, 0 loss."""
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
    """Read a judge's verdict from the final line of its reply.

    Only the last non-blank line counts: the judge prompts ask for the verdict there, and an answer
    the judge quotes may itself say "Verdict: B", which must not speak for the judge. On that line
    the last ``Verdict: A|B|tie`` (markdown and ``[[A]]`` brackets allowed) or bare ``[[A]]`` wins;
    failing both, a lone "Answer A is better" claim counts if no other answer is also called better.

    Args:
        text: the judge's reply.

    Returns:
        ``"A"``, ``"B"`` or ``"tie"``, or None when the final line gives no clear verdict (an
        abstention).
    """
    lines = [line for line in text.splitlines() if line.strip()]
    final_line = lines[-1] if lines else ""
    markers = [*_VERDICT_LINE.finditer(final_line), *_BRACKETED_VERDICT.finditer(final_line)]
    if markers:
        last = max(markers, key=lambda match: match.start())
        return _to_verdict(last.group("verdict"))
    claimed = {match.group("verdict") for match in _BETTER_CLAIM.finditer(final_line)}
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


def verdict_from_probability(p_a: float, tie_band: float = 0.0) -> Verdict:
    """The verdict a judge's P(Answer A wins) stands for: a tie when it is within ``tie_band`` of 0.5.

    Args:
        p_a: P(Answer A wins), e.g. from :func:`verdict_from_logprobs`.
        tie_band: ``|p_a - 0.5| <= tie_band`` is a tie; 0 makes only exactly 0.5 a tie.

    Returns:
        ``"A"`` above the band, ``"B"`` below it, else ``"tie"``.
    """
    if not 0.0 <= p_a <= 1.0:
        raise ValueError(f"a probability must lie in [0, 1], got {p_a}")
    if abs(p_a - 0.5) <= tie_band:
        return "tie"
    return "A" if p_a > 0.5 else "B"


def is_position_flip(verdict_ab: Verdict | None, verdict_ba: Verdict | None) -> bool:
    """Tell whether the same position won in both orders, i.e. the preference followed the order.

    Args:
        verdict_ab: the verdict with x shown as Answer A.
        verdict_ba: the verdict with y shown as Answer A.

    Returns:
        True when both verdicts are "A" or both are "B"; ties and abstentions are never flips.
    """
    return verdict_ab == verdict_ba and verdict_ab in ("A", "B")


def probability_from_orders(
    p_ab: float | None, p_ba: float | None, policy: OrderPolicy = "both_required"
) -> float | None:
    """Combine both orders' score of Answer A into x's score against y.

    Order "ab" shows x as Answer A and "ba" shows y, so x scores ``p_ab`` in one and ``1 - p_ba`` in
    the other. With both orders judged every policy gives their mean, so position bias cancels; they
    differ when one order has no verdict (None):

    - ``both_required`` (the default): the pair abstains, since one order alone may be pure position bias;
    - ``average``: the mean over both orders with the missing one counted as a tie (0.5), so one
      order alone moves the score half as far from 0.5;
    - ``any``: the mean over the orders that gave a verdict, so one order alone decides.

    Args:
        p_ab: Answer A's score with x shown as Answer A: P("A"), or 1 / 0.5 / 0 for a verdict A / tie
            / B; None when that order abstained.
        p_ba: the same with y shown as Answer A.
        policy: ``both_required``, ``average`` or ``any``.

    Returns:
        x's score in [0, 1] (1 win, 0.5 tie, 0 loss), or None when the pair abstains: no order gave a
        verdict, or one did under ``both_required``.
    """
    for probability in (p_ab, p_ba):
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError(f"probabilities must lie in [0, 1], got {p_ab}, {p_ba}")
    scores = [s for s in (p_ab, None if p_ba is None else 1.0 - p_ba) if s is not None]
    if not scores or (len(scores) == 1 and policy == "both_required"):
        return None
    if policy == "average":
        scores += [0.5] * (2 - len(scores))
    return sum(scores) / len(scores)


def _to_verdict(token: str) -> Verdict:
    if token == "A":
        return "A"
    if token == "B":
        return "B"
    return "tie"
