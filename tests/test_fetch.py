"""`asym-tui data fetch` against a local data.binance.vision: real ZIPs of Binance kline CSVs and their
checksums over HTTP on 127.0.0.1, with a missing month, a bad checksum and a connection cut mid-body."""

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from asym_tui.cli import main
from conftest import binance_rows
from engine.synthetic import generate_candles

PREFIX = "/data/spot/monthly/klines/BTCUSDT/5m"


def month_zip(month: str, seed: int) -> bytes:
    """Three days of synthetic candles from the month's first day, as Binance publishes them (CSV without header, in a ZIP)."""
    candles = generate_candles(days=3, seed=seed)
    candles["timestamp"] = pd.date_range(f"{month}-01", periods=len(candles), freq="5min", tz="UTC")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"BTCUSDT-5m-{month}.csv", binance_rows(candles).to_csv(header=False, index=False))
    return buffer.getvalue()


class Mirror(ThreadingHTTPServer):
    """Serves `files` (path -> bytes) with Range support; each path in `cut` is cut mid-body once."""

    def __init__(self, files: dict[str, bytes], cut: set[str], ranges: bool = True):
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.files, self.cut, self.ranges, self.requests = files, set(cut), ranges, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class MirrorHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if server.ranges and self.headers.get("Range") else 0
        if start >= len(body) > 0:
            self.send_error(416)
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in server.cut:
            server.cut.discard(self.path)
            self.wfile.write(body[start : start + len(body) // 2])  # then the connection closes mid-body
            return
        self.wfile.write(body[start:])

    def log_message(self, *args):  # quiet
        pass


def publish(files: dict, month: str, body: bytes, digest: str | None = None) -> None:
    name = f"BTCUSDT-5m-{month}.zip"
    files[f"{PREFIX}/{name}"] = body
    files[f"{PREFIX}/{name}.CHECKSUM"] = f"{digest or hashlib.sha256(body).hexdigest()}  {name}\n".encode()


@pytest.fixture
def serve():
    servers = []

    def start(files, cut=(), ranges=True):
        server = Mirror(files, set(cut), ranges)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def fetch(capsys, server, out, *more):
    status = main(["data", "fetch", "btcusdt", "--interval", "5m", "--from", "2024-01", "--to", "2024-05", "--out", str(out),
                   "--base-url", server.url, "--json", *more])
    captured = capsys.readouterr()
    return status, {row["month"]: row for row in json.loads(captured.out)["months"]}, captured.err


def test_fetch_verifies_reports_missing_and_bad_months_and_resumes_a_cut_download(serve, tmp_path, capsys):
    files = {}
    for number, month in enumerate(("2024-01", "2024-02", "2024-04")):
        publish(files, month, month_zip(month, seed=number))
    publish(files, "2024-05", month_zip("2024-05", seed=9), digest="0" * 64)  # a checksum that does not match
    cut = f"{PREFIX}/BTCUSDT-5m-2024-04.zip"
    server = serve(files, cut={cut})  # 2024-03 is not published
    out = tmp_path / "klines"

    status, months, err = fetch(capsys, server, out)
    assert status == 1
    assert [months[m]["status"] for m in sorted(months)] == ["downloaded", "downloaded", "missing", "failed", "failed"]
    assert "HTTP 404" in months["2024-03"]["message"]
    assert "checksum mismatch" in months["2024-05"]["message"] and not list(out.glob("*2024-05*"))  # deleted
    assert "connection cut after" in months["2024-04"]["message"] and "run again to resume" in months["2024-04"]["message"]
    part = out / "BTCUSDT-5m-2024-04.zip.part"
    assert part.stat().st_size == len(files[cut]) // 2
    assert "2024-03 missing" in err and "2024-05 failed" in err

    server.requests.clear()
    status, months, _ = fetch(capsys, server, out)
    assert status == 1  # 2024-05 still fails its checksum
    assert months["2024-01"]["status"] == months["2024-02"]["status"] == "present"
    assert months["2024-04"]["status"] == "downloaded" and not part.exists()
    assert (out / "BTCUSDT-5m-2024-04.zip").read_bytes() == files[cut]
    zips = [(path, ranged) for path, ranged in server.requests if path.endswith(".zip")]
    assert (cut, f"bytes={len(files[cut]) // 2}-") in zips  # continued, not restarted
    assert not any("2024-01" in path or "2024-02" in path for path, _ in zips)  # verified files are not fetched again

    assert main(["data", "inspect", str(out), "--macro-window", "64", "--micro-window", "16", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["rows"] == 3 * 864 and len(facts["segments"]) == 3


def test_a_server_without_ranges_restarts_and_a_stale_file_is_replaced(serve, tmp_path, capsys):
    files = {}
    for month in ("2024-01", "2024-02"):
        publish(files, month, month_zip(month, seed=1))
    server = serve(files, ranges=False)
    out = tmp_path / "klines"
    out.mkdir()
    (out / "BTCUSDT-5m-2024-01.zip.part").write_bytes(b"left from another download")
    (out / "BTCUSDT-5m-2024-02.zip").write_bytes(b"not the published file")
    assert main(["data", "fetch", "BTCUSDT", "--from", "2024-01", "--to", "2024-02", "--out", str(out), "--base-url", server.url, "--json"]) == 0
    for month in ("2024-01", "2024-02"):
        assert (out / f"BTCUSDT-5m-{month}.zip").read_bytes() == files[f"{PREFIX}/BTCUSDT-5m-{month}.zip"]
    assert sorted(path.name for path in out.iterdir()) == ["BTCUSDT-5m-2024-01.zip", "BTCUSDT-5m-2024-02.zip"]
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"downloaded": 2, "present": 0, "missing": 0, "failed": 0}


def test_no_month_found_or_no_server_is_status_1(serve, tmp_path, capsys):
    status, months, _ = fetch(capsys, serve({}), tmp_path)
    assert status == 1 and {row["status"] for row in months.values()} == {"missing"}
    closed = serve({})
    url = closed.url
    closed.shutdown()
    closed.server_close()
    assert main(["data", "fetch", "BTCUSDT", "--from", "2024-01", "--to", "2024-01", "--out", str(tmp_path), "--base-url", url]) == 1
    assert "cannot connect" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["BTC/USDT", "--from", "2024-01"], "symbol 'BTC/USDT': use the exchange's symbol"),
    (["BTCUSDT", "--interval", "7m", "--from", "2024-01"], "--interval '7m' is not one Binance publishes; choose one of 1s, 1m"),
    (["BTCUSDT", "--from", "2024-13"], "--from '2024-13': use a month as YYYY-MM"),
    (["BTCUSDT", "--from", "2024-01", "--to", "2024/06"], "--to '2024/06': use a month as YYYY-MM"),
    (["BTCUSDT", "--from", "2024-06", "--to", "2024-01"], "--from 2024-06 is after --to 2024-01"),
    (["BTCUSDT", "--from", "2024-01", "--base-url", "ftp://mirror"], "--base-url 'ftp://mirror': use an http:// or https:// address"),
    (["BTCUSDT"], "the following arguments are required: --from"),
])
def test_user_mistakes_are_one_line_and_status_2(args, message, tmp_path, capsys):
    assert main(["data", "fetch", *args, "--out", str(tmp_path / "klines")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "klines").exists()  # nothing is created before the arguments are checked


def test_to_defaults_to_the_last_finished_month():
    from engine.fetch import months_between

    last = pd.Timestamp.now(tz="UTC").tz_localize(None).to_period("M") - 1  # Binance publishes a month once it is over
    assert months_between(str(last - 2), None) == [str(last - 2), str(last - 1), str(last)]
