"""The preference stage: on-policy samples ranked by MoA-as-reward-model into TRL DPO pairs.

Writes, under ``<run_dir>/<stage>/``: ``part-*.parquet`` (prompt / chosen / rejected conversations plus
scores), ``dropped/`` (prompts without a clear winner, with the reason and their samples),
``judgments/`` (the audit table of every judgment), ``rejects.jsonl`` and ``stats.json``. A rerun
processes only prompts not yet kept or dropped.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from moaa_ray.callables import load_callable
from moaa_ray.config import MoaaConfig, PreferencesConfig
from moaa_ray.core.general_preference import (
    matrix_from_comparisons,
    matrix_from_strengths,
    matrix_from_table,
)
from moaa_ray.core.moa import MoaRow
from moaa_ray.core.pairing import count_judge_calls
from moaa_ray.core.tournament import (
    Pair,
    Tournament,
    VerdictRules,
    judgment_stats,
    new_tournament,
    pair_comparisons,
    rank_samples,
)
from moaa_ray.core.verification import Verifier, preference_accuracy, share
from moaa_ray.metrics import count_rows
from moaa_ray.pipeline.cluster_pools import cluster_pools
from moaa_ray.pipeline.inputs import fingerprint_input, load_states
from moaa_ray.pipeline.judging import (
    audit_row,
    judging_steps,
    pairs_for,
    sample_pairs,
    verdict_rules,
)
from moaa_ray.pipeline.preference_graph import RewardModelStep, SampleStep
from moaa_ray.pipeline.streaming import StreamStep, stream_states
from moaa_ray.pools.model_pool import ModelPool
from moaa_ray.pools.pool_set import PoolSet
from moaa_ray.records import Reject, dropped_schema, judgment_schema, preference_schema
from moaa_ray.stages.fingerprint import config_identity, models_identity
from moaa_ray.stages.layout import PREFERENCES
from moaa_ray.stages.rundir import RunDir, StageDir
from moaa_ray.stages.runner import BatchOutcome, run_row_stage

logger = logging.getLogger(__name__)


def build_preferences(
    config: MoaaConfig,
    run_dir: str | Path,
    stage_name: str = PREFERENCES,
    slice_index: int = 0,
    num_slices: int = 1,
    fresh: bool = False,
) -> dict:
    """Sample K answers per prompt, judge them, and write DPO pairs; a rerun resumes.

    Args:
        config: the run's config; needs a ``preferences`` section.
        run_dir: the run directory.
        stage_name: the stage's folder and manifest entry.
        slice_index: which of ``num_slices`` contiguous slices of the prompts to use (iterative
            DPO takes a fresh slice each round).
        num_slices: how many slices the prompts are cut into.
        fresh: if the stage's config, models or inputs changed, move its outputs aside and start
            over (otherwise such a rerun is refused).

    Returns:
        The runner's summary plus pairs kept, drops by reason, judge agreement, position-bias and
        abstain rates; with ``config.verifier``, also ``verifier``: how samples, pairs and judges
        compare with it (:func:`moaa_ray.core.verification.preference_accuracy`).
    """
    if config.preferences is None:
        raise ValueError("config has no 'preferences' section")
    stage = PreferenceStage(
        config, config.preferences, RunDir(run_dir), stage_name, (slice_index, num_slices)
    )
    # The runner passes the stage's rows back to it as they came, whatever their type.
    return run_row_stage(stage, config, fresh, start_pools=cluster_pools)


class PreferenceStage:
    """Sampling, criteria, judges and the aggregator judge (or a reward model) over the prompts."""

    def __init__(
        self,
        config: MoaaConfig,
        prefs: PreferencesConfig,
        run: RunDir,
        name: str,
        prompt_slice: tuple[int, int],
    ):
        self.config, self.prefs, self.name = config, prefs, name
        self.prompt_slice = prompt_slice
        self.stage = run.stage(name)
        self.dropped = StageDir(self.stage.path / "dropped")
        self.audit = StageDir(self.stage.path / "judgments")

    def fingerprint(self) -> dict:
        """The preferences section, its models, its input files and the prompt slice."""
        return {
            **config_identity(self.prefs, "preferences"),
            **models_identity(self.config.models, _models(self.prefs)),
            **{f"inputs.{i}": fingerprint_input(c) for i, c in enumerate(self.prefs.inputs)},
            "prompt_slice": list(self.prompt_slice),
        }

    def load(self) -> tuple[list[Tournament], list[Reject]]:
        """This round's slice of the prompts as tournaments; bad rows become rejects."""
        states, rejects = load_states(self.prefs.inputs)
        index, count = self.prompt_slice
        size = -(-len(states) // count)
        return [_tournament(s) for s in states[index * size : (index + 1) * size]], rejects

    def done_ids(self) -> set[str]:
        """Prompts already kept or dropped."""
        return self.stage.done_ids() | self.dropped.done_ids()

    def batches(self, todo: list[Tournament], pools: PoolSet) -> Iterator[list[Tournament]]:
        """Judged tournaments, batch by batch."""
        steps = _steps(self.prefs, pools.launch(_models(self.prefs)))
        return stream_states(todo, steps, self.prefs.batch_size, starting=pools.wait)

    def write(self, batch: list[Tournament]) -> BatchOutcome:
        """Write kept pairs, dropped prompts and the judgment audit."""
        return _write_batch(batch, self.prefs, self.stage, self.dropped, self.audit)

    def summarize(self) -> dict:
        """Statistics over everything the stage has written; also saved as ``stats.json``."""
        verifier = load_callable(self.config.verifier) if self.config.verifier else None
        stats = _stage_stats(self.stage, self.dropped, self.audit, self.prefs, verifier)
        (self.stage.path / "stats.json").write_text(json.dumps(stats, indent=2))
        return stats

    def unused(self, summary: dict) -> dict[str, int]:
        """Prompts dropped without a pair, by reason (an abstaining judge's: no valid judgments)."""
        return dict(summary["prompts_dropped"])


def _tournament(state: MoaRow) -> Tournament:
    prompt = list(state["messages"])
    while prompt and prompt[-1]["role"] == "assistant":  # the samples answer the last user turn
        prompt.pop()
    return new_tournament(state["row_id"], prompt, state["source"])


def _models(prefs: PreferencesConfig) -> list[str]:
    """Distinct models of the stage: a model in several roles gets one pool."""
    roles = [prefs.policy, prefs.reward_model] + (prefs.judging.models() if prefs.judging else [])
    return list(dict.fromkeys(r for r in roles if r is not None))


def _steps(prefs: PreferencesConfig, pools: dict[str, ModelPool]) -> list[StreamStep[Tournament]]:
    steps: list[StreamStep[Tournament]] = [
        StreamStep(
            SampleStep(
                pools[prefs.policy],
                prefs.num_samples,
                prefs.sampling,
                keep_truncated=prefs.truncated_samples == "keep",
            ),
            "sample",
            [pools[prefs.policy]],
        )
    ]
    if prefs.reward != "llm_judges":
        reward_pool = pools[str(prefs.reward_model)]
        reward_step = RewardModelStep(reward_pool, prefs.reward)
        return steps + [StreamStep(reward_step, prefs.reward, [reward_pool])]
    assert prefs.judging is not None  # checked by the config schema
    return steps + judging_steps(pools, prefs.judging, prefs.pairing)


def _write_batch(
    batch: list[Tournament],
    prefs: PreferencesConfig,
    stage: StageDir,
    dropped: StageDir,
    audit: StageDir,
) -> BatchOutcome:
    kept: list[dict[str, Any]] = []
    drops: list[dict[str, Any]] = []
    judgments: list[dict[str, Any]] = []
    rejects: list[Reject] = []
    rules = verdict_rules(prefs.judging)
    for state in batch:
        if state.get("failed"):  # an engine failure: retried by the next run
            assert state["error"] is not None  # set with "failed" by mark_failed
            rejects.append(Reject(state["source"], -1, state["error"], state["row_id"], True))
            continue
        pairs = pairs_for(state, prefs.pairing)
        stats = json.dumps(judgment_stats(state, pairs, rules) | state["counts"])
        if state["error"]:
            drops.append(_dropped_row(state, state["error"], stats))
            continue
        scores, outcome = rank_samples(state, pairs, rules, prefs.ranking, prefs.min_margin)
        judgments += [audit_row(state, j) for j in state["judgments"]]
        if isinstance(outcome, str):
            drops.append(_dropped_row(state, outcome, stats))
            continue
        chosen, rejected = outcome
        kept.append(
            {
                "row_id": state["row_id"],
                "prompt": state["prompt"],
                "chosen": [{"role": "assistant", "content": state["samples"][chosen]}],
                "rejected": [{"role": "assistant", "content": state["samples"][rejected]}],
                "score_chosen": scores[chosen],
                "score_rejected": scores[rejected],
                "samples": state["samples"],
                "scores": scores,
                "chosen_index": chosen,
                "rejected_index": rejected,
                "win_probabilities": win_probabilities(state, pairs, rules, scores, prefs),
                "criteria": state["criteria"],
                "source": state["source"],
                "stats": stats,
                "preference_table": state["preference_table"],
            }
        )
    audit.write_shard(judgments, judgment_schema())
    dropped.write_shard(drops, dropped_schema())
    stage.write_shard(kept, preference_schema())
    count_rows(stage.path.name, written=len(kept), dropped=len(drops), rejected=len(rejects))
    return BatchOutcome(len(kept) + len(drops), rejects)


def win_probabilities(
    state: Tournament,
    pairs: list[Pair],
    rules: VerdictRules,
    scores: list[float],
    prefs: PreferencesConfig,
) -> Sequence[Sequence[float | None]]:
    """A kept prompt's K x K win probabilities (:mod:`moaa_ray.core.general_preference`): from the
    reward model's pairwise table, the judges' verdicts on each pair, or the samples' scores read as
    strengths, as ``preferences.win_probabilities`` says."""
    if prefs.win_probability_source() == "strengths":
        return matrix_from_strengths(scores)
    if state["preference_table"] is not None:
        return matrix_from_table(state["preference_table"])
    return matrix_from_comparisons(pair_comparisons(state, pairs, rules), len(state["samples"]))


def _dropped_row(state: Tournament, reason: str, stats: str) -> dict[str, Any]:
    return {
        "row_id": state["row_id"],
        "reason": reason,
        "stats": stats,
        "prompt": state["prompt"],
        "samples": state["samples"],
        "preference_table": state["preference_table"],
    }


def _stage_stats(
    stage: StageDir,
    dropped: StageDir,
    audit: StageDir,
    prefs: PreferencesConfig,
    verifier: Verifier | None,
) -> dict:
    """Pairs kept and dropped (by reason), judge agreement, position-bias and abstain rates (of
    judgments, and of pairs under the order policy), pairs judged in one order only and orders the
    judges' mean decided for an abstaining aggregator judge.

    With a verifier, also ``verifier``: its statistics over every pair, dropped prompt and judgment
    written (:func:`moaa_ray.core.verification.preference_accuracy`).
    """
    kept, drops = _rows(stage), _rows(dropped)
    totals: Counter = Counter()
    for row in kept + drops:
        totals.update(json.loads(row["stats"]))
    reasons = Counter(r["reason"] for r in drops)
    num_pairs = len(sample_pairs(prefs.num_samples, prefs.pairing))
    judging = prefs.judging if prefs.reward == "llm_judges" else None
    stats = {
        "pairs_kept": len(kept),
        "prompts_dropped": dict(reasons),
        "judge_calls_per_prompt": count_judge_calls(
            num_pairs,
            len(judging.judges) if judging else 0,
            with_aggregator=bool(judging and judging.aggregator_judge),
            with_criteria_selection=bool(judging and judging.criteria_selector),
        ),
        "judge_agreement": share(totals["orders_with_agreement"], totals["orders_judged"]),
        "position_bias_rate": share(totals["position_flips"], totals["pairs"]),
        "abstain_rate": share(totals["abstains"], totals["judgments"]),
        "pair_abstain_rate": share(totals["pairs_abstained"], totals["pairs"]),
        "single_order_pairs": totals["single_order_pairs"],
        "aggregator_fallbacks": totals["aggregator_fallbacks"],
        "empty_samples": totals["empty_samples"],
        "duplicate_samples": totals["duplicate_samples"],
        "truncated_samples": totals["truncated_samples"],
        "shortened_prompts": totals["shortened_prompts"],
        "criteria_fallbacks": totals["criteria_fallback"],
    }
    if verifier is not None:
        rules = verdict_rules(judging)
        stats["verifier"] = preference_accuracy(kept, drops, _rows(audit), verifier, rules)
    return stats


def _rows(stage: StageDir) -> list[dict]:
    table = stage.read()
    return table.to_pylist() if table is not None else []
