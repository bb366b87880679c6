"""The layered Mixture-of-Agents (MoA, arXiv 2406.04692) as pure functions over a row's state.

Layer 1 proposers answer the conversation; each later layer (the same proposers, or its own) sees
the previous layer's answers as numbered references (appended to the system message) and writes a
better one; the last layer is one aggregator whose answer becomes the assistant turn. In a
multi-turn conversation every assistant turn is regenerated in order, with the earlier (already
regenerated) turns as context. A row's state is a :class:`MoaRow`. A plan without the aggregator
serves the SFT-data ablations whose targets are proposers' answers (:mod:`moaa_ray.core.teachers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, TypedDict

from typing_extensions import NotRequired

from moaa_ray.core.context import Prompt
from moaa_ray.core.conversations import Messages
from moaa_ray.core.templates import render_template, split_numbered
from moaa_ray.records import RowStatus, mark_failed

EMPTY_OUTPUT = "empty output"  # the model answered with nothing: an answer, not a failed call
AGGREGATE_TEMPLATE = "aggregate.txt"
_SLOT = "\x00"  # stands for the references when a template is split around them


class MoaOutput(TypedDict):
    """One model's answer in one slot of one layer, for one target turn of a row."""

    turn: int  # which target turn (an index into the row's ``targets``)
    layer: int  # 0-based; the plan's last layer is the aggregator
    slot: int  # position of the model in its layer
    model: str
    content: str | None  # the answer; None when the call failed or the model answered nothing
    error: str | None  # why there is no answer (EMPTY_OUTPUT for an empty one); None with one
    truncated: bool  # the answer was cut at ``max_new_tokens``


class MoaRow(RowStatus):
    """A row's state in the MoA graph; JSON-able, so Ray Data carries it between layers (as a
    string column: :mod:`moaa_ray.pipeline.streaming`)."""

    row_id: str
    source: str  # where the row came from (``<input path>#<index>``), for rejects
    messages: Messages  # the input conversation, its assistant turns to be regenerated
    targets: list[int]  # message positions to generate, in order (see generation_targets)
    outputs: list[MoaOutput]  # every answer so far, of every turn, layer and slot
    shortened: int  # prompts whose references were cut to fit a context window
    rewards: NotRequired[
        list[float | None]
    ]  # best_of_n: each last-layer slot's score (None: unused)


@dataclass(frozen=True)
class LayerPlan:
    """Which model answers in which slot of each layer (``layers[-1]`` is the aggregator alone, or,
    in a plan without one, the last proposer layer)."""

    layers: tuple[tuple[str, ...], ...]
    aggregated: bool = True  # whether the last layer is the aggregator

    @property
    def proposer_layers(self) -> int:
        """How many layers are proposer layers."""
        return len(self.layers) - self.aggregated

    @property
    def models(self) -> tuple[str, ...]:
        """Distinct models in order of first appearance (one actor pool each)."""
        return tuple(dict.fromkeys(m for layer in self.layers for m in layer))


def plan_layers(
    proposers: list[str],
    aggregator: str | None,
    num_layers: int,
    layer_proposers: list[list[str]] | None = None,
) -> LayerPlan:
    """Build the MoA plan: ``num_layers - 1`` layers of proposers, then the aggregator.

    Args:
        proposers: model names of every proposer layer; a name may repeat (several samples of
            one model).
        aggregator: model name of the last layer; None: no aggregator layer (the last proposer
            layer's answers are the SFT candidates).
        num_layers: total layers with the aggregator's, at least 2.
        layer_proposers: instead of ``proposers``, each proposer layer's own model names
            (``num_layers - 1`` non-empty lists).

    Returns:
        The plan.
    """
    layers = layer_proposers if layer_proposers is not None else [proposers] * (num_layers - 1)
    if num_layers < 2 or len(layers) != num_layers - 1 or not all(layers):
        raise ValueError(
            "MoA needs num_layers >= 2 and at least one proposer in each of its num_layers - 1 "
            f"proposer layers (got num_layers={num_layers}, proposer layers {layers})"
        )
    last = ((aggregator,),) if aggregator is not None else ()
    return LayerPlan(tuple(tuple(layer) for layer in layers) + last, aggregator is not None)


def generation_targets(messages: Messages) -> list[int]:
    """Positions of the assistant turns to (re)generate; a trailing user turn gets a new one."""
    targets = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if messages[-1]["role"] == "user":
        targets.append(len(messages))
    return targets


def new_state(row_id: str, messages: Messages, source: str) -> MoaRow:
    """The state of a row before any layer ran."""
    return {
        "row_id": row_id,
        "source": source,
        "messages": messages,
        "targets": generation_targets(messages),
        "outputs": [],
        "error": None,
        "shortened": 0,
    }


