from pathlib import Path

from moaa_ray.config import load_config
from moaa_ray.orchestrator import TRAINED_POLICY, with_trained_policy

REPO = Path(__file__).resolve().parents[2]


def test_each_round_samples_trains_and_is_evaluated_from_the_given_model(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "demo.yaml")
    swapped = with_trained_policy(config, str(tmp_path))
    policy = swapped.models[TRAINED_POLICY]
    assert policy.path == str(tmp_path)
    assert policy.num_cpus == config.models[config.sft.model].num_cpus  # pool settings kept
    assert (
        swapped.preferences.policy == swapped.dpo.model == swapped.evaluate.model == TRAINED_POLICY
    )
    assert swapped.evaluate.baseline_model == config.evaluate.baseline_model
    assert config.preferences.policy == "llama-a"  # the original is untouched
