import zipfile

import numpy as np
import pandas as pd
import pytest

from conftest import binance_rows
from engine.data import DataError, load_candles, split_bounds, summarize
from engine.features import build_features

OHLCV = ["open", "high", "low", "close", "volume"]


def assert_same_candles(frame: pd.DataFrame, expected: pd.DataFrame):
    assert str(frame["timestamp"].dt.tz) == "UTC"
    pd.testing.assert_series_equal(frame["timestamp"].reset_index(drop=True), expected["timestamp"].reset_index(drop=True), check_dtype=False, check_names=False)
    np.testing.assert_allclose(frame[OHLCV].to_numpy(), expected[OHLCV].to_numpy(), rtol=1e-12)
    assert all(frame[c].dtype == np.float64 for c in OHLCV)


def write_formats(candles: pd.DataFrame, folder):
    """Every supported layout of the same candles; returns {name: path}."""
    iso = candles[["timestamp", *OHLCV]].copy()
    iso["timestamp"] = iso["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    paths = {"iso_csv": folder / "iso.csv"}
    iso.to_csv(paths["iso_csv"], index=False)

    epoch_s = candles[OHLCV].copy()
    epoch_s.insert(0, "Date", candles["timestamp"].dt.as_unit("ns").astype("int64") // 10**9)
    paths["epoch_s_csv"] = folder / "epoch_s.csv"
    epoch_s.to_csv(paths["epoch_s_csv"], index=False)

    paths["parquet"] = folder / "candles.parquet"
    candles.to_parquet(paths["parquet"])

    paths["binance_ms_noheader"] = folder / "BTCUSDT-5m-ms.csv"
    binance_rows(candles, "ms").to_csv(paths["binance_ms_noheader"], index=False, header=False)
    paths["binance_us_noheader"] = folder / "BTCUSDT-5m-us.csv"
    binance_rows(candles, "us").to_csv(paths["binance_us_noheader"], index=False, header=False)

    with_header = binance_rows(candles, "ms")
    with_header.columns = ["Open time", "Open", "High", "Low", "Close", "Volume", "Close time", "Quote asset volume",
                           "Number of trades", "Taker buy base asset volume", "Taker buy quote asset volume", "Ignore"]
    paths["binance_header"] = folder / "klines_header.csv"
    with_header.to_csv(paths["binance_header"], index=False)

    paths["zip"] = folder / "BTCUSDT-5m-2024-01.zip"
    with zipfile.ZipFile(paths["zip"], "w") as archive:
        archive.writestr("BTCUSDT-5m-2024-01.csv", binance_rows(candles, "ms").to_csv(index=False, header=False))
    return paths


def test_every_format_parses_to_the_same_frame(small_candles, tmp_path):
    for name, path in write_formats(small_candles, tmp_path).items():
        assert_same_candles(load_candles(path), small_candles), name


def test_folder_and_glob_concatenate_files_in_time_order(small_candles, tmp_path):
    half = len(small_candles) // 2
    for i, part in enumerate([small_candles.iloc[half:], small_candles.iloc[:half]]):  # later file first
        binance_rows(part, "ms").to_csv(tmp_path / f"part{i}.csv", index=False, header=False)
    assert_same_candles(load_candles(tmp_path), small_candles)
    assert_same_candles(load_candles(str(tmp_path / "part*.csv")), small_candles)


def test_quote_volume_kept_when_present(small_candles, tmp_path):
    paths = write_formats(small_candles, tmp_path)
    assert "quote_volume" in load_candles(paths["binance_header"]).columns
    assert "quote_volume" not in load_candles(paths["iso_csv"]).columns


def test_duplicates_dropped_with_warning_and_gaps_counted(small_candles, tmp_path):
    frame = pd.concat([small_candles.iloc[:100], small_candles.iloc[95:100], small_candles.iloc[110:]])
    path = tmp_path / "dup.parquet"
    frame.to_parquet(path)
    with pytest.warns(UserWarning, match="dropped 5 row"):
        loaded = load_candles(path)
    assert len(loaded) == len(small_candles) - 10
    summary = summarize(loaded)
    assert (summary.gaps, summary.missing_bars, summary.duplicates_dropped) == (1, 10, 5)
    assert summary.timeframe == pd.Timedelta(minutes=5)


def bad_csv(tmp_path, small_candles, mutate):
    frame = small_candles[["timestamp", *OHLCV]].head(50).copy()
    frame["timestamp"] = frame["timestamp"].astype(str)
    frame = mutate(frame) if mutate else frame
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


def set_cell(row, column, value):
    def mutate(frame):
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.drop(columns=["close"]), r"missing column\(s\) close"),
    (lambda f: f.drop(columns=["timestamp"]), r"missing column\(s\) timestamp"),
    (set_cell(7, "close", np.nan), r"line 9, column 'close': missing or non-numeric"),
    (set_cell(3, "low", -1.0), r"line 5, column 'low': non-positive price"),
    (set_cell(4, "open", 0.0), r"line 6, column 'open': non-positive price"),
    (set_cell(10, "high", 1.0), r"line 12, columns 'high'/'low': high 1.0 < low"),
    (set_cell(2, "timestamp", "not a time"), r"line 4, column 'timestamp': cannot parse time 'not a time'"),
])
def test_bad_input_names_file_row_and_column(tmp_path, small_candles, mutate, message):
    path = bad_csv(tmp_path, small_candles, mutate)
    with pytest.raises(DataError, match=message) as error:
        load_candles(path)
    assert str(path) in str(error.value)


def test_empty_file_and_missing_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty.csv: the file is empty"):
        load_candles(tmp_path / "empty.csv")
    (tmp_path / "header_only.csv").write_text("timestamp,open,high,low,close,volume\n")
    with pytest.raises(DataError, match="no data rows"):
        load_candles(tmp_path / "header_only.csv")
    with pytest.raises(DataError, match="no such file"):
        load_candles(tmp_path / "missing.csv")


def test_mixed_timeframes_refused(small_candles, tmp_path):
    frame = small_candles.copy()
    frame.loc[40:, "timestamp"] = frame.loc[40:, "timestamp"] + pd.Timedelta(minutes=1)
    frame.to_parquet(tmp_path / "mixed.parquet")
    with pytest.raises(DataError, match="mixed timeframes.*row 41"):
        load_candles(tmp_path / "mixed.parquet")


def test_too_few_rows_for_the_windows(small_candles):
    with pytest.raises(DataError, match=r"too few for macro_window=492: need at least"):
        build_features(small_candles.head(500), macro_window=492)


def test_split_is_chronological_and_covers_everything():
    bounds = split_bounds(1000)
    assert bounds["train"] == slice(0, 700) and bounds["validation"] == slice(700, 850) and bounds["test"] == slice(850, 1000)
    with pytest.raises(ValueError):
        split_bounds(1000, 0.9, 0.2)


def test_synthetic_options_parsed_and_validated():
    assert len(load_candles("synthetic:days=2,seed=1")) == 2 * 288
    with pytest.raises(DataError, match="unknown synthetic option 'colour=red'"):
        load_candles("synthetic:colour=red")
