"""Logs: one line per message and per refused recipient; never a password, never a body."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator

import aiosmtplib
import pytest

from smtpguard.runtime.logs import setup_logging

from .conftest import RelayFactory
from .smtp_fixtures import Upstream

BODY = b"From: alice@corp.example\r\nSubject: offer\r\n\r\nBODY-MARKER-7f3a confidential pricing\r\n"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    logging.getLogger("mail.log").setLevel(logging.NOTSET)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_json_logs_without_secrets(
    make_relay: RelayFactory,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
    mechanism: str,
) -> None:
    setup_logging("json", "debug")  # even at debug level
    relay = await make_relay()
    port = relay.endpoints[0].port

    wrong = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await wrong.connect()
    await wrong.ehlo()
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        if mechanism == "PLAIN":
            await wrong.auth_plain("alice", "hunter2-wrong")
        else:
            await wrong.auth_login("alice", "hunter2-wrong")
    wrong.close()

    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
    await client.connect()
    await client.ehlo()
    if mechanism == "PLAIN":
        await client.auth_plain("alice", "s3cret")
    else:
        await client.auth_login("alice", "s3cret")
    errors, _ = await client.sendmail("alice@corp.example", ["bob@ok.example", "jane.doe@example.com"], BODY)
    assert errors["jane.doe@example.com"][0] == 550
    await client.quit()
    await relay.stop(deadline=2)
    assert len(upstream.received) == 1

    err = capsys.readouterr().err
    records = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is JSON
    messages = [r["message"] for r in records]
    assert any("message from=<alice@corp.example> relayed=1" in m and "user=alice" in m for m in messages)
    assert any("suppressed rcpt=<jane.doe@example.com>" in m and "source=lemlist" in m for m in messages)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    secrets = [
        "s3cret",
        "hunter2",
        base64.b64encode(b"s3cret").decode(),
        base64.b64encode(b"\0alice\0s3cret").decode(),
        base64.b64encode(b"hunter2-wrong").decode(),
        "BODY-MARKER",
        "confidential pricing",
    ]
    for secret in secrets:
        assert secret not in err
