"""The README's commands do what it says: every `asym-tui` line parses as written, and the quick ones run."""

import re
import shlex
from pathlib import Path

import pytest

from asym_tui.cli import build_parser, main
from asym_tui.options import UsageError

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_commands() -> list[str]:
    """Every `asym-tui ...` command in the README's indented code blocks (continuations joined, comments
    dropped; `a | b` alternatives split; `[--flag]` optional parts kept as if given)."""
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line.strip().removeprefix(".venv/bin/"))
        if not line.startswith("asym-tui ") or not line[len("asym-tui "):]:
            continue
        for part in line.split(" | "):
            part = part if part.startswith("asym-tui") else "asym-tui " + part
            commands.append(re.sub(r"\[(--[^\]]+)\]", r"\1", part))
    return commands


def test_the_readme_lists_its_commands():
    commands = readme_commands()
    assert len(commands) >= 25
    assert {shlex.split(c)[1] for c in commands} >= {"train", "compare", "walkforward", "eval", "export", "bench", "sweep",
                                                     "doctor", "presets", "data"}


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses_as_written(command):
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except UsageError as exc:
        pytest.fail(f"README command does not parse: {command}: {exc}")


@pytest.mark.parametrize("command", ["asym-tui presets list", "asym-tui presets show cuda",
                                     "asym-tui data inspect synthetic:days=90,seed=7"])
def test_the_quick_readme_commands_run(command, capsys):
    assert command in readme_commands()
    assert main(shlex.split(command)[1:]) == 0
    assert capsys.readouterr().out.strip()
