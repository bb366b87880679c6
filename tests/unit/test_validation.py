"""``moaa validate``: every problem a run would meet later, listed before anything starts."""

from pathlib import Path

import pytest

from moaa_ray import cli
from moaa_ray.validation import ClusterGpus, read_cluster_gpus, validate_config

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
    assert read_cluster_gpus(Path("cluster.yaml")) == ClusterGpus(total=20, per_node=8)
    assert read_cluster_gpus(REPO / "cluster.yaml") == ClusterGpus(total=128, per_node=8)


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
