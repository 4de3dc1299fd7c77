"""Candle files in, with bounded memory: the raw columns that `engine.data` validates.

A CSV file, or a CSV member of a ZIP read as a stream, goes through pyarrow's CSV reader one block of
`BLOCK_BYTES` at a time, keeping only the columns a candle needs; a Parquet file is sized from its
metadata before only those columns are read. One source holds at most `MAX_CANDLES` rows and is refused
as soon as it passes them, so no file can make memory grow past a bound: binary data (a NUL byte), a
line longer than a block and a value longer than `MAX_CELL_CHARS` are refused where they appear. Every
refusal is a `DataError` naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.errors import DataError

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
NUMBER_COLUMNS = (*OHLCV_COLUMNS, "quote_volume")
TIME_COLUMNS = ("timestamp", "date", "time", "datetime", "open_time")
# Real tokens trade from about 1e-8 (quoted in BTC) to about 1e9 (quoted in IDR or VND); the margin keeps every
# price, its square and its mirror image (features.mirror_candles) far from float overflow and underflow.
PRICE_RANGE = (1e-12, 1e12)
WANTED_COLUMNS = (*TIME_COLUMNS, *NUMBER_COLUMNS)
BINANCE_KLINE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trades", "taker_buy_base", "taker_buy_quote", "ignore",
)
# Header spellings seen in exports, mapped to our column names.
COLUMN_ALIASES = {"open time": "open_time", "quote asset volume": "quote_volume", "close time": "close_time"}

MAX_CANDLES = 4_000_000  # rows in one source: 7.6 years of 1-minute bars (five years are 2.6 M), 38 years of 5-minute bars
BLOCK_BYTES = 1 << 20  # CSV text is parsed 1 MiB at a time; a line longer than that is no candle
MAX_CELL_CHARS = 64  # nor is a time or a number written with more characters than this
BOM = b"\xef\xbb\xbf"


@dataclass
class RawTable:
    """One file's (or ZIP member's) candle columns under our names, as read; a name repeats when the file
    has that column twice. `locate` turns row positions into the file's line numbers (CSV) or rows."""

    name: str
    frame: pd.DataFrame
    found: list[str]  # every column the file has, for messages
    locate: Callable[[np.ndarray], np.ndarray] = field(default=lambda positions: np.asarray(positions) + 1)
    unit: str = "row"


class RowBudget:
    """The candle rows one source may still hold; passing them is refused before memory grows."""

    def __init__(self) -> None:
        self.left = MAX_CANDLES

    def check(self, rows: int, name: str) -> None:
        if rows > self.left:
            raise DataError(f"{name}: more than {MAX_CANDLES:,} candle rows in this source, the most one source may hold "
                            "(7.6 years of 1-minute bars); pass fewer files or a longer timeframe")

    def take(self, rows: int, name: str) -> None:
        self.check(rows, name)
        self.left -= rows


def our_name(column) -> str:
    """A file's column name as ours: trimmed, lower case, known aliases mapped, spaces as underscores."""
    text = str(column).strip().lower()
    return COLUMN_ALIASES.get(text, text.replace(" ", "_"))


def read_tables(path: Path, budget: RowBudget) -> Iterator[RawTable]:
    """The candle tables of one file: one for a CSV or Parquet file, one per CSV member of a ZIP."""
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: cannot read the file (permission denied)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            yield _read_parquet(path, budget)
        elif suffix == ".zip":
            yield from _read_zip(path, budget)
        else:
            yield _read_csv(partial(open, path, "rb"), str(path), budget)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from exc


def _read_parquet(path: Path, budget: RowBudget) -> RawTable:
    name = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises many types for a bad file
        raise DataError(f"{name}: not a readable Parquet file ({exc})") from exc
    rows = parquet.metadata.num_rows
    budget.take(rows, name)
    schema = parquet.schema_arrow
    index = {column for column in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(column, str)}
    columns, names = [], []
    for item in schema:
        ours = our_name(item.name)
        if item.name in index and ours not in WANTED_COLUMNS and pa.types.is_timestamp(item.type):
            ours = "timestamp"  # a DatetimeIndex, as pandas users save time (unnamed: __index_level_0__)
        if ours in WANTED_COLUMNS:
            columns.append(item.name)
            names.append(ours)
    stored = sum(group.column(i).total_uncompressed_size for group in map(parquet.metadata.row_group, range(parquet.num_row_groups))
                 for i in range(group.num_columns) if group.column(i).path_in_schema in columns)
    if stored > len(columns) * rows * MAX_CELL_CHARS + BLOCK_BYTES:
        raise DataError(f"{name}: its time and price columns hold {stored:,} bytes for {rows:,} rows, more than "
                        f"{MAX_CELL_CHARS} bytes a value: not candle data")
    try:
        frame = parquet.read(columns=columns, use_pandas_metadata=False).to_pandas(ignore_metadata=True)
    except Exception as exc:
        raise DataError(f"{name}: not a readable Parquet file ({exc})") from exc
    frame.columns = names
    return RawTable(name, frame, [our_name(item.name) for item in schema if not item.name.startswith("__index_level_")])


