import json

from moaa_ray.tiny_models import TINY_MODELS, resolve_model_path


def test_tiny_models_are_deterministic_and_distinct(tmp_path):
    first = resolve_model_path("tiny:llama-a", tmp_path / "one")
    again = resolve_model_path("tiny:llama-a", tmp_path / "two")
    weights = "model.safetensors"
    assert (tmp_path / "one").as_posix() in first
    with open(f"{first}/{weights}", "rb") as a, open(f"{again}/{weights}", "rb") as b:
        assert a.read() == b.read()
    other = resolve_model_path("tiny:qwen2-b", tmp_path / "one")
    config = json.loads(open(f"{other}/config.json").read())
    assert config["model_type"] == "qwen2" and config["head_dim"] == 64
    assert resolve_model_path("org/some-hub-model") == "org/some-hub-model"


def test_every_tiny_model_has_head_dim_64_and_a_chat_template(tmp_path):
    from transformers import AutoTokenizer

    architectures = {spec.architecture for spec in TINY_MODELS.values()}
    assert {"llama", "qwen2"} <= architectures
    path = resolve_model_path("tiny:llama-c", tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>assistant\n")
    assert json.loads(open(f"{path}/config.json").read())["head_dim"] == 64
