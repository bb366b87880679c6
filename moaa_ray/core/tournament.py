"""A prompt's tournament: K samples, judged pairwise in both orders, ranked into a DPO pair.

"MoA as reward model" (MoAA, arXiv 2505.03059): J judges each compare a pair of samples on the
prompt's selected criteria, in both A/B orders; an aggregator judge reads their evaluations and gives
the final verdict for that order; the two orders are combined so position bias cancels
(:class:`VerdictRules` say what happens when an order or the aggregator judge abstains). Verdicts are
text (parsed; unparseable = abstain) or probabilities of "A" (logprob mode, recorded with the verdict
they stand for). A prompt's state is a :class:`Tournament`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypedDict

from moaa_ray.core.context import Prompt
from moaa_ray.core.conversations import Messages
from moaa_ray.core.judging import (
    ANSWER_A_SCORE,
    OrderPolicy,
    Verdict,
    is_position_flip,
    parse_verdict,
    probability_from_orders,
    render_aggregator_prompt,
    render_judge_prompt,
    verdict_from_probability,
)
from moaa_ray.core.ranking import Comparison, bradley_terry, select_best_worst, win_scores
from moaa_ray.records import RowStatus

AGGREGATOR = "aggregator"
Order = Literal["ab", "ba"]  # "ab" shows a pair's sample x as Answer A, "ba" shows sample y
ORDERS: tuple[Order, ...] = ("ab", "ba")
AggregatorFallback = Literal["judges_mean", "abstain"]
Pair = tuple[int, int]  # (x, y): the indices of two samples


class JudgeVerdict(TypedDict):
    """What a judgment's score is read from: who judged, and their verdict."""

    judge: str  # the judge's model name, or AGGREGATOR for the aggregator judge
    verdict: Verdict | None  # None: the judge abstained (a text verdict that did not parse)
    p_a: float | None  # logprob mode: the probability that Answer A wins; None in text mode


class Judgment(JudgeVerdict):
    """One judge's evaluation of one pair of samples in one order."""

    pair: list[int]  # [x, y]: the samples' indices
    order: Order
    raw: str | None  # text mode: the judge's reply; None in logprob mode


class Counts(TypedDict):
    """What a prompt's tournament counted on its way, summed into the stage's statistics."""

    empty_samples: int
    duplicate_samples: int
    truncated_samples: int  # samples cut at max_new_tokens
    shortened_prompts: int  # judge prompts whose parts were cut to fit a context window
    criteria_fallback: int  # criteria selections that fell back to the default criteria


class Tournament(RowStatus):
    """A prompt's state in the preference stage; JSON-able, so Ray Data carries it between steps
    (as a string column: :mod:`moaa_ray.pipeline.streaming`)."""

    row_id: str
    source: str  # where the prompt came from (``<input path>#<index>``), for rejects
    prompt: Messages  # the conversation the samples answer, ending with a user turn
    samples: list[str]  # the distinct non-empty samples (at least two, or the row is in error)
    counts: Counts
    criteria: list[str]  # names of the criteria the judges compare the samples on
    judgments: list[Judgment]  # every judgment, the judges' and the aggregator judge's
    rewards: list[float] | None  # a reward model's score per sample; None when judges rank them
    # A pairwise source's K x K table: [i][j] is its raw score of sample i over sample j (a GPM's
    # skew-symmetric score, PairRM's logit with i shown first); None for scalar sources.
    preference_table: list[list[float]] | None


def new_tournament(row_id: str, prompt: Messages, source: str) -> Tournament:
    """The state of a prompt before sampling."""
    return {
        "row_id": row_id,
        "source": source,
        "prompt": prompt,
        "samples": [],
        "counts": {
            "empty_samples": 0,
            "duplicate_samples": 0,
            "truncated_samples": 0,
            "shortened_prompts": 0,
            "criteria_fallback": 0,
        },
        "criteria": [],
        "judgments": [],
        "rewards": None,
        "preference_table": None,
        "error": None,
    }


def record_samples(state: Tournament, texts: list[str]) -> None:
    """Keep distinct non-empty samples; count the empty and duplicate ones; fewer than 2 is an error."""
    seen: set[str] = set()
    for text in texts:
        key = text.strip()
        if not key:
            state["counts"]["empty_samples"] += 1
        elif key in seen:
            state["counts"]["duplicate_samples"] += 1
        else:
            seen.add(key)
            state["samples"].append(text)
    if len(state["samples"]) < 2:
        state["error"] = f"fewer than two distinct samples ({len(state['samples'])})"