def _read_zip(path: Path, budget: RowBudget) -> Iterator[RawTable]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = sorted(m.filename for m in archive.infolist() if not m.is_dir() and m.filename.lower().endswith((".csv", ".txt")))
        if not members:
            raise DataError(f"{path}: the ZIP holds no CSV file")
        for member in members:
            yield _read_csv(partial(_open_member, path, member), f"{path}:{member}", budget)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:  # damaged, encrypted, odd method
        raise DataError(f"{path}: not a valid ZIP file ({exc})") from exc


def _open_member(path: Path, member: str) -> BinaryIO:
    """A member as a decompressing stream (the archive's file closes when the stream does)."""
    with zipfile.ZipFile(path) as archive:
        return archive.open(member)


@dataclass(frozen=True)
class _CsvLayout:
    names: list[str]  # our name of every column, in file order
    skip_rows: int  # lines before the data: up to the header, or none in a headerless file
    header: bool


class _NotNumbers(Exception):
    """A number column holds something else: read again as text, so the validator can say where."""


def _read_csv(open_stream: Callable[[], BinaryIO], name: str, budget: RowBudget) -> RawTable:
    layout = _csv_layout(open_stream, name)
    try:
        frame = _stream_csv(open_stream, name, layout, budget, typed=True)
    except _NotNumbers:
        frame = _stream_csv(open_stream, name, layout, budget, typed=False)
    budget.take(len(frame), name)
    return RawTable(name, frame, layout.names, partial(_file_lines, open_stream, layout.skip_rows), "line")


