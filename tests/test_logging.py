"""Logs: one line per message and per refused recipient; never a password, never a body."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from smtpguard.runtime.logs import setup_logging

from .conftest import RelayFactory
from .smtp_fixtures import Upstream

ROOT = Path(__file__).resolve().parent.parent

BODY = b"From: alice@corp.example\r\nSubject: offer\r\n\r\nBODY-MARKER-7f3a confidential pricing\r\n"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield  # the root logger is restored by conftest's autouse fixture; setup_logging also quiets mail.log
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
    # Structured: the fields are JSON keys, not key=value text in "message".
    sent = [r for r in records if r["message"].startswith("message") and r.get("from") == "alice@corp.example"]
    assert len(sent) == 1 and sent[0]["relayed"] == 1 and sent[0]["user"] == "alice" and sent[0]["client"]
    assert isinstance(sent[0]["session"], int) and "=" not in sent[0]["message"]
    hit = [r for r in records if r.get("rcpt") == "jane.doe@example.com"]
    assert len(hit) == 1 and hit[0]["source"] == "lemlist" and hit[0]["mode"] == "reject"
    assert hit[0]["message"] == "suppressed" and hit[0]["entry"] == "jane.doe@example.com"
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


JOURNAL_SCRIPT = """
import logging, os, sys
st = os.fstat(2)
os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}" if sys.argv[1] == "journal" else "1:2"
from smtpguard.runtime.logs import setup_logging
setup_logging(sys.argv[2], "debug")
log = logging.getLogger("smtpguard.t")
log.error("e1"); log.warning("w1"); log.info("i1"); log.debug("d1")
try:
    1 / 0
except ZeroDivisionError:
    log.exception("boom")
"""


def _run_journal(tmp_path: Path, where: str, fmt: str) -> bytes:
    err = tmp_path / "stderr"
    with err.open("wb") as fh:
        subprocess.run([sys.executable, "-c", JOURNAL_SCRIPT, where, fmt], stderr=fh, check=True, cwd=ROOT)
    return err.read_bytes()


def test_journald_priority_prefixes_exact_bytes(tmp_path: Path) -> None:
    out = _run_journal(tmp_path, "journal", "text")
    lines = out.split(b"\n")
    assert lines[:5] == [
        b"<3>ERROR smtpguard.t: e1",
        b"<4>WARNING smtpguard.t: w1",
        b"<6>INFO smtpguard.t: i1",
        b"<7>DEBUG smtpguard.t: d1",
        b"<3>ERROR smtpguard.t: boom",
    ]
    # every line of the traceback keeps the record's priority
    assert all(line.startswith(b"<3>") for line in lines[5:] if line) and b"<3>ZeroDivisionError" in out
    assert json.loads(_run_journal(tmp_path, "journal", "json").split(b"\n")[1][3:])["message"] == "w1"


def test_no_prefix_when_stderr_is_not_the_journal(tmp_path: Path) -> None:
    out = _run_journal(tmp_path, "elsewhere", "text")
    assert out.startswith(b"ERROR smtpguard.t: e1\nWARNING smtpguard.t: w1\n") and b"<3>" not in out


def test_json_extra_fields_become_keys(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    setup_logging("json", "info")
    logging.getLogger("smtpguard.t").info(
        "refused level=debug rcpt=<a@b.example>", extra={"session": 4, "mode": "strip"}
    )
    record = json.loads(capsys.readouterr().err)
    assert record["session"] == 4 and record["mode"] == "strip" and record["rcpt"] == "a@b.example"
    assert record["level"] == "info" and record["message"] == "refused level=debug"  # no forged "level"
