"""FastChat's own MT-Bench code (``fschat==0.2.36``, ``fastchat/llm_judge``) run as the oracle of
moaa_ray.core.mt_bench: the matches gen_judgment.py makes, the requests and rating parse of
common.py's ``play_a_match_single``, and the means show_result.py prints.

GPT-4 is stood in for by a function of the messages FastChat sends. The wheel ships no
``judge_prompts.jsonl``, so the prompts come from the package's copy (``judge_prompts()``), with
the two keys FastChat's file has besides (``type``, ``output_format``) that the copy leaves out.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from unittest import mock

import pytest

JUDGE_MODEL = "gpt-4"  # one of FastChat's OPENAI_MODEL_LIST: graded through chat_completion_openai


def load_llm_judge() -> types.SimpleNamespace:
    """FastChat's ``common``, ``gen_judgment`` and ``show_result`` modules; skips without fschat.

    common.py imports ``anthropic``, the Claude client of FastChat's ``llm_judge`` extra (whose
    ``openai<1`` pin conflicts with ours); only its Claude calls use it, which no test makes, so an
    empty module stands in for the import where anthropic is not installed.
    """
    pytest.importorskip("fastchat")
    stand_in = importlib.util.find_spec("anthropic") is None
    if stand_in:
        sys.modules["anthropic"] = types.ModuleType("anthropic")
    try:
        modules = {
            name: importlib.import_module(f"fastchat.llm_judge.{name}")
            for name in ("common", "gen_judgment", "show_result")
        }
    finally:
        if stand_in:
            del sys.modules["anthropic"]
    return types.SimpleNamespace(**modules)


def answer_max_new_tokens() -> int:
    """The default of gen_model_answer.py's ``--max-new-token``: the length of MT-Bench answers
    (read from its source, since the parser is built under ``__main__``)."""
    spec = importlib.util.find_spec("fastchat.llm_judge.gen_model_answer")
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    found = re.search(r'"--max-new-token",\s*type=int,\s*default=(\d+)', source)
    assert found is not None
    return int(found.group(1))


def single_matches(
    llm_judge: types.SimpleNamespace,
    prompts: Mapping[str, dict],
    questions: Sequence[dict],
    answers: Mapping[str, dict],
    references: Mapping[str, dict],
) -> list:
    """Every single-grading match of one model (``"model"``), as gen_judgment.py's main makes them.

    Args:
        llm_judge: :func:`load_llm_judge`.
        prompts: the four single-grading prompts by name.
        questions: FastChat question rows (``question_id``, ``category``, ``turns``).
        answers: the model's answer rows by question id (``{"choices": [{"turns": [...]}]}``).
        references: GPT-4's reference answer rows by question id.
    """
    gen = llm_judge.gen_judgment
    full = {
        name: {**row, "type": "single", "output_format": "[[rating]]"}
        for name, row in prompts.items()
    }
    judges = gen.make_judge_single(JUDGE_MODEL, full)
    math = [q for q in questions if q["category"] in gen.NEED_REF_CATS]
    default = [q for q in questions if q["category"] not in gen.NEED_REF_CATS]
    model_answers, refs = {"model": dict(answers)}, {JUDGE_MODEL: dict(references)}
    matches = []
    for judge, asked, multi_turn in (
        ("default", default, False),
        ("math", math, False),
        ("default-mt", default, True),
        ("math-mt", math, True),
    ):
        ref_answers = refs if judge.startswith("math") else None
        matches += gen.make_match_single(
            asked, ["model"], model_answers, judges[judge], None, ref_answers, multi_turn
        )
    return matches


def play_single(
    llm_judge: types.SimpleNamespace, match, reply: Callable[[list[dict]], str]
) -> tuple[dict, dict]:
    """One match graded by FastChat's ``play_a_match_single``, ``reply`` standing in for GPT-4.

    Returns:
        ``(request, result)``: the request GPT-4 got (``messages``, ``temperature``,
        ``max_tokens``) and FastChat's result row (``score`` -1 when no rating was read).
    """
    request = {}

    def chat_completion_openai(model, conv, temperature, max_tokens, api_dict=None):
        messages = conv.to_openai_api_messages()
        request.update(messages=messages, temperature=temperature, max_tokens=max_tokens)
        return reply(messages)

    with mock.patch.object(llm_judge.common, "chat_completion_openai", chat_completion_openai):
        with mock.patch("builtins.print"):
            result = llm_judge.common.play_a_match_single(match, output_file=None)
    return request, result


def single_means(llm_judge: types.SimpleNamespace, results: list[dict], folder: Path) -> dict:
    """The means show_result.py ``--mode single`` prints for one model's judgment rows:
    ``{1: first turn, 2: second turn, "overall": average}``."""
    path = folder / "gpt-4_single.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in results))
    printed = []
    args = types.SimpleNamespace(
        input_file=str(path), bench_name="mt_bench", judge_model=JUDGE_MODEL, model_list=None
    )
    with mock.patch("builtins.print", lambda *values: printed.extend(values)):
        llm_judge.show_result.display_result_single(args)
    first, second, average = [value for value in printed if hasattr(value, "columns")]
    return {
        1: float(first["score"].iloc[0]),
        2: float(second["score"].iloc[0]),
        "overall": float(average["score"].iloc[0]),
    }
