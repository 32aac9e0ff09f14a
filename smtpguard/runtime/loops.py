"""The relay's event loop: uvloop where installed (`pip install smtpguard[perf]`), else asyncio.

`[server] event_loop` chooses: "auto" (uvloop when it imports), "asyncio",
or "uvloop" (refused in one line when it is not installed). uvloop's loop
runs the same code; it earns its place by the figures in docs/performance.md.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from smtpguard.config import ConfigError, EventLoop

T = TypeVar("T")


def loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's `new_event_loop`, or None for asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        uvloop = importlib.import_module("uvloop")  # optional: no stubs needed when it is absent
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                '[server] event_loop = "uvloop" but uvloop is not installed: pip install "smtpguard[perf]"'
                ' (or set event_loop = "auto")'
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_with(choice: EventLoop, main: Callable[[], Awaitable[T]]) -> T:
    """Run `main()` to completion on the chosen loop."""

    async def body() -> T:
        return await main()

    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(body())
