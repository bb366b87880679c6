"""The preference stage's steps without a cluster: a pairwise ranker's, a scalar reward model's and
a likelihood's rewards."""

from __future__ import annotations

import math

import pytest

from moaa_ray.core.tournament import new_tournament, record_samples
from moaa_ray.pipeline.preference_graph import RewardModelStep
from tests.support.fakes import FakeRanker

PROMPT = [{"role": "user", "content": "What is 2 + 2?"}]
SAMPLES = ["4", "5", "four"]
# PairRM's logit that the first answer beats the second, one per order (not antisymmetric).
LOGITS = {
    ("4", "5"): 2.0,
    ("5", "4"): -1.0,
    ("4", "four"): 0.5,
    ("four", "4"): 0.1,
    ("5", "four"): -3.0,
    ("four", "5"): 2.0,
}


def tournament() -> dict:
    state = new_tournament("id", PROMPT, "src")
    record_samples(state, SAMPLES)
    return state


def test_pairrm_rewards_are_llm_blenders_ranking_scores():
    pool = FakeRanker("pairrm", LOGITS)
    state = tournament()
    RewardModelStep(pool, "pairwise_ranker")([state])
    [(method, items)] = pool.calls
    assert method == "compare" and len(items) == 6  # every pair, both orders
    assert {(a, b) for _, a, b in items} == set(LOGITS) and all(p == PROMPT for p, _, _ in items)
    # llm-blender's get_scores_from_cmps (max_logits): mean over j of cmp[i][j] - cmp[j][i].
    k = len(SAMPLES)
    expected = [
        sum(LOGITS[(x, y)] - LOGITS[(y, x)] for y in SAMPLES if y != x) / k for x in SAMPLES
    ]
    assert state["rewards"] == pytest.approx(expected)
    assert min(state["rewards"]) == state["rewards"][1]  # "5" loses both of its pairs
    # The table kept for SPPO and GPO: [i][j] the logit that i beats j shown first.
    assert state["preference_table"] == [
        [LOGITS.get((a, b), 0.0) for b in SAMPLES] for a in SAMPLES
    ]


def test_a_failed_comparison_fails_the_row_instead_of_scoring_it():
    state = tournament()
    ranker = FakeRanker("pairrm", LOGITS, fail=("5", "four"))
    RewardModelStep(ranker, "pairwise_ranker")([state])
    assert state["failed"] and state["rewards"] is state["preference_table"] is None


def test_scalar_rewards_are_each_samples_score():
    pool = FakeRanker("pairrm", LOGITS)
    state = tournament()
    RewardModelStep(pool, "scalar_rm")([state])
    [(method, items)] = pool.calls
    assert method == "score"
    assert items == [[*PROMPT, {"role": "assistant", "content": s}] for s in SAMPLES]
    assert state["rewards"] == [0.25, 0.25, 0.25]


def test_likelihood_rewards_are_each_samples_mean_log_probability():
    pool = FakeRanker("pairrm", LOGITS)
    state = tournament()
    RewardModelStep(pool, "likelihood")([state])
    [(method, items)] = pool.calls
    assert method == "answer_logprobs"
    assert items == [[*PROMPT, {"role": "assistant", "content": s}] for s in SAMPLES]
    assert state["rewards"] == [-1.0, -1.0, -4.0]  # the sample itself, not the judge prompt


def test_a_gpm_scores_each_prompts_samples_in_one_table():
    pool = FakeRanker("gpm", LOGITS)
    states = [tournament(), tournament()]
    RewardModelStep(pool, "pairwise_ranker")(states)
    [(method, items)] = pool.calls
    assert method == "preference_table" and items == [(PROMPT, SAMPLES), (PROMPT, SAMPLES)]
    table = [[LOGITS.get((a, b), 0.0) for b in SAMPLES] for a in SAMPLES]
    assert all(s["preference_table"] == table for s in states)
    # rank_gp.py's Ranker (max_logits): mean over j of table[i][j] - table[j][i].
    k = len(SAMPLES)
    expected = [sum(table[i][j] - table[j][i] for j in range(k)) / k for i in range(k)]
    assert states[0]["rewards"] == pytest.approx(expected)


def test_a_failed_table_fails_the_row_and_keeps_no_table():
    states = [tournament(), new_tournament("other", PROMPT, "src")]
    record_samples(states[1], ["4", "5"])
    RewardModelStep(FakeRanker("gpm", LOGITS, fail=("5", "four")), "pairwise_ranker")(states)
    assert states[0]["failed"] and states[0]["rewards"] is states[0]["preference_table"] is None
    assert not states[1].get("failed")
    assert states[1]["preference_table"] == [[0.0, 2.0], [-1.0, 0.0]]  # its samples: "4" and "5"


def test_a_rankers_table_is_audited_as_judgments_in_both_orders():
    state = tournament()
    RewardModelStep(FakeRanker("gpm", LOGITS), "pairwise_ranker")([state])
    table = state["preference_table"]
    judgments = {(tuple(j["pair"]), j["order"]): j for j in state["judgments"]}
    assert set(judgments) == {(p, o) for p in [(0, 1), (0, 2), (1, 2)] for o in ("ab", "ba")}
    for (x, y), order in judgments:
        judgment = judgments[((x, y), order)]
        first, second = (x, y) if order == "ab" else (y, x)
        margin = table[first][second] - table[second][first]
        assert judgment["judge"] == "ranker" and judgment["raw"] is None
        assert judgment["p_a"] == pytest.approx(1 / (1 + math.exp(-margin)))
        assert judgment["verdict"] == ("A" if margin > 0 else "B")
