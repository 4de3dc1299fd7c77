"""The command line's run summary tells the time as it was spent."""

from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from asym_tui.console import print_run_summary
from engine.events import RunSummary


def printed(summary: RunSummary) -> str:
    console = Console(record=True, width=200)
    print_run_summary(console, SimpleNamespace(summary=summary, run_dir=Path("runs/x")))
    return console.export_text()


def test_a_run_that_never_left_warm_up_says_so_instead_of_zero_seconds_of_training():
    summary = RunSummary.from_json({"trainer": "optimized", "algorithm": "ppo", "status": "completed", "stop_reason": "duration of 15 s reached",
                                    "throughput": {"episodes": 2, "env_steps": 65_536, "train_s": 0.0, "warmup_s": 14.8, "elapsed_s": 15.1,
                                                   "steps_per_s": 4428.1, "optimizer_steps_per_s": 1.1}})
    text = printed(summary)
    assert "14.8 s, all of it warm-up (4,428 steps/s" in text and "0.0 s of training" not in text
    summary.throughput.train_s, summary.throughput.warmup_s = 12.0, 3.0
    assert "12.0 s of training (4,428 steps/s" in printed(summary)


def test_a_study_says_each_warning_once_with_its_brackets():
    from asym_tui.console import progress_display
    from engine.events import LogMessage

    console = Console(record=True, width=200)
    with progress_display(console, quiet=True, trainers=["optimized"]) as on_event:
        for _ in range(3):  # three folds loading the same folder
            on_event(LogMessage("warning", "data/[2024]: 11 gap(s) not filled"))
        on_event(LogMessage("warning", "another note"))
    assert console.export_text().splitlines() == ["warning: data/[2024]: 11 gap(s) not filled", "warning: another note"]


def test_the_progress_display_says_the_data_is_being_prepared_until_a_trainer_reports():
    from asym_tui.console import progress_display
    from engine.events import Progress

    console = Console(record=True, width=120, force_terminal=True)
    with progress_display(console, quiet=False, trainers=["optimized"]) as on_event:
        assert "loading and featurizing the data" in console.export_text(clear=True)  # up before any event
        on_event(Progress(trainer="optimized", phase="starting", elapsed_s=0.0, duration_s=10.0))
    last_frames = console.export_text()
    assert "starting" in last_frames and "loading and featurizing" not in last_frames  # gone with the first report
