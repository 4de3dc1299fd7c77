"""Market data in: candles from files or the built-in synthetic generator, validated and split by time.

`load_candles(source)` returns a DataFrame with a UTC `timestamp` column and float
`open, high, low, close, volume` (plus `quote_volume` when present), sorted and without duplicates.
Facts found while loading (timeframe, gaps, duplicates dropped) are in `frame.attrs`.

Files are read with bounded memory by `engine.readers` (at most `MAX_CANDLES` rows a source). Files of
different symbols (named from the file, e.g. `BTCUSDT-5m-2024-05.zip`) stay separate series (a `series`
column); rows of one symbol that share a timestamp but disagree are refused, and so are files of one
source with different timeframes. Prices outside `PRICE_RANGE` are refused, so nothing downstream
overflows. `segments()` cuts the frame where the series changes or a gap is longer than `MAX_GAP_BARS`:
features warm up again after a cut, episodes never cross one, and splits are by time across all segments.
"""

from __future__ import annotations

import glob
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.errors import DataError
from engine.readers import NUMBER_COLUMNS, OHLCV_COLUMNS, PRICE_COLUMNS, PRICE_RANGE, TIME_COLUMNS, RawTable, RowBudget, read_tables

MAX_VOLUME = 1e24
FILE_SUFFIXES = (".csv", ".txt", ".parquet", ".pq", ".zip")
MAX_GAP_BARS = 12  # a longer hole in the data (an hour of 5-minute bars) ends a segment; shorter ones are traded across
SYMBOL_TOKEN = re.compile(r"[A-Z][A-Z0-9]{2,}")


@dataclass(frozen=True)
class DataSummary:
    """What a user wants to know about a loaded source before training on it."""

    source: str
    rows: int
    start: pd.Timestamp
    end: pd.Timestamp
    timeframe: pd.Timedelta
    gaps: int
    missing_bars: int
    duplicates_dropped: int
    price_min: float
    price_max: float
    series: tuple[dict, ...]  # {"name", "rows", "segments"} of each series


def load_candles(source: str | os.PathLike) -> pd.DataFrame:
    """Load, validate and sort candles from a file, folder, glob, ZIP or `synthetic[:k=v,...]`."""
    text = str(source)
    if text == "synthetic" or text.startswith("synthetic:"):
        from engine.synthetic import generate_candles, parse_synthetic_options

        frame = generate_candles(**parse_synthetic_options(text))
        frame.attrs.update(source=text, duplicates_dropped=0, series_name="synthetic")
    else:
        budget = RowBudget()
        frames = [_validated(table).assign(_file=table.name, series=series_name(path))
                  for path in _expand_source(text) for table in read_tables(path, budget)]
        _refuse_mixed_timeframes(frames, text)
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        frame = _deduplicate(frame.sort_values(["series", "timestamp"], kind="stable"), text)
        if frame["series"].nunique() == 1:
            frame.attrs["series_name"] = str(frame["series"].iloc[0])
            frame = frame.drop(columns="series")
        frame.attrs["source"] = text
    frame.attrs.update(_timing_facts(frame, text))
    return frame


def series_name(path: Path) -> str:
    """The symbol a file holds, from its name: the first upper-case ticker-like word, as exchanges name
    their files ('BTCUSDT-5m-2024-05.zip' → BTCUSDT); files whose names carry none form one series."""
    for token in re.split(r"[-_. ]+", path.name.split(".")[0]):
        if SYMBOL_TOKEN.fullmatch(token):
            return token
    return "data"


def segments(frame: pd.DataFrame) -> list[slice]:
    """Row ranges of the frame that are one continuous series: cut where the symbol changes or where
    more than MAX_GAP_BARS bars are missing."""
    steps = _steps_ns(frame["timestamp"])
    timeframe = frame.attrs["timeframe"].value if "timeframe" in frame.attrs else _bar_length(steps)
    cut = steps > (MAX_GAP_BARS + 1) * timeframe
    if "series" in frame:
        labels = frame["series"].to_numpy()
        cut |= labels[1:] != labels[:-1]
    starts = np.concatenate([[0], np.flatnonzero(cut) + 1, [len(frame)]])
    return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def summarize(frame: pd.DataFrame) -> DataSummary:
    """The facts `asym-tui data inspect` prints."""
    return DataSummary(
        source=frame.attrs.get("source", "?"),
        rows=len(frame),
        start=frame["timestamp"].iloc[0],
        end=frame["timestamp"].iloc[-1],
        timeframe=frame.attrs["timeframe"],
        gaps=frame.attrs["gaps"],
        missing_bars=frame.attrs["missing_bars"],
        duplicates_dropped=frame.attrs.get("duplicates_dropped", 0),
        price_min=float(frame["low"].min()),
        price_max=float(frame["high"].max()),
        series=_series_facts(frame),
    )