def shown(state: Tournament, pair: Sequence[int], order: Order) -> tuple[str, str]:
    """(Answer A, Answer B) texts of a pair in one order."""
    x, y = state["samples"][pair[0]], state["samples"][pair[1]]
    return (x, y) if order == "ab" else (y, x)


def judge_requests(
    state: Tournament, pairs: list[Pair], judges: list[str]
) -> list[tuple[str, Pair, Order, Prompt]]:
    """(judge, pair, order, prompt) for every judge, pair and order of a live row; the two answers
    are the prompt's parts, cut evenly where it must fit a judge's context window."""
    if state["error"]:
        return []
    requests = []
    for pair in pairs:
        for order in ORDERS:
            render = partial(_judge_prompt, state["prompt"], state["criteria"])
            prompt = Prompt(render, shown(state, pair, order))
            requests += [(judge, pair, order, prompt) for judge in judges]
    return requests


def _judge_prompt(prompt: Messages, criteria: list[str], answers: list[str]) -> Messages:
    return render_judge_prompt(prompt, answers[0], answers[1], criteria)


def describe_judgment(judgment: Judgment) -> str:
    """A judge's evaluation as the aggregator judge reads it (text, or its probability of A)."""
    if judgment["raw"] is not None:
        return judgment["raw"]
    if judgment["p_a"] is None:
        return "(no evaluation)"
    return f"This judge prefers Answer A with probability {judgment['p_a']:.2f}."


def aggregator_requests(state: Tournament, pairs: list[Pair]) -> list[tuple[Pair, Order, Prompt]]:
    """(pair, order, prompt) asking the aggregator judge for a final verdict per pair and order; the
    judges' evaluations are the prompt's parts, cut evenly where it must fit the context window."""
    if state["error"]:
        return []
    requests = []
    for pair in pairs:
        for order in ORDERS:
            evaluations = [
                describe_judgment(j)
                for j in state["judgments"]
                if j["pair"] == list(pair) and j["order"] == order and j["judge"] != AGGREGATOR
            ]
            a, b = shown(state, pair, order)
            render = partial(render_aggregator_prompt, state["prompt"], a, b, state["criteria"])
            requests.append((pair, order, Prompt(render, tuple(evaluations))))
    return requests


def record_judgment(
    state: Tournament,
    judge: str,
    pair: Sequence[int],
    order: Order,
    *,
    text: str | None = None,
    p_a: float | None = None,
    tie_band: float = 0.0,
) -> None:
    """Store one judgment: a text verdict (parsed), or a probability that Answer A wins with the
    verdict it stands for (a tie within ``tie_band`` of 0.5), so the audit shows both."""
    if text is not None:
        verdict = parse_verdict(text)
    else:
        verdict = None if p_a is None else verdict_from_probability(p_a, tie_band)
    state["judgments"].append(
        {
            "judge": judge,
            "pair": list(pair),
            "order": order,
            "verdict": verdict,
            "p_a": p_a,
            "raw": text,
        }
    )


@dataclass(frozen=True)
class VerdictRules:
    """How a pair's judgments become its score (the judging config's choices as plain values)."""

    aggregator: bool = False  # the aggregator judge gives each order's final verdict
    order_policy: OrderPolicy = "both_required"  # see :func:`probability_from_orders`
    # "judges_mean": an order the aggregator judge abstains on goes by the judges' mean score;
    # "abstain": that order has no verdict.
    aggregator_fallback: AggregatorFallback = "judges_mean"


def _of(state: Tournament, pair: Sequence[int], order: Order) -> list[Judgment]:
    return [j for j in state["judgments"] if j["pair"] == list(pair) and j["order"] == order]


def _score(judgment: JudgeVerdict) -> float | None:
    """Answer A's score in one judgment: its P(A) (0.5 when that counts as a tie), or its verdict's."""
    if judgment["verdict"] == "tie":
        return 0.5
    if judgment["p_a"] is not None:
        return judgment["p_a"]
    return None if judgment["verdict"] is None else ANSWER_A_SCORE[judgment["verdict"]]


def _order_score(judgments: Sequence[JudgeVerdict]) -> float | None:
    """Mean score of Answer A over judgments of one order (None if every one abstained)."""
    values = [v for v in map(_score, judgments) if v is not None]
    return sum(values) / len(values) if values else None


def _verdict(score: float | None) -> Verdict | None:
    if score is None:
        return None
    return "A" if score > 0.5 else "B" if score < 0.5 else "tie"


def order_verdict(judgments: Sequence[JudgeVerdict]) -> Verdict | None:
    """The verdict of judgments of one pair in one order: their mean score of Answer A.

    Above 0.5 is "A", below is "B", exactly 0.5 a tie (so is a logprob judgment recorded as a tie);
    None when every judgment abstained.
    """
    return _verdict(_order_score(judgments))


