"""Arena-Hard v0.1 scoring as arena-hard-auto computes it (github.com/lmarena/arena-hard-auto).

The judge answers the question itself, compares both answers with its own, and ends with one of five
labels (``[[A>>B]]`` ... ``[[B>>A]]``); a reply without any label is followed by a request to finish,
once. Every question is judged twice against the baseline, once with
the baseline as assistant A and once with the order swapped. Each verdict becomes one battle recorded
as ``(baseline, model, winner)``, repeated ``weight`` (3) times when the verdict is strong. A
Bradley-Terry model fitted by logistic regression on Elo scale (400, base 10) gives each model a
rating, the baseline anchored at 1000; the Arena-Hard score is the predicted win rate against the
baseline in percent, and the 95% interval comes from 2.5/97.5 percentiles of ratings refitted on
bootstrap resamples of the battles. Style control adds normalised style differences between the two
answers (length in tiktoken gpt-3.5-turbo tokens, or in words where tiktoken cannot load that
encoding; markdown headers, lists, bold) as covariates fitted jointly, and scores from the model
terms alone.

Reference: arena-hard-auto at commit 3071ef95d913bb5cd632641db336a3b6c7fe4bdd (the last v0.1 code):
``config/judge_config.yaml``, ``gen_judgment.py``, ``show_result.py``, ``utils_math.py`` and
``add_markdown_info.py``.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from functools import cache, partial

import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

ArenaBattle = tuple[str, str, str]
"""``(model_a, model_b, winner)`` with ``winner`` one of ``"model_a"``, ``"model_b"``, ``"tie"``."""

JUDGE_SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user prompt displayed below. You will be given assistant A's answer and "
    "assistant B's answer. Your job is to evaluate which assistant's answer is better.\n\n"
    "Begin your evaluation by generating your own answer to the prompt. You must provide your "
    "answers before judging any answers.\n\n"
    "When evaluating the assistants' answers, compare both assistants' answers with your answer. "
    "You must identify and correct any mistakes or inaccurate information.\n\n"
    "Then consider if the assistant's answers are helpful, relevant, and concise. Helpful means the "
    "answer correctly responds to the prompt or follows the instructions. Note when user prompt has "
    "any ambiguity or more than one interpretation, it is more helpful and appropriate to ask for "
    "clarifications or more information from the user than providing an answer based on "
    "assumptions. Relevant means all parts of the response closely connect or are appropriate to "
    "what is being asked. Concise means the response is clear and not verbose or excessive.\n\n"
    "Then consider the creativity and novelty of the assistant's answers when needed. Finally, "
    "identify any missing important information in the assistants' answers that would be "
    "beneficial to include when responding to the user prompt.\n\n"
    "After providing your explanation, you must output only one of the following choices as your "
    "final verdict with a label:\n\n"
    "1. Assistant A is significantly better: [[A>>B]]\n"
    "2. Assistant A is slightly better: [[A>B]]\n"
    "3. Tie, relatively the same: [[A=B]]\n"
    "4. Assistant B is slightly better: [[B>A]]\n"
    "5. Assistant B is significantly better: [[B>>A]]\n\n"
    'Example output: "My final verdict is tie: [[A=B]]".'
)

JUDGE_PROMPT_TEMPLATE = (
    "<|User Prompt|>\n{question}\n\n"
    "<|The Start of Assistant A's Answer|>\n{answer_a}\n<|The End of Assistant A's Answer|>\n\n"
    "<|The Start of Assistant B's Answer|>\n{answer_b}\n<|The End of Assistant B's Answer|>"
)

JUDGE_RETRY_PROMPT = "continue your judgment and finish by outputting a final verdict label"
"""The user turn arena-hard-auto appends after a judge's reply when its judgment has no label."""

JUDGMENT_ATTEMPTS = 2
"""Replies arena-hard-auto asks a judge for per game at most (``number_of_judgment_attempts``)."""

VERDICT_PATTERN = re.compile(r"\[\[([AB<>=]+)\]\]")

VERDICTS = ("A>>B", "A>B", "A=B", "B>A", "B>>A")

_GAME_OUTCOMES = {
    "A>>B": ("a", True),
    "A>B": ("a", False),
    "A=B": ("tie", False),
    "B>A": ("b", False),
    "B>>A": ("b", True),
}

_WINNER_TARGETS = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5}

_HEADER_PATTERNS = [re.compile(rf"^#{{{level}}}\s", re.MULTILINE) for level in range(1, 7)]
_LIST_PATTERNS = [
    re.compile(r"^\s*\d+\.\s", re.MULTILINE),
    re.compile(r"^\s*[-*+]\s", re.MULTILINE),
]
_BOLD_PATTERNS = [re.compile(r"\*\*[^*\n]+\*\*"), re.compile(r"__[^_\n]+__")]
_CODE_BLOCK_PATTERN = re.compile("```([^`]*)```")

