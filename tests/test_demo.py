"""`smtpguard demo` as a newcomer meets it: start it, paste the printed commands."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


async def demo_commands(proc: asyncio.subprocess.Process, timeout: float) -> tuple[str, list[str]]:
    """What a running demo printed up to its ready line, and the commands in it (indented lines)."""
    assert proc.stdout is not None
    printed = ""
    while "Ctrl-C stops the demo" not in printed:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        assert line, "demo exited early"
        printed += line.decode()
    return printed, [line.strip() for line in printed.splitlines() if line.startswith("     ") and line.strip()]


async def test_demo_prints_commands_that_work(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smtpguard",
        "demo",
        "--folder",
        str(folder),
        "--port",
        "0",
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        printed, commands = await demo_commands(proc, 30)
        assert len(commands) == 3, printed

        allowed = await asyncio.to_thread(subprocess.run, commands[0], shell=True, capture_output=True, text=True)
        assert allowed.returncode == 0 and "250 2.0.0 Ok: stored as" in allowed.stdout, allowed
        refused = await asyncio.to_thread(subprocess.run, commands[1], shell=True, capture_output=True, text=True)
        assert refused.returncode == 1
        assert "550 5.7.1 Not sent to jane.doe@example.com" in refused.stdout, refused
        # The audit trail is written in batches (within a second): a person
        # pasting the third command is slower than that, a test is not.
        for _ in range(50):
            look = await asyncio.to_thread(subprocess.run, commands[2], shell=True, capture_output=True, text=True)
            if "rejected  jane.doe@example.com" in look.stdout:
                break
            await asyncio.sleep(0.1)
        assert look.returncode == 0 and ".eml" in look.stdout and "rejected  jane.doe@example.com" in look.stdout

        [eml] = list((folder / "mail").glob("*.eml"))
        assert b"X-Demo-Envelope-To: <colleague@example.com>" in eml.read_bytes()
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
