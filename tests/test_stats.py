"""engine.stats against independent computations: scipy's bootstrap and Mann-Whitney U, the standard
library's normal distribution, hand-written formulas, and PBO on cases whose answer is known."""

import math
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats as scipy_stats

from engine import stats

SCORES = np.array([[12.1, 9.0, 15.2], [11.4, 10.3, 14.0], [3.2, 2.5, 4.1], [12.9, 11.8, 13.3], [10.0, 8.7, 16.4]])  # 5 runs x 3 tasks


def test_iqm_is_the_mean_of_the_middle_half():
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # (3 + 4 + 5 + 6) / 4
    ordered = np.sort(SCORES.ravel())  # 15 scores: 3 cut from each end
    assert stats.iqm(SCORES) == pytest.approx(ordered[3:12].mean())


@pytest.mark.parametrize("statistic", ["iqm", "mean"])
def test_stratified_interval_agrees_with_scipy_bootstrap_of_each_task(statistic):
    """scipy.stats.bootstrap resamples each sample independently: given one sample per task, that is
    rliable's stratified bootstrap. Percentile intervals must agree within Monte Carlo error."""
    ours = stats.bootstrap_interval(SCORES, statistic, resamples=20_000, seed=1)

    def statistic_of(*tasks, axis=-1):
        stacked = np.stack(tasks, axis=-1)  # (..., runs, tasks)
        flat = stacked.reshape(*stacked.shape[:-2], -1)
        return scipy_stats.trim_mean(flat, 0.25, axis=-1) if statistic == "iqm" else flat.mean(axis=-1)

    theirs = scipy_stats.bootstrap(tuple(SCORES.T), statistic_of, n_resamples=20_000, method="percentile",
                                   random_state=np.random.default_rng(2), vectorized=True).confidence_interval
    spread = SCORES.max() - SCORES.min()
    assert ours[0] == pytest.approx(theirs.low, abs=0.03 * spread)
    assert ours[1] == pytest.approx(theirs.high, abs=0.03 * spread)
    assert ours[0] < stats.iqm(SCORES) < ours[1] if statistic == "iqm" else ours[0] < SCORES.mean() < ours[1]


def test_probability_of_improvement_is_mann_whitney_per_task_averaged():
    other = SCORES[:4] - np.array([1.0, -2.0, 0.5])
    expected = np.mean([scipy_stats.mannwhitneyu(SCORES[:, t], other[:, t]).statistic / (5 * 4) for t in range(3)])
    assert stats.probability_of_improvement(SCORES, other) == pytest.approx(expected)
    assert stats.probability_of_improvement(np.ones((3, 1)), np.ones((3, 1))) == 0.5  # ties count half
    low, high = stats.improvement_interval(SCORES, other, resamples=4000)
    assert 0 <= low <= expected <= high <= 1


def test_aggregate_reports_runs_worst_and_interval():
    result = stats.aggregate(SCORES)
    assert result.runs == pytest.approx(SCORES.mean(axis=1).tolist())
    assert result.worst == pytest.approx(SCORES.mean(axis=1).min())
    assert result.interval[0] <= result.iqm <= result.interval[1]


RETURNS = np.array([0.012, -0.004, 0.021, 0.0, 0.015, -0.011, 0.006, 0.009, -0.002, 0.017, -0.008, 0.004])


def hand_psr(returns, benchmark):
    n = len(returns)
    mean = sum(returns) / n
    sample_std = math.sqrt(sum((r - mean) ** 2 for r in returns) / (n - 1))
    m2 = sum((r - mean) ** 2 for r in returns) / n
    m3 = sum((r - mean) ** 3 for r in returns) / n
    m4 = sum((r - mean) ** 4 for r in returns) / n
    sharpe, skew, kurtosis = mean / sample_std, m3 / m2**1.5, m4 / m2**2
    return NormalDist().cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2))


def test_probabilistic_sharpe_matches_the_formula_by_hand():
    assert stats.probabilistic_sharpe(RETURNS) == pytest.approx(hand_psr(RETURNS, 0.0), rel=1e-9)
    assert stats.probabilistic_sharpe(RETURNS, 0.2) == pytest.approx(hand_psr(RETURNS, 0.2), rel=1e-9)
    assert stats.probabilistic_sharpe(-RETURNS) < 0.5 < stats.probabilistic_sharpe(RETURNS)
    assert math.isnan(stats.probabilistic_sharpe(np.zeros(10)))


def test_deflated_sharpe_uses_the_expected_maximum_of_the_candidates():
    candidates = [0.05, 0.12, -0.03, 0.30, 0.08, 0.11, 0.02, 0.19, -0.07, 0.09]
    normal = NormalDist()
    expected_max = (1 - 0.5772156649015329) * normal.inv_cdf(1 - 1 / 10) + 0.5772156649015329 * normal.inv_cdf(1 - 1 / (10 * math.e))
    assert stats.expected_max_z(10) == pytest.approx(expected_max, rel=1e-9)
    benchmark = float(np.std(candidates, ddof=1)) * expected_max
    assert stats.deflated_sharpe(RETURNS, candidates) == pytest.approx(hand_psr(RETURNS, benchmark), rel=1e-9)
    assert stats.deflated_sharpe(RETURNS, candidates) < stats.probabilistic_sharpe(RETURNS)
    assert stats.deflated_sharpe(RETURNS, [0.1]) == pytest.approx(stats.probabilistic_sharpe(RETURNS))  # one candidate: nothing to deflate


def test_pbo_of_pure_noise_candidates_is_about_one_half():
    rng = np.random.default_rng(0)
    results = [stats.backtest_overfitting(rng.normal(0, 1, size=(1600, 20)), groups=8)["pbo"] for _ in range(6)]
    assert 0.3 <= np.mean(results) <= 0.75
    assert stats.backtest_overfitting(rng.normal(0, 1, size=(1600, 20)), groups=8)["splits"] == 70  # C(8, 4)


def test_pbo_with_one_real_edge_is_near_zero():
    rng = np.random.default_rng(1)
    returns = rng.normal(0, 1, size=(1600, 20))
    returns[:, 7] += 0.25  # one candidate has a real edge
    assert stats.backtest_overfitting(returns, groups=8)["pbo"] <= 0.05


def test_pbo_refuses_too_little():
    with pytest.raises(ValueError):
        stats.backtest_overfitting(np.zeros((100, 1)))


def test_deflated_score_of_the_best_of_several_sweep_trials_by_hand():
    scores, bars, per_year = [10.0, 5.0, 8.0, -2.0], 4000, 105_120.0
    per_bar = [s / math.sqrt(per_year) for s in scores]
    mean = sum(per_bar) / 4
    spread = math.sqrt(sum((x - mean) ** 2 for x in per_bar) / 3)
    normal, gamma = NormalDist(), 0.5772156649015329
    benchmark = spread * ((1 - gamma) * normal.inv_cdf(1 - 1 / 4) + gamma * normal.inv_cdf(1 - 1 / (4 * math.e)))
    best = 10.0 / math.sqrt(per_year)
    expected = normal.cdf((best - benchmark) * math.sqrt(bars - 1) / math.sqrt(1 + best**2 / 2))
    assert stats.deflated_score(10.0, scores, bars, per_year) == pytest.approx(expected, rel=1e-9)
