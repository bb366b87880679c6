"""An independent re-implementation of arena-hard-auto's v0.1 scoring (lmarena/arena-hard-auto @ 3071ef95: show_result.py, utils_math.py, add_markdown_info.py), with the libraries it uses, as the golden oracle for moaa_ray.core.arena_hard. Written from the reference's behaviour; no code is copied.

Besides the scoring, the oracle holds the judge's prompt text and verdict label pattern as the
reference configures them (config/judge_config.yaml), and the rule by which its gen_judgment.py
reads a verdict from a judgment and asks the judge to continue.

Where the reference has quirks that change numbers, the oracle keeps them and says so: the plain
bootstrap anchors every round on ``gpt-4-0314`` whatever baseline is asked for, the style-controlled
fit anchors the baseline at 1114, and a model without a finite rating scores 50.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

DEFAULT_BASELINE = "gpt-4-0314"
ELO_SCALE = 400
ELO_BASE = 10
ELO_START = 1000
STRONG_VERDICT_WEIGHT = 3
TIE_LABELS = ("tie", "tie (bothbad)")

# ---- the judge (config/judge_config.yaml, gen_judgment.py) ----

JUDGE_SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by "
    "two AI assistants to the user prompt displayed below. You will be given assistant A's "
    "answer and assistant B's answer. Your job is to evaluate which assistant's answer is "
    "better.\n\n"
    "Begin your evaluation by generating your own answer to the prompt. You must provide your "
    "answers before judging any answers.\n\n"
    "When evaluating the assistants' answers, compare both assistants' answers with your "
    "answer. You must identify and correct any mistakes or inaccurate information.\n\n"
    "Then consider if the assistant's answers are helpful, relevant, and concise. Helpful "
    "means the answer correctly responds to the prompt or follows the instructions. Note when "
    "user prompt has any ambiguity or more than one interpretation, it is more helpful and "
    "appropriate to ask for clarifications or more information from the user than providing "
    "an answer based on assumptions. Relevant means all parts of the response closely connect "
    "or are appropriate to what is being asked. Concise means the response is clear and not "
    "verbose or excessive.\n\n"
    "Then consider the creativity and novelty of the assistant's answers when needed. "
    "Finally, identify any missing important information in the assistants' answers that "
    "would be beneficial to include when responding to the user prompt.\n\n"
    "After providing your explanation, you must output only one of the following choices as "
    "your final verdict with a label:\n\n"
    "1. Assistant A is significantly better: [[A>>B]]\n"
    "2. Assistant A is slightly better: [[A>B]]\n"
    "3. Tie, relatively the same: [[A=B]]\n"
    "4. Assistant B is slightly better: [[B>A]]\n"
    "5. Assistant B is significantly better: [[B>>A]]\n\n"
    'Example output: "My final verdict is tie: [[A=B]]".'
)

# The user turn, with the reference's placeholder names.
JUDGE_USER_TEMPLATE = (
    "<|User Prompt|>\n{question_1}\n\n"
    "<|The Start of Assistant A's Answer|>\n{answer_1}\n<|The End of Assistant A's Answer|>\n\n"
    "<|The Start of Assistant B's Answer|>\n{answer_2}\n<|The End of Assistant B's Answer|>"
)

VERDICT_LABEL = re.compile(r"\[\[([AB<>=]+)\]\]")


def extract_verdict(judgment: str) -> tuple[str | None, bool]:
    """Read the verdict label from a judgment as the reference's judging loop does.

    Returns ``(label, ask_again)``. Every ``[[...]]`` label in the text is considered: one
    distinct label (repeats allowed) is the verdict; none at all means the judge should be asked
    to continue; two or more different labels give no verdict and no retry.
    """
    distinct = {label for label in VERDICT_LABEL.findall(judgment) if label}
    if not distinct:
        return None, True
    if len(distinct) > 1:
        return None, False
    (label,) = distinct
    return label.strip("\n"), False


RETRY_REQUEST = "continue your judgment and finish by outputting a final verdict label"
JUDGMENT_ATTEMPTS = 2  # number_of_judgment_attempts


def judge_game(reply, system_prompt: str, user_prompt: str) -> dict:
    """One game judged as the reference's judging loop does: ``reply(messages)`` is the judge.

    The judge is asked up to ``JUDGMENT_ATTEMPTS`` times; each reply is added to the judgment
    after a newline and to the conversation as an assistant turn, and while the judgment has no
    label at all the retry request follows as a user turn. Returns ``{"judgment", "score",
    "asked"}``: the joined replies, the label read from them, and the messages of every request.
    """
    messages = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": user_prompt},
    ]
    judgment, asked, score = "", [], None
    for _ in range(JUDGMENT_ATTEMPTS):
        asked.append([dict(m) for m in messages])
        text = reply(messages)
        judgment += "\n" + text
        score, ask_again = extract_verdict(judgment)
        messages.append({"role": "assistant", "content": text})
        if not ask_again:
            break
        messages.append({"role": "user", "content": RETRY_REQUEST})
    return {"judgment": judgment, "score": score, "asked": asked}


# ---- from verdicts to battles (show_result.py) ----

# verdict -> (which side of the judged pair won, how many battles it is worth)
_VERDICT_OUTCOME = {
    "A>>B": ("A", STRONG_VERDICT_WEIGHT),
    "A>B": ("A", 1),
    "A=B": (None, 1),
    "B>A": ("B", 1),
    "B>>A": ("B", STRONG_VERDICT_WEIGHT),
}


def _style_totals(conv_metadata: Mapping) -> tuple[int, int, int, int]:
    """Token length and header/list/bold totals; a per-kind breakdown is summed."""

    def total(value):
        return value if type(value) is int else sum(value.values())

    return tuple(
        total(conv_metadata[key])
        for key in ("token_len", "header_count", "list_count", "bold_count")
    )


def judgment_battles(row: Mapping, baseline: str, metadata: Mapping | None = None) -> list[dict]:
    """The battles one judged question contributes.

    ``row`` has ``question_id``, ``model`` and ``games``: two ``{"score": label}`` entries, the
    first judged with the baseline shown as assistant A, the second with the sides swapped. Every
    battle is recorded with the baseline as ``model_a``. A strong verdict is repeated
    ``STRONG_VERDICT_WEIGHT`` times; a tie or slight verdict counts once; a missing or unknown
    label counts for nothing. With ``metadata`` (``{model: {question_id: {"conv_metadata":
    ...}}}``) each battle also carries ``style``: the baseline's and the model's style totals.
    """
    model, question = row["model"], row["question_id"]
    extra = {}
    if metadata:
        extra["style"] = (
            _style_totals(metadata[baseline][question]["conv_metadata"]),
            _style_totals(metadata[model][question]["conv_metadata"]),
        )
    battles = []
    for baseline_shown_as, game in zip("AB", row["games"][:2], strict=True):
        outcome = _VERDICT_OUTCOME.get(game["score"])
        if outcome is None:
            continue
        side, repeats = outcome
        if side is None:
            winner = "tie"
        else:
            winner = "model_a" if side == baseline_shown_as else "model_b"
        record = {"question_id": question, "model_a": baseline, "model_b": model}
        record |= {"winner": winner, **extra}
        battles.extend(dict(record) for _ in range(repeats))
    return battles


def judgments_to_battles(
    judgments: pd.DataFrame, baseline: str = DEFAULT_BASELINE, metadata: Mapping | None = None
) -> pd.DataFrame:
    """All battles of a table of judgments, in row order, game 1's before game 2's.

    The reference concatenates every judgment file in its judge's directory, one per judged model,
    so a table of several models' judgments gives one battle list that the fits below (style
    control's standardisation included) cover jointly.
    """
    records = []
    for _, row in judgments.iterrows():
        records += judgment_battles(row, baseline, metadata)
    return pd.DataFrame(records)


# ---- style features (add_markdown_info.py) ----

_FENCED_CODE = re.compile("```([^`]*)```")
_MARKDOWN_ELEMENTS = {
    "header_count": [re.compile(rf"^#{{{level}}}\s", re.MULTILINE) for level in range(1, 7)],
    "list_count": [
        re.compile(r"^\s*\d+\.\s", re.MULTILINE),
        re.compile(r"^\s*[-*+]\s", re.MULTILINE),
    ],
    "bold_count": [re.compile(r"\*\*[^*\n]+\*\*"), re.compile(r"__[^_\n]+__")],
}


def markdown_counts(answer: str) -> dict[str, int]:
    """Headers (levels 1-6), list items (ordered and unordered) and bold spans of an answer.

    Code is dropped first the way the reference drops it: the text between each pair of
    triple backticks is deleted wherever it occurs in the answer, the backticks stay.
    """
    for inside in _FENCED_CODE.findall(answer):
        answer = answer.replace(inside, "")
    return {
        kind: sum(len(pattern.findall(answer)) for pattern in patterns)
        for kind, patterns in _MARKDOWN_ELEMENTS.items()
    }


# ---- the Bradley-Terry fits (utils_math.py) ----


def _players(battles: pd.DataFrame) -> list[str]:
    """Models in order of first appearance, all ``model_a`` entries before ``model_b``."""
    return list(dict.fromkeys([*battles["model_a"], *battles["model_b"]]))


def _skill_columns(battles: pd.DataFrame, players: list[str]) -> np.ndarray:
    """One row per battle: ``+ln(base)`` under model_a, ``-ln(base)`` under model_b."""
    column = {name: j for j, name in enumerate(players)}
    rows = np.arange(len(battles))
    design = np.zeros((len(battles), len(players)))
    design[rows, [column[name] for name in battles["model_a"]]] = math.log(ELO_BASE)
    design[rows, [column[name] for name in battles["model_b"]]] = -math.log(ELO_BASE)
    return design


def _outcomes(battles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(a_won, tied)`` as boolean arrays."""
    winner = battles["winner"].to_numpy()
    return winner == "model_a", np.isin(winner, TIE_LABELS)


