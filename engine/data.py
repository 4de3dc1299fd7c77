"""Market data in: candles from files or the built-in synthetic generator, validated and split by time.

`load_candles(source)` returns a DataFrame with a UTC `timestamp` column and float
`open, high, low, close, volume` (plus `quote_volume` when present), sorted and without duplicates.
Facts found while loading (timeframe, gaps, duplicates dropped) are in `frame.attrs`.

Files of different symbols (named from the file, e.g. `BTCUSDT-5m-2024-05.zip`) stay separate series
(a `series` column); rows of one symbol that share a timestamp but disagree are refused. `segments()`
cuts the frame where the series changes or a gap is longer than `MAX_GAP_BARS`: features warm up again
after a cut, episodes never cross one, and splits are by time across all segments.
"""

from __future__ import annotations

import glob
import io
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
TIME_COLUMNS = ("timestamp", "date", "time", "datetime", "open_time")
BINANCE_KLINE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trades", "taker_buy_base", "taker_buy_quote", "ignore",
)
# Header spellings seen in exports, mapped to our column names.
COLUMN_ALIASES = {"open time": "open_time", "quote asset volume": "quote_volume", "close time": "close_time"}
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


def load_candles(source: str | os.PathLike) -> pd.DataFrame:
    """Load, validate and sort candles from a file, folder, glob, ZIP or `synthetic[:k=v,...]`."""
    text = str(source)
    if text == "synthetic" or text.startswith("synthetic:"):
        from engine.synthetic import generate_candles, parse_synthetic_options

        frame = generate_candles(**parse_synthetic_options(text))
        frame.attrs.update(source=text, duplicates_dropped=0)
    else:
        files = _expand_source(text)
        frames = [_validated(_read_file(path), str(path)).assign(_file=str(path), series=series_name(path)) for path in files]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        frame = _deduplicate(frame.sort_values(["series", "timestamp"], kind="stable"), text)
        if frame["series"].nunique() == 1:
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
    steps = frame["timestamp"].diff().iloc[1:].to_numpy().astype("timedelta64[ns]").astype(np.int64)
    timeframe = frame.attrs["timeframe"].value if "timeframe" in frame.attrs else int(np.median(steps))
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
    )


def split_bounds(rows: int, train_fraction: float = 0.70, validation_fraction: float = 0.15) -> dict[str, slice]:
    """Row slices of the train / validation / test splits, in time order."""
    if not (0 < train_fraction < 1 and 0 < validation_fraction < 1 and train_fraction + validation_fraction < 1):
        raise ValueError("split fractions must be in (0, 1) and leave room for a test split")
    train_end = int(rows * train_fraction)
    validation_end = int(rows * (train_fraction + validation_fraction))
    return {"train": slice(0, train_end), "validation": slice(train_end, validation_end), "test": slice(validation_end, rows)}


def _expand_source(text: str) -> list[Path]:
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
    elif Path(text).is_dir():
        files = sorted(p for p in Path(text).rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES)
    elif Path(text).is_file():
        return [Path(text)]
    else:
        raise DataError(f"{text}: no such file or folder (expected a CSV/Parquet/ZIP file, a folder, a glob or 'synthetic')")
    if not files:
        raise DataError(f"{text}: no CSV, Parquet or ZIP files found")
    return files


