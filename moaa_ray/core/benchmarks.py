"""Loaders for benchmark question files: MT-Bench, Arena-Hard v0.1, AlpacaEval and verified prompts.

Every loader reads JSON Lines or a JSON list and returns :class:`BenchmarkQuestion` rows; a bad row
raises ``ValueError`` naming the file and line. The evaluation stage's state of a question is
:class:`~moaa_ray.core.eval_question.EvalQuestion`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

FORMATS = ("mt_bench", "arena_hard", "alpaca_eval", "verified")


@dataclass
class BenchmarkQuestion:
    """One benchmark question, as its file holds it.

    Attributes:
        question_id: the benchmark's id (MT-Bench ``question_id``, Arena-Hard ``uid``, AlpacaEval row
            index, verified ``id`` or ``question_id`` or row index).
        turns: user turns, in order.
        category: the benchmark's category (AlpacaEval: the source ``dataset``).
        reference: reference answer per turn (MT-Bench math, reasoning and coding questions).
        baseline_answer: the baseline model's answer per turn (Arena-Hard, AlpacaEval).
    """

    question_id: str
    turns: list[str]
    category: str | None = None
    reference: list[str] | None = None
    baseline_answer: list[str] | None = None


def _skip_whitespace(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_json_list(text: str, path: Path) -> Iterator[tuple[int, object]]:
    decoder = json.JSONDecoder()
    pos = _skip_whitespace(text, text.index("[") + 1)
    while pos < len(text) and text[pos] != "]":
        line = text.count("\n", 0, pos) + 1
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: invalid JSON: {error.msg}") from error
        yield line, item
        pos = _skip_whitespace(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_whitespace(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            line = text.count("\n", 0, pos) + 1
            raise ValueError(f"{path}:{line}: expected ',' or ']' between list items")
    if pos >= len(text):
        line = text.count("\n") + 1
        raise ValueError(f"{path}:{line}: JSON list is not closed with ']'")


def _read_json_lines(text: str, path: Path) -> Iterator[tuple[int, object]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            try:
                yield line, json.loads(raw)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line}: invalid JSON: {error.msg}") from error


def _read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line number, row)`` from a JSON list or JSON Lines file; rows must be objects."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        items: Iterator[tuple[int, object]] = _read_json_list(text, path)
    else:
        items = _read_json_lines(text, path)
    for line, item in items:
        if not isinstance(item, dict):
            raise ValueError(f"{path}:{line}: expected a JSON object, got {type(item).__name__}")
        yield line, item


def _string_list(value: object, where: str, field: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{where}: {field!r} must be a non-empty list of strings")
    return value


def _string(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: {key!r} must be a non-empty string, got {value!r:.80}")
    return value


def _optional_string(row: dict, key: str, where: str) -> str | None:
    return None if row.get(key) is None else _string(row, key, where)


def _question_id(row: dict, keys: tuple[str, ...], where: str) -> str:
    """The row's id under the first of ``keys`` it has; ids may be strings or integers."""
    key = next((k for k in keys if k in row), keys[0])
    value = row.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _string(row, key, where)


def _index_by_id(
    path: Path, id_keys: tuple[str, ...], parse: Callable[[dict, str], list[str]]
) -> dict[str, list[str]]:
    """Map question id to the answer turns ``parse(row, where)`` reads from each row of ``path``."""
    answers: dict[str, list[str]] = {}
    for line, row in _read_rows(path):
        where = f"{path}:{line}"
        answers[_question_id(row, id_keys, where)] = parse(row, where)
    return answers


def _choice_turns(row: dict, where: str) -> list[str]:
    """Answer turns of a FastChat-style answer row: ``choices[0].turns`` (strings or ``{content}``)."""
    try:
        turns = row["choices"][0]["turns"]
        turns = [t["content"] if isinstance(t, dict) else t for t in turns]
    except (KeyError, IndexError, TypeError) as error:
        raise ValueError(f"{where}: answer row needs 'choices[0].turns'") from error
    return _string_list(turns, where, "choices[0].turns")


def _message_turns(row: dict, where: str) -> list[str]:
    """Assistant turns of an Arena-Hard answer row: ``messages`` with content a string or ``{answer}``."""
    if "choices" in row:
        return _choice_turns(row, where)
    messages = row.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError(f"{where}: answer row needs a 'messages' list or 'choices'")
    contents = [m.get("content") for m in messages if m.get("role") == "assistant"]
    turns = [c.get("answer") if isinstance(c, dict) else c for c in contents]
    return _string_list(turns, where, "assistant messages")


