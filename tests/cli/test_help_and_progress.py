"""Help that reads well (no Python types), shell completion, and the import progress bar's units."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from smtpguard.cli import app
from smtpguard.cli.progress import columns, counts_rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COMMANDS = [
    *(["import"], ["add"], ["remove"], ["check"], ["list"], ["export"], ["log"], ["stats"], ["serve"], ["demo"]),
    *(["send"], ["user", "add"], ["user", "remove"], ["user", "list"], ["config", "check"], ["config", "show"]),
    *(["init"], ["rules", "show"], ["rules", "set"], ["allow"]),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_shows_no_python_types(command: list[str]) -> None:
    r = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert r.exit_code == 0
    types = re.findall(r"<(?:list\[|str|int|float|Path|bool|path)[^>]*>", r.stdout)
    assert types == [], r.stdout


def test_root_help_offers_shell_completion() -> None:
    r = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout
    names = re.findall(r"^  (\w+) ", r.stdout.split("Commands:")[1], re.M)
    assert names[:6] == ["import", "add", "remove", "check", "list", "export"]


def render(total: int, rows: bool, done: int) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=120, color_system=None)
    progress = Progress(*columns(total, rows), console=console, auto_refresh=False)
    task = progress.add_task("list", total=total if total > 0 else None)
    progress.advance(task, done)
    console.print(progress.get_renderable())
    return buf.getvalue()


def test_workbook_progress_counts_rows_not_bytes() -> None:
    assert counts_rows(FIXTURES / "humanlinker.xlsx") and not counts_rows(FIXTURES / "list.txt")
    known = render(12, rows=True, done=5)
    assert "5/12" in known and "rows" in known and "B" not in known.replace("rows", "")
    unknown = render(0, rows=True, done=4096)  # openpyxl did not know the row count
    assert "4,096 rows read" in unknown and "/0" not in unknown and "bytes" not in unknown


def test_text_progress_counts_bytes() -> None:
    assert "kB" in render(200_000, rows=False, done=100_000)
    assert "4,096 bytes read" in render(0, rows=False, done=4096)
