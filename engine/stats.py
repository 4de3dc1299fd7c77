"""Verdicts with their uncertainty: the statistics every "A beats B" in the product rests on.

- Aggregates over runs (rliable, Agarwal et al. 2021): the interquartile mean (IQM), percentile
  intervals from a *stratified* bootstrap (runs resampled with replacement within each task — here a
  task is a fresh series or a fold — so every task keeps its weight), and the probability of
  improvement P(X > Y): the Mann-Whitney statistic per task, averaged over tasks.
- Sharpe ratios you can believe (Bailey and López de Prado): the probabilistic Sharpe ratio
  P(true Sharpe > benchmark) from the sample length, skew and kurtosis of the returns, and the deflated
  Sharpe ratio, whose benchmark is the Sharpe the best of N noise-only candidates is expected to reach.
- The probability of backtest overfitting (Bailey, Borwein, López de Prado and Zhu 2015) by
  combinatorially symmetric cross-validation (CSCV) over a matrix of candidates' returns.

Scores are arrays of shape (runs, tasks); a 1-d array is one task.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95
NORMAL = NormalDist()


def as_matrix(scores) -> np.ndarray:
    """(runs, tasks) float array; a 1-d array is one task."""
    matrix = np.asarray(scores, dtype=np.float64)
    return matrix[:, None] if matrix.ndim == 1 else matrix


def iqm(scores, axis=None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50 % of all scores (robust to one odd run, unlike the mean)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64), axis=axis)  # as scipy.stats.trim_mean(scores, 0.25, axis)
    axis = 0 if axis is None else axis
    count = ordered.shape[axis]
    cut = int(0.25 * count)
    return np.take(ordered, np.arange(cut, count - cut), axis=axis).mean(axis=axis)


def _resample_runs(matrix: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """(resamples, runs, tasks): runs drawn with replacement independently within each task."""
    runs, tasks = matrix.shape
    picks = rng.integers(0, runs, size=(resamples, runs, tasks))
    return matrix[picks, np.arange(tasks)]


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(scores, statistic: str = "iqm", resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean or IQM of all scores under a stratified bootstrap over runs."""
    matrix = as_matrix(scores)
    samples = _resample_runs(matrix, np.random.default_rng(seed), resamples).reshape(resamples, -1)
    values = iqm(samples, axis=1) if statistic == "iqm" else samples.mean(axis=1)
    return _percentile_interval(values, confidence)


def probability_of_improvement(x, y) -> float:
    """P(X > Y) + P(X = Y) / 2 for a random run of each, per task, averaged over tasks."""
    x, y = as_matrix(x), as_matrix(y)
    return float(np.mean(_improvement(x[None], y[None])))


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(resamples,) probability of improvement for stacks of (resamples, runs, tasks) score matrices."""
    greater = (x[:, :, None, :] > y[:, None, :, :]).mean(axis=(1, 2))
    ties = (x[:, :, None, :] == y[:, None, :, :]).mean(axis=(1, 2))
    return (greater + 0.5 * ties).mean(axis=1)


def improvement_interval(x, y, resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of P(X > Y), each algorithm's runs resampled within each task."""
    rng = np.random.default_rng(seed)
    x_samples, y_samples = _resample_runs(as_matrix(x), rng, resamples), _resample_runs(as_matrix(y), rng, resamples)
    return _percentile_interval(_improvement(x_samples, y_samples), confidence)


@dataclass
class Aggregate:
    """One algorithm's scores over runs and tasks: what a verdict shows."""

    runs: list[float]  # per run, the mean over tasks
    mean: float
    iqm: float
    interval: tuple[float, float]  # 95 % stratified-bootstrap interval of the IQM
    worst: float
    best: float

    def to_json(self) -> dict:
        return {**asdict(self), "interval": list(self.interval)}


def aggregate(scores, seed: int = 0) -> Aggregate:
    matrix = as_matrix(scores)
    per_run = matrix.mean(axis=1)
    return Aggregate([float(v) for v in per_run], float(matrix.mean()), float(iqm(matrix)), bootstrap_interval(matrix, seed=seed),
                     float(per_run.min()), float(per_run.max()))


# --- Sharpe ratios you can believe -------------------------------------------------------------------

def probabilistic_sharpe(returns, benchmark: float = 0.0) -> float:
    """P(true per-bar Sharpe > benchmark) given the sample's length, skew and (non-excess) kurtosis.

    PSR = Φ((SR − SR*) √(n − 1) / √(1 − γ3 SR + (γ4 − 1) SR² / 4)), SR per bar (Bailey & López de Prado 2012)."""
    returns = np.asarray(returns, dtype=np.float64)
    n = len(returns)
    std = returns.std(ddof=1) if n > 1 else 0.0
    if n < 3 or std == 0:
        return math.nan
    sharpe = returns.mean() / std
    deviations = returns - returns.mean()
    moment2 = np.mean(deviations**2)
    skew = float(np.mean(deviations**3) / moment2**1.5)  # scipy.stats.skew and kurtosis(fisher=False): biased moments
    kurtosis = float(np.mean(deviations**4) / moment2**2)
    spread = 1 - skew * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if not spread > 0:
        return math.nan
    return float(NORMAL.cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(spread)))


