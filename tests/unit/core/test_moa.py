import pytest

from moaa_ray.core.moa import (
    finish_row,
    generation_targets,
    layer_requests,
    new_state,
    plan_layers,
    record_output,
    render_references,
    with_references,
)

TEMPLATE = "aggregate.txt"


def test_plan_repeats_proposers_then_one_aggregator():
    plan = plan_layers(["a", "b"], "c", num_layers=3)
    assert plan.layers == (("a", "b"), ("a", "b"), ("c",))
    assert plan.models == ("a", "b", "c")


def test_plan_reuses_a_model_that_is_proposer_and_aggregator():
    assert plan_layers(["a", "b"], "a", 2).models == ("a", "b")


def test_plan_needs_two_layers():
    with pytest.raises(ValueError):
        plan_layers(["a"], "b", 1)


def test_targets_regenerate_assistant_turns_and_answer_a_trailing_user_turn():
    msgs = [
        {"role": "user", "content": "1"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "2"},
    ]
    assert generation_targets(msgs) == [1, 3]


def test_references_are_numbered_and_appended_to_an_existing_system_message():
    context = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Q"}]
    out = with_references(context, ["first", "second"], TEMPLATE)
    assert out[0]["content"].startswith("Be kind.\n\n")
    assert "1. first\n2. second" in out[0]["content"]
    assert out[1:] == context[1:]
    assert render_references(["x"]) == "1. x"


def test_references_create_a_system_message_when_none_exists():
    out = with_references([{"role": "user", "content": "Q"}], ["r"], TEMPLATE)
    assert out[0]["role"] == "system" and "1. r" in out[0]["content"]


def run_layers(state, plan, answer):
    """Drive a state through every turn and layer with a fake answer function."""
    for turn in range(len(state["targets"])):
        for layer in range(len(plan.layers)):
            for slot, model, conversation in layer_requests(state, plan, turn, layer, TEMPLATE):
                text, error = answer(turn, layer, slot, model, conversation)
                record_output(state, turn, layer, slot, model, text, error)


def test_multi_turn_context_uses_earlier_regenerated_turns():
    plan = plan_layers(["p1", "p2"], "agg", 2)
    messages = [
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "old1"},
        {"role": "user", "content": "U2"},
        {"role": "assistant", "content": "old2"},
    ]
    state = new_state("id", messages, "src")
    seen = []

    def answer(turn, layer, slot, model, conversation):
        seen.append((turn, layer, conversation))
        return f"{model}-t{turn}", None

    run_layers(state, plan, answer)
    row = finish_row(state, plan)
    assert [m["content"] for m in row["messages"]] == ["U1", "agg-t0", "U2", "agg-t1"]
    turn1_proposer_context = next(c for t, layer, c in seen if t == 1 and layer == 0)
    assert [m["content"] for m in turn1_proposer_context] == ["U1", "agg-t0", "U2"]
    aggregator_context = next(c for t, layer, c in seen if t == 0 and layer == 1)
    assert (
        "p1-t0" in aggregator_context[0]["content"] and "p2-t0" in aggregator_context[0]["content"]
    )


def test_failed_and_empty_proposals_are_dropped_from_references_and_counted():
    plan = plan_layers(["p1", "p2", "p3"], "agg", 2)
    state = new_state("id", [{"role": "user", "content": "Q"}], "src")
    aggregator_prompts = []

    def answer(turn, layer, slot, model, conversation):
        if layer == 1:
            aggregator_prompts.append(conversation[0]["content"])
            return "final", None
        return {"p1": ("good", None), "p2": (None, "timeout"), "p3": ("  ", None)}[model]

    run_layers(state, plan, answer)
    row = finish_row(state, plan)
    assert row["dropped_references"] == 2
    assert "1. good" in aggregator_prompts[0] and "2." not in aggregator_prompts[0]


def test_row_fails_when_every_proposal_failed():
    plan = plan_layers(["p1"], "agg", 2)
    state = new_state("id", [{"role": "user", "content": "Q"}], "src")
    run_layers(state, plan, lambda *a: (None, "boom"))
    with pytest.raises(ValueError, match="every previous-layer answer failed"):
        finish_row(state, plan)


def test_row_fails_when_the_aggregator_failed():
    plan = plan_layers(["p1"], "agg", 2)
    state = new_state("id", [{"role": "user", "content": "Q"}], "src")
    run_layers(state, plan, lambda turn, layer, *a: ("x", None) if layer == 0 else (None, "oom"))
    with pytest.raises(ValueError, match="aggregator failed: oom"):
        finish_row(state, plan)
