"""The soak (bench/soak.py), short: 500 messages, 10 sessions, faults injected upstream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_soak_loses_nothing_and_returns_to_idle() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--messages", "500", "--sessions", "10", "--seed", "7"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.splitlines()
    assert summary[-1].endswith(": OK") and "mismatches 0, suppressed delivered 0, duplicates 0" in summary[-1]
    assert "faults injected: {" in done.stdout and "hangup-rcpt" in done.stdout
