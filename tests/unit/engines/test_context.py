"""Context windows measured with the model's own tokenizer and chat template."""

from types import SimpleNamespace

from moaa_ray.config import ModelConfig
from moaa_ray.core.context import Prompt
from moaa_ray.engines.context import context_length_of, context_window

LONG = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "word " * 40}]


def test_context_length_comes_from_the_first_field_a_config_names():
    assert context_length_of(SimpleNamespace(max_position_embeddings=2048)) == 2048
    assert context_length_of(SimpleNamespace(n_positions=1024)) == 1024
    assert context_length_of(SimpleNamespace(max_position_embeddings=None, seq_length=8)) == 8
    assert context_length_of(SimpleNamespace(hidden_size=64)) is None


def test_the_window_is_the_configs_else_vllms_else_the_models():
    assert context_window(ModelConfig(path="tiny:llama-a", max_model_len=64)).limit == 64
    vllm = ModelConfig(path="tiny:llama-a", engine="vllm", engine_kwargs={"max_model_len": 96})
    assert context_window(vllm).limit == 96
    assert context_window(ModelConfig(path="tiny:llama-a")).limit == 2048  # the model config's
    assert context_window(ModelConfig(path="sim", engine="simulated")) is None


def test_prompts_are_counted_as_the_engine_renders_them(tiny_model_dirs):
    from transformers import AutoTokenizer

    window = context_window(ModelConfig(path="tiny:gemma-style", max_model_len=64))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dirs["gemma-style"])
    folded = [{"role": "user", "content": "Be brief.\n\n" + LONG[1]["content"]}]
    ids = tokenizer.apply_chat_template(folded, add_generation_prompt=True, return_dict=True)
    assert window.count_tokens(LONG) == len(ids["input_ids"])  # system folded, as Gemma needs


def test_a_fitted_prompt_leaves_room_for_the_answer():
    window = context_window(ModelConfig(path="tiny:llama-a", max_model_len=64))
    prompt = Prompt(
        lambda parts: [{"role": "user", "content": "Compare: " + parts[0]}], ("x " * 80,)
    )
    messages, cut = window.fit(prompt, max_new_tokens=16)
    assert cut == 1 and window.count_tokens(messages) <= 64 - 16
