"""The command line's read-only commands: `doctor`, `presets list|show`, `data inspect`.

Every cell that shows user or documentation text is escaped: Rich would take `[tensorboard]` or a glob's
`[ab]` for markup and drop it."""

from __future__ import annotations

import json
import time
import warnings

from rich.markup import escape
from rich.table import Table

from asym_tui.console import make_console, print_json
from asym_tui.tables import NARROW, doctor_table, rich_table
from engine.config import ConfigError, load_config


def cmd_doctor(args) -> int:

    from engine.doctor import diagnose

    facts = diagnose(probe=not args.no_probes)
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    make_console().print(doctor_table(facts))
    return 0


def cmd_presets_list(args) -> int:
    from engine.config import PRESETS_DIR, preset_description, preset_paths, user_presets_dir

    rows = []
    for name, path in preset_paths().items():
        try:
            description = escape(preset_description(name))
        except ConfigError as exc:
            description = f"[red]unreadable: {escape(str(exc))}[/]"
        rows.append((escape(name), description, escape(str(path))))
    console = make_console()
    console.print(rich_table("Presets", ("name", "description", "file"), rows, console.width, keep=("name", "description"),
                             left=("description", "file")))
    if console.width < NARROW:  # the file column is left out: say where the files are, paths whole
        for label, folder in (("built-in presets", PRESETS_DIR), ("your presets", user_presets_dir())):
            console.print(f"{label}: {folder}", soft_wrap=True, highlight=False, markup=False)
    return 0


def cmd_presets_show(args) -> int:
    from engine.config import field_docs, read_preset
    from engine.model import AsymmetricPolicyNetwork, layer_counts, parameter_counts

    values = read_preset(args.name)
    config = load_config(args.name)
    docs = field_docs()
    table = Table(title=f"Preset {args.name}")
    for column in ("key", "value", "meaning"):
        table.add_column(column)
    for key, value in config.to_dict().items():
        style = "bold" if key in values else "dim"
        table.add_row(f"[{style}]{escape(key)}[/]", f"[{style}]{escape(str(value))}[/]", escape(docs.get(key, "")))
    console = make_console()
    console.print(table)
    model = AsymmetricPolicyNetwork()
    layers, parameters = layer_counts(model), parameter_counts(model)
    console.print(f"Model: MacroNet {layers['macro']} Linear layers ({parameters['macro']:,} parameters), "
                  f"MicroNet {layers['micro']} ({parameters['micro']:,}), head {layers['head']} ({parameters['head']:,}): "
                  f"policy {parameters['policy']:,}; value head {layers['value']} ({parameters['value']:,}); "
                  f"total {parameters['total']:,} trainable parameters", highlight=False)
    console.print("[dim]bold = set by the preset; dim = default[/]")
    return 0


def cmd_data_inspect(args) -> int:
    from engine.data import MAX_GAP_BARS, load_candles, segments, summarize, timeframe_label
    from engine.features import feature_names, prepare_splits

    if args.micro_window < 2 or args.macro_window < args.micro_window:
        raise ConfigError(f"data inspect: need 2 <= --micro-window <= --macro-window, got {args.micro_window} and {args.macro_window}")
    console = make_console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        candles = load_candles(args.source)
    started = time.perf_counter()
    splits = prepare_splits(candles, args.macro_window, args.micro_window)
    featurize_seconds = time.perf_counter() - started
    summary = summarize(candles)
    table = Table(title=f"Data source: {escape(summary.source)}", show_header=False)
    rows = [
        ("rows", f"{summary.rows:,}"),
        ("time range (UTC)", f"{summary.start:%Y-%m-%d %H:%M} → {summary.end:%Y-%m-%d %H:%M}"),
        ("timeframe (inferred)", timeframe_label(summary.timeframe)),
        ("gaps", f"{summary.gaps:,} ({summary.missing_bars:,} missing bars, not filled)"),
        ("duplicates dropped", f"{summary.duplicates_dropped:,}"),
        ("price range", f"{summary.price_min:,.2f} – {summary.price_max:,.2f}"),
        ("feature dimensions", f"macro {splits.train.macro.shape[1]} + micro {splits.train.micro.shape[1]} "
                               f"({len(feature_names())} per window: mean/std/last of 14 indicators)"),
        ("windows", f"macro {args.macro_window} bars, micro {args.micro_window} bars"),
        ("splits (rows)", " / ".join(f"{name} {len(splits[name]):,}" for name in ("train", "validation", "test"))),
        ("featurization", f"{featurize_seconds:.2f} s ({len(candles) / featurize_seconds:,.0f} bars/s)"),
    ]
    pieces = segments(candles)

    def series_at(row: int) -> str:
        return str(candles["series"].iloc[row]) if "series" in candles else candles.attrs.get("series_name", "data")

    if args.json:
        print_json({**vars(summary), "timeframe": timeframe_label(summary.timeframe), "timeframe_s": summary.timeframe.total_seconds(),
                    "segments": [{"series": series_at(p.start),
                                  "start": str(candles["timestamp"].iloc[p.start]), "end": str(candles["timestamp"].iloc[p.stop - 1]),
                                  "bars": p.stop - p.start} for p in pieces],
                    "features": {"macro": splits.train.macro.shape[1], "micro": splits.train.micro.shape[1]},
                    "splits": {name: len(splits[name]) for name in ("train", "validation", "test")},
                    "featurize_s": featurize_seconds, "warnings": [str(w.message) for w in caught], "notes": list(splits.notes)})
        return 0
    rows.insert(1, ("series", escape(", ".join(s["name"] for s in summary.series))))  # each one's rows and segments: --json
    rows.insert(4, ("segments", f"{len(pieces):,} continuous (cut where the series changes or over {MAX_GAP_BARS} bars are missing)"))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    if len(pieces) > 1:
        listing = Table(title="Segments (episodes never cross from one to the next)")
        for column in ("#", "series", "from", "to", "bars"):
            listing.add_column(column, justify="right" if column in ("#", "bars") else "left")
        for number, piece in enumerate(pieces[:30], 1):
            part = candles.iloc[piece]
            listing.add_row(str(number), escape(series_at(piece.start)),
                            f"{part['timestamp'].iloc[0]:%Y-%m-%d %H:%M}", f"{part['timestamp'].iloc[-1]:%Y-%m-%d %H:%M}", f"{len(part):,}")
        console.print(listing)
        if len(pieces) > 30:
            console.print(f"[dim]… and {len(pieces) - 30:,} more[/]")
    for note in splits.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for warning in caught:
        console.print(f"[yellow]warning:[/] {escape(str(warning.message))}", highlight=False)
    return 0
