"""The facts task: questions, splits and the verifier."""

import json
from importlib import resources

import pytest

from moaa_ray.core.benchmarks import load_verified
from moaa_ray.tasks.facts import (
    SPLIT_SIZES,
    Fact,
    fact_questions,
    fact_splits,
    first_named,
    load_facts,
    question_rows,
    verify_fact,
)


def ask(prompt: str, reply: str) -> bool | None:
    return verify_fact([{"role": "user", "content": prompt}], reply)


@pytest.mark.parametrize(
    ("prompt", "reply", "expected"),
    [
        ("What is the capital of France?", "The capital of France is Paris.", True),
        ("What is the capital of France?", "paris", True),
        ("What is the capital of France?", "Rome, not Paris.", False),  # the first one named
        ("What is the capital of France?", "Marseille", False),
        ("What is the capital of France?", "Marseille, or Paris", True),  # only capitals compete
        ("What is the capital of France?", "I am not sure.", False),
        ("What is the capital of Colombia?", "Bogota", True),  # accents do not matter
        ("What is the capital of Ukraine?", "Kiev.", True),  # an alias counts
        ("What is the capital of the United States?", "Washington, D.C.", None),  # not asked
        ("What is the capital of United States?", "It is Washington, D.C.", True),
        ("Conakry is the capital of which country?", "Equatorial Guinea", False),
        ("Conakry is the capital of which country?", "Conakry is in Guinea.", True),
        ("What is the opposite of hot?", "The opposite of hot is cold.", True),
        ("What is the opposite of cold?", "The opposite of cold is hot.", True),
        ("What is the opposite of hot?", "The opposite of hot is warm.", False),
        ("Which chemical element has the symbol Fe?", "Fe is iron.", True),
        ("Which chemical element has the symbol Fe?", "Fe stands for ferrum, or tin.", False),
        ('What is the past tense of the verb "go"?', 'The past tense of "go" is "went".', True),
        ('What is the past tense of the verb "go"?', "goed", False),
        ("What is 2 + 2?", "4", None),
    ],
)
def test_verify_reads_the_first_answer_of_the_kind_the_reply_names(prompt, reply, expected):
    assert ask(prompt, reply) is expected


def test_verify_checks_the_last_user_message():
    conversation = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "What is the capital of Italy?"},
    ]
    assert verify_fact(conversation, "Rome") is True and verify_fact(conversation, "Paris") is False
    assert verify_fact([], "Paris") is None


def test_first_named_takes_the_earliest_and_longest_name_and_skips_the_ignored():
    names = ["Guinea", "Equatorial Guinea", "Niger", "Nigeria"]
    assert first_named("Nigeria, not Niger", names) == "nigeria"
    assert first_named("It is Equatorial Guinea.", names) == "equatorial guinea"
    assert first_named("Guinea-Bissau", names) == "guinea"  # punctuation separates words
    assert first_named("Niger then Guinea", names, ignored=["Niger"]) == "guinea"
    assert first_named("nothing here", names) is None


def test_a_fact_that_reads_both_ways_asks_two_questions():
    capital = Fact("capital", ("Ukraine",), ("Kyiv", "Kiev"))
    first, second = fact_questions(capital)
    assert first.prompt == "What is the capital of Ukraine?" and first.accepted == ("Kyiv", "Kiev")
    assert second.prompt == "Kyiv is the capital of which country?"
    assert second.accepted == ("Ukraine",) and second.shown == ("Kyiv", "Kiev")
    assert len(fact_questions(Fact("element", ("Fe",), ("iron",)))) == 1


def test_load_facts_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="line 2: kind must be one of"):
        load_facts('{"kind": "capital", "subject": "France", "answer": "Paris"}\n{"kind": "x"}')


def test_splits_hold_whole_facts_are_disjoint_and_deterministic():
    facts = load_facts()
    parts = fact_splits(facts)
    assert parts == fact_splits(facts) and fact_splits(facts, seed=1)["eval"] != parts["eval"]
    for name, size in SPLIT_SIZES.items():
        assert len(parts[name]) >= size
    prompts = [q.prompt for questions in parts.values() for q in questions]
    assert len(prompts) == len(set(prompts)) == sum(len(fact_questions(f)) for f in facts)
    # A capital held out is never asked the other way round in training.
    held_out = {q.accepted[0] for q in parts["eval"] if q.kind == "capital"}
    trained = {q.shown[0] for name in ("sft", "dpo") for q in parts[name] if q.kind == "country"}
    assert held_out and not held_out & trained


@pytest.mark.parametrize("split", ["eval", "sft", "dpo"])
def test_the_shipped_split_files_are_the_splits_and_every_prompt_verifies(split):
    text = resources.files("moaa_ray.data").joinpath(f"facts/{split}.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines()]
    assert rows == question_rows(fact_splits(load_facts())[split], split)
    assert all(ask(row["prompt"], row["answer"]) is True for row in rows)
    path = resources.files("moaa_ray.data").joinpath(f"facts/{split}.jsonl")
    # What `evaluate` reads as a verified benchmark.
    assert len(load_verified(str(path))) == len(rows)