SCALE = 400.0
BASE = 10.0
INIT_RATING = 1000.0


def render_arena_hard_judge_prompt(
    question: str, answer_a: str, answer_b: str, replies: Sequence[str] = ()
) -> list[dict]:
    """The chat messages arena-hard-auto sends its judge for one game.

    Args:
        question: the user prompt.
        answer_a: the answer shown as assistant A (the baseline's in game 1, the model's in game 2).
        answer_b: the answer shown as assistant B.
        replies: the judge's earlier replies to this game, whose judgment had no label: each
            follows as an assistant turn, then :data:`JUDGE_RETRY_PROMPT` as a user turn.

    Returns:
        ``[{"role": "system", ...}, {"role": "user", ...}]``, then two messages per reply.
    """
    user = JUDGE_PROMPT_TEMPLATE.format(question=question, answer_a=answer_a, answer_b=answer_b)
    messages = [
        {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]
    for reply in replies:
        messages += [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": JUDGE_RETRY_PROMPT},
        ]
    return messages


def lacks_verdict_label(judgment: str) -> bool:
    """Whether arena-hard-auto asks the judge to continue: its judgment so far has no ``[[...]]``
    label at all (several different labels, or a label that is no verdict, end the judging)."""
    return VERDICT_PATTERN.search(judgment) is None


def parse_arena_hard_verdict(text: str) -> str | None:
    """The verdict of a judgment, by arena-hard-auto v0.1's rule.

    Every ``[[...]]`` label anywhere in the text counts, quoted ones included: the verdict is the
    label when exactly one distinct label occurs (repeats of it are fine), otherwise there is none.
    A label that is none of the five, mirrored spellings (``A<<B``, ``B=A``, ``B<A``...) included,
    counts as a label but gives no verdict: v0.1's ``show_result.py`` counts no battle for it.

    Args:
        text: the judge's whole judgment (all its replies, joined by newlines, when it was asked to
            continue).

    Returns:
        One of :data:`VERDICTS`, or None when no label, several different labels, or another label
        (such as ``[[A]]`` or ``[[B<A]]``) occur.
    """
    labels = set(VERDICT_PATTERN.findall(text))
    if len(labels) != 1:
        return None
    (label,) = labels
    return label if label in VERDICTS else None


def _game_battles(
    model: str, baseline: str, verdict: str | None, model_is_a: bool, weight: int
) -> list[ArenaBattle]:
    if verdict is None:
        return []
    if verdict not in _GAME_OUTCOMES:
        raise ValueError(f"unknown verdict {verdict!r}: expected one of {VERDICTS} or None")
    side, strong = _GAME_OUTCOMES[verdict]
    if side == "tie":
        winner = "tie"
    else:
        winner = "model_b" if (side == "a") == model_is_a else "model_a"
    return [(baseline, model, winner)] * (weight if strong else 1)


def battles_from_verdicts(
    model: str,
    baseline: str,
    verdict_game1: str | None,
    verdict_game2: str | None,
    weight: int = 3,
) -> list[ArenaBattle]:
    """The battles one question's two judge games count for, as arena-hard-auto records them.

    Game 1 shows the baseline as assistant A and the model as B; game 2 swaps them. Every battle is
    recorded as ``(baseline, model, winner)``: a decisive verdict (``A>>B``, ``B>>A``) counts
    ``weight`` times, a slight one once, ``A=B`` once as ``"tie"``, and a missing verdict not at all.

    Args:
        model: the evaluated model.
        baseline: the baseline model (``gpt-4-0314`` in Arena-Hard v0.1).
        verdict_game1: the verdict with the baseline as A, or None.
        verdict_game2: the verdict with the model as A, or None.
        weight: how many battles a decisive verdict counts for.

    Returns:
        Game 1's battles, then game 2's.

    Raises:
        ValueError: on a verdict that is not one of :data:`VERDICTS` or None.
    """
    return _game_battles(model, baseline, verdict_game1, False, weight) + _game_battles(
        model, baseline, verdict_game2, True, weight
    )


def answer_style_counts(answer: str, token_len: int) -> tuple[int, int, int, int]:
    """The style features arena-hard-auto stores per answer: length and markdown element counts.

    Markdown is counted after removing the contents of fenced code blocks, as arena-hard-auto's
    ``add_markdown_info.py`` does.

    Args:
        answer: the answer text.
        token_len: its length in tokens (arena-hard-auto counts tiktoken ``gpt-3.5-turbo`` tokens).

    Returns:
        ``(token_len, header_count, list_count, bold_count)``: headers of levels 1-6, ordered and
        unordered list items, ``**bold**`` and ``__bold__`` spans.
    """
    for block in _CODE_BLOCK_PATTERN.findall(answer):
        answer = answer.replace(block, "")
    headers = sum(len(pattern.findall(answer)) for pattern in _HEADER_PATTERNS)
    lists = sum(len(pattern.findall(answer)) for pattern in _LIST_PATTERNS)
    bolds = sum(len(pattern.findall(answer)) for pattern in _BOLD_PATTERNS)
    return token_len, headers, lists, bolds


LENGTH_MODEL = "gpt-3.5-turbo"  # whose tiktoken encoding arena-hard-auto counts answers in


def _load_length_encoding():
    """tiktoken's encoding of :data:`LENGTH_MODEL`. tiktoken is optional and downloads encodings
    on first use (cached after, in ``TIKTOKEN_CACHE_DIR``): raises where it is missing or cannot."""
    import tiktoken

    return tiktoken.encoding_for_model(LENGTH_MODEL)


@cache
def answer_length_counter() -> tuple[Callable[[str], int], str]:
    """How style control measures an answer's length, and the unit's name.

    arena-hard-auto counts tiktoken tokens of :data:`LENGTH_MODEL`; where the encoding does not
    load (no tiktoken, or no cached encoding and no internet), words stand in, with a warning
    logged once per process.

    Returns:
        ``(count, unit)``: ``unit`` is ``"tiktoken gpt-3.5-turbo"`` or ``"words"``.
    """
    try:
        encoding = _load_length_encoding()
    except (ImportError, OSError, ValueError) as exc:
        logger.warning(
            "Arena-Hard style control counts answer lengths in words, not arena-hard-auto's "
            "tiktoken %s tokens (%s: %s)",
            LENGTH_MODEL,
            type(exc).__name__,
            exc,
        )
        return _word_count, "words"
    return partial(_token_count, encoding), f"tiktoken {LENGTH_MODEL}"


def _token_count(encoding, text: str) -> int:
    """Tokens as arena-hard-auto counts them: special tokens' text is plain text."""
    return len(encoding.encode(text, disallowed_special=()))


def _word_count(text: str) -> int:
    return len(text.split())


def _fit_logistic(
    features: NDArray[np.float64],
    targets: NDArray[np.float64],
    l2: float,
    max_iter: int = 100,
) -> NDArray[np.float64]:
    """Minimise ``sum(2 * crossentropy(targets, sigmoid(features @ w))) + l2 / 2 * |w|^2`` by Newton.

    The factor 2 is arena-hard-auto's duplication of every battle (a tie is one win and one loss).
    Steps are halved until the loss does not increase; a singular Hessian (a model that does not
    play) gets the least-squares step, which leaves that coefficient at 0. Stops when a step moves
    no coefficient by more than 1e-10, or after ``max_iter`` steps.
    """
    weights = np.zeros(features.shape[1])

    def loss(w: NDArray[np.float64]) -> float:
        z = features @ w
        return float(2.0 * np.sum(np.logaddexp(0.0, z) - targets * z) + 0.5 * l2 * (w @ w))

    current = loss(weights)
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(features @ weights)))
        gradient = 2.0 * features.T @ (p - targets) + l2 * weights
        hessian = 2.0 * (features.T * (p * (1.0 - p))) @ features + l2 * np.eye(len(weights))
        step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
        scale = 1.0
        while scale > 1e-10:
            candidate = weights - scale * step
            new = loss(candidate)
            if new <= current:
                break
            scale /= 2.0
        else:
            break
        weights, current = candidate, new
        if np.max(np.abs(scale * step)) < 1e-10:
            break
    return weights


