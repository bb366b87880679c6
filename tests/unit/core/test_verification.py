"""Tests for moaa_ray.core.verification: verifier statistics over the rows the stages write."""

import pytest
from scipy.stats import binomtest

from moaa_ray.core.moa import finish_row, new_state, plan_layers, record_output
from moaa_ray.core.tournament import AGGREGATOR, VerdictRules
from moaa_ray.core.verification import moa_accuracy, preference_accuracy, wilson_interval

PLAN = plan_layers(["p", "q", "p"], "agg", 2)


def verify(messages, answer):
    """Correct when the answer doubles the last message's number; None for other messages."""
    question = messages[-1]["content"]
    return answer.strip() == str(2 * int(question)) if question.isdigit() else None


def user(text):
    return {"role": "user", "content": text}


def sft_row(messages, turns):
    """A generate-stage row: per turn, the first layer's three answers and the aggregator's."""
    state = new_state("id", messages, "src")
    for turn, (proposals, final) in enumerate(turns):
        for slot, (model, text) in enumerate(zip(PLAN.layers[0], proposals, strict=True)):
            record_output(state, turn, 0, slot, model, text, None)
        record_output(state, turn, 1, 0, "agg", final, None)
    return finish_row(state, PLAN)


def test_moa_accuracy_checks_the_last_turn_of_rows_the_verifier_can_check():
    rows = [
        sft_row([user("2")], [(["4", "5", ""], "4")]),  # an empty proposal counts as wrong
        sft_row(
            [user("1"), {"role": "assistant", "content": "old"}, user("3")],
            [(["x", "x", "x"], "2"), (["6", "6", "6"], "7")],  # turn 0's proposals are not checked
        ),
        sft_row([user("hello")], [(["a", "b", "c"], "d")]),  # not checkable: left out
    ]
    contexts = []

    def recording(messages, answer):
        contexts.append([m["content"] for m in messages])
        return verify(messages, answer)

    stats = moa_accuracy(rows, recording)
    assert stats == {"accuracy": 0.5, "proposer_accuracy": {"p": 0.75, "q": 0.5}, "verifiable": 2}
    # Each answer is checked against the conversation before it, earlier turns as regenerated.
    assert contexts == [["2"]] * 3 + [["1", "2", "3"]] * 4 + [["hello"]]


def test_moa_accuracy_without_rows_has_no_shares():
    assert moa_accuracy([], verify) == {"accuracy": None, "proposer_accuracy": {}, "verifiable": 0}


def pair(row_id, prompt, samples, chosen, rejected):
    return {
        "row_id": row_id,
        "prompt": [user(prompt)],
        "samples": samples,
        "chosen": [{"role": "assistant", "content": samples[chosen]}],
        "rejected": [{"role": "assistant", "content": samples[rejected]}],
    }


def drop(row_id, prompt, samples):
    return {"row_id": row_id, "prompt": [user(prompt)] if prompt else None, "samples": samples}


def judged(row_id, x, y, order, judge, verdict=None, p_a=None):
    return {
        "row_id": row_id,
        "judge": judge,
        "sample_x": x,
        "sample_y": y,
        "order": order,
        "verdict": verdict,
        "p_a": p_a,
    }


KEPT = [
    pair("k1", "2", ["4", "5", "6"], 0, 1),  # chosen correct, rejected wrong
    pair("k2", "2", ["5", "4"], 0, 1),  # swapped: chosen wrong, rejected correct
    pair("k3", "3", ["7", "8"], 0, 1),  # no correct sample
]
DROPPED = [
    drop("d1", "2", ["4", "9"]),
    drop("d2", "hi", ["a", "b"]),  # not checkable
    drop("d3", None, None),  # written before dropped prompts kept their samples
    drop("d4", "2", []),  # no samples to check
]


def test_preference_accuracy_covers_prompts_and_pairs_the_verifier_can_check():
    stats = preference_accuracy(KEPT, DROPPED, [], verify, VerdictRules())
    assert stats["verifiable_prompts"] == 4 and stats["prompts_with_correct_and_wrong"] == 0.75
    assert stats["verifiable_pairs"] == 3
    assert stats["chosen_correct"] == stats["rejected_correct"] == stats["pair_accuracy"] == 0.3333
    assert stats["comparisons"] == 0 and stats["ensemble_agreement"] is None