def timeframe_label(timeframe: pd.Timedelta) -> str:
    """A bar length as traders write it: 5m, 1h, 1d, 1w (30s, 250ms below a minute)."""
    milliseconds = int(timeframe / pd.Timedelta(milliseconds=1))
    for unit, size in (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if milliseconds >= size and milliseconds % size == 0:
            return f"{milliseconds // size}{unit}"
    return f"{milliseconds}ms" if milliseconds else str(timeframe)


def split_bounds(rows: int, train_fraction: float = 0.70, validation_fraction: float = 0.15) -> dict[str, slice]:
    """Row slices of the train / validation / test splits, in time order."""
    if not (0 < train_fraction < 1 and 0 < validation_fraction < 1 and train_fraction + validation_fraction < 1):
        raise ValueError("split fractions must be in (0, 1) and leave room for a test split")
    train_end = int(rows * train_fraction)
    validation_end = int(rows * (train_fraction + validation_fraction))
    return {"train": slice(0, train_end), "validation": slice(train_end, validation_end), "test": slice(validation_end, rows)}


def _series_facts(frame: pd.DataFrame) -> tuple[dict, ...]:
    pieces = segments(frame)
    if "series" not in frame:
        return ({"name": frame.attrs.get("series_name", "data"), "rows": len(frame), "segments": len(pieces)},)
    names, rows = np.unique(frame["series"].to_numpy(), return_counts=True)
    firsts = frame["series"].to_numpy()[[piece.start for piece in pieces]]
    return tuple({"name": str(name), "rows": int(count), "segments": int((firsts == name).sum())} for name, count in zip(names, rows))


NOT_REGULAR = {stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
               stat.S_ISSOCK: "a socket"}


def _expand_source(text: str) -> list[Path]:
    path = Path(text)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)
    elif path.is_file():
        return [path]
    elif path.exists():  # read as a stream it could block or never end: candles come from files
        kind = next((name for test, name in NOT_REGULAR.items() if test(path.stat().st_mode)), "not a regular file")
        raise DataError(f"{text}: {kind}, not a file; save the candles to a CSV/Parquet/ZIP file and pass that")
    else:
        raise DataError(f"{text}: no such file or folder (expected a CSV/Parquet/ZIP file, a folder, a glob or 'synthetic')")
    if not files:
        raise DataError(f"{text}: no CSV, Parquet or ZIP files found")
    return files


def _validated(table: RawTable) -> pd.DataFrame:
    """Our columns and types from one file's raw columns; raise `DataError` naming the first problem found."""
    raw, name = table.frame, table.name
    time_column = next((c for c in TIME_COLUMNS if c in raw.columns), None)
    missing = [c for c in OHLCV_COLUMNS if c not in raw.columns]
    if time_column is None:
        missing.insert(0, "timestamp (or date/time/datetime/open_time)")
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, table.found))}")
    if raw.empty:
        raise DataError(f"{name}: the file has no data rows")

    def where(positions: np.ndarray) -> str:
        shown = ", ".join(str(int(line)) for line in table.locate(positions[:5]))
        more = f" and {len(positions) - 5} more" if len(positions) > 5 else ""
        return f"{table.unit}{'s' if len(positions) > 1 else ''} {shown}{more}"

    out = pd.DataFrame({"timestamp": _one_column(raw, time_column, lambda values: _parse_times(values, name, time_column, where), name, where)})
    for column in NUMBER_COLUMNS:
        if column in raw.columns:
            out[column] = _one_column(raw, column, lambda values: _numbers(values, name, column, where), name, where)
    bad = np.flatnonzero(out["high"].to_numpy() < out["low"].to_numpy())
    if len(bad):
        raise DataError(f"{name}: {where(bad)}, columns 'high'/'low': high {out['high'].iloc[bad[0]]} < low {out['low'].iloc[bad[0]]}")
    for column in ("open", "close"):
        value = out[column].to_numpy()
        bad = np.flatnonzero((value > out["high"].to_numpy() * (1 + 1e-9)) | (value < out["low"].to_numpy() * (1 - 1e-9)))
        if len(bad):
            row = bad[0]
            raise DataError(f"{name}: {where(bad)}, column '{column}': {value[row]} is outside the bar's range "
                            f"[low {out['low'].iloc[row]}, high {out['high'].iloc[row]}]")
    return out


