"""The evaluation stage's streaming steps: answering every turn, judging the pair as
arena-hard-auto, AlpacaEval 2 or the ensemble judges it, and MT-Bench grading, with their prompts.

Each step fills the question states in place (:mod:`~moaa_ray.pipeline.evaluate.questions`); a failed
engine call marks its question failed, so the next run retries it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from moaa_ray.config import GradingSamplingConfig, SamplingConfig
from moaa_ray.core.alpaca_eval_judge import (
    CHOICES,
    IDENTICAL_OUTPUTS,
    MAX_TOKENS,
    TEMPERATURE,
    TOP_LOGPROBS,
    outputs_switched,
    preference_from_logprobs,
    preference_from_text,
    render_alpaca_eval_judge_prompt,
    unswitched,
)
from moaa_ray.core.arena_hard import (
    JUDGMENT_ATTEMPTS,
    lacks_verdict_label,
    parse_arena_hard_verdict,
    render_arena_hard_judge_prompt,
)
from moaa_ray.core.context import Prompt
from moaa_ray.core.eval_question import (
    AlpacaPreference,
    ArenaVerdict,
    EvalQuestion,
    Grade,
    Side,
    is_graded,
    is_judged,
    pair_key,
)
from moaa_ray.core.mt_bench import GRADE_PREFIX, expected_grade, parse_rating, render_grade_prompt
from moaa_ray.core.tournament import Tournament
from moaa_ray.engines.base import SamplingParams
from moaa_ray.pipeline.evaluate.questions import SIDES, answer_conversation, transcript
from moaa_ray.pipeline.judging import LOGPROB_REPLY_TOKENS, fit_prompt
from moaa_ray.pools.dispatch import PoolCall
from moaa_ray.pools.model_pool import ModelPool
from moaa_ray.records import mark_failed

GRADES = [str(grade) for grade in range(1, 11)]


def _params(
    sampling: SamplingConfig | GradingSamplingConfig,
    temperature: float | None = None,
    n: int = 1,
    max_new_tokens: int | None = None,
) -> SamplingParams:
    """The engine's sampling from a config section; a temperature or length given here wins."""
    return SamplingParams(
        sampling.temperature if temperature is None else temperature,
        sampling.top_p,
        sampling.max_new_tokens if max_new_tokens is None else max_new_tokens,
        n,
        sampling.seed,
    )


def _pair_when_answered(state: EvalQuestion) -> None:
    """Once both sides answered every turn: the pair the judges compare, whole conversations each."""
    answers = [state[side] for side in SIDES]
    if not state["error"] and all(len(a) >= len(state["turns"]) for a in answers):
        pair = [transcript(state["turns"], a[: len(state["turns"])]) for a in answers]
        state[pair_key(state)] = pair


def _answers_now(state: EvalQuestion, side: Side, turn: int) -> bool:
    """Whether ``side`` answers ``turn`` (0-based) of a question now; a baseline only on judged ones."""
    if state["error"] or len(state["turns"]) <= turn or len(state[side]) != turn:
        return False
    return side == "model_answers" or is_judged(state)


def _samples_now(state: EvalQuestion, side: Side, turn: int, num_samples: int) -> int:
    """How many answers ``side`` samples for ``turn`` of a question: ``num_samples`` for the
    model's last turn of a verified question (the verifier scores each), otherwise one."""
    last = turn == len(state["turns"]) - 1
    return num_samples if side == "model_answers" and last and state["kind"] == "verified" else 1


