"""Binance kline archives from data.binance.vision (`asym-tui data fetch`): monthly ZIPs, each verified
against its published SHA-256 and resumed where a download stopped.

For each month the archive's `.CHECKSUM` file (`<sha256>  <file name>`) is read first. A ZIP already in
the folder with that digest is kept as it is. Otherwise the ZIP downloads into `<name>.part` — continued
with an HTTP Range request when a partial download is there (restarted when the server answers with the
whole file instead) — and is renamed to its final name only once its digest matches, so the folder
holds nothing but verified ZIPs (what `--data FOLDER` reads) and `.part` files. A month the server does
not have (404) is reported as missing and the others go on; a digest that does not match deletes the
download and fails that month; a cut connection keeps the `.part` for the next run to continue.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from engine.errors import ConfigError, RunError

BASE_URL = "https://data.binance.vision"
INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1mo")
SYMBOL = re.compile(r"[A-Z0-9]{2,20}")  # BTCUSDT, 1000SHIBUSDT
MONTH = re.compile(r"(\d{4})-(\d{2})")
CHUNK_BYTES = 1 << 16
TIMEOUT_S = 30
USER_AGENT = "asym-tui data fetch"

Progress = Callable[[str, int, int | None], None]  # file name, bytes so far, total bytes (None: unknown)


@dataclass(frozen=True)
class MonthResult:
    """What happened to one month: downloaded, present (already there and verified), missing (404) or failed."""

    month: str
    file: str
    status: str
    url: str
    bytes: int = 0
    sha256: str = ""
    message: str = ""


class NotPublished(Exception):
    """The server has no such file (HTTP 404)."""


class FetchFailed(Exception):
    """A month that could not be fetched or verified; the message says why in one line."""


def parse_month(text: str, flag: str) -> pd.Period:
    match = MONTH.fullmatch(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ConfigError(f"{flag} {text!r}: use a month as YYYY-MM, e.g. 2024-01")
    return pd.Period(text.strip(), freq="M")


def months_between(start: str, end: str | None) -> list[str]:
    """Every month from `start` to `end` inclusive (default: the last finished month, the latest Binance publishes)."""
    first = parse_month(start, "--from")
    last = parse_month(end, "--to") if end else pd.Timestamp.now(tz="UTC").tz_localize(None).to_period("M") - 1
    if first > last:
        raise ConfigError(f"--from {first} is after --to {last}")
    return [str(month) for month in pd.period_range(first, last, freq="M")]


def checked_symbol(symbol: str) -> str:
    upper = symbol.strip().upper()
    if not SYMBOL.fullmatch(upper):
        raise ConfigError(f"symbol {symbol!r}: use the exchange's symbol, letters and digits only, e.g. BTCUSDT")
    return upper


def checked_interval(interval: str) -> str:
    if interval not in INTERVALS:
        raise ConfigError(f"--interval {interval!r} is not one Binance publishes; choose one of {', '.join(INTERVALS)}")
    return interval


def archive_url(base_url: str, symbol: str, interval: str, month: str) -> str:
    return f"{base_url.rstrip('/')}/data/spot/monthly/klines/{symbol}/{interval}/{symbol}-{interval}-{month}.zip"


@dataclass(frozen=True)
class KlineRequest:
    """What to fetch, checked: a symbol, a Binance interval, months in order, a folder that exists, a mirror."""

    symbol: str
    interval: str
    months: tuple[str, ...]
    folder: Path
    base_url: str = BASE_URL


def kline_request(symbol: str, interval: str, start: str, end: str | None, out: str | Path, base_url: str = BASE_URL) -> KlineRequest:
    """Check every argument (one ConfigError naming the first bad one), then create the folder."""
    symbol, interval = checked_symbol(symbol), checked_interval(interval)
    months = months_between(start, end)
    if not re.match(r"https?://", base_url):
        raise ConfigError(f"--base-url {base_url!r}: use an http:// or https:// address")
    folder = Path(out).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from exc
    return KlineRequest(symbol, interval, tuple(months), folder, base_url)


def fetch_klines(request: KlineRequest, on_progress: Progress | None = None,
                 on_month: Callable[[MonthResult], None] | None = None) -> list[MonthResult]:
    """Every month of the request into its folder, one after another; a month that fails does not stop the others."""
    results = []
    for month in request.months:
        url = archive_url(request.base_url, request.symbol, request.interval, month)
        results.append(fetch_month(month, url, request.folder / url.rsplit("/", 1)[1], on_progress or (lambda *_: None)))
        if on_month:
            on_month(results[-1])
    return results


def fetch_month(month: str, url: str, target: Path, on_progress: Progress) -> MonthResult:
    """One archive: its published digest, then the file (kept if already verified, else downloaded or resumed)."""
    try:
        expected = published_digest(url + ".CHECKSUM", target.name)
        if target.is_file() and file_digest(target) == expected:
            return MonthResult(month, target.name, "present", url, target.stat().st_size, expected, "already there, verified")
        part = target.with_name(target.name + ".part")
        download(url, part, lambda done, total: on_progress(target.name, done, total))
        digest = file_digest(part)
        if digest != expected:
            part.unlink()
            raise FetchFailed(f"checksum mismatch: published {expected[:12]}…, downloaded {digest[:12]}… (file deleted)")
        os.replace(part, target)
        return MonthResult(month, target.name, "downloaded", url, target.stat().st_size, expected, "verified")
    except NotPublished as exc:
        return MonthResult(month, target.name, "missing", url, message=f"{str(exc).rsplit('/', 1)[1]} is not published (HTTP 404)")
    except FetchFailed as exc:
        return MonthResult(month, target.name, "failed", url, message=str(exc))
    except (http.client.HTTPException, OSError) as exc:  # refused, reset, timed out, HTTP 5xx; or the disk
        return MonthResult(month, target.name, "failed", url, message=describe(exc))


def describe(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect ({exc.reason})"
    return f"{type(exc).__name__}: {exc}"


def open_url(url: str, headers: dict | None = None):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise NotPublished(url) from exc
        raise


def published_digest(url: str, name: str) -> str:
    """The SHA-256 a `.CHECKSUM` file publishes for `name` (its one line: `<sha256>  <file name>`)."""
    with open_url(url) as response:
        text = response.read(4096).decode("utf-8", "replace")
    parts = text.split()
    if len(parts) < 2 or not re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]) or parts[1] != name:
        raise FetchFailed(f"{name}.CHECKSUM does not hold '<sha256>  {name}' (it holds {text[:80].strip()!r})")
    return parts[0].lower()


def download(url: str, part: Path, on_progress: Callable[[int, int | None], None]) -> None:
    """Download into `part`, continuing what is there when the server honours the Range request."""
    have = part.stat().st_size if part.is_file() else 0
    try:
        response = open_url(url, {"Range": f"bytes={have}-"} if have else None)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing after what we have: the part is whole, the digest decides
            return
        raise
    with response:
        resumed = response.status == 206
        done = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as handle:
            while chunk := response.read(CHUNK_BYTES):
                handle.write(chunk)
                done += len(chunk)
                on_progress(done, total)
    if total is not None and done < total:  # http.client ends a cut body quietly: compare with the length announced
        raise FetchFailed(f"connection cut after {done:,} of {total:,} bytes; run again to resume")


def file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
