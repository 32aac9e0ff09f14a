"""Fixtures of the interop suite: one private Postfix (+ smtp-sink) per session, a relay per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from smtpguard.config import (
    UpstreamSettings,
)
from smtpguard.passwords import hash_password
from smtpguard.runtime.server import Relay
from smtpguard.suppression.store import open_store

from ..conftest import add_entries
from ..smtp_fixtures import Certs, StartedRelays, settings_for, with_sections
from .gateway_bed import bed_mark, gateway_bed, make_gateway_bed
from .mta import Mark, PrivatePostfix, missing_tools

__all__ = ["bed_mark", "gateway_bed", "make_gateway_bed"]  # the gateway bed's fixtures, for every interop test

# Postfix's own verdicts (its check_recipient_access table and header_checks),
# which smtpguard must pass on to its client unchanged.
POSTFIX_REFUSES = "refused@example.net"
POSTFIX_REFUSAL = "upstream policy says no"
POSTFIX_CONTENT_TRIGGER = "X-Interop-Refuse-Me"
POSTFIX_CONTENT_REFUSAL = "5.7.1 content refused by upstream policy"

BLOCKED = ("jane.doe@example.com", "@blocked.example")
USER, PASSWORD = "alice", "correct horse battery staple"

SKIP_REASON = missing_tools()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.interop)
            if SKIP_REASON:
                item.add_marker(pytest.mark.skip(reason=f"interop: {SKIP_REASON}"))


@pytest.fixture(scope="session")
def postfix(certs: Certs) -> Iterator[PrivatePostfix]:
    """A private Postfix on 127.0.0.1:<port> (STARTTLS offered), relaying to smtp-sink."""
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    pf = PrivatePostfix.create(tls_cert=certs.cert_file, tls_key=certs.key_file)
    try:
        pf.start(
            recipient_access={POSTFIX_REFUSES: f"REJECT {POSTFIX_REFUSAL}"},
            header_checks=[f"/^{POSTFIX_CONTENT_TRIGGER}:/ REJECT {POSTFIX_CONTENT_REFUSAL}"],
        )
    except BaseException:
        pf.cleanup()
        raise
    yield pf
    pf.cleanup()


@pytest.fixture
def mark(postfix: PrivatePostfix) -> Mark:
    """The test bed as this test starts: only what comes after is this test's."""
    return postfix.mark()


RelayFactory = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def make_relay(tmp_path: Path, postfix: PrivatePostfix, certs: Certs) -> AsyncIterator[RelayFactory]:
    """`await make_relay(policy={"mode": "reject-message"}, upstream={"security": "starttls"})`.

    Listens on 127.0.0.1:<free port>, auth "none" (trusted loopback) unless told,
    upstream = the private Postfix without TLS unless told; the list holds BLOCKED.
    """
    relays = StartedRelays()
    upstream = UpstreamSettings(host="127.0.0.1", port=postfix.port, security="none", ca_file=certs.ca_file, timeout=10)

    async def make(
        blocked: tuple[str, ...] = BLOCKED, users: dict[str, str] | None = None, **sections: dict[str, Any]
    ) -> Relay:
        base = settings_for(tmp_path / f"list{len(relays)}.db", upstream, server={"auth": "none"})
        settings = with_sections(base, **sections)
        await add_entries(settings.store.path, *blocked)
        if users:
            store = await open_store(settings.store.path, settings.matching)
            try:
                for name, password in users.items():
                    await store.set_user(name, hash_password(password))
            finally:
                await store.close()
        return await relays.start(settings)

    yield make
    await relays.stop_all()
