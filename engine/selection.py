"""Model selection: which weights a run keeps, judged on validation that holds both directions and regime
changes, and the rule that keeps a policy flat when validation shows no edge.

What validation is (`ValidationSet`):
- the validation split and its mirror image (every return negated), so a constant position cannot score;
- on the synthetic market, `validation_series` more independent series (reserved seeds that training and
  the unseen-series report never use) and their mirrors. One validation split can be a single long
  regime, where "enter once and hold" scores like a trend follower; across several series with regime
  changes it cannot.
The score is the interquartile mean (IQM) of the greedy Sharpe over these series: a policy that enters once
and holds earns a huge Sharpe on a one-regime split and on its mirror, and nothing elsewhere; the IQM sets
such outliers aside where a mean would let two series carry the score. Its noise is the standard error of
an annualized Sharpe over the independent bars (a mirror adds no independent bars).

What a run keeps (`Selection`): the latest weights whose score is within one standard error of the best
so far (differences smaller than the noise say nothing, and later weights have trained longer) — but
only if they beat flat and the best constant position on the same series by more than the noise:
max(1.645 standard errors, the expected best of N noise-only scores for the N validations compared).
Otherwise the kept policy is flat ("no edge found on validation: holding flat"): a policy whose
validation shows no edge never trades out of sample.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.env import EnvConfig
from engine.evaluation import Backtest, agent_backtest, table_backtest, target_table, trailing_rule_targets
from engine.features import Features, MarketSplits, Normalizer, build_features, mirror_candles
from engine.metrics import periods_per_year
from engine.model import AsymmetricPolicyNetwork, hold_flat
from engine.stats import deflated_sharpe, expected_max_z, iqm, probabilistic_sharpe

VALIDATION_SEEDS = 900_001  # first seed of the synthetic validation series (never trained on or reported as unseen)
VALIDATION_DAYS = 20
ONE_SIDED_95 = 1.6448536269514722
NO_EDGE = "no edge found on validation: holding flat"


@dataclass(frozen=True)
class ValidationSeries:
    name: str
    features: Features
    mirror: bool = False  # a mirror image repeats its original's bars with every return negated


def synthetic_validation_series(data: str, count: int, normalizer: Normalizer, macro_window: int,
                                micro_window: int) -> tuple[ValidationSeries, ...]:
    """`count` independent synthetic series (and their mirrors) from reserved seeds, with the training
    market's options, normalized with the training statistics; none for data from files."""
    from engine.synthetic import SYNTHETIC_DEFAULTS, generate_candles, parse_synthetic_options

    if not data.startswith("synthetic") or not count:
        return ()
    options = parse_synthetic_options(data)
    trained = options.get("seed", SYNTHETIC_DEFAULTS["seed"])
    seeds = [seed for seed in range(VALIDATION_SEEDS, VALIDATION_SEEDS + count + 1) if seed != trained][:count]
    series = []
    for seed in seeds:
        candles = generate_candles(**{**options, "seed": seed, "days": VALIDATION_DAYS})
        for mirror, prices in ((False, candles), (True, mirror_candles(candles))):
            features = normalizer.apply(build_features(prices, macro_window, micro_window))
            series.append(ValidationSeries(f"synthetic seed {seed}" + (" mirror" if mirror else ""), features, mirror))
    return tuple(series)


@dataclass
class ValidationSet:
    """The series every validation backtests, their noise, and what flat and constant positions score on them."""

    series: list[ValidationSeries]
    env_config: EnvConfig
    bar_seconds: float
    baselines: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_splits(cls, splits: MarketSplits, env_config: EnvConfig) -> ValidationSet:
        series = [ValidationSeries("validation", splits.validation)]
        if splits.validation_mirror is not None:
            series.append(ValidationSeries("validation mirror", splits.validation_mirror, mirror=True))
        series += list(splits.selection_series)
        validation = cls(series, env_config, splits.bar_seconds)
        validation.baselines = validation.baseline_scores()
        return validation

    @property
    def independent_bars(self) -> int:
        return sum(len(s.features) - 1 for s in self.series if not s.mirror)

    @property
    def noise(self) -> float:
        """Standard error of the score: an annualized Sharpe over the independent bars."""
        return math.sqrt(periods_per_year(self.bar_seconds) / max(1, self.independent_bars))

    def combined(self, backtests: list[Backtest]) -> float:
        """The score of one policy: the IQM of its Sharpe over the series (the mean of one or two)."""
        return float(iqm([backtest.metrics["sharpe"] for backtest in backtests]))

    def score(self, model: AsymmetricPolicyNetwork) -> tuple[float, list[Backtest]]:
        """The greedy agent's score over every series, and its backtests (validation's first)."""
        backtests = [agent_backtest(model, s.features, self.env_config, self.bar_seconds) for s in self.series]
        return self.combined(backtests), backtests

    def score_policy(self, table_of) -> float:
        """The score of a policy given as a transition table per series (`table_of(features)`, see
        engine.evaluation.table_backtest): how baselines and hand-made policies are scored."""
        return self.combined([table_backtest(s.features, self.env_config, self.bar_seconds, table_of(s.features)) for s in self.series])

    def baseline_scores(self) -> dict[str, float]:
        """Flat, long, short (where allowed) and the trailing rule, scored like the agent."""
        constant = lambda level: lambda features: target_table(np.full(len(features), level))
        scores = {"flat": 0.0, "long": self.score_policy(constant(1))}
        if self.env_config.allow_short:
            scores["short"] = self.score_policy(constant(-1))
        scores["trailing_rule"] = self.score_policy(lambda features: target_table(trailing_rule_targets(features, self.env_config)))
        return scores

    @property
    def benchmark(self) -> float:
        """What doing nothing clever scores: the better of flat and the best constant position."""
        return max(value for name, value in self.baselines.items() if name != "trailing_rule")

    def edge_bar(self, candidates: int) -> float:
        """The score a policy must beat to trade: the benchmark plus the noise, deflated for the number of
        candidates (validations) compared."""
        return self.benchmark + self.noise * max(ONE_SIDED_95, expected_max_z(candidates))

    def quality_target(self, fraction: float) -> float:
        """Time-to-quality's target: a fraction of the trailing rule's score, and never below a score that
        shows an edge over flat and the constants — so it is defined where the rule itself loses."""
        return max(fraction * self.baselines["trailing_rule"], self.benchmark + ONE_SIDED_95 * self.noise)

    def verdict(self, model: AsymmetricPolicyNetwork, scores: list[float]) -> dict:
        """PSR of the chosen policy's validation returns, and its DSR for the scores of all `scores` compared."""
        _, backtests = self.score(model)
        returns = np.concatenate([b.equity[1:] / b.equity[:-1] - 1 for b in backtests])
        per_bar = np.asarray(scores) / math.sqrt(periods_per_year(self.bar_seconds))
        return {"val_psr": probabilistic_sharpe(returns), "val_dsr": deflated_sharpe(returns, per_bar), "candidates": len(scores)}


