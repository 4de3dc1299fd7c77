"""Rich tables shared by the command line and the app."""

from __future__ import annotations

from rich.table import Table


def doctor_table(facts: dict) -> Table:
    table = Table(title="asym-tui doctor", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("torch", f"{facts['torch']} (Python {facts['python']}, {facts['platform']})")
    table.add_row("device (auto)", f"[bold]{facts['device']}[/] — {facts['device_reason']}")
    gpus = facts["gpu"]
    table.add_row("GPU", "; ".join(f"{k}: {v}" for k, v in gpus.items()) if gpus else "none found through NVML")
    table.add_row("CPU", facts["cpu"])
    table.add_row("memory", facts["memory"])
    for probe in facts["probes"]:
        mark = "[green]works[/]" if probe["works"] else "[yellow]not available[/]"
        table.add_row(probe["name"], f"{mark} — {probe['detail']}")
    table.add_row("recommended preset", f"[bold cyan]{facts['recommended_preset']}[/]  (asym-tui train --preset {facts['recommended_preset']})")
    return table
