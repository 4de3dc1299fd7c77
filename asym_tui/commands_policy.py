"""The command line's ways out for a trained policy: `export` (the chosen policy with its settings, as
TorchScript or ONNX: engine/policy.py) and `eval --out` (the agent's positions and trades as CSV and
Parquet: engine/trades.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
from rich.markup import escape

from asym_tui.console import make_console, print_json
from engine.errors import RunError
from engine.files import atomic_write_bytes, atomic_write_text


def register(commands) -> None:
    from engine.policy import FORMATS

    export = commands.add_parser("export", help="write a run's chosen policy with its feature settings, to run outside asym-tui")
    export.add_argument("run", help="run folder or its checkpoint.pt")
    export.add_argument("--format", choices=tuple(FORMATS), default="torchscript",
                        help="torchscript (default) or onnx (pip install 'asym-tui[onnx]')")
    export.add_argument("--out", metavar="PATH", help="file to write (default: <run>/policy.pt or <run>/policy.onnx)")
    export.add_argument("--json", action="store_true", help="print what was written as JSON")
    export.set_defaults(handler=cmd_export)


def cmd_export(args) -> int:
    from engine.policy import export_policy

    path, settings = export_policy(args.run, args.format, args.out)
    facts = {"file": str(path), "format": args.format, "weights": settings.weights, "macro_window": settings.macro_window,
             "micro_window": settings.micro_window, "bar_seconds": settings.bar_seconds, "observation_size": settings.observation_size}
    if args.json:
        print_json(facts)
        return 0
    make_console().print(f"{args.format} policy written to [bold]{escape(str(path))}[/] ({escape(settings.weights)}); "
                         f"from Python: engine.policy.load_policy({str(path)!r}).act(candles)", highlight=False)
    return 0


def write_positions(report: dict, out: str | None) -> None:
    """`eval --out DIR`: the agent's per-bar positions and its trades, as CSV and Parquet; their paths join the report."""
    from engine.trades import positions_frame, trades_frame

    path = report.pop("agent_path", None)
    if out is None or path is None:
        return
    folder = Path(out).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from exc
    tables = {"positions": positions_frame(**path), "trades": trades_frame(**path)}
    written = []
    for name, table in tables.items():
        keep_index = name == "positions"  # its index is the bar's time
        atomic_write_text(folder / f"{name}.csv", table.to_csv(index=keep_index))
        atomic_write_bytes(folder / f"{name}.parquet", _parquet_bytes(table, keep_index))
        written += [str(folder / f"{name}.csv"), str(folder / f"{name}.parquet")]
    report["files"] = written
    make_console(stderr=True).print(f"positions ({len(tables['positions']):,} bars) and trades ({len(tables['trades']):,}) "
                                    f"written to {escape(str(folder))} as CSV and Parquet", highlight=False)


def _parquet_bytes(table: pd.DataFrame, keep_index: bool) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=keep_index)
    return buffer.getvalue()
