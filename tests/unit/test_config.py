import re
from pathlib import Path

import pytest

from moaa_ray import cli
from moaa_ray.config import ConfigError, check_config, load_config

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
def test_every_shipped_config_validates(path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    config = load_config(path)
    assert config.generate is not None or config.evaluate is not None
    referenced = {name for _, name in config.model_references()}
    assert referenced <= set(config.models)
    argv = ["validate", "--config", f"configs/{path.name}", "--cluster", "cluster.yaml"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"configs/{path.name}: valid\n")


def test_the_official_judges_config_judges_with_gpt4_turbo_and_grades_with_gpt4(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "eval-official-judges.yaml")
    ev = config.evaluate
    assert ev is not None and ev.judging.judges == ["gpt-4-1106-preview"] and ev.grader == "gpt-4"
    judges = {bench.key(): bench.judge for bench in ev.benchmarks}
    assert judges == {"arena_hard": "auto", "alpaca_eval": "alpaca_eval", "mt_bench": "auto"}
    for name in ("gpt-4-1106-preview", "gpt-4"):
        model = config.models[name]
        assert model.engine == "openai_http" and model.api_key_env == "OPENAI_API_KEY"


@pytest.mark.parametrize("name", ["eval-official-judges", "snorkel-pairrm", "sppo"])
def test_alpaca_eval_is_scored_as_its_leaderboard_scores_it(name, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert config.evaluate is not None
    [bench] = [b for b in config.evaluate.benchmarks if b.key() == "alpaca_eval"]
    assert bench.judge == "alpaca_eval"
    assert bench.gamed_baseline_path == "/mnt/shared/eval/alpaca_eval/df_gamed.csv"


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
    # the values the config's second sft/dpo blocks used to hide
    assert (config.sft.cpus_per_worker, dpo.cpus_per_worker, dpo.checkpoint_every_steps) == (
        8,
        8,
        10,
    )


def test_paper_config_samples_its_prompt_subsets_with_a_seed(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "paper-llama31-8b.yaml")
    ultrachat = config.generate.inputs[1]
    assert (ultrachat.path, ultrachat.sample, ultrachat.limit) == (
        "HuggingFaceH4/ultrachat_200k",
        5000,
        None,
    )
    (dpo_prompts,) = config.preferences.inputs
    assert (dpo_prompts.split, dpo_prompts.sample) == ("train_prefs", 6000)


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


def test_self_moa_config_is_judged_by_models_that_took_no_part_in_its_training(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "self-moa-gemma2-9b.yaml")
    assert config.preferences is None and config.dpo is None  # the paper's setup: SFT only
    trained = {name for key, name in config.model_references() if key.startswith("generate.")}
    ev = config.evaluate
    assert set(ev.judging.models()) | {ev.grader} == {"gpt-4-1106-preview", "gpt-4"}
    assert not trained & (set(ev.judging.models()) | {ev.grader})
    judges = {bench.key(): bench.judge for bench in ev.benchmarks}
    assert judges == {"arena_hard": "auto", "alpaca_eval": "alpaca_eval", "mt_bench": "auto"}


def test_paper_config_windows_hold_what_the_aggregator_and_judges_read(monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "paper-llama31-8b.yaml")
    gen, prefs = config.generate, config.preferences
    prompt = max(i.max_prompt_chars for i in gen.inputs) // 4  # ~4 characters per token

    def window(name):
        return config.models[name].engine_kwargs["max_model_len"]

    answer, evaluation = gen.sampling.max_new_tokens, prefs.judging.sampling.max_new_tokens
    references = len(gen.proposers) * answer
    assert window(gen.aggregator) >= prompt + 200 + references + answer
    judged = prompt + 400 + 2 * prefs.sampling.max_new_tokens + evaluation
    # Gemma-2-27B's 8192 is its limit: the config says how its longest prompts are cut
    assert [j for j in prefs.judging.judges if window(j) < judged] == ["gemma2-27b"]
    judge_count = len(prefs.judging.judges)
    assert window(prefs.judging.aggregator_judge) >= judged + judge_count * evaluation


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


def test_several_samples_per_question_are_for_sampled_answers_to_verified_benchmarks(write):
    sampled = ["evaluate.num_samples=4", "evaluate.sampling.temperature=1.0"]
    assert load_config(write(VERIFIED), sampled).evaluate.num_samples == 4
    with pytest.raises(
        ConfigError, match=r"evaluate: num_samples 4 at sampling.temperature 0: greedy answers"
    ):
        load_config(write(VERIFIED), ["evaluate.num_samples=4"])
    judged = VERIFIED.replace("format: verified}]", "format: verified}, {path: mt.jsonl}]")
    with pytest.raises(
        ConfigError, match=r"num_samples 4 is for verified benchmarks, and \['mt'\] are judged"
    ):
        load_config(write(judged), [*sampled, "evaluate.judging={judges: [a]}"])


def test_a_verified_benchmark_takes_no_baseline_or_judge_keys(write):
    overrides = ["evaluate.benchmarks.0.baseline=model", "evaluate.benchmarks.0.judge=ensemble"]
    with pytest.raises(
        ConfigError,
        match=r"evaluate\.benchmarks\.0: format 'verified' has no baseline and no judges; "
        "remove baseline, judge",
    ):
        load_config(write(VERIFIED), overrides)


GRADED_ONLY = """
models:
  a: {path: "tiny:llama-a"}
  g: {path: "tiny:qwen2-b"}
evaluate:
  model: a
  grader: g
  benchmarks: [{path: question.jsonl, baseline: none, reference_answers_path: ref.jsonl}]
"""


def test_a_graded_only_mt_bench_needs_a_grader_and_no_judges(write):
    config = load_config(write(GRADED_ONLY))
    ev = config.evaluate
    assert ev is not None and ev.judging is None
    assert ev.baseline_of(ev.benchmarks[0]) == "none" and not ev.judged(ev.benchmarks[0])
    assert config.model_references() == [("evaluate.model", "a"), ("evaluate.grader", "g")]
    no_grader = write(GRADED_ONLY.replace("  grader: g\n", ""))
    with pytest.raises(
        ConfigError,
        match=r"evaluate: benchmark 'question' is graded only \(baseline 'none'\) and needs "
        r"'grader' \(or 'judging', whose first judge grades\)",
    ):
        load_config(no_grader)
    first_judge_grades = load_config(no_grader, ["evaluate.judging={judges: [g]}"]).evaluate
    assert first_judge_grades is not None and first_judge_grades.grader is None


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("format=alpaca_eval", "baseline 'none' \\(grading only\\) is for mt_bench benchmarks, "
         "not format 'alpaca_eval'"),
        ("judge=arena_hard", "baseline 'none' has no pairwise judging; remove judge"),
        ("baseline_answers_path=b.jsonl", "baseline 'none' has no pairwise judging; remove "
         "baseline_answers_path"),
    ],
)  # fmt: skip
def test_baseline_none_is_for_mt_bench_grading_alone(write, override, match):
    with pytest.raises(
        ConfigError, match=rf"evaluate\.benchmarks\.0: benchmark 'question': {match}"
    ):
        load_config(write(GRADED_ONLY), [f"evaluate.benchmarks.0.{override}"])


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


