"""The relay's event loop seen from inside: its longest step (CPU) and its waits for a CPU.

`relay_command(code, monitor)` is the command line that runs `smtpguard`
(the code at `code`, or the installed checkout's) with a 1 ms ticker on its
loop; at exit the relay writes what the ticker saw to `monitor`, and
`longest_steps` reads it back for a time window.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run in the relay's process: a 1 ms ticker on its loop notes, between two
# ticks, the CPU time its thread spent (the longest loop step: the relay's own
# doing) and the time it spent runnable but waiting for a CPU (the machine's:
# /proc schedstat), with the monotonic time, into a file at exit.
_MONITOR = """
import asyncio, atexit, time
_steps = []
class _Policy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        loop = super().new_event_loop()
        stat = open("/proc/thread-self/schedstat", "rb", buffering=0)
        def waited():
            stat.seek(0)
            return int(stat.read().split()[1]) / 1e9
        last = [time.thread_time(), waited()]
        def tick():
            now, wait = time.thread_time(), waited()
            if now - last[0] > 0.0005 or wait - last[1] > 0.0005:
                _steps.append((time.monotonic(), now - last[0], wait - last[1]))
            last[:] = now, wait
            loop.call_later(0.001, tick)
        loop.call_soon(tick)
        return loop
asyncio.set_event_loop_policy(_Policy())
def _dump():
    with open(MONITOR_FILE, "w") as fh:
        fh.writelines(f"{t} {d} {w}\\n" for t, d, w in _steps)
atexit.register(_dump)
"""


def relay_command(code: Path | None, monitor: Path | None = None) -> list[str]:
    boot = "import sys\n"
    if code is not None:
        boot += f"sys.path.insert(0, {str(code)!r})\n"
    if monitor is not None:
        boot += _MONITOR.replace("MONITOR_FILE", repr(str(monitor)))
    boot += "sys.argv[0] = 'smtpguard'\nfrom smtpguard.cli import main\nmain()\n"
    return [sys.executable, "-c", boot]


def longest_steps(monitor: Path, start: float, end: float) -> tuple[float, float, float]:
    """Between `start` and `end` (monotonic), the relay's longest loop step (CPU ms), its longest wait
    for a CPU between two ticks (ms) and its whole wait for a CPU (ms)."""
    step = wait = waited = 0.0
    for line in monitor.read_text().splitlines():
        t, d, w = map(float, line.split())
        if start <= t <= end + 0.1:
            step, wait, waited = max(step, 1000 * d), max(wait, 1000 * w), waited + 1000 * w
    return step, wait, waited
