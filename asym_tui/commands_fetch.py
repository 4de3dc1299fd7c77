"""`asym-tui data fetch`: Binance monthly kline archives into a folder (engine/fetch.py does the work), with
a progress bar and one line per month on stderr, and a summary (or JSON) on stdout."""

from __future__ import annotations

from dataclasses import asdict

from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from asym_tui.console import make_console, print_json
from asym_tui.options import EXIT_FAILED

STATUS_STYLE = {"downloaded": "green", "present": "green", "missing": "yellow", "failed": "red"}


def register(data_commands) -> None:
    from engine.fetch import BASE_URL

    fetch = data_commands.add_parser("fetch", help="download Binance monthly kline ZIPs (data.binance.vision), checked against their SHA-256")
    fetch.add_argument("symbol", help="exchange symbol, e.g. BTCUSDT")
    fetch.add_argument("--interval", default="5m", help="bar length as Binance names it (default 5m)")
    fetch.add_argument("--from", dest="start", required=True, metavar="YYYY-MM", help="first month")
    fetch.add_argument("--to", dest="end", metavar="YYYY-MM", help="last month (default: the last finished month)")
    fetch.add_argument("--out", default="klines", metavar="DIR", help="folder for the ZIPs (default: klines); resumes what is there")
    fetch.add_argument("--base-url", default=BASE_URL, help=f"a mirror of {BASE_URL}")
    fetch.add_argument("--json", action="store_true", help="print a summary as JSON")
    fetch.set_defaults(handler=cmd_data_fetch)


def cmd_data_fetch(args) -> int:
    from engine.fetch import fetch_klines, kline_request

    request = kline_request(args.symbol, args.interval, args.start, args.end, args.out, args.base_url)
    log = make_console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20), DownloadColumn(), TransferSpeedColumn(),
                   console=log, transient=True, disable=not log.is_terminal)
    tasks: dict[str, int] = {}

    def on_progress(name: str, done: int, total: int | None) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=done, total=total)

    def on_month(result) -> None:
        if result.file in tasks:
            bar.remove_task(tasks.pop(result.file))
        size = f" ({result.bytes / 1e6:.1f} MB)" if result.bytes else ""
        log.print(f"{result.month} [{STATUS_STYLE[result.status]}]{result.status}[/]{size}: {escape(result.message)}", highlight=False,
                  soft_wrap=True)

    with bar:
        results = fetch_klines(request, on_progress, on_month)
    counts = {status: sum(r.status == status for r in results) for status in STATUS_STYLE}
    usable = counts["downloaded"] + counts["present"]
    if args.json:
        print_json({"symbol": request.symbol, "interval": request.interval, "folder": str(request.folder), "base_url": request.base_url,
                    "counts": counts, "months": [asdict(r) for r in results]})
    else:
        folder = escape(str(request.folder))
        make_console().print(f"{request.symbol} {request.interval}: {', '.join(f'{n} {status}' for status, n in counts.items())} → {folder}"
                             + (f"  (check it: asym-tui data inspect {folder})" if usable else ""),
                             highlight=False)
    return EXIT_FAILED if counts["failed"] or not usable else 0