def _csv_layout(open_stream: Callable[[], BinaryIO], name: str) -> _CsvLayout:
    """Where the header is (after any blank lines), or the Binance kline columns when there is none."""
    with open_stream() as raw:
        head = io.BufferedReader(_TextOnly(raw, name)).read(BLOCK_BYTES)
    lines = head.removeprefix(BOM).decode("utf-8", errors="replace").split("\n")
    first = next((number for number, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise DataError(f"{name}: the file is empty")
    if first == len(lines) - 1 and len(head) == BLOCK_BYTES:
        raise DataError(f"{name}: line {first + 1} is longer than {BLOCK_BYTES >> 20} MiB: not a candle file")
    fields = next(csv.reader([lines[first].rstrip("\r")]))
    if not _is_number(fields[0]):
        return _CsvLayout([our_name(f) for f in fields], skip_rows=first + 1, header=True)
    if len(fields) < 6:
        raise DataError(f"{name}: headerless file with {len(fields)} columns; expected a Binance kline file (12 columns)")
    extra = [f"extra_{i}" for i in range(len(fields) - len(BINANCE_KLINE_COLUMNS))]
    return _CsvLayout([*BINANCE_KLINE_COLUMNS[: len(fields)], *extra], skip_rows=0, header=False)


def _is_number(text: str) -> bool:
    try:
        float(text.strip().strip('"'))
    except ValueError:
        return False
    return True


def _stream_csv(open_stream: Callable[[], BinaryIO], name: str, layout: _CsvLayout, budget: RowBudget, typed: bool) -> pd.DataFrame:
    """The wanted columns, block by block: numbers as float64 (`typed`; times as pyarrow infers them)
    or everything as text. Stops at the row budget, a bad row or an overlong value."""
    keys = [str(i) for i in range(len(layout.names))]
    kept = [i for i, column in enumerate(layout.names) if column in WANTED_COLUMNS] or [0]  # none: the validator says what is missing
    if typed:
        types = {keys[i]: pa.float64() for i in kept if layout.names[i] in NUMBER_COLUMNS}
    else:
        types = {keys[i]: pa.string() for i in kept}
    invalid: list = []
    options = dict(
        read_options=pacsv.ReadOptions(column_names=keys, skip_rows=layout.skip_rows, block_size=BLOCK_BYTES, use_threads=False),
        parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: invalid.append(row) or "error"),
        convert_options=pacsv.ConvertOptions(include_columns=[keys[i] for i in kept], column_types=types, null_values=[""]))
    batches, rows = [], 0
    with open_stream() as raw:
        try:
            reader = pacsv.open_csv(_TextOnly(raw, name), **options)
            for batch in reader:
                _refuse_odd_text(batch, rows, name, layout, open_stream)
                rows += batch.num_rows
                budget.check(rows, name)
                batches.append(batch)
        except pa.ArrowInvalid as exc:
            raise _csv_error(exc, invalid, name, layout, open_stream, typed) from exc
    frame = pa.Table.from_batches(batches, schema=reader.schema).to_pandas()
    frame.columns = [layout.names[i] for i in kept]
    return frame


def _refuse_odd_text(batch: pa.RecordBatch, rows_before: int, name: str, layout: _CsvLayout, open_stream) -> None:
    """Text where a time or number belongs must be UTF-8 (pyarrow infers binary otherwise) and short."""
    for key, column in zip(batch.schema.names, batch.columns):
        def where(position: int) -> str:
            line = _file_lines(open_stream, layout.skip_rows, np.array([rows_before + position]))[0]
            return f"{name}: line {line}, column '{layout.names[int(key)]}'"

        if pa.types.is_binary(column.type):
            position = next(i for i, value in enumerate(column.to_pylist()) if value is not None and not _is_utf8(value))
            raise DataError(f"{where(position)}: not UTF-8 text ({column[position].as_py()[:MAX_CELL_CHARS]!r})")
        if pa.types.is_string(column.type) and (pc.max(pc.binary_length(column)).as_py() or 0) > MAX_CELL_CHARS:
            position = pc.index(pc.greater(pc.binary_length(column), MAX_CELL_CHARS), True).as_py()
            raise DataError(f"{where(position)}: a value of {len(column[position].as_py()):,} characters, "
                            f"more than any time or price needs ({MAX_CELL_CHARS})")


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _csv_error(exc: pa.ArrowInvalid, invalid: list, name: str, layout: _CsvLayout, open_stream, typed: bool) -> Exception:
    """What pyarrow's complaint means for the user, naming the line."""
    text = str(exc)
    if invalid:
        row = invalid[0]  # pyarrow numbers rows as the lines skipped plus the non-blank lines after them
        line = _file_lines(open_stream, layout.skip_rows, np.array([row.number - layout.skip_rows - 1]))[0]
        return DataError(f"{name}: line {line} has {row.actual_columns} field(s) where the "
                         f"{'header' if layout.header else 'first line'} has {row.expected_columns}")
    if "straddl" in text:
        return DataError(f"{name}: line {_first_long_line(open_stream)} is longer than {BLOCK_BYTES >> 20} MiB: not a candle file")
    if "conversion error" in text and typed:
        return _NotNumbers()
    return DataError(f"{name}: not a valid UTF-8 CSV file ({text})")


def _file_lines(open_stream, skip_rows: int, positions: np.ndarray) -> np.ndarray:
    """The file's line number of each data row position (0-based), counting blank lines as pyarrow skips them."""
    positions = np.asarray(positions)
    wanted = set(int(p) for p in positions)
    found: dict[int, int] = {}
    position = -1
    with open_stream() as stream:
        for number, blank, _ in _lines(stream):
            if number > skip_rows and not blank:
                position += 1
                if position in wanted:
                    found[position] = number
                    if len(found) == len(wanted):
                        break
    return np.array([found.get(int(p), 0) for p in positions])


def _first_long_line(open_stream) -> int:
    with open_stream() as stream:
        return next((number for number, _, long in _lines(stream) if long), 0)


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bool, bool]]:
    """(number, blank, longer than a block) of each line, reading at most a block at a time."""
    number = 0
    while chunk := stream.readline(BLOCK_BYTES):
        number += 1
        yield number, (chunk.removeprefix(BOM) if number == 1 else chunk) in (b"\n", b"\r\n"), len(chunk) == BLOCK_BYTES
        while not chunk.endswith(b"\n") and (chunk := stream.readline(BLOCK_BYTES)):
            pass  # the rest of a long line


class _TextOnly(io.RawIOBase):
    """A stream passed through as it is read, refusing binary data (a NUL byte) where it first appears."""

    def __init__(self, raw: BinaryIO, name: str):
        self.raw, self.name, self.offset = raw, name, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.raw.readinto(buffer) or 0
        nul = memoryview(buffer)[:count].tobytes().find(b"\0")
        if nul >= 0:
            raise DataError(f"{self.name}: binary data (a NUL byte at byte {self.offset + nul:,}), not CSV text; "
                            "a binary, UTF-16 or zero-filled file?")
        self.offset += count
        return count