@dataclass
class Selection:
    """The weights a run keeps, updated at every validation (see the module docstring)."""

    candidate: dict | None = None  # latest weights within noise of the best score so far
    top: dict | None = None  # the best score's weights
    chosen: dict | None = None  # what checkpoints, test and eval use: candidate or top if it shows an edge, else flat

    def consider(self, record: dict, noise: float, edge_bar: float, benchmark: float) -> dict:
        """Take one validation's record (episodes, val_score, val_sharpe, model weights) into account."""
        score = record["val_score"]
        if self.top is None or score > self.top["val_score"]:
            self.top = record
        if self.candidate is None or score >= self.top["val_score"] - noise:
            self.candidate = record
        facts = {"edge_bar": edge_bar, "benchmark": benchmark, "noise": noise, "best_val_score": self.top["val_score"]}
        edge = next((pick for pick in (self.candidate, self.top) if pick["val_score"] > edge_bar), None)
        if edge is not None:
            self.chosen = {**edge, **facts, "no_edge": False}
        else:
            flat = {key: value for key, value in self.candidate.items() if key != "model"}
            self.chosen = {**flat, **facts, "val_score": 0.0, "val_sharpe": 0.0, "no_edge": True,
                           "model": hold_flat(self.candidate["model"])}
        return self.chosen

    def state_dict(self) -> dict:
        return {"candidate": self.candidate, "top": self.top, "chosen": self.chosen}

    def load_state_dict(self, state: dict | None, chosen: dict | None) -> None:
        state = state or {}
        self.candidate, self.top, self.chosen = state.get("candidate"), state.get("top"), chosen


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}


def selection_text(chosen: dict) -> str:
    """How the kept weights were chosen, in words."""
    if chosen.get("no_edge"):
        return f"{NO_EDGE} (best validation score {chosen['best_val_score']:.2f}, needed > {chosen['edge_bar']:.2f})"
    edge = f"; score {chosen['val_score']:.2f} > {chosen['edge_bar']:.2f} needed" if "edge_bar" in chosen else ""
    return f"weights chosen on validation (after {chosen['episodes']:,} episodes{edge})"


class Selecting:
    """Validation and selection: the part of `engine.loop.Trainer` that scores its model and keeps weights."""

    def validate(self, started: float) -> dict:
        """Greedy backtests on every validation series (engine/selection.py: validation, its mirror, and on the
        synthetic market independent series with regime changes); the IQM of their Sharpe is the score. The
        selection then keeps the latest weights within noise of the best score if they show an edge
        over flat and the best constant position, else a flat policy."""
        self.progress("validating", started)
        score, backtests = self.validation_set.score(self.model)
        main = backtests[0]
        self.validation = {**main.metrics, "score": score, "portfolio": self.config.initial_equity * float(main.equity[-1])}
        self.validations.append({"elapsed_s": self.elapsed_before + time.perf_counter() - started, "env_steps": self.env_steps,
                                 "optimizer_steps": self.learner.micro_updates, "val_sharpe": main.metrics["sharpe"], "val_score": score})
        record = {"episodes": self.episodes, "val_score": score, "val_sharpe": main.metrics["sharpe"], "model": weights_of(self.model)}
        validation = self.validation_set
        self.selection.consider(record, validation.noise, validation.edge_bar(len(self.validations)), validation.benchmark)
        return self.validation

    @property
    def best(self) -> dict | None:
        """The weights selection keeps so far (with how they were chosen), or None before any validation."""
        return self.selection.chosen

    def selected_model(self) -> tuple[AsymmetricPolicyNetwork, dict]:
        """The network to evaluate on test: the weights selection keeps (`select_best`), else the last ones."""
        chosen = chosen_weights(self.best, self.config.select_best)
        if chosen is None:
            return self.model, {"weights": "last", "episodes": self.episodes}
        model = copy.deepcopy(self.model)
        model.load_state_dict(chosen["model"])
        facts = {key: value for key, value in chosen.items() if key != "model"}
        return model, {**facts, "weights": NO_EDGE if chosen["no_edge"] else "best validation score", "verdict": selection_text(chosen)}


def chosen_weights(best: dict | None, select_best: bool, last: bool = False) -> dict | None:
    """The weights chosen on validation when selection applies (the one rule for runs and checkpoints), else None."""
    return best if best is not None and select_best and not last else None
