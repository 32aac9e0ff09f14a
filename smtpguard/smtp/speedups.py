"""Cut aiosmtpd 1.4.6's per-connection set-up cost without changing its result.

`SMTP.__init__` runs `inspect.getmembers()` over the protocol and the handler
(to find `auth_*` methods) and `inspect.signature()` on `handle_EHLO`, for
every connection: most of the ~0.25 ms a connection costs before any byte is
read (about a tenth of the relay's CPU per message in bench/relay_bench.py).
Both answers depend only on the classes, so they are worked out once per
class here. Installed only on the aiosmtpd release this was checked against;
tests/test_aiosmtpd_speedups.py compares the result with the stock one.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

import aiosmtpd
import aiosmtpd.smtp

CHECKED_VERSION = "1.4.6"
log = logging.getLogger("smtpguard.server")


_AUTH_NAMES: dict[type, tuple[str, ...]] = {}


def _auth_names(cls: type) -> tuple[str, ...]:
    names = _AUTH_NAMES.get(cls)
    if names is None:
        names = _AUTH_NAMES[cls] = tuple(name for name in dir(cls) if name.startswith("auth_"))
    return names


@functools.cache
def _signature_of(function: Callable[..., Any], bound: bool) -> inspect.Signature:
    signature = inspect.signature(function)
    if bound:  # as inspect.signature() shows a bound method: without `self`
        signature = signature.replace(parameters=list(signature.parameters.values())[1:])
    return signature


class _Inspect:
    """Stands in for `inspect` inside aiosmtpd.smtp only; everything else is inspect's."""

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)

    @staticmethod
    def getmembers(obj: object) -> list[tuple[str, Any]]:
        # aiosmtpd keeps only the names starting with "auth_": give just those.
        return [(name, getattr(obj, name)) for name in _auth_names(type(obj))]

    @staticmethod
    def signature(fn: Callable[..., Any]) -> inspect.Signature:
        function = getattr(fn, "__func__", None)
        if function is None:
            return inspect.signature(fn)
        return _signature_of(function, True)


def install() -> bool:
    """Use the cached look-ups in aiosmtpd.smtp; False (and nothing changed) on another release."""
    if aiosmtpd.__version__ != CHECKED_VERSION:
        log.info(
            "aiosmtpd %s is not %s: its set-up look-ups are left as they are", aiosmtpd.__version__, CHECKED_VERSION
        )
        return False
    aiosmtpd.smtp.inspect = _Inspect()  # type: ignore[assignment,attr-defined]
    return True
