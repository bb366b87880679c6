"""The MoA graph's steps without a cluster: which pool each layer's calls go to."""

from moaa_ray.config import GenerateConfig
from moaa_ray.core.moa import finish_row, new_state, plan_layers
from moaa_ray.engines.base import Answer
from moaa_ray.engines.pools import Completion
from moaa_ray.pipeline.moa_graph import LayerStep, plan_steps

CONFIG = GenerateConfig(
    inputs=[{"path": "unused.jsonl"}],
    layer_proposers=[["p1", "p2", "p3"], ["p1", "p4"]],
    aggregator="agg",
    num_layers=3,
)


class FakePool:
    """Answers every chat call at once with ``<model>:<call number>``; records what it was asked."""

    def __init__(self, name: str):
        self.name, self.calls = name, []

    def submit(self, method, items, params):
        self.calls.append(items)
        number = len(self.calls)
        return [Completion([Answer(f"{self.name}:{number}")]) for _ in items]

    def collect(self, completions):
        return completions

    def fit(self, prompt, max_new_tokens):
        return prompt.messages(), 0  # no context window: every prompt goes as it is


def run(staged: bool):
    plan = plan_layers(
        CONFIG.proposers, CONFIG.aggregator, CONFIG.num_layers, CONFIG.layer_proposers
    )
    pools = {name: FakePool(name) for name in plan.models}
    states = [new_state(f"r{i}", [{"role": "user", "content": f"Q{i}"}], "src") for i in range(2)]
    steps = plan_steps(plan, num_turns=1, staged=staged)
    for step in steps:
        LayerStep(step, plan, pools, CONFIG)(states)
    return plan, pools, states, steps


def test_every_layer_calls_its_own_proposers_pools():
    plan, pools, states, _ = run(staged=False)
    assert [len(pools[m].calls) for m in ("p1", "p2", "p3", "p4", "agg")] == [2, 1, 1, 1, 1]
    second_layer_prompt = pools["p4"].calls[0][0][0]["content"]
    assert all(f"{m}:1" in second_layer_prompt for m in ("p1", "p2", "p3"))
    aggregator_prompt = pools["agg"].calls[0][0][0]["content"]
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
