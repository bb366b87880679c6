"""A prompt's tournament: K samples, judged pairwise in both orders, ranked into a DPO pair.

"MoA as reward model" (MoAA, arXiv 2505.03059): J judges each compare a pair of samples on the
prompt's selected criteria, in both A/B orders; an aggregator judge reads their evaluations and gives
the final verdict for that order; the two orders are combined so position bias cancels. Verdicts are
text (parsed; unparseable = abstain) or probabilities of "A" (logprob mode).

A row's state is a JSON-able dict carried by Ray Data between steps:
``{"row_id", "source", "prompt", "samples", "counts", "criteria", "criteria_fallback", "judgments",
"rewards", "error"}``; a judgment is ``{"judge", "pair": [x, y], "order": "ab"|"ba", "verdict", "p_a",
"raw"}`` where order "ab" shows sample x as Answer A.
"""

from __future__ import annotations

from collections.abc import Sequence

from moaa_ray.core.judging import (
    Verdict,
    is_position_flip,
    parse_verdict,
    probability_from_orders,
    render_aggregator_prompt,
    render_judge_prompt,
)
from moaa_ray.core.ranking import Comparison, bradley_terry, select_best_worst, win_scores

AGGREGATOR = "aggregator"
ORDERS = ("ab", "ba")


def new_tournament(row_id: str, prompt: list[dict[str, str]], source: str) -> dict:
    """The state of a prompt before sampling."""
    return {
        "row_id": row_id,
        "source": source,
        "prompt": prompt,
        "samples": [],
        "counts": {"empty_samples": 0, "duplicate_samples": 0, "criteria_fallback": 0},
        "criteria": [],
        "judgments": [],
        "rewards": None,
        "error": None,
    }


def record_samples(state: dict, texts: list[str]) -> None:
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


def shown(state: dict, pair: Sequence[int], order: str) -> tuple[str, str]:
    """(Answer A, Answer B) texts of a pair in one order."""
    x, y = state["samples"][pair[0]], state["samples"][pair[1]]
    return (x, y) if order == "ab" else (y, x)


def judge_requests(state: dict, pairs: list[tuple[int, int]], judges: list[str]) -> list[tuple]:
    """(judge, pair, order, conversation) for every judge, pair and order of a live row."""
    if state["error"]:
        return []
    requests = []
    for pair in pairs:
        for order in ORDERS:
            a, b = shown(state, pair, order)
            conversation = render_judge_prompt(state["prompt"], a, b, state["criteria"])
            requests += [(judge, pair, order, conversation) for judge in judges]
    return requests


def describe_judgment(judgment: dict) -> str:
    """A judge's evaluation as the aggregator judge reads it (text, or its probability of A)."""
    if judgment["raw"] is not None:
        return judgment["raw"]
    if judgment["p_a"] is None:
        return "(no evaluation)"
    return f"This judge prefers Answer A with probability {judgment['p_a']:.2f}."


def aggregator_requests(state: dict, pairs: list[tuple[int, int]]) -> list[tuple]:
    """(pair, order, conversation) asking the aggregator judge for a final verdict per pair and order."""
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
            conversation = render_aggregator_prompt(
                state["prompt"], a, b, state["criteria"], evaluations
            )
            requests.append((pair, order, conversation))
    return requests


def record_judgment(
    state: dict,
    judge: str,
    pair: Sequence[int],
    order: str,
    *,
    text: str | None = None,
    p_a: float | None = None,
) -> None:
    """Store one judgment: a text verdict (parsed) or a probability that Answer A wins."""
    verdict = parse_verdict(text) if text is not None else None
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


def is_final(judgment: dict, final_judge: str | None) -> bool:
    """Whether a judgment decides: the aggregator judge's, or any judge's when there is none."""
    return judgment["judge"] == final_judge if final_judge else judgment["judge"] != AGGREGATOR