def test_an_openai_http_judge_cannot_give_logprob_verdicts(write):
    remote = [
        "models.judge.engine=openai_http",
        "models.judge.path=gpt-4o",
        "models.judge.api_base=http://127.0.0.1:8000/v1",
        "models.judge.engine_kwargs={}",
    ]
    with pytest.raises(ConfigError) as err:
        load_config(write(FUNCTION_JUDGES), [*remote, "preferences.judging.verdict_mode=logprob"])
    message = str(err.value)
    assert "preferences.judging.verdict_mode: preferences.judging.judges.0" in message
    assert "openai_http engine" in message and "set verdict_mode: text" in message
    assert load_config(write(FUNCTION_JUDGES), remote).models["judge"].engine == "openai_http"


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


def test_a_repeated_key_is_an_error_naming_file_and_lines(write):
    path = write(MINIMAL + "  batch_size: 4\n  batch_size: 8\nmodels: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == [
        f"{path}:10: duplicate key 'batch_size' (first at line 9); merge the two, or YAML keeps "
        "only the last",
        f"{path}:11: duplicate key 'models' (first at line 2); merge the two, or YAML keeps only "
        "the last",
    ]


def test_exponents_without_a_dot_are_numbers_in_files_and_overrides(write):
    path = write(MINIMAL.replace("aggregator: b", "aggregator: b\n  sampling: {top_p: 9e-1}"))
    config = load_config(path, ["generate.sampling.temperature=5E-1", "models.a.num_gpus=1e0"])
    sampling = config.generate.sampling
    assert (sampling.top_p, sampling.temperature, config.models["a"].num_gpus) == (0.9, 0.5, 1.0)
    assert load_config(path, ["models.a.engine_kwargs={lr: 1e-2}"]).models["a"].engine_kwargs == {
        "lr": 0.01
    }


