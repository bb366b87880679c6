"""The hf engine on a CUDA GPU in bf16 (skipped where there is none)."""

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_hf_engine_generates_and_scores_on_gpu_in_bf16():
    from moaa_ray.config import ModelConfig
    from moaa_ray.engines.base import SamplingParams
    from moaa_ray.engines.hf import HFEngine

    engine = HFEngine(ModelConfig(path="tiny:qwen2-b"))
    assert engine.device == "cuda" and engine.model.dtype == torch.bfloat16
    conversations = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Why?"}]]
    answers = engine.chat(conversations, SamplingParams(max_new_tokens=8, n=2, seed=0))
    assert [len(a) for a in answers] == [2, 2]
    scores = engine.choice_logprobs(conversations, "Verdict: ", ["A", "B"])
    assert all(x < 0 for row in scores for x in row)