def _attach(
    questions: list[BenchmarkQuestion],
    answers: dict[str, list[str]],
    field: str,
    path: str | Path,
    expect_all: bool,
) -> None:
    """Set ``field`` of each question from ``answers`` by id, logging ids that do not line up."""
    by_id = {q.question_id: q for q in questions}
    for question_id, turns in answers.items():
        if question_id in by_id:
            setattr(by_id[question_id], field, turns)
    unmatched = len(answers.keys() - by_id.keys())
    if unmatched:
        logger.warning("%s: %d answers match no question id", path, unmatched)
    missing = len(by_id.keys() - answers.keys())
    if expect_all and missing:
        logger.warning("%s: %d questions have no %s", path, missing, field)


def _read_questions(
    path: Path, parse_row: Callable[[dict, str, int], BenchmarkQuestion]
) -> list[BenchmarkQuestion]:
    """Parse each row with ``parse_row(row, where, index)``; ids must be unique, the file non-empty."""
    questions: list[BenchmarkQuestion] = []
    first_lines: dict[str, int] = {}
    for index, (line, row) in enumerate(_read_rows(path)):
        where = f"{path}:{line}"
        question = parse_row(row, where, index)
        if question.question_id in first_lines:
            raise ValueError(
                f"{where}: duplicate question id {question.question_id!r} "
                f"(first on line {first_lines[question.question_id]})"
            )
        first_lines[question.question_id] = line
        questions.append(question)
    if not questions:
        raise ValueError(f"{path}: no questions")
    return questions


def _mt_bench_question(row: dict, where: str, index: int) -> BenchmarkQuestion:
    reference = row.get("reference")
    return BenchmarkQuestion(
        question_id=_question_id(row, ("question_id",), where),
        turns=_string_list(row.get("turns"), where, "turns"),
        category=_optional_string(row, "category", where),
        reference=None if reference is None else _string_list(reference, where, "reference"),
    )


def load_mt_bench(
    questions_path: str | Path, reference_answers_path: str | Path | None = None
) -> list[BenchmarkQuestion]:
    """Load FastChat MT-Bench questions, with reference answers where given.

    Args:
        questions_path: ``question.jsonl`` rows ``{question_id, category, turns, reference?}``.
        reference_answers_path: optional answers jsonl (e.g. ``reference_answer/gpt-4.jsonl``) whose
            ``choices[0].turns`` replace the questions' own ``reference``.

    Returns:
        The questions in file order.
    """
    questions = _read_questions(Path(questions_path), _mt_bench_question)
    if reference_answers_path is not None:
        references = _index_by_id(Path(reference_answers_path), ("question_id",), _choice_turns)
        _attach(questions, references, "reference", reference_answers_path, expect_all=False)
    return questions


def _arena_hard_question(row: dict, where: str, index: int) -> BenchmarkQuestion:
    turns: object = [_string(row, "prompt", where)] if "prompt" in row else row.get("turns")
    if isinstance(turns, list):  # older rows hold [{"content": ...}]
        turns = [t.get("content") if isinstance(t, dict) else t for t in turns]
    return BenchmarkQuestion(
        question_id=_question_id(row, ("uid", "question_id"), where),
        turns=_string_list(turns, where, "turns"),
        category=_optional_string(row, "category", where),
    )


def load_arena_hard(
    questions_path: str | Path, baseline_answers_path: str | Path | None = None
) -> list[BenchmarkQuestion]:
    """Load Arena-Hard v0.1 questions, with the baseline model's answers where given.

    Args:
        questions_path: ``question.jsonl`` rows ``{uid, category, cluster, prompt}``, or older rows
            ``{question_id, category, turns: [{content}]}``.
        baseline_answers_path: optional ``model_answer/<baseline>.jsonl``: rows ``{uid, messages}`` whose
            assistant message content is ``{"answer": ...}``, or older ``{question_id, choices}`` rows.

    Returns:
        The questions in file order.
    """
    questions = _read_questions(Path(questions_path), _arena_hard_question)
    if baseline_answers_path is not None:
        ids = ("uid", "question_id")
        baselines = _index_by_id(Path(baseline_answers_path), ids, _message_turns)
        _attach(questions, baselines, "baseline_answer", baseline_answers_path, expect_all=True)
    return questions


