"""Tests for the AlpacaEval 2 length-controlled win rate in moaa_ray.core.winrates.

Two oracles check the numbers:

- alpaca_eval 0.6.6 itself (``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate``), the
  golden reference, when it is importable, run offline (:mod:`tests.support.alpaca_eval_lc`).
- scikit-learn's ``LogisticRegressionCV`` configured as alpaca_eval's ``fit_LogisticRegressionCV``
  configures it, fed the design matrix built here from the documented formula; it needs
  scikit-learn only.

The property tests (no length effect with a one-sided gap; a length effect with gaps both ways), the
optimality (KKT) check of the L1 fit and the edge cases need neither.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from moaa_ray.core.winrates import (
    GamedBaseline,
    GamedComparison,
    _fit_l1_logistic,
    length_controlled_win_rate,
    load_gamed_baseline,
    win_tie_loss,
)
from tests.support.alpaca_eval_lc import (
    alpaca_eval_lc,
    answer_lengths,
    logistic,
    synthetic_gamed,
    synthetic_run,
    write_df_gamed,
)

LOGIT_69 = math.log(0.69 / 0.31)


def _neutral_gamed(scores, model_lengths, baseline_lengths) -> list[GamedComparison]:
    """The documented stand-in when no gamed baseline is given (every comparison decided here)."""
    deltas = np.asarray(baseline_lengths, float) - np.asarray(model_lengths, float)
    terms = (deltas / np.std(deltas, ddof=1)).tolist()
    return [(0.5, t, 0.0) for t in terms] + [(0.5, -t, 0.0) for t in terms]


# --- properties ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gap", [300, 1000, 3000])
@pytest.mark.parametrize("seed", range(5))
def test_lc_stays_at_the_raw_win_rate_without_a_length_effect_and_a_one_sided_gap(gap, seed):
    rng = np.random.default_rng(seed)
    model_lengths, baseline_lengths = answer_lengths(rng, 800, gap, 300)
    scores = (rng.random(800) < 0.69).astype(float).tolist()

    lc = length_controlled_win_rate(scores, model_lengths.tolist(), baseline_lengths.tolist())

    assert lc == pytest.approx(win_tie_loss(scores)["win_rate"], abs=3.0)


def test_lc_recovers_the_length_free_win_rate_when_lengths_differ_both_ways():
    lc_errors, raw_errors = [], []
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        model_lengths, baseline_lengths = answer_lengths(rng, 800, 0, 600)
        gap = model_lengths - baseline_lengths
        draws = rng.random(800)
        scores = (draws < logistic(LOGIT_69 + 1.5 * np.tanh(gap / gap.std()))).astype(float)
        length_free = 100.0 * float(np.mean(draws < 0.69))  # the same judge with no length effect

        lc = length_controlled_win_rate(
            scores.tolist(), model_lengths.tolist(), baseline_lengths.tolist()
        )

        assert lc == pytest.approx(length_free, abs=3.0)
        lc_errors.append(abs(lc - length_free))
        raw_errors.append(abs(win_tie_loss(scores.tolist())["win_rate"] - length_free))
    assert np.mean(lc_errors) < np.mean(raw_errors)


def test_lc_is_symmetric_between_model_and_baseline():
    scores, model_lengths, baseline_lengths, difficulty = synthetic_run(seed=3, n=200)
    flipped = [None if s is None else 1.0 - s for s in scores]

    forward = length_controlled_win_rate(scores, model_lengths, baseline_lengths)
    backward = length_controlled_win_rate(flipped, baseline_lengths, model_lengths)

    assert forward + backward == pytest.approx(100.0, abs=1e-6)


def test_the_l1_fit_meets_its_optimality_conditions():
    rng = np.random.default_rng(0)
    features = np.column_stack(
        [np.tanh(rng.normal(0, 1, 300)), rng.normal(0, 1, 300), np.ones(300)]
    )
    targets = rng.choice([0.0, 0.5, 1.0, 0.8], 300)
    weights = rng.choice([1.0, 0.1], 300)

    for c in (0.01, 0.3, 100.0):
        w = _fit_l1_logistic(features, targets, weights, c)
        gradient = c * features.T @ (weights * (logistic(features @ w) - targets))
        active = w != 0
        tolerance = 1e-10 * c * weights.sum()  # rounding in a sum of that size
        assert gradient[active] + np.sign(w[active]) == pytest.approx(0.0, abs=tolerance)
        assert np.all(np.abs(gradient[~active]) <= 1.0 + tolerance)


# --- oracle: scikit-learn -----------------------------------------------------------------------


def _sklearn_lc(scores, model_lengths, baseline_lengths, difficulty, gamed, lam):
    """alpaca_eval's design matrix and fit_LogisticRegressionCV, with scikit-learn doing the fit."""
    sklearn = pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    deltas = np.asarray(baseline_lengths, float) - np.asarray(model_lengths, float)
    terms = deltas / np.std(deltas, ddof=1)
    decided = [i for i, s in enumerate(scores) if s is not None]
    rows = [(p, np.tanh(t), d, 0.0, lam / 2) for p, t, d in gamed]
    rows += [(scores[i], np.tanh(terms[i]), difficulty[i], 1.0, 1.0) for i in decided]
    table = np.array(rows)
    n = len(table)
    x = np.vstack([table[:, 1:4], table[:, 1:4]])
    label = np.concatenate([np.ones(n), np.zeros(n)])
    true_prob = np.concatenate([table[:, 0], 1.0 - table[:, 0]])
    true_weight = np.concatenate([table[:, 4], table[:, 4]])

    def logloss_continuous(y_true, y_pred, true_prob, true_sample_weight):
        y_true = np.where(y_true == 1, true_prob, 1 - true_prob)
        y_pred = np.clip(y_pred, 1e-15, 1 - 1e-15)
        loss = y_true * np.log(y_pred) + (1 - y_true) * np.log(1 - y_pred)
        return -np.mean(loss * true_sample_weight)

    with sklearn.config_context(enable_metadata_routing=True):
        scorer = make_scorer(
            logloss_continuous, response_method="predict_proba", greater_is_better=False
        ).set_score_request(true_sample_weight=True, true_prob=True)
        model = LogisticRegressionCV(
            cv=GroupKFold(n_splits=5),
            scoring=scorer,
            random_state=123,
            dual=False,
            penalty="l1",
            solver="liblinear",
            fit_intercept=False,
        )
        model.set_fit_request(sample_weight=True)
        model.fit(
            x,
            label,
            sample_weight=true_prob * true_weight,
            groups=np.concatenate([np.arange(n), np.arange(n)]),
            true_sample_weight=true_weight,
            true_prob=true_prob,
        )
    test = np.column_stack([np.zeros(len(scores)), difficulty, np.ones(len(scores))])
    return 100.0 * float(np.mean(model.predict_proba(test)[:, 1]))


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("with_difficulty", [True, False])
def test_lc_matches_scikit_learn_fitting_alpaca_eval_glm(with_difficulty):
    scores, model_lengths, baseline_lengths, difficulty = synthetic_run(seed=1, n=300)
    gamed = synthetic_gamed(seed=1, difficulty=difficulty)
    if not with_difficulty:
        difficulty = np.zeros(len(scores))
        gamed = [(p, t, 0.0) for p, t, _ in gamed]

    expected = _sklearn_lc(scores, model_lengths, baseline_lengths, difficulty, gamed, 0.2)
    lc = length_controlled_win_rate(
        scores,
        model_lengths,
        baseline_lengths,
        instruction_difficulty=difficulty.tolist() if with_difficulty else None,
        gamed_baseline=gamed,
    )

    assert lc == pytest.approx(expected, abs=0.1)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lc_fallback_matches_scikit_learn_with_the_neutral_gamed_rows():
    scores, model_lengths, baseline_lengths, _ = synthetic_run(seed=2, n=300, abstain=0.0)
    neutral = _neutral_gamed(scores, model_lengths, baseline_lengths)

    expected = _sklearn_lc(
        scores, model_lengths, baseline_lengths, np.zeros(len(scores)), neutral, 0.2
    )

    assert length_controlled_win_rate(scores, model_lengths, baseline_lengths) == pytest.approx(
        expected, abs=0.1
    )