def record_output(
    state: MoaRow,
    turn: int,
    layer: int,
    slot: int,
    model: str,
    content: str | None,
    error: str | None,
    truncated: bool = False,
) -> None:
    """Store one model's answer (or its failure) for a turn, layer and slot; empty text is a failure.

    ``truncated``: the answer was cut at ``max_new_tokens``; kept as a reference, while
    :func:`finish_row` drops a cut final answer unless told to keep it.
    """
    if content is not None and not content.strip():
        content, error = None, EMPTY_OUTPUT
    state["outputs"].append(
        {
            "turn": turn,
            "layer": layer,
            "slot": slot,
            "model": model,
            "content": content,
            "error": error,
            "truncated": truncated,
        }
    )


def layer_outputs(state: MoaRow, turn: int, layer: int) -> list[MoaOutput]:
    """A layer's recorded outputs for a turn, in slot order."""
    found = [o for o in state["outputs"] if o["turn"] == turn and o["layer"] == layer]
    return sorted(found, key=lambda o: o["slot"])


def turn_context(state: MoaRow, turn: int, last_layer: int) -> Messages | None:
    """The conversation before target ``turn``, with earlier assistant turns already regenerated.

    Returns None when an earlier turn has no aggregated answer.
    """
    messages = [dict(m) for m in state["messages"]]
    for earlier in range(turn):
        final = layer_outputs(state, earlier, last_layer)
        if not final or final[0]["content"] is None:
            return None
        messages[state["targets"][earlier]]["content"] = final[0]["content"]
    return messages[: state["targets"][turn]]


def _reference_label(number: int) -> str:
    return f"{number}. "


def render_references(references: list[str]) -> str:
    """Number references the way the MoA paper's prompt does: ``1. ...`` one block each."""
    return "\n".join(f"{_reference_label(i)}{text}" for i, text in enumerate(references, start=1))


def parse_references(text: str, template: str = AGGREGATE_TEMPLATE) -> list[str]:
    """Read the references back from a system message that ``with_references`` wrote.

    The inverse of ``render_references`` inside ``template``'s instruction (the packaged one ends
    with "Responses from models:" and the numbered references). Numbering is ambiguous: a reference
    with a line that starts with the next reference's number (``"2. "`` inside reference 1, e.g. a
    numbered list) reads as the start of that reference, and the later references shift. Only the
    consecutive next number starts one, so other numbered lines stay inside their reference.

    Args:
        text: the system message's content.
        template: the aggregate-and-synthesize template the message was written with.

    Returns:
        The references, in order; empty when ``text`` holds no instruction with references.
    """
    before, _, after = render_template(template, references=_SLOT).partition(_SLOT)
    start = text.find(before)
    if start < 0 or not text.endswith(after):
        return []
    numbered = text[start + len(before) : len(text) - len(after)]
    return split_numbered(numbered, _reference_label, "\n")


def with_references(context: Messages, references: list[str], template: str) -> Messages:
    """Add the aggregate-and-synthesize instruction with numbered references to the system message.

    An existing system message keeps its text; the instruction is appended after a blank line.
    """
    instruction = render_template(template, references=render_references(references))
    if context and context[0]["role"] == "system":
        system = {"role": "system", "content": f"{context[0]['content']}\n\n{instruction}"}
        return [system] + context[1:]
    return [{"role": "system", "content": instruction}] + context


def is_failed_call(output: MoaOutput) -> bool:
    """Whether a recorded output is an engine call that failed (not an empty answer)."""
    return output["content"] is None and output["error"] != EMPTY_OUTPUT


