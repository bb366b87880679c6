"""Verifier statistics: how often MoA answers, policy samples, DPO pairs and judges are right.

A verifier is ``verifier(messages, answer) -> bool | None`` (``MoaaConfig.verifier``): whether
``answer`` correctly replies to the conversation ``messages``, or None when it cannot be checked. The
functions read rows as the stages write them, so the statistics cover every row on disk, whichever
run wrote it. Shares are rounded to 4 places, and None when nothing was counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from moaa_ray.core.judging import probability_from_orders
from moaa_ray.core.tournament import (
    AGGREGATOR,
    JudgeVerdict,
    VerdictRules,
    final_score,
    final_verdict,
    order_verdict,
)

Verifier = Callable[[list[dict[str, str]], str], Any]  # returns bool | None


def share(part: int, whole: int) -> float | None:
    """``part / whole`` rounded to 4 places; None when ``whole`` is 0."""
    return round(part / whole, 4) if whole else None


def mean_interval(values: Sequence[float], z: float = 1.959964) -> tuple[float, float]:
    """The normal-approximation interval (95% at the default z) of the mean of ``values``, e.g.
    each question's share of correct samples, or a paired difference per question: the questions
    are the independent units, so the interval is over them, however many samples each has."""
    if not values:
        raise ValueError("an interval of a mean needs at least one value")
    n = len(values)
    mean = sum(values) / n
    spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = z * spread / math.sqrt(n)
    return mean - half, mean + half


def accuracy_interval(shares: Sequence[float], samples: int) -> tuple[float, float]:
    """The 95% interval of an accuracy over questions, each with its share of ``samples``
    correct answers: Wilson's with one answer per question (the shares are 0 or 1), otherwise the
    interval of the mean over questions (:func:`mean_interval`)."""
    if samples == 1:
        return wilson_interval(round(sum(shares)), len(shares))
    low, high = mean_interval(shares)
    return max(0.0, low), min(1.0, high)


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval of an accuracy, ``correct`` of ``total`` (95% at the default z).

    Unlike the normal approximation it stays within [0, 1] and is not empty at 0 or ``total``
    correct, which matters for the small accuracies of weak models.
    """
    if total <= 0:
        raise ValueError("an accuracy interval needs at least one answer")
    p, n = correct / total, total
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def moa_accuracy(rows: Iterable[dict], verifier: Verifier) -> dict:
    """Accuracy of the final MoA answers, and of each first-layer proposer on the same rows.

    Only a row's last assistant turn (the answer to its final user message) is checked, against the
    conversation before it. A row counts when the verifier can check its final answer; a proposer's
    answer there is correct only if the verifier says so (an empty or failed answer, or one it
    cannot check, is not). The slots of a model that proposes several times are pooled.

    Args:
        rows: SFT rows as the generate stage writes them: ``messages`` ending with the final answer,
            and ``proposals`` (every output, with ``turn``, ``layer``, ``model`` and ``content``).
        verifier: checks an answer.

    Returns:
        ``accuracy`` (share of counted rows whose final answer is correct), ``proposer_accuracy``
        (model name -> share of its first-layer answers that are correct) and ``verifiable`` (rows
        counted).
    """
    verifiable = correct = 0
    tallies: dict[str, list[int]] = {}  # model -> [correct, answers]
    for row in rows:
        context, answer = row["messages"][:-1], row["messages"][-1]["content"]
        verdict = verifier(context, answer)
        if verdict is None:
            continue
        verifiable += 1
        correct += bool(verdict)
        last_turn = max(p["turn"] for p in row["proposals"])
        for proposal in row["proposals"]:
            if proposal["turn"] == last_turn and proposal["layer"] == 0:
                tally = tallies.setdefault(proposal["model"], [0, 0])
                content = proposal["content"]
                tally[0] += content is not None and bool(verifier(context, content))
                tally[1] += 1
    return {
        "accuracy": share(correct, verifiable),
        "proposer_accuracy": {model: share(*tally) for model, tally in tallies.items()},
        "verifiable": verifiable,
    }


def preference_accuracy(
    kept: Iterable[dict],
    dropped: Iterable[dict],
    audit: Iterable[dict],
    verifier: Verifier,
    rules: VerdictRules,
) -> dict:
    """How the preference stage's samples, pairs and judges compare with the verifier.

    A comparison is one judged (pair, order) of a prompt whose two samples the verifier splits
    (one correct, one wrong). Every judge and the final verdict are scored over the same
    comparisons; a tie, an abstention or a missing judgment counts as disagreeing with the verifier.

    Args:
        kept: the stage's pairs: ``row_id``, ``prompt``, ``samples``, ``chosen`` and ``rejected``
            (one assistant message each, the text of one of the samples).
        dropped: the stage's dropped prompts: ``row_id``, ``prompt``, ``samples`` (None when written
            before the stage kept them: such prompts are left out).
        audit: the judgment audit: ``row_id``, ``judge``, ``sample_x``, ``sample_y``, ``order``
            (``ab`` shows sample x as Answer A), ``verdict`` and ``p_a``.
        verifier: checks an answer.
        rules: how the judgments of an order make its final verdict, as for ranking (the
            aggregator judge's, or the judges' mean score).

    Returns:
        ``verifiable_prompts`` (prompts with at least one checkable sample) and the share of them
        whose samples include both a correct and a wrong one (``prompts_with_correct_and_wrong``);
        ``verifiable_pairs`` (kept pairs with both answers checkable) and, over them, the shares
        with the chosen answer correct (``chosen_correct``), the rejected one correct
        (``rejected_correct``) and the chosen correct while the rejected is wrong
        (``pair_accuracy``); ``comparisons`` counted, and the share of them where each judge
        (``judge_agreement``, by name) and the final verdict (``ensemble_agreement``) pick the
        correct sample; ``split_pairs`` (judged pairs whose samples the verifier splits) and the
        share of them where each judge's score over both orders (``judge_pair_agreement``) and the
        pair's final score, as ranking reads it (``ensemble_pair_agreement``), favour the correct
        sample: a position bias that shows in every order cancels there.
    """
    kept = list(kept)
    checks = {
        row["row_id"]: [verifier(row["prompt"], sample) for sample in row["samples"]]
        for row in [*kept, *dropped]
        if row["samples"] is not None
    }
    return {
        **_prompt_stats(checks),
        **_pair_stats(kept, checks),
        **_agreement_stats(audit, checks, rules),
    }


