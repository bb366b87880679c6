"""The production path on real weights with the vllm engine: SmolLM2-135M-Instruct served by vLLM's
``AsyncLLM`` inside the Ray pools, fed by Ray Data, in every role of generate, preferences and
evaluate (``tests/support/real_model_stages.py``). Runs in vLLM's environment, which has Ray too."""

import os

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

from tests.support import real_model_stages  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.ray, pytest.mark.timeout(900)]


def test_generate_writes_real_moa_answers(ray_cluster, tmp_path):
    real_model_stages.check_generate(tmp_path, "vllm")


def test_preferences_judge_real_samples_with_logprob_verdicts(ray_cluster, tmp_path):
    real_model_stages.check_preferences(tmp_path, "vllm")


def test_evaluate_answers_a_verified_benchmark_with_real_text(ray_cluster, tmp_path):
    real_model_stages.check_evaluate(tmp_path, "vllm")


def test_serve_answers_the_openai_client_with_real_text(ray_cluster):
    real_model_stages.check_serve("vllm")


def test_prompts_are_the_models_own_chat_template_and_default_system_prompt():
    real_model_stages.check_chat_template("vllm")
