"""Causal, scale-free features: per-bar indicators, aggregated over a long (macro) and a short (micro) window.

Row t of every output uses candles up to and including bar t only (rolling and exponential
windows look backwards), so nothing after t can change it — tests/test_features.py proves it.
Everything is vectorized with pandas rolling windows; no per-row Python loop.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from engine.data import DataError, segments, split_bounds
from engine.errors import ConfigError

INDICATORS = (
    "log_return", "volatility_12", "volatility_24", "volatility_48", "volume_zscore_24",
    "quote_volume_ratio_24", "range", "range_mean_24", "close_position", "close_sma5",
    "close_sma10", "close_ema10", "rsi_14", "momentum_10",
)
AGGREGATES = ("mean", "std", "last")
INDICATOR_WARMUP = 48  # longest indicator window (volatility_48)
MIN_FEATURE_ROWS = 100  # below this there is nothing to split into train / validation / test


@dataclass
class Features:
    """Macro and micro matrices with the close prices and timestamps of the same rows."""

    macro: np.ndarray  # (rows, len(INDICATORS) * 3) float32
    micro: np.ndarray  # (rows, len(INDICATORS) * 3) float32
    close: np.ndarray  # (rows,) float64
    timestamps: np.ndarray  # (rows,) datetime64[ns] in UTC (no zone attached)
    segment_lengths: tuple[int, ...] | None = None  # independent series back to back (mirror augmentation)
    trend: np.ndarray | None = None  # (rows,) raw mean log return over the macro window (the trailing-return rule)
    segment_names: tuple[str, ...] | None = None  # the series (symbol) of each segment, where the data has several

    def __len__(self) -> int:
        return len(self.close)

    def rows(self, selection: slice) -> Features:
        """Rows of one continuous series (its name, if it has one, stays)."""
        trend = None if self.trend is None else self.trend[selection]
        name = self.segment_names if self.segment_names and len(self.segment_names) == 1 else None
        return Features(self.macro[selection], self.micro[selection], self.close[selection], self.timestamps[selection], None, trend, name)

    def by_series(self) -> dict[str, Features]:
        """The segments of each named series (symbol), joined per series; {} when the series have no names."""
        if not self.segment_names or len(set(self.segment_names)) < 2:
            return {}
        bounds = np.cumsum((0, *(self.segment_lengths or (len(self),))))
        pieces = [(name, self.rows(slice(a, b))) for name, a, b in zip(self.segment_names, bounds[:-1], bounds[1:])]
        return {name: concatenate([dataclasses.replace(piece, segment_names=(name,)) for named, piece in pieces if named == name])
                for name in dict.fromkeys(self.segment_names)}

    def between(self, start=None, end=None) -> Features:
        """The rows with start <= timestamp < end (None: open), of one continuous series."""
        first = 0 if start is None else int(np.searchsorted(self.timestamps, start, side="left"))
        last = len(self) if end is None else int(np.searchsorted(self.timestamps, end, side="left"))
        return self.rows(slice(first, max(first, last)))


def concatenate(pieces: list[Features]) -> Features:
    """Series back to back as segments that episodes and backtests never cross (pieces under 2 rows,
    which can't be traded, are left out)."""
    pieces = [piece for piece in pieces if len(piece) >= 2]
    if len(pieces) == 1:
        return pieces[0]
    if not pieces:
        raise DataError("no segment of the data has 2 or more rows in this split")
    join = lambda name: np.concatenate([getattr(piece, name) for piece in pieces])
    trend = None if any(piece.trend is None for piece in pieces) else join("trend")
    lengths = tuple(length for piece in pieces for length in (piece.segment_lengths or (len(piece),)))
    names = tuple(name for piece in pieces for name in (piece.segment_names or ("",) * len(piece.segment_lengths or (0,))))
    return Features(join("macro"), join("micro"), join("close"), join("timestamps"), lengths, trend, names if any(names) else None)


@dataclass
class Normalizer:
    """Per-column mean and std, fitted on the train split only and applied to every split."""

    macro_mean: np.ndarray
    macro_std: np.ndarray
    micro_mean: np.ndarray
    micro_std: np.ndarray
    clip: float = 10.0

    @classmethod
    def fit(cls, train: Features) -> Normalizer:
        def stats(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            # Moments accumulated in float64 without a centred copy of the matrix (years of rows are GBs).
            mean = matrix.mean(axis=0, dtype=np.float64)
            std = np.sqrt(np.maximum(np.einsum("ij,ij->j", matrix, matrix, dtype=np.float64) / len(matrix) - mean**2, 0.0))
            return mean, np.where(std > 1e-12, std, 1.0)

        return cls(*stats(train.macro), *stats(train.micro))

    def apply(self, features: Features, in_place: bool = False) -> Features:
        """Normalized features: new matrices, or (`in_place`, for matrices no one else holds) the same ones."""
        def scaled(matrix, mean, std):  # in float32, in one output buffer: no float64 copies of long series
            out = np.subtract(matrix, mean.astype(np.float32), dtype=np.float32, out=matrix if in_place else None)
            np.divide(out, std.astype(np.float32), out=out)
            return np.clip(out, -self.clip, self.clip, out=out)

        return Features(
            scaled(features.macro, self.macro_mean, self.macro_std),
            scaled(features.micro, self.micro_mean, self.micro_std),
            features.close, features.timestamps, features.segment_lengths, features.trend, features.segment_names,
        )

    def state_dict(self) -> dict:
        return {k: np.asarray(v).tolist() if isinstance(v, np.ndarray) else v for k, v in vars(self).items()}

    @classmethod
    def from_state_dict(cls, state: dict) -> Normalizer:
        return cls(**{k: np.asarray(v, dtype=np.float64) if isinstance(v, list) else v for k, v in state.items()})


@dataclass
class MarketSplits:
    """Normalized features per split plus the normalizer that produced them."""

    train: Features
    validation: Features
    test: Features
    normalizer: Normalizer
    bar_seconds: float
    notes: tuple[str, ...] = ()  # what loading found that a user should see (duplicates dropped, gaps)
    validation_mirror: Features | None = None  # the validation split's mirror image: model selection scores both
    selection_series: tuple = ()  # more validation series (engine.selection.ValidationSeries), e.g. synthetic reserved seeds

    def __getitem__(self, name: str) -> Features:
        return getattr(self, name)


def indicator_frame(candles: pd.DataFrame) -> pd.DataFrame:
    """The seed's per-bar indicators in scale-free form; causal by construction."""
    close, high, low = candles["close"], candles["high"], candles["low"]
    volume = candles["volume"]
    quote_volume = candles["quote_volume"] if "quote_volume" in candles else volume * close
    log_return = np.log(close).diff()
    volume_mean, volume_std = volume.rolling(24).mean(), volume.rolling(24).std(ddof=0)
    quote_mean = quote_volume.rolling(24).mean()
    bar_range = (high - low) / close
    delta = close.diff()
    wilder = {"alpha": 1 / 14, "adjust": False}
    gain, loss = delta.clip(lower=0).ewm(**wilder).mean(), (-delta).clip(lower=0).ewm(**wilder).mean()
    rsi = 100 - 100 / (1 + gain / loss.where(loss > 0))
    columns = {
        "log_return": log_return,
        "volatility_12": log_return.rolling(12).std(ddof=0),
        "volatility_24": log_return.rolling(24).std(ddof=0),
        "volatility_48": log_return.rolling(48).std(ddof=0),
        "volume_zscore_24": ((volume - volume_mean) / volume_std.where(volume_std > 0)).fillna(0.0),
        "quote_volume_ratio_24": (quote_volume / quote_mean.where(quote_mean > 0) - 1).fillna(0.0),
        "range": bar_range,
        "range_mean_24": bar_range.rolling(24).mean(),
        "close_position": ((close - low) / (high - low).where(high > low)).fillna(0.5),
        "close_sma5": close / close.rolling(5).mean() - 1,
        "close_sma10": close / close.rolling(10).mean() - 1,
        "close_ema10": close / close.ewm(span=10, adjust=False).mean() - 1,
        "rsi_14": ((rsi.fillna(100.0) - 50) / 50).where(delta.notna()),
        "momentum_10": close / close.shift(10) - 1,
    }
    frame = pd.DataFrame(columns)[list(INDICATORS)]
    frame.iloc[:INDICATOR_WARMUP] = np.nan  # every indicator starts at the same bar
    return frame


def utc_times(stamps: pd.Series) -> np.ndarray:
    """datetime64[ns] in UTC (without a zone): fast to search and compare, unlike an array of Timestamps."""
    index = pd.DatetimeIndex(stamps)
    return (index.tz_convert(None) if index.tz is not None else index).to_numpy()


def _aggregated(series: pd.Series, aggregate: str, window: int) -> np.ndarray:
    if aggregate == "last":
        return series.to_numpy()
    rolling = series.rolling(window)
    if aggregate == "mean":
        return rolling.mean().to_numpy()
    # The same figures as rolling.std(ddof=0) (bit for bit), without pandas' slower masked square root.
    return np.sqrt(np.maximum(rolling.var(ddof=0).to_numpy(), 0.0))


def _aggregate(indicators: pd.DataFrame, window: int, first_row: int) -> np.ndarray:
    """[mean | std | last] of each indicator over `window` bars from `first_row` on, as one float32 matrix
    (no float64 frames of the whole to stack and cast)."""
    width, rows = indicators.shape[1], len(indicators) - first_row
    aggregated = np.empty((rows, 3 * width), dtype=np.float32)
    # Each aggregate is gathered one contiguous row per indicator, then written as one block: writing
    # single columns of the row-major matrix would touch all its cache lines once per column.
    block = np.empty((width, rows), dtype=np.float32)
    for part, aggregate in enumerate(AGGREGATES):
        for column, name in enumerate(indicators):
            block[column] = _aggregated(indicators[name], aggregate, window)[first_row:]
        aggregated[:, part * width : (part + 1) * width] = block.T
    return aggregated


def build_features(candles: pd.DataFrame, macro_window: int = 492, micro_window: int = 60) -> Features:
    """Macro/micro vectors (mean, std, last of each indicator over the window) for every bar with full history."""
    if micro_window < 2 or macro_window < micro_window:
        raise ValueError(f"need 2 <= micro_window <= macro_window, got micro_window={micro_window}, macro_window={macro_window}")
    first_row = INDICATOR_WARMUP + macro_window - 1
    needed = first_row + MIN_FEATURE_ROWS
    if len(candles) < needed:
        source = candles.attrs.get("source", "data")
        raise DataError(f"{source}: {len(candles)} rows are too few for macro_window={macro_window}: need at least {needed}")
    indicators = indicator_frame(candles)
    macro, micro = (_aggregate(indicators, window, first_row) for window in (macro_window, micro_window))
    return Features(
        macro=macro,
        micro=micro,
        close=candles["close"].to_numpy(dtype=np.float64)[first_row:],
        timestamps=utc_times(candles["timestamp"])[first_row:],
        trend=indicators["log_return"].rolling(macro_window).mean().to_numpy()[first_row:],
    )


def mirror_candles(candles: pd.DataFrame) -> pd.DataFrame:
    """The price path reflected (price → start² / price; high and low swap): every log return changes
    sign, volatility and volume stay. Bull regimes become bear regimes and back."""
    anchor = float(candles["close"].iloc[0]) ** 2
    mirrored = candles.copy()
    mirrored["open"], mirrored["close"] = anchor / candles["open"], anchor / candles["close"]
    mirrored["high"], mirrored["low"] = anchor / candles["low"], anchor / candles["high"]
    return mirrored


def series_features(candles: pd.DataFrame, macro_window: int = 492, micro_window: int = 60) -> tuple[list[tuple[pd.DataFrame, Features]], list[str]]:
    """(candles, features) of each continuous segment (see `engine.data.segments`): features warm up
    again after every cut. A segment too short to warm up is left out, with a note saying so."""
    built, notes = [], []
    pieces = segments(candles)
    for piece in pieces:
        part = candles.iloc[piece]
        try:
            features = build_features(part, macro_window, micro_window)
            if "series" in part:
                features.segment_names = (str(part["series"].iloc[0]),)
            built.append((part, features))
        except DataError:
            if len(pieces) == 1:
                raise
            series = f" of {part['series'].iloc[0]}" if "series" in part else ""
            notes.append(f"{candles.attrs.get('source', 'data')}: {len(part):,} bars{series} from {part['timestamp'].iloc[0]} to "
                         f"{part['timestamp'].iloc[-1]} left out: too short to warm up the {macro_window}-bar window")
    if not built:
        raise DataError(f"{candles.attrs.get('source', 'data')}: no continuous segment is long enough for macro_window={macro_window}")
    return built, notes


Interval = tuple[np.datetime64, np.datetime64]  # [start, end) in UTC
EARLIEST, LATEST = np.datetime64("1900-01-01", "ns"), np.datetime64("2200-01-01", "ns")  # open ends


@dataclass(frozen=True)
class SplitWindows:
    """Explicit test windows (walk-forward folds, CPCV groups) instead of the last part of the data.

    Training and validation take the bars of `train` (default: all) that lie further than `purge` from
    every test window, before and after: no feature of a test bar is computed from training bars, and no
    training bar's features are computed from test bars. Validation is the latest part of those bars."""

    tests: tuple[Interval, ...]
    train: Interval = (EARLIEST, LATEST)
    purge: np.timedelta64 = np.timedelta64(0, "ns")

    def training(self) -> list[Interval]:
        intervals = [self.train]
        for start, end in self.tests:
            intervals = [piece for a, b in intervals for piece in ((a, min(b, start - self.purge)), (max(a, end + self.purge), b)) if piece[0] < piece[1]]
        return intervals


def parse_windows(text: str, key: str = "test_windows", origin: str = "config") -> list[tuple]:
    """'2024-01-01/2024-02-01,2024-03-01/2024-04-01' → [(start, end), ...] as UTC timestamps; either end of a
    pair may be empty (open)."""
    windows = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        first, sep, second = item.partition("/")
        try:
            start, end = (utc(pd.Timestamp(value.strip())) if value.strip() else None for value in (first, second))
        except (ValueError, TypeError):
            raise ConfigError(f"{origin}: {key} {item!r}: use START/END with ISO times, e.g. 2024-01-01/2024-02-01") from None
        if not sep or (start is not None and end is not None and start >= end):
            raise ConfigError(f"{origin}: {key} {item!r}: use START/END with START before END")
        windows.append((start, end))
    return windows


def utc(stamp):
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def split_windows(config, candles: pd.DataFrame) -> SplitWindows | None:
    """A run config's explicit test windows (walk-forward, CPCV) as the splitter takes them, or None; the
    purge defaults to the macro window plus the indicators' warm-up."""
    if not config.test_windows:
        return None
    as_time = lambda stamp, open_end: open_end if stamp is None else np.datetime64(stamp.tz_convert(None), "ns")
    pairs = lambda text: [(as_time(a, EARLIEST), as_time(b, LATEST)) for a, b in parse_windows(text)]
    bar = candles.attrs["timeframe"].to_timedelta64() if "timeframe" in candles.attrs else np.timedelta64(300, "s")
    purge = config.purge_bars or config.macro_window + INDICATOR_WARMUP
    return SplitWindows(tuple(pairs(config.test_windows)), *(pairs(config.train_window) or [(EARLIEST, LATEST)]), purge * bar)


def clipped(intervals: list[Interval], start: np.datetime64 = EARLIEST, end: np.datetime64 = LATEST) -> list[Interval]:
    return [(max(a, start), min(b, end)) for a, b in intervals if max(a, start) < min(b, end)]


def split_intervals(stamps: np.ndarray, train_fraction: float, validation_fraction: float,
                    windows: SplitWindows | None = None) -> dict[str, list[Interval]]:
    """The time intervals of train / validation / test: by fractions of all rows (70 / 15 / 15 by default),
    or around explicit test windows, validation being the last share of the training bars."""
    if windows is None:
        bounds = split_bounds(len(stamps), train_fraction, validation_fraction)
        first, second = stamps[bounds["train"].stop], stamps[bounds["validation"].stop]
        return {"train": [(EARLIEST, first)], "validation": [(first, second)], "test": [(second, LATEST)]}
    allowed = windows.training()
    inside = stamps[np.any([(stamps >= a) & (stamps < b) for a, b in allowed], axis=0)] if allowed else stamps[:0]
    if len(inside) < 2 * MIN_FEATURE_ROWS:
        raise DataError(f"only {len(inside):,} bars are left for training and validation around the test window(s); "
                        "widen the training window or shorten the purge")
    cut = inside[int(len(inside) * train_fraction / (train_fraction + validation_fraction))]
    return {"train": clipped(allowed, end=cut), "validation": clipped(allowed, start=cut), "test": list(windows.tests)}


def take(pieces: list[Features], intervals: list[Interval]) -> Features:
    """The rows of every piece inside the intervals, each stretch its own segment."""
    return concatenate([piece.between(a, b) for piece in pieces for a, b in intervals])


def prepare_splits(
    candles: pd.DataFrame,
    macro_window: int = 492,
    micro_window: int = 60,
    train_fraction: float = 0.70,
    validation_fraction: float = 0.15,
    mirror_train: bool = False,
    windows: SplitWindows | None = None,
) -> MarketSplits:
    """Features of each continuous segment, split by time (shared by every segment and symbol), normalized
    with train statistics only.

    `mirror_train` appends the train split's mirror image (see `mirror_candles`) as more training
    segments, so the training data has no net direction: an agent can't profit from "always long" (or
    short) on it and has to read the market. Validation and test are never mirrored for training; the
    validation split's mirror is kept apart for model selection."""
    built, notes = series_features(candles, macro_window, micro_window)
    pieces = [features for _, features in built]
    intervals = split_intervals(np.sort(np.concatenate([piece.timestamps for piece in pieces])), train_fraction, validation_fraction, windows)
    splits = {name: take(pieces, parts) for name, parts in intervals.items()}
    validation_end = splits["validation"].timestamps.max() + np.timedelta64(1, "ns")
    # Each segment mirrored up to the validation split's end, so mirrored features have their full history.
    mirrored = []
    for part, features in built:
        before = part[utc_times(part["timestamp"]) < validation_end]
        if before.empty:  # a later file: nothing of it precedes the validation end
            continue
        try:
            mirror = build_features(mirror_candles(before), macro_window, micro_window)
        except DataError:  # too little before the validation end to warm up: no mirror to offer
            continue
        mirrored.append(dataclasses.replace(mirror, segment_names=features.segment_names))
    train = splits["train"]
    if mirror_train and mirrored:
        train = concatenate([train, take(mirrored, intervals["train"])])  # a new copy: it can be normalized in place
    normalizer = Normalizer.fit(train)
    try:
        validation_mirror = normalizer.apply(take(mirrored, intervals["validation"]))
    except DataError:  # no segment has a mirror of its validation part
        validation_mirror = None
    bar_seconds = candles.attrs["timeframe"].total_seconds() if "timeframe" in candles.attrs else 300.0
    return MarketSplits(train=normalizer.apply(train, in_place=train is not splits["train"]), validation=normalizer.apply(splits["validation"]),
                        test=normalizer.apply(splits["test"]), normalizer=normalizer, bar_seconds=bar_seconds, notes=tuple(notes),
                        validation_mirror=validation_mirror)


def feature_names() -> list[str]:
    return [f"{name}_{aggregate}" for aggregate in AGGREGATES for name in INDICATORS]
