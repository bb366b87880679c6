"""HFEngine.chat on tiny models: finish reasons, and templates that refuse a system message."""

from __future__ import annotations

import json
import shutil

import pytest

from moaa_ray.config import ModelConfig
from moaa_ray.engines.base import SamplingParams

pytest.importorskip("torch")

SYSTEM_CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def hf_engine(path: str):
    from moaa_ray.engines.hf import HFEngine

    return HFEngine(ModelConfig(path=path))


def test_an_answer_without_an_end_token_was_cut_and_one_with_it_was_not(tmp_path, tiny_model_dirs):
    params = SamplingParams(temperature=0.0, max_new_tokens=3, n=2)
    cut = hf_engine(tiny_model_dirs["llama-a"]).chat([SYSTEM_CHAT], params)[0]
    assert all(a.finish_reason == "length" and a.truncated for a in cut)
    # The same model told that every token ends an answer (generation configs list several end
    # tokens, as Llama 3's do): the first token ends it.
    ending = tmp_path / "ending"
    shutil.copytree(tiny_model_dirs["llama-a"], ending)
    generation = json.loads((ending / "generation_config.json").read_text())
    vocab = json.loads((ending / "config.json").read_text())["vocab_size"]
    generation["eos_token_id"] = list(range(vocab))
    (ending / "generation_config.json").write_text(json.dumps(generation))
    ended = hf_engine(str(ending)).chat([SYSTEM_CHAT], params)[0]
    assert all(a.finish_reason == "stop" and not a.truncated for a in ended)


def test_a_template_without_a_system_role_gets_the_system_text_in_the_user_turn(tiny_model_dirs):
    engine = hf_engine(tiny_model_dirs["gemma-style"])
    assert not engine.accepts_system
    with pytest.raises(Exception, match="System role not supported"):
        engine.tokenizer.apply_chat_template(SYSTEM_CHAT, tokenize=False)
    [[answer]] = engine.chat([SYSTEM_CHAT], SamplingParams(temperature=0.0, max_new_tokens=4))
    assert answer.text and answer.finish_reason in ("stop", "length")
    prompt = engine.tokenizer.decode(engine._encode([SYSTEM_CHAT])["input_ids"][0])
    assert (
        prompt == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
