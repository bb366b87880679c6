"""AlpacaEval 2's judge as its leaderboard runs it: alpaca_eval's ``weighted_alpaca_eval_gpt4_turbo``.

The judge (gpt-4-1106-preview on the leaderboard) sees the instruction and two outputs labelled ``m``
(output_1) and ``M`` (output_2) and answers with one token. The preference is read from that token's
top-5 log-probabilities, not from its text: ``2 - P(m)`` with ``P(m)`` the probability of ``m`` among
``m`` and ``M``, so 1 means output_1 is better, 2 output_2, and every value in between is kept (a
"weighted" win rate). A token missing from the top 5 has probability 0; with neither there, the
preference is missing and the comparison is dropped. alpaca_eval shows the baseline as output_1 and
the model as output_2, but swaps them for about half of the instructions (a seeded choice per
instruction) and maps the preference back (``3 - p``); two identical outputs get 1.5 without asking.
The win rate is the mean of ``preference - 1`` in percent.

Reference: alpaca_eval 0.6.6 (pip), ``evaluators_configs/weighted_alpaca_eval_gpt4_turbo/configs.yaml``,
its prompt ``evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt``,
``completion_parsers.logprob_parser``, ``annotators/pairwise_evaluator.py`` (the order switch and
identical outputs) and ``processors.RandomSwitchTwoColumnsProcessor`` (the switch's seed).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from moaa_ray.core.judging import verdict_from_logprobs

SYSTEM_PROMPT = (
    "You are a highly efficient assistant, who evaluates and selects the best large language model "
    "(LLMs) based on the quality of their responses to a given instruction. This process will be "
    "used to create a leaderboard reflecting the most accurate and human-preferred answers."
)

USER_TEMPLATE = (
    "I require a leaderboard for various large language models. I'll provide you with prompts "
    "given to these models and their corresponding outputs. Your task is to assess these responses, "
    "and select the model that produces the best output from a human perspective.\n\n"
    "## Instruction\n\n"
    "{\n"
    '    "instruction": """{instruction}""",\n'
    "}\n\n"
    "## Model Outputs\n\n"
    "Here are the unordered outputs from the models. Each output is associated with a specific "
    "model, identified by a unique model identifier.\n\n"
    "{\n"
    "    {\n"
    '        "model_identifier": "m",\n'
    '        "output": """{output_1}"""\n'
    "    },\n"
    "    {\n"
    '        "model_identifier": "M",\n'
    '        "output": """{output_2}"""\n'
    "    }\n"
    "}\n\n"
    "## Task\n\n"
    "Evaluate the models based on the quality and relevance of their outputs, and select the model "
    "that generated the best output. Answer by providing the model identifier of the best model. We "
    "will use your output as the name of the best model, so make sure your output only contains one "
    "of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): "
    "m or M.\n\n"
    "## Best Model Identifier"
)

CHOICES = ("m", "M")  # output_1, output_2 is better: logprob_parser's denominator ("m" numerator)
TOP_LOGPROBS = 5  # the leaderboard's request: logprobs=True, top_logprobs=5, max_tokens=1
MAX_TOKENS = 1
TEMPERATURE = 1.0  # its config's; the log-probabilities do not depend on it
SWITCH_SEED = 0  # the annotator's seed in `alpaca_eval evaluate`, which seeds the order switch
SWITCH_COLUMN = "is_switched_outputs"  # part of the switch's seed string
IDENTICAL_OUTPUTS = 1.5  # the preference of two identical outputs, given without asking


def render_alpaca_eval_judge_prompt(instruction: str, output_1: str, output_2: str) -> list[dict]:
    """The chat messages alpaca_eval sends its judge for one comparison.

    Each placeholder's first occurrence is replaced in turn, as alpaca_eval's ``make_prompts`` does
    (not ``str.format``: the template's braces are literal).

    Args:
        instruction: the AlpacaEval instruction.
        output_1: the output labelled ``m``.
        output_2: the output labelled ``M``.

    Returns:
        ``[{"role": "system", ...}, {"role": "user", ...}]``.
    """
    user = USER_TEMPLATE
    for key, value in (
        ("instruction", instruction),
        ("output_1", output_1),
        ("output_2", output_2),
    ):
        user = user.replace("{" + key + "}", value, 1)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user},
    ]


def outputs_switched(instruction: str, seed: int = SWITCH_SEED) -> bool:
    """Whether alpaca_eval shows the model as output_1 (``m``) and the baseline as output_2.

    A seeded choice per instruction, the same for every model evaluated, so the leaderboard's order
    is reproduced by seeding with the instruction as alpaca_eval does.
    """
    return random.Random(SWITCH_COLUMN + instruction + str(seed)).choices([False, True], k=1)[0]


def preference_from_logprobs(logprobs: Mapping[str, float]) -> float | None:
    """alpaca_eval's preference from the first token's log-probabilities, as ``logprob_parser``.

    Args:
        logprobs: token -> log-probability of the judge's first token (the top 5 from an API,
            ``m`` and ``M`` from a local model); other tokens are ignored.

    Returns:
        ``2 - P(m)`` with ``P(m) = exp(lp_m) / (exp(lp_m) + exp(lp_M))``, a missing token having
        probability 0; None (alpaca_eval's NaN) when neither ``m`` nor ``M`` is there.
    """
    if not any(token in logprobs for token in CHOICES):
        return None
    missing = float("-inf")
    p_m = verdict_from_logprobs(logprobs.get("m", missing), logprobs.get("M", missing))
    return 2.0 - p_m


def preference_from_text(text: str) -> float | None:
    """The preference from the judge's answer when its engine gives no log-probabilities.

    Returns:
        1.0 for ``m``, 2.0 for ``M`` (surrounding whitespace ignored), None for anything else.
    """
    return {"m": 1.0, "M": 2.0}.get(text.strip())


def unswitched(preference: float | None, switched: bool) -> float | None:
    """The preference with the baseline as output_1 and the model as output_2 (``3 - p`` if shown
    the other way round), as alpaca_eval maps it back."""
    if preference is None or not switched:
        return preference
    return 3.0 - preference


def model_score(preferences: list[float | None]) -> float | None:
    """The model's win score on one question: the mean of ``preference - 1`` over its judges.

    Args:
        preferences: per judge, alpaca_eval's preference with the model as output_2 (1 the
            baseline's output is better, 2 the model's), None when the judge gave none.

    Returns:
        A score in [0, 1] (alpaca_eval's win rate is its mean in percent); None when no judge gave a
        preference.
    """
    given = [p - 1.0 for p in preferences if p is not None]
    return sum(given) / len(given) if given else None