def _prompt_stats(checks: dict[str, list[Any]]) -> dict:
    outcomes = [{bool(v) for v in verdicts if v is not None} for verdicts in checks.values()]
    checkable = [found for found in outcomes if found]
    both = sum(len(found) == 2 for found in checkable)
    return {
        "verifiable_prompts": len(checkable),
        "prompts_with_correct_and_wrong": share(both, len(checkable)),
    }


def _pair_stats(kept: list[dict], checks: dict[str, list[Any]]) -> dict:
    pairs = []
    for row in kept:
        verdicts, texts = checks[row["row_id"]], row["samples"]
        chosen = verdicts[texts.index(row["chosen"][0]["content"])]
        rejected = verdicts[texts.index(row["rejected"][0]["content"])]
        if chosen is not None and rejected is not None:
            pairs.append((bool(chosen), bool(rejected)))
    return {
        "verifiable_pairs": len(pairs),
        "chosen_correct": share(sum(c for c, _ in pairs), len(pairs)),
        "rejected_correct": share(sum(r for _, r in pairs), len(pairs)),
        "pair_accuracy": share(sum(c and not r for c, r in pairs), len(pairs)),
    }


def _agreement_stats(
    audit: Iterable[dict], checks: dict[str, list[Any]], rules: VerdictRules
) -> dict:
    comparisons: dict[tuple, list[JudgeVerdict]] = {}
    for row in audit:
        key = (row["row_id"], row["sample_x"], row["sample_y"], row["order"])
        verdict = JudgeVerdict(judge=row["judge"], verdict=row["verdict"], p_a=row["p_a"])
        comparisons.setdefault(key, []).append(verdict)
    return {
        **_order_agreement(comparisons, checks, rules),
        **_pair_agreement(comparisons, checks, rules),
    }


def _correct_sample(checks: dict[str, list[Any]], row_id: str, x: int, y: int) -> int | None:
    """Which of samples x and y alone is correct, when the verifier splits them; else None."""
    verdicts = checks.get(row_id)
    if verdicts is None or verdicts[x] is None or verdicts[y] is None:
        return None
    if bool(verdicts[x]) == bool(verdicts[y]):
        return None
    return x if verdicts[x] else y


def _order_agreement(
    comparisons: dict[tuple, list[JudgeVerdict]], checks: dict[str, list[Any]], rules: VerdictRules
) -> dict:
    names = dict.fromkeys(j["judge"] for found in comparisons.values() for j in found)
    agreed = {name: 0 for name in names if name != AGGREGATOR}
    ensemble = counted = 0
    for (row_id, x, y, order), judgments in comparisons.items():
        correct = _correct_sample(checks, row_id, x, y)
        if correct is None:
            continue
        right = "A" if (correct == x) == (order == "ab") else "B"  # the correct one's letter
        counted += 1
        for name in agreed:
            agreed[name] += order_verdict([j for j in judgments if j["judge"] == name]) == right
        ensemble += final_verdict(judgments, rules) == right
    return {
        "comparisons": counted,
        "judge_agreement": {name: share(count, counted) for name, count in agreed.items()},
        "ensemble_agreement": share(ensemble, counted),
    }


def _pair_agreement(
    comparisons: dict[tuple, list[JudgeVerdict]], checks: dict[str, list[Any]], rules: VerdictRules
) -> dict:
    by_pair: dict[tuple, dict[str, list[JudgeVerdict]]] = {}
    for (row_id, x, y, order), judgments in comparisons.items():
        by_pair.setdefault((row_id, x, y), {})[order] = judgments
    names = dict.fromkeys(
        j["judge"] for orders in by_pair.values() for o in orders.values() for j in o
    )
    agreed = {name: 0 for name in names if name != AGGREGATOR}
    judge_rules = VerdictRules(order_policy=rules.order_policy)
    ensemble = counted = 0
    for (row_id, x, y), orders in by_pair.items():
        correct = _correct_sample(checks, row_id, x, y)
        if correct is None:
            continue
        counted += 1
        for name in agreed:
            of_judge = {o: [j for j in found if j["judge"] == name] for o, found in orders.items()}
            agreed[name] += _favours(of_judge, judge_rules) == (correct == x)
        ensemble += _favours(orders, rules) == (correct == x)
    return {
        "split_pairs": counted,
        "judge_pair_agreement": {name: share(count, counted) for name, count in agreed.items()},
        "ensemble_pair_agreement": share(ensemble, counted),
    }


def _favours(orders: dict[str, list[JudgeVerdict]], rules: VerdictRules) -> bool | None:
    """Whether a pair's score over both orders favours sample x (None: a tie or no score)."""
    ab, _ = final_score(orders.get("ab", []), rules)
    ba, _ = final_score(orders.get("ba", []), rules)
    score = probability_from_orders(ab, ba, rules.order_policy)
    return None if score is None or score == 0.5 else score > 0.5
