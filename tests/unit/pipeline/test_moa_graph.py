"""The MoA graph's steps without a cluster: which pool each layer's calls go to."""

from moaa_ray.config import GenerateConfig
from moaa_ray.core.moa import finish_row, new_state, plan_layers
from moaa_ray.pipeline.moa_graph import LayerStep, plan_steps
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