@dataclass(frozen=True)
class AnswerStep:
    """One turn of every question from the model and, where it answers, the baseline model at once.

    The model samples ``num_samples`` answers to a verified question's last turn: the first is its
    answer (``model_answers``), the others go to ``more_answers``.
    """

    pools: dict[Side, ModelPool]  # side -> its model's pool
    turn: int
    sampling: SamplingConfig
    num_samples: int = 1

    def __call__(self, states: list[EvalQuestion]) -> None:
        submitted = []
        for side, pool in self.pools.items():
            by_params: dict[tuple[float | None, int | None, int], list[EvalQuestion]] = {}
            for s in states:
                if _answers_now(s, side, self.turn):
                    n = _samples_now(s, side, self.turn, self.num_samples)
                    by_params.setdefault((s["temperature"], s["max_new_tokens"], n), []).append(s)
            for (temperature, max_new_tokens, n), asking in by_params.items():
                params = _params(self.sampling, temperature, n, max_new_tokens)
                live, conversations = [], []
                for s in asking:
                    prompt = Prompt.fixed(answer_conversation(s["turns"], s[side], self.turn))
                    conversation = fit_prompt(pool, s, prompt, params.max_new_tokens)
                    if conversation is not None:
                        live.append(s)
                        conversations.append(conversation)
                submitted.append((side, live, pool.submit("chat", conversations, params)))
        for side, live, refs in submitted:
            for state, completion in zip(live, self.pools[side].collect(refs), strict=True):
                if completion.output is None:
                    mark_failed(state, f"answering failed: {completion.error}")
                else:
                    answer, *more = completion.output
                    state[side].append(answer.text)  # judged as written, cut or not (counted)
                    state["more_answers"] += [a.text for a in more]
                    state["truncated"][side] += sum(a.truncated for a in completion.output)
        for state in states:
            _pair_when_answered(state)


@dataclass
class _ArenaGame:
    """One judge's game of a question, with the judge's replies to it so far."""

    state: EvalQuestion
    game: int  # 1: the baseline as A; 2: the model as A
    replies: list[str] = field(default_factory=list)

    def request(self) -> Prompt:
        """The judge's prompt for its next reply; the two answers and the earlier replies are
        its parts, cut evenly to fit a window."""
        model, baseline = self.state["arena_answers"]
        shown = (baseline, model) if self.game == 1 else (model, baseline)
        return Prompt(partial(_arena_prompt, self.state["turns"][-1]), (*shown, *self.replies))


def _arena_prompt(question: str, parts: list[str]) -> list[dict]:
    return render_arena_hard_judge_prompt(question, parts[0], parts[1], parts[2:])


@dataclass(frozen=True)
class ArenaHardJudgeStep:
    """Arena-Hard judging as arena-hard-auto v0.1 does it, by each judge: its prompt (the judge
    answers the question itself first), 5-level verdicts, two games (baseline as A, then the model
    as A).

    A game whose reply has no verdict label at all is asked again, as arena-hard-auto asks: the
    reply and its retry prompt are appended and the judge replies once more (a second call for
    those games only, counted in ``retries``). The verdict is read from the replies together; a
    judgment without exactly one of the five labels counts as no battle (an abstention, counted in
    ``abstain_rate``).
    """

    pools: dict[str, ModelPool]  # judge name -> pool
    sampling: SamplingConfig

    def __call__(self, states: list[EvalQuestion]) -> None:
        live = [s for s in states if s["arena_answers"] and not s["error"]]
        pending = {judge: [_ArenaGame(s, g) for s in live for g in (1, 2)] for judge in self.pools}
        for attempt in range(1, JUDGMENT_ATTEMPTS + 1):
            pending = self._reply(pending, last=attempt == JUDGMENT_ATTEMPTS)

    def _reply(
        self, pending: dict[str, list[_ArenaGame]], last: bool
    ) -> dict[str, list[_ArenaGame]]:
        """One more reply per game from each judge at once; records the verdicts of the games it
        settles and returns the others, to be asked again (none when ``last``)."""
        submitted = []
        for judge, games in pending.items():
            pool = self.pools[judge]
            asked, conversations = [], []
            for game in games:
                conversation = fit_prompt(
                    pool, game.state, game.request(), self.sampling.max_new_tokens
                )
                if conversation is not None:
                    asked.append(game)
                    conversations.append(conversation)
            submitted.append(
                (judge, asked, pool.submit("chat", conversations, _params(self.sampling)))
            )
        again: dict[str, list[_ArenaGame]] = {}
        for judge, asked, refs in submitted:
            for game, completion in zip(asked, self.pools[judge].collect(refs), strict=True):
                if completion.output is None:
                    mark_failed(game.state, f"judge {judge} failed: {completion.error}")
                    continue
                game.replies.append(completion.output[0].text)
                judgment = "\n".join(game.replies)
                if lacks_verdict_label(judgment) and not last:
                    again.setdefault(judge, []).append(game)
                    continue
                verdict = ArenaVerdict(
                    judge=judge,
                    game=game.game,
                    verdict=parse_arena_hard_verdict(judgment),
                    raw=judgment,
                    attempts=len(game.replies),
                )
                game.state["arena_verdicts"].append(verdict)
        return again


