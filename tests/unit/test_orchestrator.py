import json
from pathlib import Path

import pytest

from moaa_ray.config import load_config
from moaa_ray.orchestrator import TRAINED_POLICY, with_trained_policy
from moaa_ray.pipeline.evaluate.report import earlier_evaluations, evaluated_models

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


def test_every_round_evaluates_the_base_the_sft_model_and_each_round(monkeypatch, tmp_path):
    import moaa_ray.pipeline.evaluate.stage as evaluate_module
    import moaa_ray.pipeline.generate as generate_module
    import moaa_ray.pipeline.preferences as preferences_module
    import moaa_ray.train.dpo as dpo_module
    import moaa_ray.train.sft as sft_module
    from moaa_ray.orchestrator import run_pipeline

    monkeypatch.chdir(REPO)
    config = load_config(
        REPO / "configs" / "demo.yaml", ["iterations=2", "evaluate.every_round=true"]
    )
    evaluated: list[tuple[str, Path]] = []
    rounds = iter(["dpo-1", "dpo-2"])
    moa = {"verifier": {"accuracy": 0.6, "proposer_accuracy": {"a": 0.5}}}
    monkeypatch.setattr(generate_module, "generate_sft", lambda c, d, fresh: moa)
    monkeypatch.setattr(sft_module, "train_sft", lambda c, d, fresh: {"model_path": "sft-model"})
    monkeypatch.setattr(preferences_module, "build_preferences", lambda c, d, fresh, **_: {})
    monkeypatch.setattr(dpo_module, "train_dpo", lambda c, d, fresh: {"model_path": next(rounds)})

    def fake_evaluate(c, d, fresh):
        model = c.models[c.evaluate.model].path
        evaluated.append((model, Path(d)))
        (Path(d) / "evaluate").mkdir(parents=True, exist_ok=True)
        (Path(d) / "evaluate" / "results.json").write_text(json.dumps({"model": model}))
        return {"accuracy": {"bench": f"accuracy of {model}"}}

    monkeypatch.setattr(evaluate_module, "evaluate", fake_evaluate)
    summary = run_pipeline(config, tmp_path)
    assert summary["status"] == "done" and summary["final_model"] == "dpo-2"
    assert evaluated == [
        ("tiny:llama-a", tmp_path / "base"),
        ("sft-model", tmp_path / "round-0"),
        ("dpo-1", tmp_path / "round-1"),
        ("dpo-2", tmp_path),
    ]
    assert list(summary["stages"]) == [
        "base/evaluate", "generate", "sft", "round-0/evaluate", "round-1/preferences", "round-1/dpo",
        "round-1/evaluate", "round-2/preferences", "round-2/dpo", "evaluate",
    ]  # fmt: skip
    # Each model with its path and the accuracy measured on it, also in the manifest.
    models = [(m["stage"], m["model_path"], m["accuracy"]) for m in summary["models"]]
    assert models == [
        ("base", "tiny:llama-a", {"bench": "accuracy of tiny:llama-a"}),
        ("moa-answers", None, 0.6),
        ("sft", "sft-model", {"bench": "accuracy of sft-model"}),
        ("round-1/dpo", "dpo-1", {"bench": "accuracy of dpo-1"}),
        ("round-2/dpo", "dpo-2", {"bench": "accuracy of dpo-2"}),
    ]
    assert summary["models"][1]["proposer_accuracy"] == {"a": 0.5}
    # The final report reads exactly the folders the run wrote, each labelled by its model.
    earlier = earlier_evaluations(tmp_path, evaluated_models(config))
    assert [(label, r["model"]) for label, r in earlier] == [
        ("start", "tiny:llama-a"),
        ("SFT", "sft-model"),
        ("DPO round 1", "dpo-1"),
    ]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["models"] == summary["models"]


