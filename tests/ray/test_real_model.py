"""The production path on real weights with the hf engine: SmolLM2-135M-Instruct in every role of
generate, preferences and evaluate, through the Ray pools (``tests/support/real_model_stages.py``)."""

import pytest

from tests.support import real_model_stages

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]


def test_generate_writes_real_moa_answers(ray_cluster, tmp_path):
    real_model_stages.check_generate(tmp_path, "hf")


def test_preferences_judge_real_samples_with_logprob_verdicts(ray_cluster, tmp_path):
    real_model_stages.check_preferences(tmp_path, "hf")


def test_evaluate_answers_a_verified_benchmark_with_real_text(ray_cluster, tmp_path):
    real_model_stages.check_evaluate(tmp_path, "hf")


def test_serve_answers_the_openai_client_with_real_text(ray_cluster):
    real_model_stages.check_serve("hf")


def test_prompts_are_the_models_own_chat_template_and_default_system_prompt():
    real_model_stages.check_chat_template("hf")