# alpaca_eval's request to its judge: one token at temperature 1, no seed.
ALPACA_EVAL_PARAMS = SamplingParams(TEMPERATURE, 1.0, MAX_TOKENS, 1, None)


@dataclass(frozen=True)
class AlpacaEvalJudgeStep:
    """AlpacaEval 2 judging as its leaderboard does it (alpaca_eval's
    ``weighted_alpaca_eval_gpt4_turbo``, :mod:`moaa_ray.core.alpaca_eval_judge`), by each judge:
    its prompt, the baseline as output_1 and the model as output_2 unless alpaca_eval's seeded
    switch swaps them, and a preference weighted by the first token's log-probabilities of ``m``
    and ``M``. Identical outputs get 1.5 unasked.

    An ``openai_http`` judge gives its top 5 as the leaderboard asks OpenAI; hf, vllm and simulated
    judges give ``m``'s and ``M``'s own (one outside the top 5, which alpaca_eval counts as
    probability 0, keeps its small probability here); a function judge, and an endpoint that sends
    no log-probabilities, are read from the text (``m`` or ``M``).
    """

    pools: dict[str, ModelPool]  # judge name -> pool

    def __call__(self, states: list[EvalQuestion]) -> None:
        live = [s for s in states if s["alpaca_answers"] and not s["error"]]
        asked = []
        for state in live:
            model, baseline = state["alpaca_answers"]
            if model != baseline:
                asked.append(state)
                continue
            for judge in self.pools:
                _record_preference(state, judge, IDENTICAL_OUTPUTS, None)
        submitted = []
        for judge, pool in self.pools.items():
            sent, conversations = [], []
            for state in asked:
                prompt = _alpaca_request(state)
                conversation = fit_prompt(pool, state, prompt, LOGPROB_REPLY_TOKENS)
                if conversation is not None:
                    sent.append(state)
                    conversations.append(conversation)
            submitted.append((judge, sent, _ask_alpaca_judge(pool, conversations)))
        for judge, sent, call in submitted:
            pool = self.pools[judge]
            for state, completion in zip(sent, pool.collect(call), strict=True):
                if completion.output is None:
                    mark_failed(state, f"judge {judge} failed: {completion.error}")
                    continue
                preference, raw = _alpaca_reading(pool.config.engine, completion.output)
                _record_preference(state, judge, preference, raw)


def _alpaca_switched(state: EvalQuestion) -> bool:
    """Whether alpaca_eval shows this question's model output first, seeded by its instruction."""
    return outputs_switched(state["turns"][-1])


def _alpaca_request(state: EvalQuestion) -> Prompt:
    """The judge's prompt in alpaca_eval's order; the two outputs are its parts, cut evenly to fit."""
    model, baseline = state["alpaca_answers"]
    shown = (model, baseline) if _alpaca_switched(state) else (baseline, model)
    return Prompt(partial(_alpaca_prompt, state["turns"][-1]), shown)


def _alpaca_prompt(instruction: str, outputs: list[str]) -> list[dict]:
    return render_alpaca_eval_judge_prompt(instruction, outputs[0], outputs[1])


def _ask_alpaca_judge(pool: ModelPool, conversations: list) -> PoolCall:
    """The judge's first token: an endpoint's top log-probabilities, a local model's of ``m`` and
    ``M``, a function's text."""
    engine = pool.config.engine
    if engine == "openai_http":
        return pool.submit("first_token_logprobs", conversations, ALPACA_EVAL_PARAMS, TOP_LOGPROBS)
    if engine == "function":
        return pool.submit("chat", conversations, ALPACA_EVAL_PARAMS)
    return pool.submit("choice_logprobs", conversations, "", list(CHOICES))