def _final(state: dict, pair: Sequence[int], order: str, final_judge: str | None) -> list[dict]:
    return [
        j
        for j in state["judgments"]
        if j["pair"] == list(pair) and j["order"] == order and is_final(j, final_judge)
    ]


def _order_score(judgments: list[dict]) -> float | None:
    """Mean score of the first-shown answer for one order (None if every judge abstained)."""
    values = []
    for j in judgments:
        if j["p_a"] is not None:
            values.append(j["p_a"])
        elif j["verdict"] is not None:
            values.append({"A": 1.0, "B": 0.0, "tie": 0.5}[j["verdict"]])
    return sum(values) / len(values) if values else None


def order_verdict(judgments: list[dict]) -> Verdict | None:
    """The verdict of judgments of one pair in one order: their mean score of Answer A.

    Above 0.5 is "A" (for one logprob verdict: ``p_a > 0.5``), below is "B", exactly 0.5 a tie;
    None when every judgment abstained.
    """
    score = _order_score(judgments)
    if score is None:
        return None
    return "A" if score > 0.5 else "B" if score < 0.5 else "tie"


def pair_comparisons(
    state: dict, pairs: list[tuple[int, int]], final_judge: str | None
) -> list[Comparison]:
    """One comparison per pair: sample x's win score from the final verdicts of both orders.

    ``final_judge`` is ``"aggregator"`` when an aggregator judge decides, else None (judges averaged).
    """
    comparisons = []
    for x, y in pairs:
        ab = _order_score(_final(state, (x, y), "ab", final_judge))
        ba = _order_score(_final(state, (x, y), "ba", final_judge))
        if ab is None and ba is None:
            score = None
        elif ba is None:
            score = ab
        elif ab is None:
            score = 1.0 - ba
        else:
            score = probability_from_orders(ab, ba)
        comparisons.append(Comparison(x, y, score))
    return comparisons


def rank_samples(
    state: dict,
    pairs: list[tuple[int, int]],
    final_judge: str | None,
    method: str,
    min_margin: float,
) -> tuple[list[float], tuple[int, int] | str]:
    """Scores per sample (wins or Bradley-Terry) and (chosen, rejected) or the reason to drop."""
    k = len(state["samples"])
    if state["rewards"] is not None:  # scalar / pairwise reward models score samples directly
        scores = list(state["rewards"])
        return scores, select_best_worst(scores, min_margin)
    comparisons = pair_comparisons(state, pairs, final_judge)
    valid = sum(c.score_i is not None for c in comparisons)
    scores = (
        bradley_terry(comparisons, k) if method == "bradley_terry" else win_scores(comparisons, k)
    )
    return scores, select_best_worst(scores, min_margin, num_valid_judgments=valid)


def judgment_stats(state: dict, pairs: list[tuple[int, int]], final_judge: str | None) -> dict:
    """Per-row counts: judgments, abstains, orders where judges agree, pairs whose verdict flips."""
    judges = [j for j in state["judgments"] if j["judge"] != AGGREGATOR]
    agree = total_orders = flips = 0
    for pair in pairs:
        finals = {}
        for order in ORDERS:
            verdicts = {
                _discrete(j) for j in judges if j["pair"] == list(pair) and j["order"] == order
            }
            verdicts.discard(None)
            total_orders += bool(verdicts)
            agree += len(verdicts) == 1
            decided = [_discrete(j) for j in _final(state, pair, order, final_judge)]
            finals[order] = decided[0] if len(set(decided)) == 1 else None
        flips += is_position_flip(finals["ab"], finals["ba"])
    return {
        "judgments": len(state["judgments"]),
        "abstains": sum(_discrete(j) is None for j in state["judgments"]),
        "orders_with_agreement": agree,
        "orders_judged": total_orders,
        "position_flips": flips,
        "pairs": len(pairs),
    }


def _discrete(judgment: dict) -> Verdict | None:
    if judgment["p_a"] is not None:
        return "A" if judgment["p_a"] > 0.5 else "B" if judgment["p_a"] < 0.5 else "tie"
    return judgment["verdict"]
