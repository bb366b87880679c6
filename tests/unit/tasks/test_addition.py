"""The toy addition task: verifier, splits and the role functions of the function engine."""

import random

import pytest

from moaa_ray.core.criteria import Criterion
from moaa_ray.core.judging import parse_verdict, render_aggregator_prompt, render_judge_prompt
from moaa_ray.core.moa import with_references
from moaa_ray.tasks.addition import (
    first_integer,
    majority_judge,
    make_prompt,
    plurality_aggregator,
    splits,
    verifier_judge,
    verifier_reward,
    verify,
)

QUESTION = [{"role": "user", "content": make_prompt(31, 37)}]
CRITERIA = [Criterion("accuracy", "The answer is correct.")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 68.", 68),
        ("-3", -3),
        ("68", 68),
        ("six", None),
        ("", None),
        ("12 apples and 68", 12),
    ],
)
def test_first_integer(text, expected):
    assert first_integer(text) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The answer is 68.", True),
        ("68", True),
        ("-68", False),
        ("sixty-eight", False),
        ("", False),
        ("12 apples and 68", False),
    ],
)
def test_verify_reads_the_first_integer_of_the_answer(answer, expected):
    assert verify(QUESTION, answer) is expected


def test_verify_checks_the_last_user_question_and_only_an_addition_question():
    conversation = [
        *QUESTION,
        {"role": "assistant", "content": "68"},
        {"role": "user", "content": "What is 1 + 1?"},
    ]
    assert verify(conversation, "2") is True and verify(conversation, "68") is False
    assert verify([{"role": "user", "content": "Hello"}], "68") is None
    assert verify([], "68") is None


def test_splits_are_disjoint_cover_every_pair_and_are_deterministic():
    parts = splits()
    assert parts == splits()
    assert {name: len(pairs) for name, pairs in parts.items()} == {
        "eval": 500,
        "sft": 1000,
        "dpo": 1500,
        "pretrain": 7000,
    }
    every = [pair for pairs in parts.values() for pair in pairs]
    assert len(set(every)) == len(every) == 100 * 100
    assert set(every) == {(a, b) for a in range(100) for b in range(100)}
    assert splits(seed=1)["eval"] != parts["eval"]


def judge(answer_a: str, answer_b: str, seed: int, **noise) -> str | None:
    prompt = render_judge_prompt(QUESTION, answer_a, answer_b, CRITERIA)
    return parse_verdict(verifier_judge(prompt, rng=random.Random(seed), **noise))


@pytest.mark.parametrize(
    ("answer_a", "answer_b", "expected"),
    [
        ("68", "67", "A"),
        ("It is 67", "The sum is 68.", "B"),
        ("68", "68", "tie"),
        ("1", "2", "tie"),
        ("I do not know", "68", "B"),
    ],
)
def test_the_noiseless_verifier_judge_is_always_right(answer_a, answer_b, expected):
    assert {judge(answer_a, answer_b, seed) for seed in range(50)} == {expected}


def test_the_verifier_judge_flips_strict_verdicts_at_the_flip_rate():
    pairs = [("68", "67"), ("67", "68")] * 1000
    flips = sum(
        judge(a, b, seed, flip_rate=0.2) != ("A" if a == "68" else "B")
        for seed, (a, b) in enumerate(pairs)
    )
    assert abs(flips / len(pairs) - 0.2) <= 0.03


def test_the_verifier_judge_breaks_a_flipped_tie_at_random():
    verdicts = [judge("68", "68", seed, flip_rate=1.0) for seed in range(400)]
    assert "tie" not in verdicts and 0.4 < verdicts.count("A") / len(verdicts) < 0.6


def test_the_verifier_judge_answers_a_at_the_position_bias():
    verdicts = [judge("67", "68", seed, position_bias=0.3) for seed in range(2000)]
    assert abs(verdicts.count("A") / len(verdicts) - 0.3) <= 0.04
    assert set(verdicts) == {"A", "B"}