def test_a_recipe_without_sft_starts_its_rounds_from_the_preference_policy(monkeypatch, tmp_path):
    import moaa_ray.pipeline.evaluate.stage as evaluate_module
    import moaa_ray.pipeline.preferences as preferences_module
    import moaa_ray.train.dpo as dpo_module
    from moaa_ray.orchestrator import run_pipeline

    config = load_config(REPO / "configs" / "sppo.yaml", [f"run_dir={tmp_path}"])
    assert config.generate is None and config.sft is None
    policies: list[tuple[str, str]] = []
    rounds = iter(["sppo-1", "sppo-2", "sppo-3"])

    def fake_preferences(c, d, fresh, **_):
        policy = c.models[c.preferences.policy]
        policies.append((policy.path, policy.engine))
        return {}

    monkeypatch.setattr(preferences_module, "build_preferences", fake_preferences)
    monkeypatch.setattr(dpo_module, "train_dpo", lambda c, d, fresh: {"model_path": next(rounds)})
    monkeypatch.setattr(evaluate_module, "evaluate", lambda c, d, fresh: {})
    summary = run_pipeline(config, tmp_path)
    assert summary["status"] == "done" and summary["final_model"] == "sppo-3"
    start = config.models[config.preferences.policy]
    assert policies == [(start.path, "vllm"), ("sppo-1", "vllm"), ("sppo-2", "vllm")]
    assert [m["stage"] for m in summary["models"]] == [
        "base", "round-1/dpo", "round-2/dpo", "round-3/dpo"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "overrides",
    [
        ["iterations=3", "evaluate.every_round=true"],
        ["iterations=1", "evaluate.every_round=true"],
        ["iterations=2", "evaluate.every_round=true", "sft=null", "generate=null"],
        ["iterations=2"],
    ],
)
def test_the_report_reads_the_evaluations_the_run_writes(monkeypatch, tmp_path, overrides):
    import moaa_ray.pipeline.evaluate.stage as evaluate_module
    import moaa_ray.pipeline.generate as generate_module
    import moaa_ray.pipeline.preferences as preferences_module
    import moaa_ray.train.dpo as dpo_module
    import moaa_ray.train.sft as sft_module
    from moaa_ray.orchestrator import run_pipeline

    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "demo.yaml", overrides)
    written: list[Path] = []
    rounds = (f"dpo-{r}" for r in range(1, 10))
    monkeypatch.setattr(generate_module, "generate_sft", lambda c, d, fresh: {})
    monkeypatch.setattr(sft_module, "train_sft", lambda c, d, fresh: {"model_path": "sft-model"})
    monkeypatch.setattr(preferences_module, "build_preferences", lambda c, d, fresh, **_: {})
    monkeypatch.setattr(dpo_module, "train_dpo", lambda c, d, fresh: {"model_path": next(rounds)})
    monkeypatch.setattr(evaluate_module, "evaluate", lambda c, d, fresh: written.append(d) or {})
    assert run_pipeline(config, tmp_path)["status"] == "done"
    *earlier, final = written
    assert final == tmp_path
    assert earlier == [tmp_path / folder for _, folder in evaluated_models(config)]


def test_a_preferences_stage_that_kept_no_pair_stops_the_run_before_dpo(
    monkeypatch, tmp_path, caplog
):
    import moaa_ray.pipeline.evaluate.stage as evaluate_module
    import moaa_ray.pipeline.generate as generate_module
    import moaa_ray.pipeline.preferences as preferences_module
    import moaa_ray.train.dpo as dpo_module
    import moaa_ray.train.sft as sft_module
    from moaa_ray.orchestrator import run_pipeline
    from moaa_ray.stages.runner import EXIT_CODES

    monkeypatch.chdir(REPO)
    config = load_config(REPO / "configs" / "demo.yaml")
    trained: list[str] = []
    empty = {
        "status": "empty",
        "pairs_kept": 0,
        "warning": "kept nothing of 4 input rows (no valid judgments: 4)",
    }
    monkeypatch.setattr(generate_module, "generate_sft", lambda c, d, fresh: {})
    monkeypatch.setattr(sft_module, "train_sft", lambda c, d, fresh: {"model_path": "sft-model"})
    monkeypatch.setattr(preferences_module, "build_preferences", lambda c, d, fresh, **_: empty)
    monkeypatch.setattr(dpo_module, "train_dpo", lambda c, d, fresh: trained.append(d) or {})
    monkeypatch.setattr(evaluate_module, "evaluate", lambda c, d, fresh: trained.append(d) or {})
    summary = run_pipeline(config, tmp_path)
    assert (summary["status"], EXIT_CODES[summary["status"]]) == ("empty", 4)
    assert trained == [] and list(summary["stages"])[-1] == "round-1/preferences"
    assert "stopped after round-1/preferences (empty): kept nothing of 4 input rows" in caplog.text