def final_score(
    judgments: Sequence[JudgeVerdict], rules: VerdictRules
) -> tuple[float | None, bool]:
    """Answer A's final score for one pair in one order, and whether the judges' mean stood in.

    Args:
        judgments: every judgment of that pair and order, the judges' and the aggregator judge's.
        rules: whether the aggregator judge decides, and what happens when it abstains.

    Returns:
        ``(score, fell_back)``: the aggregator judge's score when it decides and gave a verdict;
        without an aggregator judge, the judges' mean score; when the aggregator judge abstained,
        the judges' mean under ``aggregator_fallback: judges_mean`` (``fell_back`` True if they gave
        one), else None. None also when nobody gave a verdict.
    """
    judges = [j for j in judgments if j["judge"] != AGGREGATOR]
    if not rules.aggregator:
        return _order_score(judges), False
    score = _order_score([j for j in judgments if j["judge"] == AGGREGATOR])
    if score is not None or rules.aggregator_fallback == "abstain":
        return score, False
    fallback = _order_score(judges)
    return fallback, fallback is not None


def final_verdict(judgments: Sequence[JudgeVerdict], rules: VerdictRules) -> Verdict | None:
    """The final verdict of one pair in one order (:func:`final_score` read as A, B or tie)."""
    return _verdict(final_score(judgments, rules)[0])


def pair_comparisons(state: Tournament, pairs: list[Pair], rules: VerdictRules) -> list[Comparison]:
    """One comparison per pair: sample x's win score from the final verdicts of both orders,
    combined by ``rules.order_policy`` (None: the pair abstains)."""
    comparisons = []
    for x, y in pairs:
        ab, _ = final_score(_of(state, (x, y), "ab"), rules)
        ba, _ = final_score(_of(state, (x, y), "ba"), rules)
        comparisons.append(Comparison(x, y, probability_from_orders(ab, ba, rules.order_policy)))
    return comparisons


def rank_samples(
    state: Tournament,
    pairs: list[Pair],
    rules: VerdictRules,
    method: str,
    min_margin: float,
) -> tuple[list[float], tuple[int, int] | str]:
    """Scores per sample (wins or Bradley-Terry) and (chosen, rejected) or the reason to drop."""
    k = len(state["samples"])
    if state["rewards"] is not None:  # scalar / pairwise reward models score samples directly
        scores = list(state["rewards"])
        return scores, select_best_worst(scores, min_margin)
    comparisons = pair_comparisons(state, pairs, rules)
    valid = sum(c.score_i is not None for c in comparisons)
    scores = (
        bradley_terry(comparisons, k) if method == "bradley_terry" else win_scores(comparisons, k)
    )
    return scores, select_best_worst(scores, min_margin, num_valid_judgments=valid)


def judgment_stats(state: Tournament, pairs: list[Pair], rules: VerdictRules) -> dict[str, int]:
    """Per-row counts of what the judges did and what the rules made of it.

    Returns:
        ``judgments`` and ``abstains`` (judgments without a verdict); ``orders_judged`` and
        ``orders_with_agreement`` (orders where every judge with a verdict gave the same one);
        ``position_flips`` (pairs whose final verdict is the same position in both orders);
        ``single_order_pairs`` (pairs with a final verdict in one order only), ``pairs_abstained``
        (pairs without a score under the order policy), ``aggregator_fallbacks`` (orders the
        aggregator judge abstained on that the judges' mean decided) and ``pairs``.
    """
    agree = total_orders = flips = single = fallbacks = 0
    for pair in pairs:
        finals = {}
        for order in ORDERS:
            judgments = _of(state, pair, order)
            verdicts = {_verdict(_score(j)) for j in judgments if j["judge"] != AGGREGATOR}
            verdicts.discard(None)
            total_orders += bool(verdicts)
            agree += len(verdicts) == 1
            score, fell_back = final_score(judgments, rules)
            finals[order] = _verdict(score)
            fallbacks += fell_back
        flips += is_position_flip(finals["ab"], finals["ba"])
        single += (finals["ab"] is None) != (finals["ba"] is None)
    abstained = sum(c.score_i is None for c in pair_comparisons(state, pairs, rules))
    return {
        "judgments": len(state["judgments"]),
        "abstains": sum(_score(j) is None for j in state["judgments"]),
        "orders_with_agreement": agree,
        "orders_judged": total_orders,
        "position_flips": flips,
        "single_order_pairs": single,
        "pairs_abstained": abstained,
        "aggregator_fallbacks": fallbacks,
        "pairs": len(pairs),
    }