def test_the_verifier_judge_ends_with_a_verdict_line_and_states_the_sum():
    prompt = render_judge_prompt(QUESTION, "68", "six", CRITERIA)
    reply = verifier_judge(prompt, rng=random.Random(0))
    assert reply.splitlines()[-1] == "Verdict: A"
    assert "68" in reply and "no number" in reply


@pytest.mark.parametrize("rates", [{"flip_rate": -0.1}, {"flip_rate": 1.5}, {"position_bias": 2}])
def test_the_verifier_judge_checks_its_rates(rates):
    with pytest.raises(ValueError, match="must lie in"):
        judge("68", "67", 0, **rates)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "What is 31 + 37?"}],
        render_judge_prompt([{"role": "user", "content": "Say hi"}], "hi", "hello", CRITERIA),
        [],
    ],
)
def test_the_verifier_judge_rejects_what_is_no_judge_prompt_about_addition(messages):
    with pytest.raises(ValueError, match="judge prompt"):
        verifier_judge(messages, rng=random.Random(0))


def aggregate(evaluations: list[str]) -> str | None:
    prompt = render_aggregator_prompt(QUESTION, "68", "67", CRITERIA, evaluations)
    return parse_verdict(majority_judge(prompt, rng=random.Random(0)))


@pytest.mark.parametrize(
    ("evaluations", "expected"),
    [
        (["Verdict: B", "A looks right.\nVerdict: A", "Verdict: B"], "B"),
        (["Verdict: A", "Verdict: B"], "tie"),
        (["Verdict: A", "Verdict: B", "Verdict: tie"], "tie"),
        (["Verdict: tie", "Verdict: tie", "Verdict: A"], "tie"),
        (["no idea", "Verdict: A"], "A"),
        (["no idea", "none either"], "tie"),
    ],
)
def test_the_majority_judge_returns_the_plurality_verdict(evaluations, expected):
    assert aggregate(evaluations) == expected


def test_the_majority_judge_counts_votes_and_never_checks_the_answers():
    # Answer A (68) is right, but the judges say B: the aggregator follows them.
    assert aggregate(["Verdict: B", "Verdict: B", "Verdict: A"]) == "B"


def test_the_majority_judge_needs_judge_evaluations():
    with pytest.raises(ValueError, match="aggregator prompt"):
        majority_judge(render_judge_prompt(QUESTION, "68", "67", CRITERIA), rng=random.Random(0))


@pytest.mark.parametrize(
    ("references", "expected"),
    [
        (["68", "67", "68"], "68"),
        (["68", "67", "66"], "68"),
        (["67", "The sum is 68.", "68", "67"], "67"),
        (["no", "It is 68", "none"], "68"),
        (["no", "idea"], "I do not know."),
    ],
)
def test_the_plurality_aggregator_answers_the_most_common_integer(references, expected):
    messages = with_references(QUESTION, references, "aggregate.txt")
    assert plurality_aggregator(messages, rng=random.Random(0)) == expected


def test_the_plurality_aggregator_reads_references_after_an_existing_system_message():
    context = [{"role": "system", "content": "Answer 1 + 1 = 2 briefly."}, *QUESTION]
    messages = with_references(context, ["68", "67", "68"], "aggregate.txt")
    assert plurality_aggregator(messages, rng=random.Random(0)) == "68"


def test_the_plurality_aggregator_needs_references():
    with pytest.raises(ValueError, match="references"):
        plurality_aggregator(QUESTION, rng=random.Random(0))


def test_the_verifier_reward_scores_the_last_answer():
    def reward(answer: str) -> float:
        return verifier_reward(
            [*QUESTION, {"role": "assistant", "content": answer}], rng=random.Random(0)
        )

    assert (reward("68"), reward("It is 68."), reward("67"), reward("")) == (1.0, 1.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        (QUESTION, "ending with an assistant message"),
        ([], "ending with an assistant message"),
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "68"}], "A \\+ B"),
    ],
)
def test_the_verifier_reward_rejects_what_it_cannot_verify(messages, match):
    with pytest.raises(ValueError, match=match):
        verifier_reward(messages, rng=random.Random(0))
