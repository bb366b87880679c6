"""Tests for moaa_ray.train.checkpoints: the final model in HF format, LoRA folded in."""

from __future__ import annotations

import pytest
import torch

from moaa_ray.config import LoraConfig
from moaa_ray.tiny_models import resolve_model_path
from moaa_ray.train.checkpoints import merge_lora, save_hf_model
from tests.support.fakes import FakeEngine


@pytest.fixture(scope="module")
def model_dir():
    return resolve_model_path("tiny:llama-a")


def _lora_model(model_dir, lora: LoraConfig):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    model = get_peft_model(
        base,
        PeftLoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=0.0,
            target_modules=list(lora.target_modules),
        ),
    )
    with torch.no_grad():  # trained adapters: B is zero at init, which would merge to nothing
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    return model.eval()


def test_merge_lora_matches_peft_merge(model_dir):
    lora = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    model = _lora_model(model_dir, lora)
    merged = merge_lora(model.state_dict(), lora.alpha / lora.r)
    reference = model.merge_and_unload().state_dict()
    assert merged.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.allclose(merged[key], value, atol=1e-6), key


def test_saved_lora_model_loads_as_a_plain_model_with_the_same_outputs(
    model_dir, tmp_path, process_group
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lora = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    model = _lora_model(model_dir, lora)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    out = tmp_path / "model"
    out.mkdir()  # an older model in the way is replaced
    save_hf_model(FakeEngine(model), tokenizer, str(out), lora, rank=0)
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([tokenizer.encode("The sky is blue because")])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(input_ids=ids).logits, atol=1e-4)
    assert AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp dir left over
