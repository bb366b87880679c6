import pytest

from moaa_ray.core.conversations import (
    conform,
    fold_system,
    merge_same_role,
    template_accepts_system,
)

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "Hi"}
ASSISTANT = {"role": "assistant", "content": "Hello."}


def test_the_system_text_opens_the_first_user_turn():
    assert fold_system([SYSTEM, USER, ASSISTANT]) == [
        {"role": "user", "content": "Be brief.\n\nHi"},
        ASSISTANT,
    ]
    assert fold_system([USER, ASSISTANT]) == [USER, ASSISTANT]
    assert fold_system([SYSTEM]) == [{"role": "user", "content": "Be brief."}]


def test_consecutive_turns_of_one_role_are_joined():
    second = {"role": "user", "content": "Still there?"}
    assert merge_same_role([USER, second, ASSISTANT]) == [
        {"role": "user", "content": "Hi\n\nStill there?"},
        ASSISTANT,
    ]
    original = [USER, ASSISTANT]
    assert merge_same_role(original) == original and merge_same_role(original) is not original


def test_conform_folds_only_where_the_template_refuses_a_system_message():
    assert conform([SYSTEM, USER], accepts_system=True) == [SYSTEM, USER]
    assert conform([SYSTEM, USER], accepts_system=False) == [
        {"role": "user", "content": "Be brief.\n\nHi"}
    ]


@pytest.fixture(scope="module")
def tokenizers(tiny_model_dirs):
    from transformers import AutoTokenizer

    return {
        name: AutoTokenizer.from_pretrained(tiny_model_dirs[name])
        for name in ("llama-a", "gemma-style", "mistral-style")
    }


def test_the_probe_knows_each_family(tokenizers):
    assert template_accepts_system(tokenizers["llama-a"])  # ChatML
    assert template_accepts_system(tokenizers["mistral-style"])
    assert not template_accepts_system(
        tokenizers["gemma-style"]
    )  # raises "System role not supported"


def test_a_template_that_silently_drops_the_system_message_counts_as_refusing(tokenizers):
    dropping = tokenizers["llama-a"].__class__.from_pretrained(tokenizers["llama-a"].name_or_path)
    dropping.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['content'] }}{% endif %}"
        "{% endfor %}"
    )
    assert not template_accepts_system(dropping)


def test_conformed_conversations_render_under_every_family(tokenizers):
    conversation = [SYSTEM, USER, ASSISTANT, {"role": "user", "content": "More?"}]
    with pytest.raises(Exception, match="System role not supported"):
        tokenizers["gemma-style"].apply_chat_template(conversation, tokenize=False)
    for tokenizer in tokenizers.values():
        shaped = conform(conversation, accepts_system=template_accepts_system(tokenizer))
        text = tokenizer.apply_chat_template(shaped, tokenize=False, add_generation_prompt=True)
        assert "Be brief." in text and text.index("Be brief.") < text.index("Hi")