def _read_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: cannot read the file (permission denied)")
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for a bad file
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
        if isinstance(frame.index, pd.DatetimeIndex):  # time as the index, as pandas users often save it
            frame = frame.rename_axis("timestamp").reset_index()
        return frame
    if suffix == ".zip":
        return _read_zip(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc
    return _read_csv_bytes(raw, str(path))


def _read_zip(path: Path) -> pd.DataFrame:
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted(n for n in archive.namelist() if n.lower().endswith((".csv", ".txt")))
            if not members:
                raise DataError(f"{path}: the ZIP holds no CSV file")
            frames = [_validated(_read_csv_bytes(archive.read(m), f"{path}:{m}"), f"{path}:{m}") for m in members]
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: not a valid ZIP file ({exc})") from exc
    return pd.concat(frames, ignore_index=True)


def _read_csv_bytes(raw: bytes, name: str) -> pd.DataFrame:
    text = raw.decode("utf-8-sig", errors="replace")
    first_line = text.lstrip().split("\n", 1)[0] if text.strip() else ""
    if not first_line:
        raise DataError(f"{name}: the file is empty")
    has_header = not _is_number(first_line.split(",")[0])
    leading_blank = text[: len(text) - len(text.lstrip())].count("\n")
    try:
        # Blank lines are kept as empty rows and dropped below, so error messages can name the file's real line.
        if has_header:
            frame = pd.read_csv(io.StringIO(text.lstrip()), skip_blank_lines=False)
        else:
            frame = pd.read_csv(io.StringIO(text.lstrip()), header=None, skip_blank_lines=False)
            if frame.shape[1] < 6:
                raise DataError(f"{name}: headerless file with {frame.shape[1]} columns; expected a Binance kline file (12 columns)")
            frame.columns = list(BINANCE_KLINE_COLUMNS[: frame.shape[1]]) + [f"extra_{i}" for i in range(frame.shape[1] - 12)]
    except pd.errors.ParserError as exc:
        raise DataError(f"{name}: not a valid CSV file ({exc})") from exc
    lines = np.arange(len(frame)) + 1 + (1 if has_header else 0) + leading_blank
    blank = frame.isna().all(axis=1).to_numpy()
    frame = frame[~blank].reset_index(drop=True)
    frame.attrs["lines"] = lines[~blank]
    return frame


def _is_number(text: str) -> bool:
    try:
        float(text.strip().strip('"'))
    except ValueError:
        return False
    return True


def _validated(raw: pd.DataFrame, name: str) -> pd.DataFrame:
    """Normalize column names and types; raise `DataError` naming the first problem found."""
    if raw.empty:
        raise DataError(f"{name}: the file has no data rows")
    lines = raw.attrs.get("lines")  # the file's line of each row (CSV); rows of a table otherwise
    if lines is None:
        lines = np.arange(len(raw)) + 1
    raw = raw.rename(columns=lambda c: COLUMN_ALIASES.get(str(c).strip().lower(), str(c).strip().lower().replace(" ", "_")))
    time_column = next((c for c in TIME_COLUMNS if c in raw.columns), None)
    missing = [c for c in OHLCV_COLUMNS if c not in raw.columns]
    if time_column is None:
        missing.insert(0, "timestamp (or date/time/datetime/open_time)")
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, raw.columns))}")

    def where(positions: np.ndarray) -> str:
        shown = [str(int(lines[p])) for p in positions[:5]]
        more = f" and {len(positions) - 5} more" if len(positions) > 5 else ""
        return f"{'line' if raw.attrs.get('lines') is not None else 'row'}{'s' if len(positions) > 1 else ''} {', '.join(shown)}{more}"

    out = pd.DataFrame({"timestamp": _parse_times(raw[time_column], name, time_column, where)})
    for column in (*OHLCV_COLUMNS, "quote_volume"):
        if column not in raw.columns:
            continue
        if pd.api.types.is_bool_dtype(raw[column]):
            raise DataError(f"{name}: column '{column}' holds true/false values, not numbers")
        values = pd.to_numeric(raw[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(f"{name}: {where(bad)}, column '{column}': missing or non-numeric value {raw[column].iloc[bad[0]]!r}")
        if column in PRICE_COLUMNS:
            bad = np.flatnonzero(values <= 0)
            if len(bad):
                raise DataError(f"{name}: {where(bad)}, column '{column}': non-positive price {values[bad[0]]}")
        elif (bad := np.flatnonzero(values < 0)).size:
            raise DataError(f"{name}: {where(bad)}, column '{column}': negative volume {values[bad[0]]}")
        out[column] = values
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


EARLIEST_TIME = pd.Timestamp("1990-01-01", tz="UTC")  # anything earlier is a unit or typing mistake


def _parse_times(column: pd.Series, name: str, column_name: str, where) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        parsed = pd.to_datetime(column, utc=True)
    elif (numeric := pd.to_numeric(column, errors="coerce")).notna().all():
        values = numeric.to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise DataError(f"{name}: {where(bad)}, column '{column_name}': time '{column.iloc[bad[0]]}' is not a finite number")
        # Each row by its own magnitude: one file may mix milliseconds and microseconds (Binance changed units in 2025).
        magnitude = np.abs(values)
        nanoseconds = np.select([magnitude > 1e17, magnitude > 1e14, magnitude > 1e11], [1, 1e3, 1e6], 1e9)
        parsed = pd.Series(pd.to_datetime((values * nanoseconds).astype("int64"), unit="ns", utc=True))
    else:
        parsed = pd.to_datetime(column.astype(str), utc=True, errors="coerce", format="mixed")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if len(bad):
            raise DataError(f"{name}: {where(bad)}, column '{column_name}': cannot parse time {column.iloc[bad[0]]!r}")
    bad = np.flatnonzero((parsed < EARLIEST_TIME).to_numpy())
    if len(bad):
        raise DataError(f"{name}: {where(bad)}, column '{column_name}': time '{column.iloc[bad[0]]}' reads as "
                        f"{parsed.iloc[bad[0]]}, before {EARLIEST_TIME.year}: a wrong unit or value?")
    return parsed.reset_index(drop=True)


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
    """Infer the timeframe (median spacing); count gaps; refuse spacing that is not a multiple of it."""
    if len(frame) < 2:
        raise DataError(f"{name}: only {len(frame)} row(s); need at least 2 candles")
    steps = frame["timestamp"].diff().iloc[1:].to_numpy().astype("timedelta64[ns]").astype(np.int64)
    if "series" in frame:  # spacing within each series only
        labels = frame["series"].to_numpy()
        steps = steps[labels[1:] == labels[:-1]]
    timeframe = int(np.median(steps))
    off_grid = np.flatnonzero(steps % timeframe != 0)
    if len(off_grid):
        row = int(off_grid[0]) + 1
        raise DataError(
            f"{name}: mixed timeframes: the median spacing is {pd.Timedelta(timeframe)} but row {row + 1} "
            f"({frame['timestamp'].iloc[row]}) follows the previous one after {pd.Timedelta(int(steps[off_grid[0]]))} "
            f"({len(off_grid)} such row(s))"
        )
    gap_sizes = steps // timeframe - 1
    return {"timeframe": pd.Timedelta(timeframe), "gaps": int((gap_sizes > 0).sum()), "missing_bars": int(gap_sizes.sum())}
