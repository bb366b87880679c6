import os

from moaa_ray.config import GenerateConfig, InputConfig, ModelConfig
from moaa_ray.stages.fingerprint import (
    changed_keys,
    config_identity,
    describe_change,
    digest_path,
    models_identity,
)


def generate(**update) -> GenerateConfig:
    base = GenerateConfig(inputs=[InputConfig(path="p.jsonl")], proposers=["a"], aggregator="b")
    return base.model_copy(update=update)


def test_operational_keys_do_not_change_the_identity_but_result_keys_do():
    base = config_identity(generate(), "generate")
    assert config_identity(generate(batch_size=64, mode="staged"), "generate") == base
    changed = config_identity(generate(aggregator="c"), "generate")
    assert changed_keys(base, changed) == ["generate.aggregator"]
    assert "generate.inputs.0.path" in base and "generate.sampling.temperature" in base


def test_model_identity_ignores_replicas_and_timeouts_but_not_the_weights(tmp_path):
    model = ModelConfig(path=str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"0" * 10)
    scaled = model.model_copy(update={"num_replicas": [2, 8], "request_timeout_s": 5.0})
    assert models_identity({"m": model}, ["m"]) == models_identity({"m": scaled}, ["m"])
    before = models_identity({"m": model}, ["m"])
    (tmp_path / "model.safetensors").write_bytes(b"1" * 11)  # retrained in place
    assert changed_keys(before, models_identity({"m": model}, ["m"])) == ["models.m.content"]


def test_digest_sees_a_grown_dataset_and_ignores_temporary_files(tmp_path):
    (tmp_path / "part-1.parquet").write_bytes(b"rows")
    first = digest_path(tmp_path)
    (tmp_path / ".part-2.parquet.tmp").write_bytes(b"half-written")
    assert digest_path(tmp_path) == first
    (tmp_path / "part-2.parquet").write_bytes(b"more rows")
    assert digest_path(tmp_path) != first
    assert digest_path("tiny:llama-a") == "name:tiny:llama-a"


def test_digest_changes_when_a_file_is_rewritten_with_the_same_size(tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"aaaa")
    first = digest_path(tmp_path)
    weights.write_bytes(b"bbbb")
    os.utime(weights, ns=(1, 1))
    assert digest_path(tmp_path) != first


def test_describe_change_names_old_and_new_values():
    text = describe_change({"evaluate.model": "llama-a"}, {"evaluate.model": "llama-c", "x": 1})
    assert 'evaluate.model: "llama-a" -> "llama-c"' in text
    assert 'x: "(absent)" -> 1' in text


def test_a_pattern_limits_the_digest_to_the_rows(tmp_path):
    (tmp_path / "part-1.parquet").write_bytes(b"rows")
    first = digest_path(tmp_path, "part-*.parquet")
    (tmp_path / "rejects.jsonl").write_text("rewritten by every run")
    assert digest_path(tmp_path, "part-*.parquet") == first
    assert digest_path(tmp_path) != first


def test_editing_a_function_engines_module_changes_the_model_identity(tmp_path, monkeypatch):
    module = tmp_path / "task_roles.py"
    module.write_text("def judge(messages, *, rng):\n    return 'Verdict: A'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    models = {"j": ModelConfig(engine="function", path="task_roles:judge")}
    before = models_identity(models, ["j"])
    assert models_identity(models, ["j"]) == before
    module.write_text("def judge(messages, *, rng):\n    return 'Verdict: B'\n")
    assert changed_keys(before, models_identity(models, ["j"])) == ["models.j.content"]


def test_a_model_identity_holds_only_its_own_engines_settings():
    keys = {
        engine: {k.split(".")[2] for k in models_identity({"m": model}, ["m"])}
        for engine, model in (
            ("hf", ModelConfig(path="tiny:llama-a")),
            ("hf_reward", ModelConfig(engine="hf_reward", path="tiny:reward-e")),
            ("pairrm", ModelConfig(engine="pairrm", path="tiny:pairrm-f")),
        )
    }
    assert keys["hf"] & {"simulated", "reward_head", "pairrm"} == set()
    assert "reward_head" in keys["hf_reward"] and "pairrm" not in keys["hf_reward"]
    assert "pairrm" in keys["pairrm"] and "reward_head" not in keys["pairrm"]
    templated = ModelConfig(
        engine="pairrm",
        path="tiny:pairrm-f",
        pairrm={"source_format": "chat_template", "chat_template_tokenizer": "tiny:llama-a"},
    )
    before = models_identity({"m": ModelConfig(engine="pairrm", path="tiny:pairrm-f")}, ["m"])
    assert changed_keys(before, models_identity({"m": templated}, ["m"])) == [
        "models.m.pairrm.chat_template_tokenizer",
        "models.m.pairrm.source_format",
    ]
