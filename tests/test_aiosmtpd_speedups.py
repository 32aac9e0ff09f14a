"""The cached look-ups give aiosmtpd exactly what stock `inspect` gives it."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import aiosmtpd
import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP

from smtpguard.config import Settings, StoreSettings
from smtpguard.smtp import speedups as aiosmtpd_speedups
from smtpguard.smtp.context import RelayContext
from smtpguard.smtp.handler import RelayHandler
from smtpguard.smtp.session import RelaySession

from .smtp_fixtures import Upstream


def shape(smtp: SMTP) -> tuple[Any, ...]:
    methods = smtp._auth_methods.items()
    auth = {name: (impl.method.__func__.__qualname__, impl.is_builtin) for name, impl in methods}  # type: ignore[attr-defined]
    return auth, smtp._ehlo_hook_ver, sorted(smtp._handle_hooks), sorted(smtp._smtp_methods)


async def test_same_result_as_stock_inspect() -> None:
    assert aiosmtpd_speedups.install()  # the release it was checked against
    loop = asyncio.get_running_loop()
    ctx = RelayContext(settings=Settings(store=StoreSettings(Path("unused.db"))), store=None, audit=None)  # type: ignore[arg-type]
    makers = [
        lambda: RelaySession(RelayHandler(ctx), ctx, loop=loop, hostname="h", auth_require_tls=False),
        lambda: RelaySession(RelayHandler(ctx), ctx, loop=loop, hostname="h", auth_exclude_mechanism=["LOGIN"]),
        lambda: SMTP(Upstream(), loop=loop, hostname="h", authenticator=Upstream().authenticate),
    ]
    fast = [shape(make()) for make in makers]  # type: ignore[no-untyped-call]
    shim = aiosmtpd.smtp.inspect  # type: ignore[attr-defined]
    aiosmtpd.smtp.inspect = inspect  # type: ignore[attr-defined]
    try:
        stock = [shape(make()) for make in makers]  # type: ignore[no-untyped-call]
    finally:
        aiosmtpd.smtp.inspect = shim  # type: ignore[attr-defined]
    assert fast == stock
    assert fast[0][0] == {"PLAIN": ("AuthHooks.auth_PLAIN", False), "LOGIN": ("AuthHooks.auth_LOGIN", False)}
    assert fast[2][0] == {"PLAIN": ("SMTP.auth_PLAIN", True), "LOGIN": ("SMTP.auth_LOGIN", True)}
    assert fast[0][1] == "new"


def test_other_releases_are_left_alone(monkeypatch: Any) -> None:
    monkeypatch.setattr(aiosmtpd, "__version__", "1.5.0", raising=False)
    shim = aiosmtpd.smtp.inspect  # type: ignore[attr-defined]
    assert aiosmtpd_speedups.install() is False
    assert aiosmtpd.smtp.inspect is shim  # type: ignore[attr-defined]
