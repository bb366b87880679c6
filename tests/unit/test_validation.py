"""``moaa validate``: every problem a run would meet later, listed before anything starts."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from moaa_ray import cli
from moaa_ray.config.validation import read_cluster_resources, validate_config
from tests.support.readme_runs import readme_line

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
models:
  a: {path: "tiny:llama-a", num_gpus: 4, num_replicas: [1, 3]}
  b: {path: "tiny:qwen2-b", num_gpus: 2}
generate:
  inputs:
    - {path: prompts.jsonl}
    - {path: HuggingFaceH4/ultrachat_200k, split: train_sft, messages_column: messages}
  proposers: [a, b]
  aggregator: b
evaluate:
  model: a
  benchmarks: [{path: /tmp/no-such-benchmark.jsonl, baseline: answers}]
  judging: {judges: [b]}
"""

CLUSTER = """
cluster_name: test
max_workers: 3
available_node_types:
  head: {resources: {CPU: 0}, node_config: {}}
  gpu-8x: {resources: {GPU: 8}, max_workers: 2, node_config: {}}
  gpu-4x: {resources: {GPU: 4}, max_workers: 5, node_config: {}}
head_node_type: head
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    return tmp_path


def test_missing_local_files_are_problems_and_hub_names_are_not(workdir):
    report = validate_config("config.yaml", ["generate.aggregate_template=own.txt"])
    assert report.problems == [
        "config.yaml: generate.inputs.0.path: prompts.jsonl does not exist",
        "config.yaml: evaluate.benchmarks.0.path: /tmp/no-such-benchmark.jsonl does not exist",
        "override 'generate.aggregate_template=own.txt': generate.aggregate_template: 'own.txt' is "
        "neither a file nor a template in moaa_ray/prompts/",
    ]
    (workdir / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    (workdir / "own.txt").write_text("$references")
    report = validate_config("config.yaml", ["generate.aggregate_template=own.txt"])
    assert report.problems == [
        "config.yaml: evaluate.benchmarks.0.path: /tmp/no-such-benchmark.jsonl does not exist"
    ]


def test_files_on_storage_not_mounted_here_are_notes_not_problems(workdir):
    (workdir / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    path = "/no-such-mount/eval/question.jsonl"
    report = validate_config("config.yaml", [f"evaluate.benchmarks.0.path={path}"])
    assert report.problems == []
    assert report.notes == [
        f"evaluate.benchmarks.0.path: {path} not checked: /no-such-mount/eval is not mounted here"
    ]


def test_a_gamed_baseline_without_alpaca_evals_columns_names_the_key_and_the_file(workdir):
    (workdir / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    (workdir / "questions.json").write_text('[{"instruction": "Hi?", "output": "Hello."}]')
    (workdir / "difficulty.csv").write_text(",instruction_difficulty\n0,-1.5\n")
    (workdir / "df_gamed.csv").write_text(
        "model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline\n"
        "verbose,0,0.75,-1.2,0.3,False\n"
    )
    key = "evaluate.benchmarks.0.gamed_baseline_path"
    benchmark = "evaluate.benchmarks.0.path=questions.json"

    wrong = validate_config("config.yaml", [benchmark, f"{key}=difficulty.csv"])
    right = validate_config("config.yaml", [benchmark, f"{key}=df_gamed.csv"])

    assert wrong.problems == [
        f"override '{key}=difficulty.csv': {key}: difficulty.csv: no column index, preference, "
        "std_delta_len; AlpacaEval's df_gamed.csv has index, preference, std_delta_len, "
        "instruction_difficulty"
    ]
    assert right.problems == []


def test_functions_that_do_not_import_are_problems(workdir):
    (workdir / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    overrides = [
        "evaluate.benchmarks.0.path=prompts.jsonl",
        "verifier=moaa_ray.tasks.addition:no_such_function",
        "models.judge.engine=function",
        "models.judge.path=no_such_module:judge",
    ]
    problems = validate_config("config.yaml", overrides).problems
    assert len(problems) == 2
    assert problems[0].startswith(
        "override 'models.judge.path=no_such_module:judge': models.judge.path: "
        "'no_such_module:judge': cannot import 'no_such_module'"
    )
    assert problems[1] == (
        "override 'verifier=moaa_ray.tasks.addition:no_such_function': verifier: "
        "'moaa_ray.tasks.addition:no_such_function': 'moaa_ray.tasks.addition' has no callable "
        "'no_such_function'"
    )


def test_cluster_gpus_fill_the_largest_worker_types_first_up_to_max_workers(workdir):
    # 2 nodes of 8 GPUs, then 1 of 4: the cluster's max_workers (3) is reached
    assert read_cluster_resources(Path("cluster.yaml")).total["GPU"] == 20
    assert read_cluster_resources(REPO / "cluster.yaml").total["GPU"] == 128


def test_each_stage_and_each_actor_must_fit_the_cluster(workdir):
    (workdir / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    fine = ["evaluate.benchmarks.0.path=prompts.jsonl"]
    report = validate_config("config.yaml", fine, cluster="cluster.yaml")
    assert report.problems == []
    assert report.notes == ["cluster.yaml: 20 GPUs at max workers; the largest stage asks for 14"]
    too_big = [*fine, "models.a.num_replicas=[1, 5]", "models.b.num_gpus=16"]
    problems = validate_config("config.yaml", too_big, cluster="cluster.yaml").problems
    assert sorted(problems) == [
        "config.yaml: evaluate: asks for 36 GPUs at max replicas or workers; cluster.yaml has 20 "
        "with every worker type at max_workers",
        "config.yaml: generate: asks for 36 GPUs at max replicas or workers; cluster.yaml has 20 "
        "with every worker type at max_workers",
        "override 'models.b.num_gpus=16': models.b.num_gpus: 16 GPUs for one actor, but no node "
        "of cluster.yaml has more than 8",
    ]
    staged = [*fine, "models.a.num_replicas=[1, 5]", "generate.mode=staged"]
    problems = validate_config("config.yaml", staged, cluster="cluster.yaml").problems
    assert [p.split(": ")[1] for p in problems] == ["evaluate"]  # staged: one model at a time


def test_moaa_validate_lists_every_problem_and_exits_2(workdir, capsys):
    argv = [
        "validate",
        "--config",
        "config.yaml",
        "--cluster",
        "cluster.yaml",
        "generate.batch_size=0",
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("config.yaml: 1 problem(s):\n  override 'generate.batch_size=0'")
    (workdir / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    fix = "evaluate.benchmarks.0.path=prompts.jsonl"
    assert cli.main(["validate", "--config", "config.yaml", fix]) == 0
    assert capsys.readouterr().out == "config.yaml: valid\n"


def test_a_model_pinned_to_a_worker_type_as_the_readme_writes_it(monkeypatch, capsys):
    readme = (REPO / "README.md").read_text()
    after = readme[readme.index("**Pinning a model to a worker type.**") :]
    shown = yaml.safe_load(re.search(r"```yaml\n(.*?)```", after, re.S).group(1))
    shipped = yaml.safe_load((REPO / "cluster.yaml").read_text())
    pinned = shown["available_node_types"]["gpu-8x"]["resources"]
    assert shipped["available_node_types"]["gpu-8x"]["resources"] == pinned
    [(name, model)] = shown["models"].items()
    assert set(model["resources"]) <= set(pinned) and model["num_gpus"] <= pinned["GPU"]

    monkeypatch.chdir(REPO)
    command = shlex.split(readme_line(r"moaa validate .*resources="))
    assert command[0].endswith("moaa") and f"models.{name}.resources" in command[-1]
    assert cli.main(command[1:]) == 0, capsys.readouterr().err
    for wrong in ("{h200: 8}", "{h100: 16}"):  # a name no type offers; more than one node holds
        assert cli.main([*command[1:-1], f"models.{name}.resources={wrong}"]) == 2
        err = capsys.readouterr().err
        assert f"models.{name}.resources: one actor asks for GPU: 8, " in err
        assert (
            "which no node type of cluster.yaml offers (head: CPU: 0; gpu-8x: GPU: 8, h100: 8)"
            in err
        )


def test_each_stage_s_custom_resources_must_fit_the_cluster(workdir):
    (workdir / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    pinned = [
        "evaluate.benchmarks.0.path=prompts.jsonl",
        "models.a.resources={big: 1}",
        "models.a.num_replicas=[1, 3]",
    ]
    (workdir / "cluster.yaml").write_text(CLUSTER.replace("{GPU: 8}", "{GPU: 8, big: 1}"))
    problems = validate_config("config.yaml", pinned, cluster="cluster.yaml").problems
    assert sorted(problems) == [
        f"config.yaml: {stage}: asks for 3 of resource 'big' at max replicas or workers; "
        "cluster.yaml has 2 with every worker type at max_workers"
        for stage in ("evaluate", "generate")
    ]
    fits = [*pinned[:2], "models.a.num_replicas=[1, 2]"]  # one replica per gpu-8x node
    assert validate_config("config.yaml", fits, cluster="cluster.yaml").problems == []