def _doubled_targets(a_won: np.ndarray, tied: np.ndarray) -> np.ndarray:
    """Targets of the battles listed twice: a tie is a win for A in the first copy, for B in the
    second; any other battle has the same outcome in both copies."""
    return np.concatenate([a_won | tied, a_won]).astype(float)


def elo_ratings(battles: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> pd.Series:
    """Maximum-likelihood Elo ratings, the baseline at 1000 when it played (unpenalised fit)."""
    players = _players(battles)
    skills = _skill_columns(battles, players)
    model = LogisticRegression(fit_intercept=False, penalty=None, tol=1e-8)
    model.fit(np.vstack([skills, skills]), _doubled_targets(*_outcomes(battles)))
    ratings = ELO_SCALE * model.coef_[0] + ELO_START
    if baseline in players:
        ratings += ELO_START - ratings[players.index(baseline)]
    return pd.Series(ratings, index=players)


def _style_covariates(battles: pd.DataFrame) -> np.ndarray:
    """Per battle and style feature, ``(a - b) / (a + b + 1)`` standardised over the doubled
    battle list (mean and population std per feature)."""
    pairs = np.array(battles["style"].tolist(), dtype=float)  # (battles, 2 sides, features)
    own, other = pairs[:, 0], pairs[:, 1]
    ratio = (own - other) / (own + other + 1.0)  # (battles, features)
    # Reduced along contiguous rows of (features, doubled battles), the reference's layout, so
    # the sums round the same way.
    by_feature = np.concatenate([ratio, ratio]).T.copy()
    centre, spread = by_feature.mean(axis=1), by_feature.std(axis=1)
    return (ratio - centre) / spread


def _penalised_ratings(
    design: np.ndarray, targets: np.ndarray, players: list[str], baseline: str
) -> pd.Series:
    """Ratings from a joint fit of skills and style with scikit-learn's default penalty.

    As in the reference: the baseline is anchored at 1114, and the players absent from the
    design are dropped from the labels while the leading coefficients are kept, so the labels
    only line up when every player is present.
    """
    model = LogisticRegression(fit_intercept=False)
    model.fit(design, targets)
    ratings = ELO_SCALE * model.coef_[0] + ELO_START
    ratings += 1114 - ratings[players.index(baseline)]
    present = [name for j, name in enumerate(players) if design[:, j].any()]
    return pd.Series(ratings[: len(present)], index=present)


def _style_problem(battles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Per battle: skill and style features, whether model_a won, whether it was a tie."""
    players = _players(battles)
    features = np.hstack([_skill_columns(battles, players), _style_covariates(battles)])
    return (features, *_outcomes(battles), players)


def style_controlled_ratings(battles: pd.DataFrame, baseline: str = DEFAULT_BASELINE) -> pd.Series:
    """Ratings from the joint fit of skills and style differences on all battles."""
    features, a_won, tied, players = _style_problem(battles)
    return _penalised_ratings(
        np.vstack([features, features]), _doubled_targets(a_won, tied), players, baseline
    )


# ---- bootstrap and leaderboard (utils_math.py, show_result.py) ----


def _plain_bootstrap(battles: pd.DataFrame, rounds: int) -> pd.DataFrame:
    """One row of refitted ratings per resample drawn with ``DataFrame.sample`` (global RNG).

    The reference does not pass its baseline to these fits, so they anchor on the default one.
    """
    return pd.DataFrame(
        [elo_ratings(battles.sample(frac=1.0, replace=True)) for _ in range(rounds)]
    )


def _style_bootstrap(battles: pd.DataFrame, rounds: int, baseline: str) -> pd.DataFrame:
    """One row of refitted style-controlled ratings per resample of battle indices.

    A resample lists its decisive battles twice, then its ties once as A's win and once as
    B's, in the order the reference stacks them; the style covariates stay those standardised
    on all battles.
    """
    features, a_won, tied, players = _style_problem(battles)
    draws = []
    for _ in range(rounds):
        picked = np.random.choice(len(battles), size=len(battles), replace=True)
        decisive, level = picked[~tied[picked]], picked[tied[picked]]
        rows = np.concatenate([decisive, decisive, level, level])
        targets = np.concatenate(
            [a_won[decisive], a_won[decisive], np.ones(len(level)), np.zeros(len(level))]
        ).astype(float)
        draws.append(_penalised_ratings(features[rows], targets, players, baseline))
    return pd.DataFrame(draws)


def _win_rate_vs(rating: float, baseline_rating: float) -> float:
    """Predicted win rate in percent, rounded to 2 decimals; 50 when either rating is NaN."""
    chance = 1 / (1 + ELO_BASE ** ((baseline_rating - rating) / ELO_SCALE))
    return 50.0 if math.isnan(chance) else round(chance * 100, 2)


def leaderboard(
    battles: pd.DataFrame,
    baseline: str = DEFAULT_BASELINE,
    num_rounds: int = 100,
    style_control: bool = False,
) -> pd.DataFrame:
    """Arena-Hard scores with 95% intervals, one row per model, sorted by model name.

    ``score`` is the win rate against the baseline predicted from the fit on all battles;
    ``lower`` and ``upper`` turn the 2.5th and 97.5th percentiles (numpy's linear) of each
    model's bootstrap ratings into win rates against the baseline's percentile. The caller seeds
    numpy's global RNG (the reference seeds it with 42 on import). Style control needs the
    ``style`` column of :func:`judgments_to_battles` with metadata.
    """
    if style_control:
        point = style_controlled_ratings(battles, baseline)
        boot = _style_bootstrap(battles, num_rounds, baseline)
    else:
        point = elo_ratings(battles, baseline)
        boot = _plain_bootstrap(battles, num_rounds)

    lower = {name: float(np.percentile(boot[name], 2.5)) for name in point.index}
    upper = {name: float(np.percentile(boot[name], 97.5)) for name in point.index}
    rows = []
    for name in sorted(point.index):
        row = {"model": name}
        for column, values in (("score", point), ("lower", lower), ("upper", upper)):
            own = float(values[name])
            row[column] = 50.0 if name == baseline else _win_rate_vs(own, float(values[baseline]))
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "score", "lower", "upper"])
