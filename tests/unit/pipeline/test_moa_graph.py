"""The MoA graph's steps without a cluster: which pool each layer's calls go to."""

from types import SimpleNamespace

import pytest

from moaa_ray.config import GenerateConfig
from moaa_ray.core.moa import finish_row, new_state, plan_layers
from moaa_ray.pipeline.moa_graph import LayerStep, ScoreStep, plan_steps
from moaa_ray.pools.dispatch import Completion
from tests.support.fakes import FakePool

CONFIG = GenerateConfig(
    inputs=[{"path": "unused.jsonl"}],
    layer_proposers=[["p1", "p2", "p3"], ["p1", "p4"]],
    aggregator="agg",
    num_layers=3,
)


def numbered_pool(name: str) -> FakePool:
    """A pool that answers every chat call with ``<model>:<call number>``."""
    pool = FakePool(lambda method, conversation, params: [f"{name}:{len(pool.calls)}"])
    return pool


def run(staged: bool):
    plan = plan_layers(
        CONFIG.proposers, CONFIG.aggregator, CONFIG.num_layers, CONFIG.layer_proposers
    )
    pools = {name: numbered_pool(name) for name in plan.models}
    states = [new_state(f"r{i}", [{"role": "user", "content": f"Q{i}"}], "src") for i in range(2)]
    steps = plan_steps(plan, num_turns=1, staged=staged)
    for step in steps:
        LayerStep(step, plan, pools, CONFIG)(states)
    return plan, pools, states, steps


def test_every_layer_calls_its_own_proposers_pools():
    plan, pools, states, _ = run(staged=False)
    assert [len(pools[m].calls) for m in ("p1", "p2", "p3", "p4", "agg")] == [2, 1, 1, 1, 1]
    second_layer_prompt = pools["p4"].calls[0][1][0][0]["content"]
    assert all(f"{m}:1" in second_layer_prompt for m in ("p1", "p2", "p3"))
    aggregator_prompt = pools["agg"].calls[0][1][0][0]["content"]
    assert "p1:2" in aggregator_prompt and "p4:1" in aggregator_prompt
    assert "p2:1" not in aggregator_prompt  # only the previous layer's answers are references
    assert [finish_row(s, plan)["messages"][-1]["content"] for s in states] == ["agg:1"] * 2


def test_staged_mode_runs_each_layers_models_one_at_a_time():
    _, _, states, steps = run(staged=True)
    assert [(s.layer, s.model) for s in steps] == [
        (0, "p1"), (0, "p2"), (0, "p3"), (1, "p1"), (1, "p4"), (2, "agg")
    ]  # fmt: skip
    layers = [(o["layer"], o["model"]) for o in states[0]["outputs"]]
    assert layers == [(s.layer, s.model) for s in steps]


def reward_pool(engine: str) -> FakePool:
    """A reward model's pool (``engine``) that prefers p2's answers."""
    pool = FakePool(lambda method, conversation: float(conversation[-1]["content"][:2] == "p2"))
    pool.config = SimpleNamespace(engine=engine)
    return pool


def proposed(plan):
    pools = {name: numbered_pool(name) for name in plan.models}
    states = [new_state(f"r{i}", [{"role": "user", "content": f"Q{i}"}], "src") for i in range(2)]
    steps = plan_steps(plan, num_turns=1, staged=True, reward_model="rm")
    for step in steps[:-1]:
        LayerStep(step, plan, pools, CONFIG)(states)
    return states, steps


@pytest.mark.parametrize(("engine", "method"), [("hf_reward", "score"), ("hf", "answer_logprobs")])
def test_best_of_n_has_the_reward_model_score_the_proposers_answers_last(engine, method):
    plan = plan_layers(["p1", "p2"], None, 2)
    states, steps = proposed(plan)
    assert [(s.layer, s.model, s.scoring) for s in steps] == [
        (0, "p1", False), (0, "p2", False), (1, "rm", True)
    ]  # fmt: skip
    pool = reward_pool(engine)
    ScoreStep(pool, plan, keep_truncated=False)(states)
    assert [call[0] for call in pool.calls] == [method]  # one call for the batch
    assert [answer[-1]["content"] for answer in pool.calls[0][1]] == ["p1:1", "p2:1"] * 2
    assert [s["rewards"] for s in states] == [[0.0, 1.0]] * 2


def test_a_failed_reward_call_fails_the_row_with_no_made_up_reward():
    plan = plan_layers(["p1", "p2"], None, 2)
    states, _ = proposed(plan)
    pool = reward_pool("hf_reward")
    pool.collect = lambda submitted: [Completion(None, "rm down") for _ in submitted]
    ScoreStep(pool, plan, keep_truncated=False)(states)
    assert all(s["failed"] and "rm down" in s["error"] and "rewards" not in s for s in states)
