"""SFT targets from proposers' answers (MoAA's SFT-data ablation), without a cluster."""

import pytest

from moaa_ray.core.moa import TruncatedAnswer, new_state, plan_layers, record_output
from moaa_ray.core.teachers import (
    draw_teacher,
    prompt_row_id,
    record_rewards,
    scoring_requests,
    teacher_rows,
)

PLAN = plan_layers(["a", "b", "a"], None, num_layers=2)  # one model in two slots


def answered(row_id="r1", answers=("A0", "B1", "A2"), **outputs):
    """A single-turn row whose proposers gave ``answers`` (None: a failed call)."""
    state = new_state(row_id, [{"role": "user", "content": f"Q {row_id}"}], "src#0")
    for slot, (model, text) in enumerate(zip(PLAN.layers[0], answers, strict=True)):
        error = None if text is not None else "timeout"
        record_output(state, 0, 0, slot, model, text, error, **outputs.get(str(slot), {}))
    return state


def rows(state, target, keep_truncated=False, seed=0):
    return teacher_rows(state, PLAN, target, keep_truncated, seed)


def test_a_plan_without_aggregator_ends_with_its_proposers():
    assert PLAN.layers == (("a", "b", "a"),) and PLAN.models == ("a", "b")
    assert not PLAN.aggregated and PLAN.proposer_layers == 1
    layered = plan_layers([], None, 3, layer_proposers=[["a", "b"], ["c"]])
    assert layered.layers == (("a", "b"), ("c",)) and layered.proposer_layers == 2


def test_all_proposers_writes_one_row_per_answer_with_ids_unique_per_slot():
    written = rows(answered(), "all_proposers")
    assert [r["row_id"] for r in written] == ["r1#0-a", "r1#1-b", "r1#2-a"]
    assert {prompt_row_id(r["row_id"]) for r in written} == {"r1"}
    assert [r["teacher"] for r in written] == ["a", "b", "a"]
    assert [r["messages"] for r in written][1] == [
        {"role": "user", "content": "Q r1"},
        {"role": "assistant", "content": "B1"},
    ]
    assert all(r["teacher_scores"] is None and len(r["proposals"]) == 3 for r in written)


def test_random_proposer_draws_by_row_id_and_seed_the_same_on_every_run():
    states = [answered(f"row{i}") for i in range(40)]
    first = [rows(s, "random_proposer")[0]["messages"][-1]["content"] for s in states]
    again = [
        rows(answered(f"row{i}"), "random_proposer")[0]["messages"][-1]["content"]
        for i in range(40)
    ]
    assert first == again  # a resumed run writes the same rows
    assert set(first) == {"A0", "B1", "A2"}  # every slot is drawn
    reseeded = [rows(s, "random_proposer", seed=1)[0]["messages"][-1]["content"] for s in states]
    assert reseeded != first
    assert [draw_teacher("row0", 0, 3)] * 2 == [draw_teacher("row0", 0, 3) for _ in range(2)]
    (row,) = rows(states[0], "random_proposer")
    assert row["row_id"] == "row0" and row["teacher"] == {"A0": "a", "B1": "b", "A2": "a"}[first[0]]


def test_random_proposer_draws_among_the_usable_answers_only():
    for i in range(10):
        state = answered(f"r{i}", answers=("A0", "", "A2"), **{"2": {"truncated": True}})
        (row,) = rows(state, "random_proposer")
        assert row["messages"][-1]["content"] == "A0" and row["dropped_references"] == 1


def test_best_of_n_keeps_the_best_scored_answer_and_records_every_score():
    state = answered()
    requests = scoring_requests(state, PLAN, keep_truncated=False)
    assert [slot for slot, _ in requests] == [0, 1, 2]
    assert requests[1][1] == [
        {"role": "user", "content": "Q r1"},
        {"role": "assistant", "content": "B1"},
    ]
    record_rewards(state, PLAN, {0: 0.5, 1: 2.0, 2: 2.0})
    (row,) = rows(state, "best_of_n")
    assert (row["teacher"], row["messages"][-1]["content"]) == ("b", "B1")  # the first of a tie
    assert row["teacher_scores"] == [0.5, 2.0, 2.0]


def test_best_of_n_scores_only_answers_that_may_be_targets():
    state = answered(answers=("A0", "", "A2"), **{"0": {"truncated": True}})
    assert [slot for slot, _ in scoring_requests(state, PLAN, keep_truncated=False)] == [2]
    record_rewards(state, PLAN, {2: -1.0})
    (row,) = rows(state, "best_of_n")
    assert row["messages"][-1]["content"] == "A2" and row["teacher_scores"] == [None, None, -1.0]
    with pytest.raises(ValueError, match="not scored"):
        rows(answered(), "best_of_n")


def test_a_failed_proposer_call_fails_the_row_for_a_retry():
    state = answered(answers=("A0", None, "A2"))
    assert scoring_requests(state, PLAN, keep_truncated=False) == []
    with pytest.raises(ValueError, match="proposer b failed: timeout"):
        rows(state, "all_proposers")
    assert state["failed"]


def test_a_row_without_usable_answers_is_rejected_not_retried():
    empty = answered(answers=("", " ", ""))
    with pytest.raises(ValueError, match="empty"):
        rows(empty, "random_proposer")
    cut = {str(slot): {"truncated": True} for slot in range(3)}
    with pytest.raises(TruncatedAnswer):
        rows(answered(**cut), "all_proposers")
    assert len(rows(answered(**cut), "all_proposers", keep_truncated=True)) == 3
    assert not empty.get("failed")
