import pytest

from moaa_ray.core.moa import (
    TruncatedAnswer,
    finish_row,
    generation_targets,
    layer_requests,
    new_state,
    parse_references,
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


def test_each_layer_may_name_its_own_proposers():
    plan = plan_layers([], "e", 3, layer_proposers=[["a", "b", "c"], ["a", "d"]])
    assert plan.layers == (("a", "b", "c"), ("a", "d"), ("e",))
    assert plan.models == ("a", "b", "c", "d", "e")


@pytest.mark.parametrize("layers", [[["a"]], [["a"], []], [["a"], ["b"], ["c"]]])
def test_layer_proposers_must_fill_every_proposer_layer(layers):
    with pytest.raises(ValueError, match="each of its num_layers - 1"):
        plan_layers([], "e", 3, layer_proposers=layers)


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


@pytest.mark.parametrize(
    "references",
    [
        ["68"],
        ["first", " second\n", "", "third"],
        ["Steps:\n1. add\n3. carry", "2. starts with its own number", "multi\n\nline\n"],
    ],
)
@pytest.mark.parametrize("system", [None, "Be kind.\nResponses from models:\n1. not these"])
def test_references_parse_back_from_the_system_message(references, system):
    context = [{"role": "user", "content": "Q"}]
    if system is not None:
        context.insert(0, {"role": "system", "content": system})
    out = with_references(context, references, TEMPLATE)
    assert parse_references(out[0]["content"]) == references


def test_a_reference_with_a_line_numbered_as_the_next_one_is_split_there():
    out = with_references([{"role": "user", "content": "Q"}], ["Steps:\n2. add", "b"], TEMPLATE)
    # The documented ambiguity: "2. add" starts reference 2, so the real one reads as its line.
    assert parse_references(out[0]["content"]) == ["Steps:", "add\n2. b"]


@pytest.mark.parametrize("text", ["", "Be kind.", "Responses from models:\n"])
def test_text_without_references_parses_to_no_references(text):
    assert parse_references(text) == []


def run_layers(state, plan, answer, min_references=None):
    """Drive a state through every turn and layer with a fake answer function."""
    for turn in range(len(state["targets"])):
        for layer in range(len(plan.layers)):
            requests = layer_requests(state, plan, turn, layer, TEMPLATE, min_references)
            for slot, model, prompt in requests:
                text, error = answer(turn, layer, slot, model, prompt.messages())
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


def test_a_failed_proposer_call_fails_the_row_for_a_retry_by_default():
    plan = plan_layers(["p1", "p2"], "agg", 2)
    state = new_state("id", [{"role": "user", "content": "Q"}], "src")
    called = []

    def answer(turn, layer, slot, model, conversation):
        called.append(layer)
        return ("good", None) if model == "p1" else (None, "timeout")

    run_layers(state, plan, answer)
    assert 1 not in called  # the aggregator never sees a reduced set of references
    assert state["failed"]
    with pytest.raises(ValueError, match="1 of 2 previous-layer calls failed"):
        finish_row(state, plan)


def test_min_references_allows_an_answer_with_fewer_references_and_counts_the_drops():
    plan = plan_layers(["p1", "p2", "p3"], "agg", 2)
    state = new_state("id", [{"role": "user", "content": "Q"}], "src")
    aggregator_prompts = []

    def answer(turn, layer, slot, model, conversation):
        if layer == 1:
            aggregator_prompts.append(conversation[0]["content"])
            return "final", None
        return {"p1": ("good", None), "p2": (None, "timeout"), "p3": ("  ", None)}[model]

    run_layers(state, plan, answer, min_references=1)
    row = finish_row(state, plan)
    assert row["dropped_references"] == 2
    assert "1. good" in aggregator_prompts[0] and "2." not in aggregator_prompts[0]
    assert not state.get("failed")


def test_empty_answers_are_dropped_without_failing_the_row():
    plan = plan_layers(["p1", "p2"], "agg", 2)
    state = new_state("id", [{"role": "user", "content": "Q"}], "src")
    run_layers(state, plan, lambda t, layer, s, model, c: ("x" if model != "p2" else "", None))
    assert finish_row(state, plan)["dropped_references"] == 1


def test_row_is_rejected_not_retried_when_every_proposal_is_empty():
    plan = plan_layers(["p1"], "agg", 2)
    state = new_state("id", [{"role": "user", "content": "Q"}], "src")
    run_layers(state, plan, lambda *a: ("", None))
    with pytest.raises(ValueError, match="0 usable previous-layer answers"):
        finish_row(state, plan)
    assert not state.get("failed")


def test_row_fails_when_every_proposal_failed():
    plan = plan_layers(["p1"], "agg", 2)
    state = new_state("id", [{"role": "user", "content": "Q"}], "src")
    run_layers(state, plan, lambda *a: (None, "boom"))
    with pytest.raises(ValueError, match="1 of 1 previous-layer calls failed"):
        finish_row(state, plan)
    assert state["failed"]


def test_row_fails_when_the_aggregator_failed():
    plan = plan_layers(["p1"], "agg", 2)
    state = new_state("id", [{"role": "user", "content": "Q"}], "src")
    run_layers(state, plan, lambda turn, layer, *a: ("x", None) if layer == 0 else (None, "oom"))
    with pytest.raises(ValueError, match="aggregator failed: oom"):
        finish_row(state, plan)
    assert state["failed"]


def test_a_layer_of_its_own_proposers_reads_the_previous_layers_answers():
    plan = plan_layers([], "agg", 3, layer_proposers=[["p1", "p2", "p3"], ["p1", "p4"]])
    state = new_state("id", [{"role": "user", "content": "Q"}], "src")
    calls = []

    def answer(turn, layer, slot, model, conversation):
        calls.append((layer, model, conversation[0]["content"] if layer else None))
        return f"{model}@{layer}", None

    run_layers(state, plan, answer)
    assert [(layer, model) for layer, model, _ in calls] == [
        (0, "p1"), (0, "p2"), (0, "p3"), (1, "p1"), (1, "p4"), (2, "agg")
    ]  # fmt: skip
    second_layer = calls[3][2]
    assert all(f"p{i}@0" in second_layer for i in (1, 2, 3))
    aggregator = calls[5][2]
    assert "p1@1" in aggregator and "p4@1" in aggregator and "p2@0" not in aggregator
    assert finish_row(state, plan)["messages"][-1]["content"] == "agg@2"


def test_a_cut_final_answer_is_no_sft_target_unless_kept_and_cut_references_are_counted():
    plan = plan_layers(["p1", "p2"], "agg", 2)

    def run(final_cut: bool) -> dict:
        state = new_state("id", [{"role": "user", "content": "Q"}], "src")
        for layer in range(2):
            for slot, model, _ in layer_requests(state, plan, 0, layer, TEMPLATE):
                cut = final_cut if layer == 1 else model == "p2"
                record_output(state, 0, layer, slot, model, f"{model} says", None, truncated=cut)
        return state

    row = finish_row(run(final_cut=False), plan)
    assert row["truncated_references"] == 1 and row["dropped_references"] == 0
    assert [p["truncated"] for p in row["proposals"]] == [False, True, False]
    with pytest.raises(TruncatedAnswer, match="cut at max_new_tokens"):
        finish_row(run(final_cut=True), plan)
    kept = finish_row(run(final_cut=True), plan, keep_truncated=True)
    assert kept["messages"][-1] == {"role": "assistant", "content": "agg says"}