# --- oracle: alpaca_eval ------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
@pytest.mark.parametrize("with_difficulty", [True, False])
def test_lc_matches_alpaca_eval(monkeypatch, tmp_path, with_difficulty):
    scores, model_lengths, baseline_lengths, difficulty = synthetic_run(seed=0)
    gamed = synthetic_gamed(seed=0, difficulty=difficulty if with_difficulty else 0 * difficulty)

    df_gamed = write_df_gamed(tmp_path / "df_gamed.csv", gamed)

    expected = alpaca_eval_lc(
        monkeypatch, df_gamed, scores, model_lengths, baseline_lengths, "length_controlled_v1"
    )
    gamed_file = load_gamed_baseline(df_gamed)
    lc = length_controlled_win_rate(
        scores,
        model_lengths,
        baseline_lengths,
        instruction_difficulty=[gamed_file.difficulty[str(i)] for i in range(len(scores))],
        gamed_baseline=gamed_file.comparisons,
    )

    assert lc == pytest.approx(expected, abs=0.02)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_lc_without_regularisation_matches_alpaca_eval_noreg(monkeypatch, tmp_path):
    scores, model_lengths, baseline_lengths, difficulty = synthetic_run(seed=4)
    gamed = synthetic_gamed(seed=4, difficulty=difficulty)

    df_gamed = write_df_gamed(tmp_path / "df_gamed.csv", gamed)

    expected = alpaca_eval_lc(
        monkeypatch, df_gamed, scores, model_lengths, baseline_lengths, "length_controlled_noreg"
    )
    lc = length_controlled_win_rate(
        scores,
        model_lengths,
        baseline_lengths,
        instruction_difficulty=difficulty.tolist(),
        regularize_to_baseline_lambda=0.0,
    )

    assert lc == pytest.approx(expected, abs=0.02)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
