"""A task of facts a program can check: capitals, chemical elements, opposites and past tenses.

The facts ship in ``moaa_ray/data/facts/facts.jsonl``, one per row: ``{"kind", "subject", "answer"}``
with optional ``subject_aliases`` and ``answer_aliases`` (other names that count as the same).
Each fact asks one question, or two when it reads both ways:

- ``capital``: "What is the capital of France?" and "Paris is the capital of which country?";
- ``element``: "Which chemical element has the symbol Fe?";
- ``opposite``: "What is the opposite of hot?" and "What is the opposite of cold?";
- ``past_tense``: "What is the past tense of the verb "go"?".

A reply is correct when the first answer of the question's kind that it names is one the question
accepts. Names match as whole words, regardless of case, accents and punctuation; the question's own
subject never counts as an answer ("The opposite of hot is cold" names cold). So a reply that lists
several candidates is judged by the first, and one that names none is wrong.

Every fact belongs to exactly one split, fixed by a seed, so no held-out question shares a fact with
a training prompt (the capital of France is not held out while Paris's country is trained on).
"""

from __future__ import annotations

import functools
import json
import random
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources

SPLIT_SEED = 20250505
# Questions per split, at least (a fact's questions stay together); the rest of the facts is "dpo".
SPLIT_SIZES = {"eval": 300, "sft": 230}
# (question kind, template, whether it asks for the fact's answer (else its subject)) per fact kind;
# the question kind names the set of names that compete as answers.
TEMPLATES: dict[str, list[tuple[str, str, bool]]] = {
    "capital": [
        ("capital", "What is the capital of {subject}?", True),
        ("country", "{answer} is the capital of which country?", False),
    ],
    "element": [("element", "Which chemical element has the symbol {subject}?", True)],
    "opposite": [
        ("opposite", "What is the opposite of {subject}?", True),
        ("opposite", "What is the opposite of {answer}?", False),
    ],
    "past_tense": [("past_tense", 'What is the past tense of the verb "{subject}"?', True)],
}


@dataclass(frozen=True)
class Fact:
    """One shipped fact; each side's first name is the one questions show."""

    kind: str
    subject: tuple[str, ...]
    answer: tuple[str, ...]


@dataclass(frozen=True)
class Question:
    """A question a fact asks, with what counts as its answer.

    Attributes:
        id: ``<question kind>-<the name it shows>``, unique over the task.
        kind: the question kind (its template's first field).
        prompt: the user message.
        accepted: the names of the correct answer.
        shown: the names of what the question is about; never counted as a reply's answer.
    """

    id: str
    kind: str
    prompt: str
    accepted: tuple[str, ...]
    shown: tuple[str, ...]


def load_facts(text: str | None = None) -> list[Fact]:
    """Parse facts from JSON Lines text (None: the shipped ``data/facts/facts.jsonl``)."""
    if text is None:
        text = resources.files("moaa_ray.data").joinpath("facts/facts.jsonl").read_text("utf-8")
    facts = []
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        row = json.loads(raw)
        if row.get("kind") not in TEMPLATES:
            raise ValueError(f"facts line {line}: kind must be one of {sorted(TEMPLATES)}")
        subject = (row["subject"], *row.get("subject_aliases", []))
        answer = (row["answer"], *row.get("answer_aliases", []))
        facts.append(Fact(row["kind"], subject, answer))
    return facts


def fact_questions(fact: Fact) -> list[Question]:
    """The questions a fact asks (one or two, see :data:`TEMPLATES`)."""
    questions = []
    for kind, template, asks_answer in TEMPLATES[fact.kind]:
        accepted, shown = (
            (fact.answer, fact.subject) if asks_answer else (fact.subject, fact.answer)
        )
        prompt = template.format(subject=fact.subject[0], answer=fact.answer[0])
        questions.append(Question(f"{kind}-{shown[0]}", kind, prompt, accepted, shown))
    return questions


def fact_splits(facts: Sequence[Fact], seed: int = SPLIT_SEED) -> dict[str, list[Question]]:
    """Disjoint questions per split: ``eval``, ``sft`` and ``dpo`` (the rest), whole facts each.

    The facts are shuffled once by ``seed``; each split in :data:`SPLIT_SIZES` takes the next facts
    until it holds at least its size in questions.
    """
    order = list(facts)
    random.Random(seed).shuffle(order)
    result: dict[str, list[Question]] = {name: [] for name in [*SPLIT_SIZES, "dpo"]}
    names = iter(SPLIT_SIZES)
    current = next(names)
    for fact in order:
        if current != "dpo" and len(result[current]) >= SPLIT_SIZES[current]:
            current = next(names, "dpo")
        result[current] += fact_questions(fact)
    return result


def question_rows(questions: Sequence[Question], split: str) -> list[dict]:
    """JSONL rows of a split: ``{"id", "prompt", "answer"}`` (the answer is for people: the
    verifier knows every accepted name)."""
    return [
        {"id": f"{split}-{q.id}", "prompt": q.prompt, "answer": q.accepted[0]} for q in questions
    ]


def normalize(text: str) -> str:
    """Lower case without accents, punctuation or repeated spaces: how names are compared."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^0-9a-z]+", " ", plain).split())


def first_named(reply: str, names: Sequence[str], ignored: Sequence[str] = ()) -> str | None:
    """The first of ``names`` the reply names as a whole word, skipping ``ignored``, normalized.

    Where names overlap, the longest one starting first wins ("Equatorial Guinea", not "Guinea").
    """
    skipped = {normalize(name) for name in ignored}
    candidates = sorted({normalize(n) for n in names} - skipped - {""}, key=len, reverse=True)
    if not candidates:
        return None
    pattern = re.compile(r"(?<!\S)(?:" + "|".join(map(re.escape, candidates)) + r")(?!\S)")
    match = pattern.search(normalize(reply))
    return None if match is None else match.group()


def names_the_answer(question: Question, reply: str, names: Sequence[str]) -> bool:
    """Whether the first answer among ``names`` (the question kind's) the reply names is accepted."""
    named = first_named(reply, names, question.shown)
    return named is not None and named in {normalize(name) for name in question.accepted}


@functools.cache
def _shipped() -> tuple[dict[str, Question], dict[str, tuple[str, ...]]]:
    """The shipped questions by prompt, and every answer name per question kind."""
    questions = [q for fact in load_facts() for q in fact_questions(fact)]
    names: dict[str, set[str]] = {}
    for question in questions:
        names.setdefault(question.kind, set()).update(question.accepted, question.shown)
    by_prompt = {q.prompt: q for q in questions}
    return by_prompt, {kind: tuple(sorted(found)) for kind, found in names.items()}


def verify_fact(messages: Sequence[Mapping[str, str]], answer: str) -> bool | None:
    """The task's verifier: is ``answer`` correct for the conversation's last user message?

    Returns None when the last user message is none of the shipped questions.
    """
    users = [m["content"] for m in messages if m["role"] == "user"]
    by_prompt, names = _shipped()
    question = by_prompt.get(users[-1].strip()) if users else None
    return None if question is None else names_the_answer(question, answer, names[question.kind])
