import pytest

from moaa_ray.core.context import CUT_MARKER, Prompt, PromptTooLong, cut_to, fit_parts


def render(parts):
    return [{"role": "user", "content": "Q? " + " | ".join(parts)}]


def characters(messages):
    return sum(len(m["content"]) for m in messages)


def test_a_prompt_that_fits_is_left_alone():
    prompt, cut = fit_parts(render, ["short", "also short"], characters, budget=100)
    assert prompt == render(["short", "also short"]) and cut == 0


def test_the_longest_parts_are_cut_first_to_one_length_each_with_the_marker():
    parts = ["a" * 10, "b" * 200, "c" * 300]
    prompt, cut = fit_parts(render, parts, characters, budget=300)
    text = prompt[0]["content"]
    assert cut == 2 and characters(prompt) <= 300
    kept = text[len("Q? ") :].split(" | ")
    assert kept[0] == "a" * 10  # under the cap: untouched
    assert kept[1].endswith(CUT_MARKER) and kept[2].endswith(CUT_MARKER)
    assert len(kept[1]) == len(kept[2])  # cut evenly
    # The cap is the largest that fits: one more character each would not.
    cap = len(kept[1]) - len(CUT_MARKER)
    assert characters(render([cut_to(p, cap + 1) for p in parts])) > 300


def test_fixed_text_is_never_cut_a_prompt_without_room_is_rejected():
    with pytest.raises(PromptTooLong, match="needs"):
        fit_parts(render, ["x" * 50], characters, budget=len("Q? ") + len(CUT_MARKER) - 1)
    with pytest.raises(PromptTooLong):
        fit_parts(Prompt.fixed(render(["long user prompt"])).render, [], characters, budget=5)


def test_a_fixed_prompt_renders_its_messages():
    messages = render(["x"])
    assert Prompt.fixed(messages).messages() == messages
    assert Prompt(render, ("a", "b")).messages() == render(["a", "b"])
