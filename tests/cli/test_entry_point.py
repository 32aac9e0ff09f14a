"""The `smtpguard` entry point as a user runs it: a real process, real files, real pipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON_M = [sys.executable, "-m", "smtpguard"]
SCRIPT = Path(sys.executable).with_name("smtpguard")  # the console script pip installed


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SMTPGUARD_")}


def proc(*args: str, stdin: str | None = None, command: list[str] = PYTHON_M) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=str(ROOT), env=env()
    )


def one_error_line(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr and "Event loop is closed" not in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("smtpguard: "), r.stderr


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A list far larger than a pipe's buffer, so that a closed reader is noticed."""
    folder = tmp_path_factory.mktemp("big")
    (folder / "big.txt").write_text("".join(f"user{i}@example.com\n" for i in range(20_000)))
    db = folder / "list.db"
    r = proc("import", str(folder / "big.txt"), "--db", str(db))
    assert r.returncode == 0, r.stderr
    return db


def test_console_script_and_python_m_exit_codes(tmp_path: Path) -> None:
    db = str(tmp_path / "list.db")
    r = proc("--version", command=[str(SCRIPT)])
    assert r.returncode == 0 and r.stdout.startswith("smtpguard ")
    assert proc("add", "a@x.example", "--db", db, command=[str(SCRIPT)]).returncode == 0
    assert proc("check", "a@x.example", "--db", db).returncode == 1
    assert proc("check", "b@x.example", "--db", db).returncode == 0
    r = proc("check", "not an address", "--db", db)
    assert r.returncode == 2
    one_error_line(r)


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "--json"],
        ["list", "--nl"],
        ["export"],
        ["export", "--format", "json"],
    ],
)
def test_closed_stdout_is_quiet(big_db: Path, args: list[str]) -> None:
    """`smtpguard list | head -1`: the first line, then a quiet exit 0 (no BrokenPipe traceback)."""
    p = subprocess.Popen(
        [*PYTHON_M, *args, "--db", str(big_db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
        env=env(),
    )
    assert p.stdout is not None and p.stderr is not None
    assert p.stdout.readline()
    p.stdout.close()  # what `head -1` does after its line
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 0, err
    assert err == "" or err.count("\n") == 1 and "entries" in err, err  # `list` counts on stderr
    assert "Traceback" not in err and "Broken pipe" not in err


def test_check_keeps_its_status_when_stdout_closes(big_db: Path) -> None:
    addresses = "".join(f"user{i}@example.com\n" for i in range(20_000))
    p = subprocess.Popen(
        [*PYTHON_M, "check", "-", "--db", str(big_db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
        env=env(),
    )
    assert p.stdin is not None and p.stdout is not None and p.stderr is not None
    p.stdin.write(addresses.encode())
    p.stdin.close()
    assert p.stdout.readline().startswith(b"blocked  user0@example.com")
    p.stdout.close()
    assert p.wait(timeout=60) == 1
    assert p.stderr.read() == b""


@pytest.mark.parametrize("command", [["import", str(ROOT / "tests" / "fixtures" / "list.txt")], ["add", "a@x.example"]])
def test_store_that_cannot_be_opened_is_one_line(tmp_path: Path, command: list[str]) -> None:
    """A store path that is a folder: the error line, and no "Event loop is closed" after it."""
    r = proc(*command, "--db", str(tmp_path))
    assert r.returncode == 2
    one_error_line(r)
    assert str(tmp_path) in r.stderr


def test_serve_with_a_store_that_cannot_be_opened(tmp_path: Path) -> None:
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[server]\nlisten = "127.0.0.1:{ports[0]}"\nauth = "none"\n'
        f'[upstream]\nhost = "127.0.0.1"\nport = {ports[1]}\nsecurity = "none"\n'
        f"[store]\npath = '{tmp_path}'\n"
    )
    r = proc("serve", "--config", str(cfg))
    assert r.returncode == 2
    one_error_line(r)


def test_ctrl_c_during_a_big_import_stops_at_once_and_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "list.db"
    assert proc("add", "keep@x.example", "--db", str(db)).returncode == 0
    big = tmp_path / "big.txt"
    big.write_text("".join(f"user{i}@example.com\n" for i in range(400_000)))
    p = subprocess.Popen(
        [*PYTHON_M, "import", str(big), "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env=env(),
    )
    time.sleep(1.5)  # start-up, then well inside the ~3 s import
    assert p.poll() is None
    start = time.monotonic()
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert time.monotonic() - start < 3
    assert p.returncode == 130 and "the list is as it was" in err
    assert [e["key"] for e in json.loads(proc("list", "--json", "--db", str(db)).stdout)] == ["keep@x.example"]