@pytest.mark.parametrize(
    ("override", "bound"),
    [
        ("generate.batch_size=0", "greater than or equal to 1"),
        ("models.a.max_batch_size=0", "greater than or equal to 1"),
        ("models.a.request_timeout_s=0", "greater than 0"),
        ("models.a.num_gpus=-1", "greater than or equal to 0"),
        ("generate.inputs.0.limit=-1", "greater than or equal to 0"),
        ("generate.inputs.0.sample=-1", "greater than or equal to 0"),
        ("generate.inputs.0.max_prompt_chars=0", "greater than or equal to 1"),
        ("generate.sampling.top_p=1.5", "less than or equal to 1"),
        ("generate.sampling.temperature=-0.1", "greater than or equal to 0"),
        ("generate.sampling.max_new_tokens=0", "greater than or equal to 1"),
        ("ray.num_cpus=0", "greater than or equal to 1"),
    ],
)
def test_numbers_out_of_bounds_name_key_and_bound(write, override, bound):
    key = override.partition("=")[0]
    with pytest.raises(
        ConfigError, match=rf"override '{override}': {key}: Input should be {bound}"
    ):
        load_config(write(MINIMAL), [override])


def test_every_problem_is_listed_not_only_the_first(write):
    check = check_config(
        write(MINIMAL.replace("proposers: [a, b]", "proposers: [a, b]\n  batch_size: 0")),
        ["generate.sampling.top_p=2", "generate.num_layers=one"],
    )
    assert check.config is None
    assert [problem.split(": ")[1] for problem in check.problems] == [
        "generate.num_layers",
        "generate.sampling.top_p",
        "generate.batch_size",
    ]
    references = check_config(write(MINIMAL.replace("[a, b]", "[c, d]")))
    assert [p.split(": ")[1] for p in references.problems] == [
        "generate.proposers.0",
        "generate.proposers.1",
    ]


LAYERED = MINIMAL.replace("proposers: [a, b]", "layer_proposers: [[a, b], [a]]\n  num_layers: 3")


def test_each_proposer_layer_may_name_its_own_models(write):
    config = load_config(write(LAYERED))
    assert config.generate.layer_proposers == [["a", "b"], ["a"]]
    assert config.generate.proposers == []
    with pytest.raises(ConfigError, match=r"generate\.layer_proposers\.1\.0: model 'c'"):
        load_config(write(LAYERED.replace("[a]]", "[c]]")))


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("generate.num_layers=2", "lists 2 layers; num_layers=2 has 1 proposer layers"),
        ("generate.layer_proposers=[[a], []]", "layer_proposers.1 names no model"),
        ("generate.proposers=[a]", "not both"),
        ("generate.layer_proposers=null", "name the proposers"),
    ],
)
def test_layer_proposers_fill_every_proposer_layer(write, override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(LAYERED), [override])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["generate.sft_target=best_of_n"],
            r"generate: .*sft_target 'best_of_n' needs 'reward_model'",
        ),
        (["generate.reward_model=b"], r"'reward_model' is read by sft_target best_of_n only"),
        (["generate.aggregator=null"], r"sft_target 'aggregator' needs 'aggregator'"),
        (
            ["generate.sft_target=best_of_n", "generate.reward_model=c"],
            r"generate\.reward_model: model 'c' is not defined",
        ),
        (
            ["generate.sft_target=best_of_n", "generate.reward_model=b", "models.b.engine=vllm"],
            r"reward_model 'b' has engine 'vllm'; best_of_n scores each answer alone",
        ),
    ],
)
def test_sft_target_names_the_models_it_needs(write, overrides, match):
    with pytest.raises(ConfigError, match=match) as error:
        load_config(write(MINIMAL), overrides)
    assert "run.yaml" in str(error.value) or "override" in str(error.value)