def _one_column(raw: pd.DataFrame, column: str, convert, name: str, where) -> np.ndarray | pd.Series:
    """A column's converted values; a file that has it twice must agree (an identical copy is dropped with a warning)."""
    copies = [convert(raw.iloc[:, i]) for i in np.flatnonzero(raw.columns == column)]
    for copy in copies[1:]:
        differ = np.flatnonzero(np.asarray(copies[0]) != np.asarray(copy))
        if len(differ):
            first, other = copies[0][differ[0]], copy[differ[0]]
            raise DataError(f"{name}: {where(differ)}: two '{column}' columns with different values ({first} vs {other}); keep one")
    if len(copies) > 1:
        warnings.warn(f"{name}: column '{column}' appears {len(copies)} times with the same values; one is kept", stacklevel=4)
    return copies[0]


def _numbers(values: pd.Series, name: str, column: str, where) -> np.ndarray:
    """A price or volume column as float64, refusing what no market trades at."""
    if pd.api.types.is_bool_dtype(values):
        raise DataError(f"{name}: column '{column}' holds true/false values, not numbers")
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if len(bad):
        value = values.iloc[bad[0]]
        shown = repr(value) if isinstance(value, str) else str(value)  # 'n/a', nan, inf (not np.float64(nan))
        raise DataError(f"{name}: {where(bad)}, column '{column}': missing or non-numeric value {shown}")
    if column in PRICE_COLUMNS:
        if (bad := np.flatnonzero(numbers <= 0)).size:
            raise DataError(f"{name}: {where(bad)}, column '{column}': non-positive price {numbers[bad[0]]}")
        low, high = PRICE_RANGE
        if (bad := np.flatnonzero((numbers < low) | (numbers > high))).size:
            raise DataError(f"{name}: {where(bad)}, column '{column}': price {numbers[bad[0]]:g} is outside the accepted range "
                            f"{low:g} to {high:g}")
    elif (bad := np.flatnonzero(numbers < 0)).size:
        raise DataError(f"{name}: {where(bad)}, column '{column}': negative volume {numbers[bad[0]]}")
    elif (bad := np.flatnonzero(numbers > MAX_VOLUME)).size:
        raise DataError(f"{name}: {where(bad)}, column '{column}': volume {numbers[bad[0]]:g} is above the accepted {MAX_VOLUME:g}")
    return numbers


EARLIEST_TIME = pd.Timestamp("1990-01-01", tz="UTC")  # anything earlier is a unit or typing mistake
LATEST_EPOCH_NS = 9e18  # nanoseconds since 1970 that still fit a timestamp (year 2255)


def _parse_times(column: pd.Series, name: str, column_name: str, where) -> pd.Series:
    """UTC times in nanoseconds from datetimes (naive ones are UTC), epoch numbers (s/ms/µs/ns, row by row) or text."""
    if (missing := np.flatnonzero(column.isna().to_numpy())).size:
        raise DataError(f"{name}: {where(missing)}, column '{column_name}': missing time")
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = pd.to_datetime(column, utc=True)
    elif (numeric := pd.to_numeric(column, errors="coerce")).notna().all():
        values = numeric.to_numpy(dtype=np.float64)
        # Each row by its own magnitude: one file may mix milliseconds and microseconds (Binance changed units in 2025).
        magnitude = np.abs(values)
        epoch_ns = values * np.select([magnitude > 1e17, magnitude > 1e14, magnitude > 1e11], [1, 1e3, 1e6], 1e9)
        if (bad := np.flatnonzero(~np.isfinite(values))).size:
            raise DataError(f"{name}: {where(bad)}, column '{column_name}': time '{column.iloc[bad[0]]}' is not a finite number")
        if (bad := np.flatnonzero(np.abs(epoch_ns) >= LATEST_EPOCH_NS)).size:
            raise DataError(f"{name}: {where(bad)}, column '{column_name}': time '{column.iloc[bad[0]]}' is after 2255 in any unit")
        parsed = pd.Series(pd.to_datetime(epoch_ns.astype("int64"), unit="ns", utc=True))
    else:
        parsed = pd.to_datetime(column.astype(str), utc=True, errors="coerce", format="mixed")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if len(bad):
            raise DataError(f"{name}: {where(bad)}, column '{column_name}': cannot parse time {column.iloc[bad[0]]!r}")
    bad = np.flatnonzero((parsed < EARLIEST_TIME).to_numpy())
    if len(bad):
        raise DataError(f"{name}: {where(bad)}, column '{column_name}': time '{column.iloc[bad[0]]}' reads as "
                        f"{parsed.iloc[bad[0]]}, before {EARLIEST_TIME.year}: a wrong unit or value?")
    return parsed.dt.as_unit("ns").reset_index(drop=True)