def _alpaca_reading(engine: str, output) -> tuple[float | None, str]:
    """The preference as shown (``m`` output_1) from what :func:`_ask_alpaca_judge` got back, and
    what it was read from: the log-probabilities as JSON, or the text when there are none."""
    if engine == "openai_http":
        text, logprobs = output
    elif engine == "function":
        text, logprobs = output[0].text, None
    else:
        text, logprobs = "", dict(zip(CHOICES, output, strict=True))
    if logprobs is None:
        return preference_from_text(text), text
    return preference_from_logprobs(logprobs), json.dumps(logprobs)


def _record_preference(
    state: EvalQuestion, judge: str, shown: float | None, raw: str | None
) -> None:
    """A judge's preference, mapped back to the baseline as output_1 and the model as output_2."""
    switched = _alpaca_switched(state)
    preference = unswitched(shown, switched)
    record = AlpacaPreference(judge=judge, preference=preference, switched=switched, raw=raw)
    state["alpaca_preferences"].append(record)


@dataclass(frozen=True)
class JudgedOnly:
    """A judging step over the batch's judged questions only: verified and graded-only ones are
    left alone."""

    step: Callable[[list[Tournament]], None]  # a step of the judging shared with preferences

    def __call__(self, states: list[EvalQuestion]) -> None:
        judged: list[Tournament] = [s for s in states if is_judged(s)]
        if judged:
            self.step(judged)


def _grade_request(state: EvalQuestion, turn: int) -> Prompt:
    """The grading prompt of one turn; the model's answers are its parts, cut evenly to fit."""
    render = partial(_grade_prompt, state["turns"], turn, state["category"], state["reference"])
    return Prompt(render, tuple(state["model_answers"]))


def _grade_prompt(
    turns: list[str],
    turn: int,
    category: str | None,
    reference: list[str] | None,
    answers: list[str],
) -> list[dict]:
    return render_grade_prompt(turns, answers, turn, category, reference)


@dataclass(frozen=True)
class GradeStep:
    """MT-Bench single grading (FastChat's prompts): the grader rates each answer turn 1 to 10."""

    pool: ModelPool
    mode: str  # "text": parse "Rating: [[N]]"; "logprob": expected grade
    sampling: SamplingConfig | GradingSamplingConfig

    def __call__(self, states: list[EvalQuestion]) -> None:
        room = self.sampling.max_new_tokens if self.mode == "text" else LOGPROB_REPLY_TOKENS
        items, conversations = [], []
        for state, turn in [(s, t) for s in states if is_graded(s) for t in range(len(s["turns"]))]:
            request = _grade_request(state, turn)
            conversation = fit_prompt(self.pool, state, request, room)
            if conversation is not None:
                items.append((state, turn))
                conversations.append(conversation)
        if self.mode == "logprob":
            first = self.pool.submit("choice_logprobs", conversations, GRADE_PREFIX, GRADES)
            split = self.pool.submit(
                "choice_logprobs", conversations, GRADE_PREFIX + "1", ["0", "]"]
            )
            pairs = zip(self.pool.collect(first), self.pool.collect(split), strict=True)
            for (state, turn), (grade, ten) in zip(items, pairs, strict=True):
                if grade.output is None or ten.output is None:
                    mark_failed(state, f"grading failed: {grade.error or ten.error}")
                    continue
                score = expected_grade(grade.output, ten.output)
                state["grades"].append(_grade(state, turn, score, None))
            return
        completions = self.pool.chat(conversations, _params(self.sampling))
        for (state, turn), completion in zip(items, completions, strict=True):
            if completion.output is None:  # a failed call is not an ungradable answer
                mark_failed(state, f"grading failed: {completion.error}")
                continue
            text = completion.output[0].text
            state["grades"].append(_grade(state, turn, parse_rating(text), text))


def _grade(state: EvalQuestion, turn: int, score: float | None, raw: str | None) -> Grade:
    return Grade(turn=turn + 1, category=state["category"], score=score, raw=raw)