def test_judges_and_aggregator_are_scored_over_the_same_split_comparisons():
    audit = [
        # k1 (0, 1): sample 0 is correct, shown as A in order ab and as B in order ba.
        judged("k1", 0, 1, "ab", "j1", "A"),
        judged("k1", 0, 1, "ab", "j2", "B"),
        judged("k1", 0, 1, "ab", AGGREGATOR, "A"),
        judged("k1", 0, 1, "ba", "j1", "B"),
        judged("k1", 0, 1, "ba", "j2", "tie"),  # a tie disagrees
        judged("k1", 0, 1, "ba", AGGREGATOR, "A"),
        # k1 (1, 2): both wrong, not a comparison the verifier decides.
        judged("k1", 1, 2, "ab", "j1", "A"),
        judged("k1", 1, 2, "ab", AGGREGATOR, "A"),
        # k2 (0, 1): sample 1 is correct; j2 did not judge it (disagrees).
        judged("k2", 0, 1, "ab", "j1", "B"),
        judged("k2", 0, 1, "ab", AGGREGATOR, "B"),
        # d1 (0, 1): j1 abstains (disagrees).
        judged("d1", 0, 1, "ab", "j1", None),
        judged("d1", 0, 1, "ab", "j2", "A"),
        judged("d1", 0, 1, "ab", AGGREGATOR, "A"),
    ]
    stats = preference_accuracy(KEPT, DROPPED, audit, verify, VerdictRules(aggregator=True))
    assert stats["comparisons"] == 4
    assert stats["judge_agreement"] == {"j1": 0.75, "j2": 0.25}
    assert stats["ensemble_agreement"] == 0.75
    judges_only = [j for j in audit if j["judge"] != AGGREGATOR]
    combined = preference_accuracy(KEPT, DROPPED, judges_only, verify, VerdictRules())
    # Combined: k1 ab A+B is a tie, k1 ba B+tie is B, k2 ab B, d1 ab A (the abstention is left out).
    assert combined["judge_agreement"] == stats["judge_agreement"]
    assert combined["ensemble_agreement"] == 0.75


def test_logprob_verdicts_pick_answer_a_above_one_half():
    audit = [
        judged("d1", 0, 1, "ba", "j1", p_a=0.3),  # sample 0 (correct) is B: right
        judged("d1", 0, 1, "ba", "j2", p_a=0.5),  # even: a tie
        judged("d1", 0, 1, "ab", "j1", p_a=0.7),  # right
        judged("d1", 0, 1, "ab", "j2", p_a=0.2),  # wrong; the mean 0.45 picks B: wrong
    ]
    stats = preference_accuracy([], DROPPED, audit, verify, VerdictRules())
    assert stats["comparisons"] == 2
    assert stats["judge_agreement"] == {"j1": 1.0, "j2": 0.0}
    assert stats["ensemble_agreement"] == 0.5  # ba: mean 0.4 picks B, right


def test_pair_agreement_reads_both_orders_so_a_position_bias_cancels():
    audit = [
        # d1 (0, 1): sample 0 is correct. j1 always prefers Answer A, but less when it is wrong.
        judged("d1", 0, 1, "ab", "j1", p_a=0.9),
        judged("d1", 0, 1, "ba", "j1", p_a=0.7),  # (0.9 + 0.3) / 2 = 0.6 favours sample 0
        judged("d1", 0, 1, "ab", "j2", p_a=0.6),
        judged("d1", 0, 1, "ba", "j2", p_a=0.8),  # (0.6 + 0.2) / 2 = 0.4 favours sample 1
        judged("d1", 0, 1, "ab", AGGREGATOR, p_a=0.5),  # a tie in one order
        judged("d1", 0, 1, "ba", AGGREGATOR, p_a=0.4),  # (0.5 + 0.6) / 2 favours sample 0
        judged("k3", 0, 1, "ab", "j1", p_a=0.9),  # both samples wrong: not counted
    ]
    stats = preference_accuracy(KEPT, DROPPED, audit, verify, VerdictRules(aggregator=True))
    assert stats["judge_agreement"] == {"j1": 0.5, "j2": 0.5}  # each order alone
    assert stats["split_pairs"] == 1
    assert stats["judge_pair_agreement"] == {"j1": 1.0, "j2": 0.0}
    assert stats["ensemble_pair_agreement"] == 1.0
    one_order = [j for j in audit if j["order"] == "ab"]
    stats = preference_accuracy(KEPT, DROPPED, one_order, verify, VerdictRules(aggregator=True))
    assert stats["ensemble_pair_agreement"] == 0.0  # both_required: one order alone abstains


def test_the_final_verdict_of_an_abstaining_aggregator_judge_follows_the_fallback():
    audit = [
        judged("d1", 0, 1, "ab", "j1", "A"),  # sample 0 (correct) is A: right
        judged("d1", 0, 1, "ab", AGGREGATOR, None),
    ]
    rules = VerdictRules(aggregator=True)
    assert preference_accuracy([], DROPPED, audit, verify, rules)["ensemble_agreement"] == 1.0
    rules = VerdictRules(aggregator=True, aggregator_fallback="abstain")
    assert preference_accuracy([], DROPPED, audit, verify, rules)["ensemble_agreement"] == 0.0


@pytest.mark.parametrize(("correct", "total"), [(63, 300), (0, 10), (10, 10), (1, 3), (150, 300)])
def test_wilson_interval_matches_scipys(correct, total):
    expected = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(correct, total)
    assert low == pytest.approx(expected.low, abs=1e-6)
    assert high == pytest.approx(expected.high, abs=1e-6)


def test_wilson_interval_of_no_answers_is_an_error():
    with pytest.raises(ValueError, match="at least one answer"):
        wilson_interval(0, 0)