def _refuse_mixed_timeframes(frames: list[pd.DataFrame], source: str) -> None:
    """One source, one bar length: files of 5-minute and hourly bars are refused as rows of both in one file are."""
    seen: dict[int, str] = {}
    for frame in frames:
        steps = _steps_ns(frame["timestamp"].sort_values())
        if (steps > 0).any():
            seen.setdefault(_bar_length(steps), frame["_file"].iloc[0])
        if len(seen) > 1:
            (one, first), (other, second) = seen.items()
            raise DataError(f"{source}: files with different timeframes: {first} has {timeframe_label(pd.Timedelta(one))} bars, "
                            f"{second} has {timeframe_label(pd.Timedelta(other))} bars; one source holds one timeframe")


def _steps_ns(times: pd.Series) -> np.ndarray:
    """Nanoseconds between consecutive times (whatever unit the column has)."""
    return times.diff().iloc[1:].to_numpy().astype("timedelta64[ns]").astype(np.int64)


def _bar_length(steps: np.ndarray) -> int:
    """The most common positive spacing (the shortest among equals): gaps and repeats do not move it."""
    lengths, counts = np.unique(steps[steps > 0], return_counts=True)
    return int(lengths[np.argmax(counts)])


def _deduplicate(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Drop rows that repeat another row of the same series exactly; refuse rows that disagree with it."""
    keys = ["series", "timestamp"] if "series" in frame else ["timestamp"]
    values = [c for c in (*OHLCV_COLUMNS, "quote_volume") if c in frame]
    duplicated = frame.duplicated(keys, keep="first")
    if duplicated.any():
        same_time = frame[frame.duplicated(keys, keep=False)]
        disagree = same_time.groupby(keys, sort=False)[values].nunique(dropna=False).gt(1).any(axis=1)
        if disagree.any():
            key = disagree[disagree].index[0]
            timestamp = key[-1] if isinstance(key, tuple) else key
            files = same_time.loc[same_time["timestamp"] == timestamp, "_file"].unique() if "_file" in frame else ["?"]
            raise DataError(f"{name}: rows for {timestamp} disagree ({' vs '.join(map(str, files[:2]))}): two sources for the same "
                            "bar; remove one, or name files by symbol so different symbols stay separate series")
    frame = frame.drop(columns="_file", errors="ignore")
    count = int(duplicated.sum())
    if count:
        warnings.warn(f"{name}: dropped {count} row(s) with duplicated timestamps", stacklevel=3)
        frame = frame[~duplicated]
    frame = frame.reset_index(drop=True)
    frame.attrs["duplicates_dropped"] = count
    return frame




def _timing_facts(frame: pd.DataFrame, name: str) -> dict:
    """Infer the timeframe (the usual spacing); count gaps; refuse spacing that is not a multiple of it."""
    if len(frame) < 2:
        raise DataError(f"{name}: only {len(frame)} row(s); need at least 2 candles")
    steps = _steps_ns(frame["timestamp"])
    if "series" in frame:  # spacing within each series only
        labels = frame["series"].to_numpy()
        steps = steps[labels[1:] == labels[:-1]]
    if not (steps > 0).any():
        raise DataError(f"{name}: no symbol has 2 candles or more; need at least 2 of one symbol")
    timeframe = _bar_length(steps)
    off_grid = np.flatnonzero(steps % timeframe != 0)
    if len(off_grid):
        row = int(off_grid[0]) + 1
        raise DataError(
            f"{name}: mixed timeframes: the usual spacing is {timeframe_label(pd.Timedelta(timeframe))} but row {row + 1} "
            f"({frame['timestamp'].iloc[row]}) follows the previous one after {timeframe_label(pd.Timedelta(int(steps[off_grid[0]])))} "
            f"({len(off_grid)} such row(s))"
        )
    gap_sizes = steps // timeframe - 1
    return {"timeframe": pd.Timedelta(timeframe), "gaps": int((gap_sizes > 0).sum()), "missing_bars": int(gap_sizes.sum())}