def _design(
    battles: Sequence[ArenaBattle], models: list[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    index = {model: i for i, model in enumerate(models)}
    features = np.zeros((len(battles), len(models)))
    rows = np.arange(len(battles))
    features[rows, [index[a] for a, _, _ in battles]] = math.log(BASE)
    features[rows, [index[b] for _, b, _ in battles]] = -math.log(BASE)
    targets = np.array([_WINNER_TARGETS[winner] for _, _, winner in battles])
    return features, targets


def _style_covariates(style_features: ArrayLike, n_battles: int) -> NDArray[np.float64]:
    """Standardised ``(a - b) / (a + b + 1)`` per style feature, as arena-hard-auto builds them."""
    style = np.asarray(style_features, dtype=float)
    if style.ndim != 3 or style.shape[:2] != (n_battles, 2):
        raise ValueError(
            f"style_features must have shape (n_battles, 2, k) = ({n_battles}, 2, k), "
            f"got {style.shape}"
        )
    diff = (style[:, 0] - style[:, 1]) / (style[:, 0] + style[:, 1] + 1.0)
    std = diff.std(axis=0)
    if np.any(std == 0.0):
        raise ValueError(
            f"style features {np.flatnonzero(std == 0.0).tolist()} do not vary across battles"
        )
    return (diff - diff.mean(axis=0)) / std


def _ratings(
    features: NDArray[np.float64],
    targets: NDArray[np.float64],
    n_models: int,
    baseline_index: int,
    style_control: bool,
) -> NDArray[np.float64]:
    """Elo ratings with the baseline at 1000 (NaN for a model without battles)."""
    if style_control:
        coefs = _fit_logistic(features, targets, l2=1.0)[:n_models]
    else:
        others = [i for i in range(n_models) if i != baseline_index]
        coefs = np.zeros(n_models)
        coefs[others] = _fit_logistic(features[:, others], targets, l2=0.0)
    ratings = SCALE * (coefs - coefs[baseline_index]) + INIT_RATING
    ratings[~features[:, :n_models].any(axis=0)] = np.nan
    return ratings


def _win_rate(rating: float, baseline_rating: float) -> float:
    return float(100.0 / (1.0 + BASE ** ((baseline_rating - rating) / SCALE)))


def arena_hard_scores(
    battles: Sequence[ArenaBattle],
    baseline: str = "gpt-4-0314",
    num_rounds: int = 100,
    seed: int = 42,
    style_features: ArrayLike | None = None,
) -> dict[str, dict[str, float]]:
    """Arena-Hard scores with 95% bootstrap intervals, as arena-hard-auto's ``show_result.py``.

    Ratings are the maximum-likelihood Bradley-Terry fit (ties as half a win) on Elo scale, the same
    solution as arena-hard-auto's unpenalised scikit-learn logistic regression. With
    ``style_features`` the model and style coefficients are fitted jointly with scikit-learn's
    default L2 penalty (C = 1) that arena-hard-auto keeps there, and ratings use the model terms only.

    The bootstrap draws ``numpy.random.RandomState(seed).choice(n, n)`` battle indices per round,
    the same draws as arena-hard-auto's ``battles.sample(frac=1.0, replace=True)`` (and, with style
    control, ``np.random.choice``) after its ``np.random.seed(42)``: with ``seed=42`` and the battles
    in the same order the resamples are identical. Style covariates are standardised once, on all
    battles.

    Args:
        battles: ``(model_a, model_b, winner)`` per battle, e.g. from :func:`battles_from_verdicts`.
        baseline: the model every score is a win rate against.
        num_rounds: bootstrap resamples.
        seed: seed of the bootstrap draws.
        style_features: optional, shape ``(len(battles), 2, k)``: ``k`` raw style features (e.g.
            :func:`answer_style_counts`) of model_a's answer, then of model_b's, per battle.

    Returns:
        ``{model: {"score", "lower", "upper"}}`` in percent, best score first: ``score`` is the
        predicted win rate against the baseline from the fit on all battles, ``lower`` and ``upper``
        the win rates at the 2.5th and 97.5th percentile of the bootstrap ratings (numpy's linear
        interpolation; NaN when a resample lacks the model, as in arena-hard-auto). The baseline
        scores 50. Unlike arena-hard-auto, values are not rounded.

    Raises:
        ValueError: on an unknown winner, a baseline without battles, no bootstrap rounds, or style
            features of the wrong shape or without variation.
    """
    for position, (_, _, winner) in enumerate(battles):
        if winner not in _WINNER_TARGETS:
            raise ValueError(
                f"battles[{position}]: winner must be one of {tuple(_WINNER_TARGETS)}, got {winner!r}"
            )
    models = list(dict.fromkeys([a for a, _, _ in battles] + [b for _, b, _ in battles]))
    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} has no battles")
    if num_rounds < 1:
        raise ValueError(f"num_rounds must be at least 1, got {num_rounds}")
    features, targets = _design(battles, models)
    style_control = style_features is not None
    if style_features is not None:
        features = np.hstack([features, _style_covariates(style_features, len(battles))])
    base = models.index(baseline)

    ratings = _ratings(features, targets, len(models), base, style_control)
    rng = np.random.RandomState(seed)
    boot = np.empty((num_rounds, len(models)))
    for round_ in range(num_rounds):
        sample = rng.choice(len(battles), size=len(battles), replace=True)
        boot[round_] = _ratings(features[sample], targets[sample], len(models), base, style_control)
    lower = np.percentile(boot, 2.5, axis=0)
    upper = np.percentile(boot, 97.5, axis=0)

    scores = {
        model: {
            "score": _win_rate(ratings[i], ratings[base]),
            "lower": _win_rate(lower[i], lower[base]),
            "upper": _win_rate(upper[i], upper[base]),
        }
        for i, model in enumerate(models)
    }
    return dict(sorted(scores.items(), key=lambda item: -item[1]["score"]))
