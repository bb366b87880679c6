"""Ray Data steps only the preference stage takes: sample the policy's answers, or score them with a
reward model. Its judging steps are :mod:`~moaa_ray.pipeline.judging`'s, shared with evaluation.

Each step is a picklable callable over a batch of tournament states
(:class:`~moaa_ray.core.tournament.Tournament`) that submits all of its engine calls before
collecting any, so every pool involved works at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from moaa_ray.config import SamplingConfig
from moaa_ray.core.context import Prompt
from moaa_ray.core.pairing import round_robin_pairs
from moaa_ray.core.tournament import Tournament, record_samples
from moaa_ray.pipeline.judging import fit_prompt, seeded_params
from moaa_ray.pools.model_pool import ModelPool
from moaa_ray.records import mark_failed


@dataclass(frozen=True)
class SampleStep:
    """K on-policy answers per prompt from the policy pool; answers cut at ``max_new_tokens`` are
    counted and, unless ``keep_truncated``, neither judged nor used as DPO samples."""

    pool: ModelPool
    num_samples: int
    sampling: SamplingConfig
    keep_truncated: bool = False

    def __call__(self, states: list[Tournament]) -> None:
        params = seeded_params(self.sampling, n=self.num_samples)
        prompts = [(s, fit_prompt(self.pool, s, Prompt.fixed(s["prompt"]), params.max_new_tokens))
                   for s in states]  # fmt: skip
        live = [(s, p) for s, p in prompts if p is not None]
        completions = self.pool.chat([p for _, p in live], params)
        for (state, _), completion in zip(live, completions, strict=True):
            if completion.output is None:
                mark_failed(state, f"sampling failed: {completion.error}")
                continue
            kept = [a.text for a in completion.output if self.keep_truncated or not a.truncated]
            state["counts"]["truncated_samples"] += len(completion.output) - len(kept)
            record_samples(state, kept)


@dataclass(frozen=True)
class RewardModelStep:
    """Reward-model scores of a prompt's samples (``state["rewards"]``).

    Scalar RM: each sample's score (``score``). Likelihood: each sample's mean token
    log-probability under the model (``answer_logprobs``). Pairwise ranker (an engine of
    :data:`~moaa_ray.config.PAIRWISE_ENGINES`, which the config checks): every pair of samples
    compared as (prompt, answer 1, answer 2) in both orders (``compare``), and a sample's reward is
    llm-blender's ranking score (``max_logits``): over all K samples (itself counting 0), the mean
    of its logit of beating the other minus the other's logit of beating it.
    """

    pool: ModelPool
    kind: str  # "scalar_rm", "likelihood" or "pairwise_ranker"

    def __call__(self, states: list[Tournament]) -> None:
        live = [s for s in states if not s["error"]]
        items: list = []
        owners: list[tuple[Tournament, int, int | None]] = []
        for state in live:
            samples = state["samples"]
            if self.kind != "pairwise_ranker":  # one score per sample
                for i, sample in enumerate(samples):
                    items.append(state["prompt"] + [{"role": "assistant", "content": sample}])
                    owners.append((state, i, None))
                continue
            for x, y in round_robin_pairs(len(samples)):
                for first, second in ((x, y), (y, x)):
                    items.append((state["prompt"], samples[first], samples[second]))
                    owners.append((state, first, second))
        method = {"pairwise_ranker": "compare", "likelihood": "answer_logprobs"}.get(
            self.kind, "score"
        )
        completions = self.pool.collect(self.pool.submit(method, items))
        totals: dict[int, list[float]] = {}
        for (state, i, j), completion in zip(owners, completions, strict=True):
            if completion.output is None:  # never a made-up 0.0 reward
                mark_failed(state, f"reward model failed: {completion.error}")
                continue
            rewards = totals.setdefault(id(state), [0.0] * len(state["samples"]))
            rewards[i] += completion.output
            if j is not None:
                rewards[j] -= completion.output
        for state in live:
            if state.get("failed"):
                continue
            k = len(state["samples"])
            scale = k if self.kind == "pairwise_ranker" else 1
            state["rewards"] = [r / scale for r in totals.get(id(state), [0.0] * k)]
