"""SFT targets for MoAA's SFT-data ablation (arXiv 2505.03059): proposers' answers as teachers.

MoAA's SFT targets are the aggregator's answers; its ablation compares them with a "Random Teacher"
(each row's target is one proposer's answer, drawn per row) and a "Combined Teacher" (every
proposer's answer is a row of its own); a reward model's best-of-N is the usual third. The candidates
are the last proposer layer's answers (with more than one proposer layer, those that read the
earlier layers' answers as references), from a plan without the aggregator
(:func:`~moaa_ray.core.moa.plan_layers`). Rows are single-turn: a later turn's context would depend
on whose earlier answer it continues.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from moaa_ray.core.conversations import Messages
from moaa_ray.core.moa import (
    LayerPlan,
    MoaOutput,
    MoaRow,
    TruncatedAnswer,
    is_failed_call,
    layer_outputs,
    sft_record,
)
from moaa_ray.records import mark_failed

SftTarget = Literal["aggregator", "random_proposer", "all_proposers", "best_of_n"]


def candidates(state: MoaRow, plan: LayerPlan, keep_truncated: bool) -> list[MoaOutput]:
    """The last layer's answers that may be an SFT target, in slot order.

    Args:
        state: a single-turn row's state after its last layer.
        plan: the MoA plan, without an aggregator.
        keep_truncated: an answer cut at ``max_new_tokens`` may be a target.

    Raises:
        ValueError: the row failed earlier, a last-layer call failed (``state["failed"]`` is set:
            the next run retries the row, so no teacher is missing from the ablation), or no answer
            is left (:class:`~moaa_ray.core.moa.TruncatedAnswer` when cut ones were dropped).
    """
    if state["error"] is not None:
        raise ValueError(state["error"])
    outputs = layer_outputs(state, 0, len(plan.layers) - 1)
    failed = [o for o in outputs if is_failed_call(o)]
    if failed:
        mark_failed(state, f"proposer {failed[0]['model']} failed: {failed[0]['error']}")
        raise ValueError(state["error"])
    answered = [o for o in outputs if o["content"] is not None]
    usable = [o for o in answered if keep_truncated or not o["truncated"]]
    if not usable and answered:
        raise TruncatedAnswer("every proposer's answer was cut at max_new_tokens")
    if not usable:
        raise ValueError("every proposer's answer was empty")
    return usable


def draw_teacher(row_id: str, seed: int, count: int) -> int:
    """Which of ``count`` candidates a row's random teacher is: the same for a row id and seed on
    every run and machine, so a resumed run writes the rows it would have written."""
    digest = hashlib.sha256(f"{seed}:{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def derived_row_id(row_id: str, output: MoaOutput) -> str:
    """The id of one proposer's row of a prompt (all_proposers): ``<row_id>#<slot>-<model>``."""
    return f"{row_id}#{output['slot']}-{output['model']}"


def prompt_row_id(row_id: str) -> str:
    """The prompt's row id of a written row (a derived id's part before ``#``)."""
    return row_id.partition("#")[0]


def scoring_requests(
    state: MoaRow, plan: LayerPlan, keep_truncated: bool
) -> list[tuple[int, Messages]]:
    """What best_of_n's reward model scores: (slot, the conversation ending in that slot's answer).

    Nothing for a row without candidates: writing it says why (:func:`teacher_rows`).
    """
    try:
        found = candidates(state, plan, keep_truncated)
    except ValueError:
        return []
    context = state["messages"][: state["targets"][0]]
    return [
        (o["slot"], [*context, {"role": "assistant", "content": str(o["content"])}]) for o in found
    ]


def record_rewards(state: MoaRow, plan: LayerPlan, rewards: dict[int, float]) -> None:
    """Store the reward of each scored slot of the last layer (None for the slots not scored)."""
    state["rewards"] = [rewards.get(slot) for slot in range(len(plan.layers[-1]))]


def teacher_rows(
    state: MoaRow, plan: LayerPlan, target: SftTarget, keep_truncated: bool, seed: int
) -> list[dict[str, Any]]:
    """The SFT records of a row whose targets are proposers' answers.

    Args:
        state: a single-turn row's state after its last layer (and, for best_of_n, its rewards).
        plan: the MoA plan, without an aggregator.
        target: ``random_proposer`` (one record, its answer drawn by :func:`draw_teacher`),
            ``all_proposers`` (one record per answer, ids from :func:`derived_row_id`) or
            ``best_of_n`` (one record, the best-scored answer; the first slot on a tie).
        keep_truncated: an answer cut at ``max_new_tokens`` may be a target.
        seed: random_proposer's seed.

    Returns:
        Records as :func:`~moaa_ray.core.moa.sft_record` builds them, each ``teacher`` the
        answer's model (best_of_n's with every slot's reward in ``teacher_scores``).

    Raises:
        ValueError: as :func:`candidates`; best_of_n also when the answers have no rewards.
    """
    found = candidates(state, plan, keep_truncated)
    row_id = state["row_id"]
    if target == "all_proposers":
        return [
            sft_record(state, plan, derived_row_id(row_id, o), [str(o["content"])], o["model"])
            for o in found
        ]
    if target == "random_proposer":
        chosen = found[draw_teacher(row_id, seed, len(found))]
        return [sft_record(state, plan, row_id, [str(chosen["content"])], chosen["model"])]
    if target != "best_of_n":
        raise ValueError(f"sft_target {target!r} is not a proposer target")
    rewards = state.get("rewards")
    if rewards is None:
        raise ValueError("best_of_n: the proposers' answers were not scored")
    scored = [(score, o) for o in found if (score := rewards[o["slot"]]) is not None]
    _, best = max(scored, key=lambda pair: pair[0])
    return [sft_record(state, plan, row_id, [str(best["content"])], best["model"], rewards)]
