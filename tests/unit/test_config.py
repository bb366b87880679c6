from pathlib import Path

import pytest

from moaa_ray.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))

MINIMAL = """
models:
  a: {path: "tiny:llama-a"}
  b: {path: "tiny:qwen2-b"}
generate:
  inputs: [{path: prompts.jsonl}]
  proposers: [a, b]
  aggregator: b
"""


@pytest.fixture
def write(tmp_path):
    def _write(text: str) -> Path:
        path = tmp_path / "run.yaml"
        path.write_text(text)
        return path

    return _write


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(path)
    assert config.generate is not None or config.evaluate is not None
    referenced = {name for _, name in config.model_references()}
    assert referenced <= set(config.models)


def test_the_official_judges_config_judges_with_gpt4_turbo_and_grades_with_gpt4(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "eval-official-judges.yaml")
    ev = config.evaluate
    assert ev is not None and ev.judging.judges == ["gpt-4-1106-preview"] and ev.grader == "gpt-4"
    for name in ("gpt-4-1106-preview", "gpt-4"):
        model = config.models[name]
        assert model.engine == "openai_http" and model.api_key_env == "OPENAI_API_KEY"


def test_paper_config_has_the_papers_moa(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "paper-llama31-8b.yaml")
    assert len(config.generate.proposers) == 4
    assert config.models[config.generate.aggregator].path == "Qwen/Qwen1.5-110B-Chat"
    assert all(m.engine == "vllm" and m.num_gpus >= 1 for m in config.models.values())


def test_paper_config_has_the_papers_preferences_and_hyperparameters(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "paper-llama31-8b.yaml")
    prefs = config.preferences
    assert prefs.num_samples == 5 and prefs.judging.num_criteria == 3
    judges = {config.models[j].path for j in prefs.judging.judges}
    assert judges == {
        "meta-llama/Llama-3.1-70B-Instruct",
        "google/gemma-2-27b-it",
        "Qwen/Qwen2-72B-Instruct",
    }
    assert prefs.judging.aggregator_judge is not None
    assert (config.sft.learning_rate, config.sft.global_batch_size) == (8e-6, 128)
    dpo = config.dpo
    assert (dpo.beta, dpo.learning_rate, dpo.num_epochs, dpo.global_batch_size) == (
        0.01,
        5e-7,
        1,
        128,
    )
    assert (dpo.lr_schedule, dpo.warmup_ratio, dpo.zero_stage) == ("cosine", 0.1, 3)


def test_self_moa_config_teaches_gemma_with_small_models(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "self-moa-gemma2-9b.yaml")
    paths = [config.models[m].path for m in config.generate.proposers]
    assert paths == [
        "google/gemma-2-9b-it",
        "meta-llama/Llama-3.1-8B-Instruct",
        "mistralai/Mistral-7B-Instruct-v0.3",
    ]
    assert config.models[config.generate.aggregator].path == "google/gemma-2-9b-it"
    assert config.models[config.sft.model].path == "google/gemma-2-9b-it"


def test_overrides_set_nested_keys_and_list_items(write):
    config = load_config(
        write(MINIMAL),
        ["generate.sampling.temperature=0.2", "generate.inputs.0.limit=3", "models.a.engine=vllm"],
    )
    assert config.generate.sampling.temperature == 0.2
    assert config.generate.inputs[0].limit == 3
    assert config.models["a"].engine == "vllm"