def layer_requests(
    state: MoaRow,
    plan: LayerPlan,
    turn: int,
    layer: int,
    template: str,
    min_references: int | None = None,
) -> list[tuple[int, str, Prompt]]:
    """The (slot, model, prompt) calls one layer makes for one turn of a row; an aggregating
    layer's references are the prompt's parts, cut evenly where it must fit a context window.

    Args:
        state: the row's state.
        plan: the MoA plan.
        turn: the target turn (0-based).
        layer: the layer (0-based).
        template: the aggregate-and-synthesize template.
        min_references: fewest previous-layer answers an aggregating layer may use; None: a failed
            previous-layer call fails the row (empty answers are dropped and counted).

    Returns:
        The calls; none when the row has no such turn or already failed. The row is marked failed
        (retried by the next run) when failed calls leave too few references, and rejected when
        the previous layer's answers are all empty, since an aggregator without references is no MoA.
    """
    if state["error"] is not None or turn >= len(state["targets"]):
        return []
    last = len(plan.layers) - 1
    if turn > 0 and any(is_failed_call(o) for o in layer_outputs(state, turn - 1, last)):
        mark_failed(state, f"turn {turn - 1}: the aggregator's call failed")
        return []
    context = turn_context(state, turn, last_layer=last)
    if context is None:
        state["error"] = f"turn {turn - 1}: the aggregator gave no answer"
        return []
    if layer > 0:
        previous = layer_outputs(state, turn, layer - 1)
        references = [o["content"] for o in previous if o["content"]]
        failed = [o for o in previous if is_failed_call(o)]
        needed = len(previous) if min_references is None else min_references
        if failed and len(references) < needed:
            mark_failed(
                state,
                f"turn {turn} layer {layer + 1}: {len(failed)} of {len(previous)} previous-layer "
                f"calls failed ({failed[0]['error']})",
            )
            return []
        if len(references) < max(1, min_references or 1):
            state["error"] = (
                f"turn {turn} layer {layer + 1}: {len(references)} usable previous-layer answers"
            )
            return []
        prompt = Prompt(partial(_aggregator_prompt, context, template), tuple(references))
    else:
        prompt = Prompt.fixed(context)
    return [(slot, model, prompt) for slot, model in enumerate(plan.layers[layer])]


def _aggregator_prompt(context: Messages, template: str, references: list[str]) -> Messages:
    return with_references(context, references, template)


class TruncatedAnswer(ValueError):
    """A row's final answer was cut at ``max_new_tokens``, so it is no SFT target."""


def finish_row(state: MoaRow, plan: LayerPlan, keep_truncated: bool = False) -> dict[str, Any]:
    """The SFT record of a completed row, the aggregator's answers its assistant turns.

    Args:
        state: the row's state after its last layer.
        plan: the MoA plan.
        keep_truncated: keep a final answer cut at ``max_new_tokens`` as an SFT target.

    Returns:
        The record (:func:`sft_record`), its ``teacher`` the aggregator.

    Raises:
        ValueError: the row has no answer, or (unless ``keep_truncated``) a cut one, with the reason;
            ``state["failed"]`` is set when an engine call failed (the next run retries the row)
            rather than the model answering nothing.
    """
    if state["error"] is not None:
        raise ValueError(state["error"])
    last = len(plan.layers) - 1
    answers = []
    for turn in range(len(state["targets"])):
        final = layer_outputs(state, turn, last)
        if not final or final[0]["content"] is None:
            error = final[0]["error"] if final else "not generated"
            if final and is_failed_call(final[0]):
                mark_failed(state, f"turn {turn}: aggregator call failed: {error}")
            raise ValueError(f"turn {turn}: aggregator failed: {error}")
        if final[0].get("truncated") and not keep_truncated:
            raise TruncatedAnswer(f"turn {turn}: the aggregator's answer was cut at max_new_tokens")
        answers.append(str(final[0]["content"]))
    return sft_record(state, plan, state["row_id"], answers, plan.layers[-1][0])


def sft_record(
    state: MoaRow,
    plan: LayerPlan,
    row_id: str,
    answers: list[str],
    teacher: str,
    scores: list[float | None] | None = None,
) -> dict[str, Any]:
    """An SFT record: the row's conversation with ``answers`` as its assistant turns, and provenance.

    Args:
        state: the row's state.
        plan: the MoA plan.
        row_id: the record's id (the row's, or one derived from it when a row gives several).
        answers: one answer per target turn, in order.
        teacher: the model whose answers they are.
        scores: best_of_n's reward of each last-layer slot, else None.

    Returns:
        ``row_id``, ``messages``, ``proposals`` (every output), ``models``, ``source``,
        ``teacher``, ``teacher_scores``, and the proposer answers empty (``dropped_references``)
        and cut (``truncated_references``).
    """
    messages = [dict(m) for m in state["messages"]]
    for position, answer in zip(state["targets"], answers, strict=True):
        turn = {"role": "assistant", "content": answer}
        if position < len(messages):
            messages[position] = turn
        else:
            messages.append(turn)
    proposer_outputs = [o for o in state["outputs"] if o["layer"] < plan.proposer_layers]
    return {
        "row_id": row_id,
        "messages": messages,
        "proposals": state["outputs"],
        "models": list(plan.models),
        "source": state["source"],
        "teacher": teacher,
        "teacher_scores": scores,
        "dropped_references": sum(1 for o in proposer_outputs if o["content"] is None),
        "truncated_references": sum(1 for o in proposer_outputs if o.get("truncated")),
    }