def test_proposer_sft_targets_need_no_aggregator(write):
    config = load_config(
        write(MINIMAL.replace("  aggregator: b\n", "")), ["generate.sft_target=all_proposers"]
    )
    assert config.generate.aggregator is None
    scored = ["generate.sft_target=best_of_n", "generate.reward_model=a"]
    assert load_config(write(MINIMAL), scored).generate.reward_model == "a"  # an hf causal LM


PAIRRM = """
models:
  policy: {path: "tiny:llama-a"}
  ranker: {path: "tiny:pairrm-f", engine: pairrm}
preferences:
  inputs: [{path: prompts.jsonl}]
  policy: policy
  reward: pairwise_ranker
  reward_model: ranker
dpo: {loss_type: sppo}
"""


def test_a_pairrm_engine_ranks_pairs_and_sppo_reads_strengths(write):
    config = load_config(write(PAIRRM))
    assert config.models["ranker"].engine == "pairrm" and config.dpo.loss_type == "sppo"
    with pytest.raises(ConfigError, match="is a pairrm engine.*set reward: pairwise_ranker"):
        load_config(write(PAIRRM), ["preferences.reward=scalar_rm"])
    judged = ["preferences.reward=llm_judges", "preferences.judging={judges: [policy]}"]
    assert load_config(write(PAIRRM), judged).preferences.ranking == "bradley_terry"
    wins = [*judged, "preferences.ranking=wins"]
    assert load_config(write(PAIRRM), wins).preferences.win_probability_source() == "pairwise"
    with pytest.raises(ConfigError, match=r"dpo: .*ranking 'wins' counts wins"):
        load_config(write(PAIRRM), [*wins, "preferences.win_probabilities=strengths"])


def test_win_probabilities_follow_the_source_and_gpo_needs_scores(write):
    assert load_config(write(PAIRRM)).preferences.win_probability_source() == "pairwise"
    scalar = ["preferences.reward=likelihood", "preferences.reward_model=policy"]
    config = load_config(write(PAIRRM), [*scalar, "dpo.loss_type=gpo"])
    assert config.preferences.win_probability_source() == "strengths"
    with pytest.raises(ConfigError, match="win_probabilities 'pairwise' needs a pairwise source"):
        load_config(write(PAIRRM), [*scalar, "preferences.win_probabilities=pairwise"])
    judged = ["preferences.reward=llm_judges", "preferences.judging={judges: [policy]}"]
    with pytest.raises(ConfigError, match="loss_type 'gpo' regresses on preference score"):
        load_config(write(PAIRRM), [*judged, "dpo.loss_type=gpo"])


def test_a_gpm_engine_is_a_pairwise_ranker(write):
    gpm = ["models.ranker.engine=gpm", "models.ranker.path=tiny:gpm"]
    config = load_config(write(PAIRRM), gpm)
    assert (config.models["ranker"].engine, config.preferences.reward) == ("gpm", "pairwise_ranker")
    with pytest.raises(ConfigError, match="is a gpm engine.*set reward: pairwise_ranker"):
        load_config(write(PAIRRM), [*gpm, "preferences.reward=scalar_rm"])
    with pytest.raises(ConfigError, match="hf causal LM; model 'ranker' has engine 'gpm'"):
        load_config(write(PAIRRM), [*gpm, "preferences.reward=likelihood", "dpo.loss_type=sigmoid"])


def test_a_likelihood_reward_needs_an_hf_causal_lm(write):
    likelihood = ["preferences.reward=likelihood", "preferences.reward_model=policy"]
    config = load_config(write(PAIRRM), [*likelihood, "dpo.loss_type=sigmoid"])
    assert config.preferences.reward == "likelihood"
    with pytest.raises(ConfigError, match="hf causal LM; model 'ranker' has engine 'pairrm'"):
        load_config(write(PAIRRM), [likelihood[0], "dpo.loss_type=sigmoid"])