def test_unknown_key_names_key_file_and_suggestion(write):
    path = write(MINIMAL.replace("aggregator: b", "aggregator: b\n  samplng: {}"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "generate.samplng" in str(err.value)
    assert "did you mean 'sampling'" in str(err.value)


def test_wrong_type_names_key(write):
    with pytest.raises(ConfigError, match=r"generate\.num_layers"):
        load_config(write(MINIMAL), ["generate.num_layers=two"])


def test_error_from_override_names_the_override(write):
    with pytest.raises(ConfigError, match="override 'generate.sampling.top_p=high'"):
        load_config(write(MINIMAL), ["generate.sampling.top_p=high"])


def test_undefined_model_is_an_error(write):
    path = write(MINIMAL.replace("proposers: [a, b]", "proposers: [a, c]"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "generate.proposers.1" in str(err.value) and "'c'" in str(err.value)


def test_missing_local_model_directory_is_an_error(write):
    path = write(MINIMAL.replace('"tiny:llama-a"', "./no/such/model"))
    with pytest.raises(ConfigError, match=r"models\.a\.path.*does not exist"):
        load_config(path)


def test_unknown_tiny_model_is_an_error(write):
    with pytest.raises(ConfigError, match="no tiny model"):
        load_config(write(MINIMAL.replace("tiny:llama-a", "tiny:gpt-9")))


def test_bad_replica_range_is_an_error(write):
    with pytest.raises(ConfigError, match=r"models\.a\.num_replicas"):
        load_config(write(MINIMAL), ["models.a.num_replicas=[3, 1]"])


def test_malformed_override_is_an_error(write):
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(write(MINIMAL), ["generate.num_layers"])


VERIFIED = """
verifier: moaa_ray.tasks.addition:verify
models:
  a: {path: "tiny:llama-a"}
evaluate:
  model: a
  benchmarks: [{path: addition.jsonl, format: verified}]
"""


def test_a_verified_only_evaluation_needs_no_judges_and_has_no_baseline(write):
    config = load_config(write(VERIFIED))
    ev = config.evaluate
    assert ev is not None and ev.judging is None
    assert ev.benchmarks[0].verified and ev.baseline_of(ev.benchmarks[0]) is None
    assert config.model_references() == [("evaluate.model", "a")]


def test_a_verified_benchmark_needs_the_top_level_verifier(write):
    path = write(VERIFIED.replace("verifier: moaa_ray.tasks.addition:verify\n", ""))
    with pytest.raises(
        ConfigError,
        match=r"evaluate: benchmarks \['addition'\] have format 'verified' and need the top-level "
        "'verifier'",
    ):
        load_config(path)


def test_a_judged_benchmark_needs_judging(write):
    path = write(VERIFIED.replace("format: verified}]", "format: verified}, {path: mt.jsonl}]"))
    with pytest.raises(
        ConfigError, match=r"evaluate: benchmark 'mt' is judged and needs 'judging'"
    ):
        load_config(path)
    config = load_config(path, ["evaluate.judging={judges: [a]}"])
    assert config.model_references()[-1] == ("evaluate.judging.judges.0", "a")


def test_a_verified_benchmark_takes_no_baseline_or_judge_keys(write):
    overrides = ["evaluate.benchmarks.0.baseline=model", "evaluate.benchmarks.0.judge=ensemble"]
    with pytest.raises(
        ConfigError,
        match=r"evaluate\.benchmarks\.0: format 'verified' has no baseline and no judges; "
        "remove baseline, judge",
    ):
        load_config(write(VERIFIED), overrides)


FUNCTION_JUDGES = """
models:
  a: {path: "tiny:llama-a"}
  judge:
    path: moaa_ray.tasks.addition:verifier_judge
    engine: function
    engine_kwargs: {flip_rate: 0.1}
  majority: {path: "moaa_ray.tasks.addition:majority_judge", engine: function}
preferences:
  inputs: [{path: prompts.jsonl}]
  policy: a
  judging: {judges: [judge], aggregator_judge: majority}
"""


def test_a_function_model_keeps_its_spec_and_keyword_arguments(write):
    config = load_config(write(FUNCTION_JUDGES))
    judge = config.models["judge"]
    assert judge.engine == "function" and judge.path == "moaa_ray.tasks.addition:verifier_judge"
    assert judge.engine_kwargs == {"flip_rate": 0.1}


@pytest.mark.parametrize("spec", ["moaa_ray.tasks.addition", "./judge.py:judge", "a:b:c"])
def test_a_bad_function_spec_names_the_path_key(write, spec):
    with pytest.raises(
        ConfigError, match=r"models\.judge\.path: expected 'package\.module:function'"
    ):
        load_config(write(FUNCTION_JUDGES), [f"models.judge.path={spec}"])


def test_a_function_spec_is_no_model_path_for_other_engines(write):
    with pytest.raises(ConfigError, match=r"models\.judge\.path: model directory"):
        load_config(write(FUNCTION_JUDGES), ["models.judge.engine=hf", "models.judge.path=./x:y"])


@pytest.mark.parametrize(
    ("overrides", "role"),
    [
        ([], "preferences.judging.judges.0"),
        (["preferences.judging.judges=[a]"], "preferences.judging.aggregator_judge"),
    ],
)
def test_a_function_judge_cannot_give_logprob_verdicts(write, overrides, role):
    with pytest.raises(ConfigError) as err:
        load_config(
            write(FUNCTION_JUDGES), ["preferences.judging.verdict_mode=logprob", *overrides]
        )
    message = str(err.value)
    assert "preferences.judging.verdict_mode:" in message and role in message
    assert "set verdict_mode: text" in message


def test_a_function_grader_cannot_give_logprob_grades(write):
    evaluate = """
evaluate:
  benchmarks: [{path: questions.jsonl}]
  model: a
  judging: {judges: [judge]}
  grading_mode: logprob
"""
    with pytest.raises(ConfigError, match=r"evaluate\.grading_mode: evaluate\.judging\.judges\.0"):
        load_config(write(FUNCTION_JUDGES + evaluate))
