"""Ray Data steps only the preference stage takes: sample the policy's answers, or score them with a
reward model. Its judging steps are :mod:`~moaa_ray.pipeline.judging`'s, shared with evaluation.

Each step is a picklable callable over a batch of tournament states
(:class:`~moaa_ray.core.tournament.Tournament`) that submits all of its engine calls before
collecting any, so every pool involved works at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from moaa_ray.config import SamplingConfig
from moaa_ray.core.context import Prompt
from moaa_ray.core.general_preference import matrix_from_table, mean_score_differences
from moaa_ray.core.pairing import round_robin_pairs
from moaa_ray.core.tournament import Tournament, record_judgment, record_samples
from moaa_ray.pipeline.judging import fit_prompt, seeded_params
from moaa_ray.pools.model_pool import ModelPool
from moaa_ray.records import mark_failed

Table = list[list[float]]  # a pairwise ranker's K x K scores, [i][j]: sample i over sample j


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
    :data:`~moaa_ray.config.PAIRWISE_ENGINES`, which the config checks): a K x K table per prompt,
    kept as ``state["preference_table"]`` for SPPO's and GPO's targets
    (:mod:`moaa_ray.core.general_preference`). A ``pairrm`` engine compares every pair as (prompt,
    answer 1, answer 2) in both orders (``compare``), ``[i][j]`` its logit that i beats j shown
    first; a ``gpm`` engine scores all of a prompt's samples in one call (``preference_table``),
    ``[i][j]`` its skew-symmetric score. A sample's reward is llm-blender's ranking score
    (``max_logits``), which GPM's ``rank_gp.py`` uses too: the mean over all K samples (itself
    counting 0) of ``[i][j] - [j][i]``. The table is also written to the judgments audit
    (:func:`audit_table`).
    """

    pool: ModelPool
    kind: str  # "scalar_rm", "likelihood" or "pairwise_ranker"

    def __call__(self, states: list[Tournament]) -> None:
        live = [s for s in states if not s["error"]]
        if self.kind == "pairwise_ranker":
            tables = self._gpm_tables if self.pool.config.engine == "gpm" else self._compared_tables
            for state, table in tables(live):
                state["preference_table"] = table
                state["rewards"] = mean_score_differences(table)
                audit_table(state, self.pool.name, table)
            return
        items = [state["prompt"] + [{"role": "assistant", "content": sample}]
                 for state in live for sample in state["samples"]]  # fmt: skip
        method = "answer_logprobs" if self.kind == "likelihood" else "score"
        completions = iter(self.pool.collect(self.pool.submit(method, items)))
        for state in live:
            scores = [next(completions) for _ in state["samples"]]
            failed = next((c for c in scores if c.output is None), None)
            if failed is not None:  # never a made-up 0.0 reward
                mark_failed(state, f"reward model failed: {failed.error}")
                continue
            state["rewards"] = [c.output for c in scores]

    def _compared_tables(self, live: list[Tournament]) -> Iterator[tuple[Tournament, Table]]:
        """Every pair compared in both orders; a row with a failed comparison fails."""
        items, owners = [], []
        for state in live:
            samples = state["samples"]
            for x, y in round_robin_pairs(len(samples)):
                for first, second in ((x, y), (y, x)):
                    items.append((state["prompt"], samples[first], samples[second]))
                    owners.append((state, first, second))
        completions = self.pool.collect(self.pool.submit("compare", items))
        tables = {id(s): [[0.0] * len(s["samples"]) for _ in s["samples"]] for s in live}
        for (state, i, j), completion in zip(owners, completions, strict=True):
            if completion.output is None:  # never a made-up logit
                mark_failed(state, f"reward model failed: {completion.error}")
                continue
            tables[id(state)][i][j] = completion.output
        return ((s, tables[id(s)]) for s in live if not s.get("failed"))

    def _gpm_tables(self, live: list[Tournament]) -> Iterator[tuple[Tournament, Table]]:
        """A ``gpm`` engine's table per prompt, all of its samples in one call."""
        items = [(state["prompt"], state["samples"]) for state in live]
        completions = self.pool.collect(self.pool.submit("preference_table", items))
        for state, completion in zip(live, completions, strict=True):
            if completion.output is None:  # never a made-up table
                mark_failed(state, f"reward model failed: {completion.error}")
                continue
            yield state, completion.output


def audit_table(state: Tournament, judge: str, table: Table) -> None:
    """A pairwise ranker's table as judgments, so the audit (and the verifier's agreement figures)
    show it beside LLM judges': each pair in both orders, ``p_a`` the shown-first sample's win
    probability (:func:`~moaa_ray.core.general_preference.matrix_from_table`)."""
    probabilities = matrix_from_table(table)
    for x, y in round_robin_pairs(len(table)):
        record_judgment(state, judge, (x, y), "ab", p_a=probabilities[x][y])
        record_judgment(state, judge, (x, y), "ba", p_a=probabilities[y][x])