def _alpaca_eval_question(row: dict, where: str, index: int) -> BenchmarkQuestion:
    output = _optional_string(row, "output", where)
    return BenchmarkQuestion(
        question_id=str(index),
        turns=[_string(row, "instruction", where)],
        category=_optional_string(row, "dataset", where),
        baseline_answer=None if output is None else [output],
    )


def load_alpaca_eval(path: str | Path) -> list[BenchmarkQuestion]:
    """Load AlpacaEval rows ``{instruction, output, generator, dataset}``; ``output`` is the baseline.

    Args:
        path: a JSON list (as AlpacaEval ships it) or JSON Lines file.

    Returns:
        The questions in file order; ``question_id`` is the row's 0-based index.
    """
    return _read_questions(Path(path), _alpaca_eval_question)


def _verified_question(row: dict, where: str, index: int) -> BenchmarkQuestion:
    if ("prompt" in row) == ("turns" in row):
        raise ValueError(
            f"{where}: a verified row needs exactly one of 'prompt' (a string) and 'turns' "
            "(a list of strings)"
        )
    turns = [_string(row, "prompt", where)] if "prompt" in row else row.get("turns")
    has_id = any(key in row for key in ("id", "question_id"))
    return BenchmarkQuestion(
        question_id=_question_id(row, ("id", "question_id"), where) if has_id else str(index),
        turns=_string_list(turns, where, "turns"),
        category=_optional_string(row, "category", where),
    )


def load_verified(path: str | Path) -> list[BenchmarkQuestion]:
    """Load prompts whose answers a verifier checks (exact match; no baseline, no judges).

    Args:
        path: JSON Lines or a JSON list of rows ``{prompt}`` (one turn) or ``{turns}`` (user turns),
            with an optional ``id`` or ``question_id`` and ``category``; other keys (e.g. the
            expected ``answer``) are ignored: the verifier knows what is correct.

    Returns:
        The questions in file order; a row without an id gets its 0-based index.
    """
    return _read_questions(Path(path), _verified_question)


def detect_benchmark_format(path: Path) -> str:
    """Name the benchmark format of a question file from its first row.

    ``verified`` is never detected (a ``{question_id, prompt}`` row would read as Arena-Hard's):
    name it.
    """
    line, row = next(_read_rows(path), (0, {}))
    if not row:
        raise ValueError(f"{path}: no rows to detect the benchmark format from")
    if "instruction" in row:
        return "alpaca_eval"
    if "uid" in row or "prompt" in row:
        if "uid" not in row and "question_id" not in row:
            raise ValueError(
                f"{path}:{line}: a 'prompt' row without 'uid' or 'question_id' is no Arena-Hard "
                "question; prompts a verifier scores need format 'verified'"
            )
        return "arena_hard"
    turns = row.get("turns")
    if isinstance(turns, list) and turns:
        return "arena_hard" if isinstance(turns[0], dict) else "mt_bench"
    raise ValueError(f"{path}:{line}: cannot tell the benchmark format; pass one of {FORMATS}")


def load_eval_questions(
    path: str | Path,
    format: str = "auto",
    reference_answers_path: str | Path | None = None,
    baseline_answers_path: str | Path | None = None,
) -> list[BenchmarkQuestion]:
    """Load a benchmark question file in a named or auto-detected format.

    Args:
        path: the question file.
        format: ``"mt_bench"``, ``"arena_hard"``, ``"alpaca_eval"``, ``"verified"``, or ``"auto"`` to
            detect one of the first three.
        reference_answers_path: MT-Bench reference answers (mt_bench only).
        baseline_answers_path: baseline model answers (arena_hard only; AlpacaEval files hold them).

    Returns:
        The questions in file order.
    """
    name = detect_benchmark_format(Path(path)) if format == "auto" else format
    if name not in FORMATS:
        raise ValueError(
            f"unknown benchmark format {format!r}; expected 'auto' or one of {FORMATS}"
        )
    if reference_answers_path is not None and name != "mt_bench":
        raise ValueError(f"reference_answers_path applies to mt_bench, not {name}")
    if baseline_answers_path is not None and name != "arena_hard":
        raise ValueError(f"baseline_answers_path applies to arena_hard, not {name}")
    if name == "mt_bench":
        return load_mt_bench(path, reference_answers_path)
    if name == "arena_hard":
        return load_arena_hard(path, baseline_answers_path)
    if name == "verified":
        return load_verified(path)
    return load_alpaca_eval(path)
