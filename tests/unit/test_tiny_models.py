import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from moaa_ray.build_cache import build_once
from moaa_ray.tiny_catalog import ADDITION_MODELS, TINY_MODELS
from moaa_ray.tiny_models import resolve_model_path


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


def test_concurrent_callers_build_a_target_once(tmp_path):
    calls = []
    counting = threading.Lock()

    def build(directory):
        with counting:
            calls.append(directory)
        time.sleep(0.2)  # long enough for every other caller to arrive while this one builds
        (directory / "config.json").write_text("{}")

    target = tmp_path / "models" / "fake"
    start = threading.Barrier(4)

    def call(_):
        start.wait()
        return build_once(target, build)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(call, range(4)))
    assert len(calls) == 1
    assert results == [target] * 4 and (target / "config.json").exists()
    assert [p.name for p in target.parent.iterdir() if p.is_dir()] == ["fake"]  # no leftovers


def test_an_unknown_tiny_model_lists_the_known_ones_with_the_addition_models(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny model 'nope'") as error:
        resolve_model_path("tiny:nope", tmp_path)
    assert all(name in str(error.value) for name in (*ADDITION_MODELS, *TINY_MODELS))
    assert not any(tmp_path.iterdir())  # nothing built
