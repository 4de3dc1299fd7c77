"""Hostile data (issue 21): bounded memory for any input, one timeframe per source, naive times, prices no
float can carry, duplicated columns, files that are not files, and what `data inspect` and `presets` print."""

import json
import os
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asym_tui.cli import main
from conftest import binance_rows
from engine.data import PRICE_RANGE, DataError, load_candles
from engine.readers import MAX_CANDLES
from engine.synthetic import generate_candles

ROOT = Path(__file__).resolve().parents[1]
HEADROOM = 768 << 20  # address space the child may add to what it holds after its imports
MEMORY_LIMITED_LOAD = f"""
import resource, sys
from engine.data import DataError, load_candles
size = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + {HEADROOM}, size + {HEADROOM}))
try:
    load_candles(sys.argv[1])
except DataError as error:
    print(error)
    sys.exit(2)
"""
ROW = b"1,1,1,1,1,1\n"  # one headerless kline row, as short as one gets


def load_with_bounded_memory(source: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", MEMORY_LIMITED_LOAD, str(source)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def zero_filled_csv(folder: Path) -> Path:
    path = folder / "z.csv"
    with open(path, "wb") as file:
        file.truncate(2 << 30)  # `truncate -s 2G z.csv`: sparse, no disk used
    return path


def zero_filled_zip(folder: Path) -> Path:
    path = folder / "BTCUSDT-5m-2024-01.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive, archive.open("BTCUSDT-5m-2024-01.csv", "w") as member:
        for _ in range(1024):
            member.write(bytes(1 << 20))  # 1 GiB of NUL bytes, a few MB compressed
    return path


def too_many_rows_csv(folder: Path) -> Path:
    path = folder / "rows.csv"
    path.write_bytes(ROW * (MAX_CANDLES + 1))
    return path


def too_many_rows_zip(folder: Path) -> Path:
    path = folder / "BTCUSDT-1m-2024-01.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("BTCUSDT-1m-2024-01.csv", ROW * (MAX_CANDLES + 1))
    return path


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the address space from /proc (Linux)")
@pytest.mark.parametrize("make, message", [
    (zero_filled_csv, "z.csv: binary data (a NUL byte at byte 0)"),
    (zero_filled_zip, "BTCUSDT-5m-2024-01.zip:BTCUSDT-5m-2024-01.csv: binary data (a NUL byte at byte 0)"),
    (too_many_rows_csv, f"rows.csv: more than {MAX_CANDLES:,} candle rows"),
    (too_many_rows_zip, f"BTCUSDT-1m-2024-01.zip:BTCUSDT-1m-2024-01.csv: more than {MAX_CANDLES:,} candle rows"),
])
def test_input_past_the_limits_is_refused_in_bounded_memory(tmp_path, make, message):
    result = load_with_bounded_memory(make(tmp_path))
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stdout and result.stdout.count("\n") == 1
    assert MAX_CANDLES >= 5 * 365 * 24 * 60  # five years of 1-minute bars still load


def test_one_symbol_in_two_timeframes_is_refused_naming_both_files(tmp_path):
    generate_candles(days=2, seed=1).to_csv(tmp_path / "BTCUSDT-5m.csv", index=False)
    generate_candles(days=24, seed=2).iloc[::12].to_csv(tmp_path / "BTCUSDT-1h.csv", index=False)  # hourly bars
    with pytest.raises(DataError, match=r"different timeframes: .*BTCUSDT-1h.csv has 1h bars, .*BTCUSDT-5m.csv has 5m bars"):
        load_candles(tmp_path)


def ccxt_frame(candles: pd.DataFrame) -> pd.DataFrame:
    """Candles as ccxt users keep them: a millisecond `timestamp` column and, often, a naive time index made from it."""
    frame = candles.drop(columns="timestamp")
    frame.insert(0, "timestamp", (candles["timestamp"] - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(milliseconds=1))
    return frame


@pytest.mark.parametrize("layout", ["naive index", "naive index beside the ms column", "naive column"])
def test_naive_times_are_utc(tmp_path, small_candles, layout):
    frame = ccxt_frame(small_candles)
    naive = pd.to_datetime(frame["timestamp"], unit="ms")
    if layout == "naive index":
        frame = frame.drop(columns="timestamp").set_index(naive.rename("timestamp"))
    elif layout == "naive index beside the ms column":
        frame.index = naive  # named timestamp, like the column: both are read and must agree
    else:
        frame["timestamp"] = naive
    frame.to_parquet(tmp_path / "BTCUSDT-5m.parquet")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_candles(tmp_path / "BTCUSDT-5m.parquet")
    assert [str(w.message) for w in caught] == ([f"{tmp_path / 'BTCUSDT-5m.parquet'}: column 'timestamp' appears 2 times with the same "
                                                 "values; one is kept"] if "beside" in layout else [])
    pd.testing.assert_series_equal(loaded["timestamp"], small_candles["timestamp"].dt.as_unit("ns"), check_names=False)


@pytest.mark.parametrize("price", [1e304, 1e-296, PRICE_RANGE[1] * 10, PRICE_RANGE[0] / 10])
def test_prices_no_market_trades_at_are_refused_naming_file_line_and_column(tmp_path, small_candles, price):
    frame = small_candles.head(50).copy()
    frame.loc[3, ["open", "high", "low", "close"]] = price
    frame.to_csv(tmp_path / "extreme.csv", index=False)
    with pytest.raises(DataError, match=re.escape(f"extreme.csv: line 5, column 'open': price {price:g} is outside the accepted range")):
        load_candles(tmp_path / "extreme.csv")


def test_the_command_line_says_it_in_one_line(tmp_path, small_candles, capsys):
    frame = small_candles.head(50).copy()
    frame.loc[3, ["open", "high", "low", "close"]] = 1e-296
    frame.to_csv(tmp_path / "tiny.csv", index=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["data", "inspect", str(tmp_path / "tiny.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tiny.csv: line 5, column 'open': price 1e-296" in err and caught == []


@pytest.mark.parametrize("scale", [PRICE_RANGE[1] / 40_000, PRICE_RANGE[0] * 2 / 20_000])
def test_prices_at_the_bounds_train_without_overflow(tmp_path, scale):
    from engine.features import mirror_candles, prepare_splits

    candles = generate_candles(days=3, seed=4)
    candles[["open", "high", "low", "close"]] *= scale  # the whole path inside the range, touching one bound
    candles.to_csv(tmp_path / "edge.csv", index=False)
    with np.errstate(all="raise"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mirrored = mirror_candles(load_candles(tmp_path / "edge.csv"))
        splits = prepare_splits(mirrored, 64, 16)
    assert [str(w.message) for w in caught] == []
    assert np.isfinite(mirrored[["open", "high", "low", "close"]].to_numpy()).all()
    assert np.isfinite(splits.train.macro).all() and np.isfinite(splits.train.micro).all()


def test_a_column_given_twice_must_agree(tmp_path, small_candles):
    frame = small_candles[["timestamp", "open", "high", "low", "close", "volume"]].head(50).copy()
    frame.insert(5, "Close", frame["close"])  # "Close" and "close" are one column to us
    frame.to_csv(tmp_path / "same.csv", index=False)
    with pytest.warns(UserWarning, match="same.csv: column 'close' appears 2 times with the same values; one is kept"):
        assert len(load_candles(tmp_path / "same.csv")) == 50
    frame.loc[7, "Close"] = frame.loc[7, "close"] * 1.001
    frame.to_csv(tmp_path / "differ.csv", index=False)
    with pytest.raises(DataError, match=r"differ.csv: line 9: two 'close' columns with different values"):
        load_candles(tmp_path / "differ.csv")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_is_called_what_it_is(tmp_path):
    os.mkfifo(tmp_path / "candles.csv")
    with pytest.raises(DataError, match=r"candles.csv: a named pipe \(FIFO\), not a file"):
        load_candles(tmp_path / "candles.csv")


def iso_lines(candles: pd.DataFrame) -> list[str]:
    frame = candles.head(60).copy()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame.to_csv(index=False).splitlines()


def with_blank_lines(lines: list[str]) -> list[str]:
    return [lines[0], "", *lines[1:4], "", *lines[4:]]  # data row k is on file line k + 3 from the fourth on


def replace_row_9(make_line):
    return lambda lines: [*lines[:9], make_line(lines[9]), *lines[10:]]


@pytest.mark.parametrize("change, message", [
    (replace_row_9(lambda line: ",".join(line.split(",")[:4])), "line 12 has 4 field(s) where the header has 7"),
    (replace_row_9(lambda line: "x" * (3 << 20)), "line 12 is longer than 1 MiB: not a candle file"),
    (replace_row_9(lambda line: "2024" + "0" * 500 + line[4:]), "line 12, column 'timestamp': a value of 520 characters"),
    (replace_row_9(lambda line: line.replace(line.split(",")[4], "n/a")), "line 12, column 'close': missing or non-numeric value 'n/a'"),
])
def test_bad_csv_lines_are_named_by_their_line_in_the_file(tmp_path, small_candles, change, message):
    (tmp_path / "bad.csv").write_text("\n".join(with_blank_lines(change(iso_lines(small_candles)))) + "\n")
    with pytest.raises(DataError, match=re.escape(message)):
        load_candles(tmp_path / "bad.csv")


def test_text_that_is_not_utf8_is_refused(tmp_path, small_candles):
    text = "\n".join(iso_lines(small_candles)) + "\n"
    (tmp_path / "utf16.csv").write_bytes(text.encode("utf-16"))
    with pytest.raises(DataError, match=r"utf16.csv: binary data \(a NUL byte at byte 3\)"):
        load_candles(tmp_path / "utf16.csv")
    (tmp_path / "latin1.csv").write_bytes(text.replace("T00:10:00Z", "T00:10:00Z\xb0").encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv: line 4, column 'timestamp': not UTF-8 text"):
        load_candles(tmp_path / "latin1.csv")


def test_presets_show_keeps_bracketed_text(capsys):
    assert main(["presets", "show", "quick"]) == 0
    out = capsys.readouterr().out
    assert "[tensorboard]" in out


@pytest.mark.parametrize("columns", ["80", None])  # a terminal of 80 columns, and piped
def test_presets_list_never_cuts_a_word(monkeypatch, capsys, columns):
    from engine.config import PRESETS_DIR, preset_description, preset_paths

    if columns:
        monkeypatch.setenv("COLUMNS", columns)
    else:
        monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["presets", "list"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    table = [line for line in out.splitlines() if not line.startswith(("built-in presets: ", "your presets: "))]  # paths whole
    assert all(len(line) <= 80 for line in table) or not columns
    words = set(out.split())
    for name in preset_paths():
        assert name in words and set(preset_description(name).split()) <= words
    assert str(PRESETS_DIR) in out if columns else str(PRESETS_DIR / "quick.toml") in words


def test_data_inspect_names_the_timeframe_and_lists_every_series(tmp_path, capsys):
    candles = generate_candles(days=6, seed=2)
    halves = {"2024-01": candles.iloc[:864], "2024-02": candles.iloc[864:]}
    for month, part in halves.items():
        with zipfile.ZipFile(tmp_path / f"BTCUSDT-5m-{month}.zip", "w") as archive:
            archive.writestr(f"BTCUSDT-5m-{month}.csv", binance_rows(part).to_csv(index=False, header=False))
    source = str(tmp_path / "BTC[U]SDT-5m-*.zip")  # a glob whose brackets Rich would take for markup
    windows = ["--macro-window", "64", "--micro-window", "16"]
    assert main(["data", "inspect", source, *windows, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["timeframe"] == "5m" and report["series"] == [{"name": "BTCUSDT", "rows": len(candles), "segments": 1}]
    assert main(["data", "inspect", source, *windows]) == 0
    out = capsys.readouterr().out
    assert "BTC[U]SDT-5m-*.zip" in out and "│ 5m " in out and "│ BTCUSDT " in out


def test_the_readme_states_the_limits_and_a_tensorboard_install_that_works_from_the_checkout():
    readme = (ROOT / "README.md").read_text()
    assert f"at most {MAX_CANDLES:,} candle rows" in readme
    assert PRICE_RANGE == (1e-12, 1e12) and "outside 1e-12 to 1e12" in readme
    assert '.venv/bin/pip install -e ".[tensorboard]"' in readme and 'pip install "asym-tui[tensorboard]"' not in readme