def test_a_pairwise_ranker_needs_a_pairwise_engine_naming_the_key_and_where_it_came_from(write):
    path = write(PAIRRM.replace("engine: pairrm", "engine: hf_reward"))
    problem = (
        f"{path}: preferences.reward_model: reward pairwise_ranker compares two answers with a "
        "pairwise engine (gpm, pairrm); model 'ranker' has engine 'hf_reward'"
    )
    with pytest.raises(ConfigError, match=f"^{re.escape(problem)}$"):
        load_config(path)
    override = "models.ranker.engine=hf_reward"
    with pytest.raises(ConfigError, match=f"^override '{override}': preferences.reward_model: "):
        load_config(write(PAIRRM), [override])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("models.policy.reward_head=score", "reward_head is read by engine hf_reward only"),
        ("models.policy.pairrm={source_format: llm_blender}", None),  # the default: accepted
        (
            "models.ranker.pairrm={source_format: chat_template}",
            "source_format chat_template needs chat_template_tokenizer",
        ),
        (
            "models.ranker.pairrm={chat_template_tokenizer: 'tiny:llama-a'}",
            "chat_template_tokenizer is read only with source_format chat_template",
        ),
        (
            "models.ranker.pairrm={source_format: chat_template, chat_template_tokenizer: 'tiny:x'}",
            "no tiny model 'tiny:x'",
        ),
    ],
)
def test_reward_model_settings_fit_their_engine(write, override, match):
    if match is None:
        assert load_config(write(PAIRRM), [override]).models["policy"].engine == "hf"
        return
    with pytest.raises(ConfigError, match=match):
        load_config(write(PAIRRM), [override])


@pytest.mark.parametrize("name", ["snorkel-pairrm.yaml", "sppo.yaml"])
def test_seed_recipes_rank_five_samples_with_pairrm_for_three_rounds(name, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / name)
    prefs, dpo = config.preferences, config.dpo
    assert config.iterations == 3 and prefs.num_samples == 5 and config.generate is None
    assert prefs.reward == "pairwise_ranker" and config.sft is None
    ranker = config.models[prefs.reward_model]
    assert (ranker.engine, ranker.path) == ("pairrm", "llm-blender/PairRM-hf")
    assert config.models[prefs.policy].path == "mistralai/Mistral-7B-Instruct-v0.2"
    assert prefs.inputs[0].limit == 60_000  # three rounds of 20k prompts
    if name == "sppo.yaml":
        assert (dpo.loss_type, dpo.beta, dpo.learning_rate) == ("sppo", 0.001, 5e-7)
        # SPPO's scripts/rank.py templates the prompt with the policy's tokenizer.
        assert ranker.pairrm.source_format == "chat_template"
        assert ranker.pairrm.chat_template_tokenizer == config.models[prefs.policy].path
        assert (dpo.optimizer, dpo.lr_schedule, dpo.warmup_ratio) == ("rmsprop", "linear", 0.1)
        assert dpo.global_batch_size == 64 and dpo.num_workers == [8, 8]
    else:
        assert dpo.loss_type == "sigmoid"
        assert ranker.pairrm.source_format == "llm_blender"


def test_the_gpm_recipe_ranks_with_a_gpm_table_for_sppo_or_gpo(monkeypatch):
    monkeypatch.chdir(REPO)
    path = REPO / "configs" / "sppo-gpm.yaml"
    config = load_config(path)
    prefs, dpo = config.preferences, config.dpo
    assert config.iterations == 3 and prefs.num_samples == 5 and config.sft is None
    ranker = config.models[prefs.reward_model]
    assert (ranker.engine, ranker.path) == ("gpm", "general-preference/GPM-Gemma-2B")
    assert prefs.win_probability_source() == "pairwise"  # the table, not Bradley-Terry strengths
    assert config.models[prefs.policy].path == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert [i.path for i in prefs.inputs] == [
        f"UCLA-AGI/data-mistral-7b-instruct-sppo-iter{r}" for r in (1, 2, 3)
    ]
    assert (dpo.loss_type, dpo.beta, dpo.learning_rate, dpo.optimizer) == (
        "sppo",
        0.001,
        5e-7,
        "rmsprop",
    )
    assert load_config(path, ["dpo.loss_type=gpo"]).dpo.loss_type == "gpo"
    assert "dpo.loss_type=gpo" in path.read_text()  # the documented GPO override