def expected_max_z(candidates: int) -> float:
    """Expected maximum of N independent standard normals (the False Strategy Theorem's approximation)."""
    if candidates < 2:
        return 0.0
    return float((1 - EULER_GAMMA) * NORMAL.inv_cdf(1 - 1 / candidates) + EULER_GAMMA * NORMAL.inv_cdf(1 - 1 / (candidates * math.e)))


def deflated_sharpe(returns, candidate_sharpes) -> float:
    """PSR against the Sharpe the best of the N candidates compared would reach by luck alone:
    SR* = √Var(candidate Sharpes) × E[max of N standard normals] (per-bar Sharpes)."""
    candidates = np.asarray(candidate_sharpes, dtype=np.float64)
    candidates = candidates[np.isfinite(candidates)]
    spread = candidates.std(ddof=1) if len(candidates) > 1 else 0.0
    return probabilistic_sharpe(returns, spread * expected_max_z(len(candidates)))


def deflated_score(best: float, scores, bars: int, periods_per_year: float) -> float:
    """DSR of the best of several annualized Sharpe scores measured on `bars` bars each, assuming normal
    returns (skew 0, kurtosis 3) where only the scores are known: P(the best one's true Sharpe beats what
    the best of this many noise-only candidates would show)."""
    per_bar = np.asarray(scores, dtype=np.float64) / math.sqrt(periods_per_year)
    per_bar = per_bar[np.isfinite(per_bar)]
    sharpe = best / math.sqrt(periods_per_year)
    benchmark = (per_bar.std(ddof=1) if len(per_bar) > 1 else 0.0) * expected_max_z(len(per_bar))
    return float(NORMAL.cdf((sharpe - benchmark) * math.sqrt(bars - 1) / math.sqrt(1 + sharpe**2 / 2)))


# --- probability of backtest overfitting -------------------------------------------------------------

def _sharpe_from_moments(count: np.ndarray, sums: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Per-bar Sharpe (sample std) from the count, sum and sum of squares of returns; 0 where nothing moves."""
    mean = sums / count
    variance = (squares - count * mean**2) / (count - 1)
    return np.divide(mean, np.sqrt(np.maximum(variance, 0.0)), out=np.zeros_like(mean), where=variance > 1e-30)


def backtest_overfitting(returns, groups: int = 16) -> dict:
    """CSCV: rows (bars) of a (bars, candidates) return matrix cut into `groups` blocks; for every way of
    taking half the blocks as in-sample, the candidate best in-sample is ranked out of sample. PBO is the
    share of splits where it lands at or below the out-of-sample median (logit <= 0). Sharpe ratios of a
    union of blocks come from per-block sums, so thousands of splits cost little."""
    matrix = np.asarray(returns, dtype=np.float64)
    bars, candidates = matrix.shape
    groups -= groups % 2
    if candidates < 2 or groups < 2 or bars < 2 * groups:
        raise ValueError(f"PBO needs at least 2 candidates and {2 * groups} bars, got {candidates} candidates and {bars} bars")
    blocks = np.array_split(np.arange(bars), groups)
    count = np.array([len(block) for block in blocks], dtype=np.float64)
    sums = np.stack([matrix[block].sum(axis=0) for block in blocks])
    squares = np.stack([(matrix[block] ** 2).sum(axis=0) for block in blocks])
    inside = np.array([np.isin(np.arange(groups), chosen) for chosen in itertools.combinations(range(groups), groups // 2)], dtype=np.float64)
    outside = 1.0 - inside
    in_sample = _sharpe_from_moments((inside @ count)[:, None], inside @ sums, inside @ squares)
    out_of_sample = _sharpe_from_moments((outside @ count)[:, None], outside @ sums, outside @ squares)
    best = np.argmax(in_sample, axis=1)
    from scipy.stats import rankdata  # here only: importing scipy.stats costs every command a second

    ranks = rankdata(out_of_sample, axis=1)[np.arange(len(best)), best] / (candidates + 1)  # in (0, 1): 1 = best out of sample
    logits = np.log(ranks / (1 - ranks))
    return {"pbo": float(np.mean(logits <= 0)), "splits": len(logits), "groups": groups, "candidates": candidates,
            "logit_median": float(np.median(logits))}
