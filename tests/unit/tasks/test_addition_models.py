"""The addition task models' noisy labels and tokenizer (no training)."""

import random

import pytest

from moaa_ray.tasks.addition_models import ASSISTANT, END, USER, build_task_tokenizer, noisy_label

PAIRS = [(0, 0), (23, 45), (5, 4), (99, 1), (12, 7), (250, 750)]  # totals end in 0, 8, 9, ...


@pytest.mark.parametrize("label_accuracy", [0.35, 0.5, 0.65])
def test_noisy_label_is_right_as_often_as_its_label_accuracy(label_accuracy):
    rng = random.Random(0)
    draws = 5000
    right = 0
    for index in range(draws):
        a, b = PAIRS[index % len(PAIRS)]
        right += noisy_label(a, b, label_accuracy, rng) == a + b
    assert right / draws == pytest.approx(label_accuracy, abs=0.02)


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_a_wrong_label_changes_only_the_last_digit(a, b):
    rng = random.Random(1)
    labels = [noisy_label(a, b, 0.0, rng) for _ in range(200)]
    assert all(label != a + b and label >= 0 for label in labels)
    assert {label // 10 for label in labels} == {(a + b) // 10}
    assert len(set(labels)) == 9  # every other last digit shows up
    assert {noisy_label(a, b, 1.0, rng) for _ in range(20)} == {a + b}


@pytest.fixture(scope="module")
def tokenizer():
    return build_task_tokenizer()


@pytest.mark.parametrize("text", ["What is 23 + 45?", "68"])
def test_tokenizer_round_trips(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_words_are_single_tokens_and_digits_their_own(tokenizer):
    ids = tokenizer("What is 23 + 45?", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["What is ", "2", "3", " + ", "4", "5", "?"]
    digits = tokenizer("0123456789", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(digits) == list("0123456789")


def test_chat_template_renders_roles_and_masks_the_assistant_tokens(tokenizer):
    conversation = [
        {"role": "user", "content": "What is 1 + 2?"},
        {"role": "assistant", "content": "3"},
    ]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert text == f"{USER}What is 1 + 2?{END}{ASSISTANT}3{END}"
    encoded = tokenizer.apply_chat_template(
        conversation, return_dict=True, return_assistant_tokens_mask=True
    )
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[-3:] == [ASSISTANT, "3", END]
    assert encoded["assistant_masks"] == [0] * (len(tokens) - 2) + [1, 1]  # "3" and its <|end|>