def test_lc_fallback_matches_alpaca_eval_given_the_neutral_gamed_rows(monkeypatch, tmp_path):
    scores, model_lengths, baseline_lengths, _ = synthetic_run(seed=5, abstain=0.0)
    neutral = _neutral_gamed(scores, model_lengths, baseline_lengths)

    df_gamed = write_df_gamed(tmp_path / "df_gamed.csv", neutral)

    expected = alpaca_eval_lc(
        monkeypatch, df_gamed, scores, model_lengths, baseline_lengths, "length_controlled_v1"
    )

    assert length_controlled_win_rate(scores, model_lengths, baseline_lengths) == pytest.approx(
        expected, abs=0.02
    )


# --- edge cases ---------------------------------------------------------------------------------


def test_lc_of_all_wins_all_losses_and_all_ties():
    lengths = list(range(100, 200))

    all_wins = length_controlled_win_rate([1.0] * 100, lengths, [150] * 100)
    all_losses = length_controlled_win_rate([0.0] * 100, lengths, [150] * 100)
    all_ties = length_controlled_win_rate([0.5] * 100, lengths, [150] * 100)

    assert 99.99 < all_wins < 100.0
    assert 0.0 < all_losses < 0.01
    assert all_ties == 50.0


def test_lc_of_one_comparison():
    # Cross-validation over the comparison and its two neutral rows picks the strongest penalty;
    # alone, the row gets C = 100, so the fitted win probability is 1 - 1/100.
    assert length_controlled_win_rate([1.0], [900], [300]) == 50.0
    assert length_controlled_win_rate(
        [1.0], [900], [300], regularize_to_baseline_lambda=0.0
    ) == pytest.approx(99.0)


def test_lc_is_nan_when_every_judge_abstained():
    assert math.isnan(length_controlled_win_rate([None, None], [10, 20], [10, 30]))


def test_lc_rejects_mismatched_or_bad_inputs():
    with pytest.raises(ValueError, match="differ in length: 2, 2, 1"):
        length_controlled_win_rate([1.0, 0.0], [10, 20], [10])
    with pytest.raises(ValueError, match="1 values for 2 comparisons"):
        length_controlled_win_rate([1.0, 0.0], [10, 20], [10, 5], instruction_difficulty=[0.1])
    with pytest.raises(ValueError, match=r"scores\[1\]"):
        length_controlled_win_rate([1.0, 2.0], [10, 20], [10, 5])
    with pytest.raises(ValueError, match=r"gamed_baseline\[0\]"):
        length_controlled_win_rate([1.0], [10], [10], gamed_baseline=[(1.5, 0.0, 0.0)])
    with pytest.raises(ValueError, match="lambda must be >= 0"):
        length_controlled_win_rate([1.0], [10], [10], regularize_to_baseline_lambda=-0.1)


# --- loaders ------------------------------------------------------------------------------------


def test_load_gamed_baseline_reads_alpaca_eval_columns_and_drops_missing_preferences(tmp_path):
    path = tmp_path / "df_gamed.csv"
    path.write_text(
        "model,index,preference,std_delta_len,instruction_difficulty,not_gamed_baseline\n"
        "verbose,0,0.75,-1.2,0.3,False\n"
        "verbose,1,,-0.4,0.1,False\n"
        "concise,0,0.25,0.9,0.5,False\n"
    )

    assert load_gamed_baseline(path) == GamedBaseline(
        comparisons=[(0.75, -1.2, 0.3), (0.25, 0.9, 0.5)],
        difficulty={"0": 0.3, "1": 0.1},  # each instruction's first row, as alpaca_eval reads it
    )


def test_load_gamed_baseline_names_the_file_and_the_columns_it_lacks_or_its_bad_value(tmp_path):
    path = tmp_path / "instruction_difficulty.csv"
    path.write_text(",instruction_difficulty\n0,-0.25\n")
    garbled = tmp_path / "df_gamed.csv"
    garbled.write_text("index,preference,std_delta_len,instruction_difficulty\n0,0.5,long,0.1\n")

    with pytest.raises(ValueError, match=f"{path}: no column index, preference, std_delta_len;"):
        load_gamed_baseline(path)
    with pytest.raises(ValueError, match=f"{garbled}: could not convert string to float: 'long'"):
        load_gamed_baseline(garbled)
