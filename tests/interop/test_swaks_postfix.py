"""swaks -> smtpguard -> a real Postfix -> smtp-sink, all on 127.0.0.1.

What a real client sees (swaks' transcript and exit code) and what a real MTA
received and delivered (the sink's dump files, Postfix's maillog) for each
policy mode, for local accounts, with STARTTLS to Postfix, and when Postfix
itself refuses.  swaks exit codes (swaks(1)): 0 ok, 23 MAIL refused,
24 no RCPT accepted, 26 message refused after DATA, 28 AUTH failed.
"""

from __future__ import annotations

import itertools
import os
import subprocess

import pytest

from smtpguard.config import Endpoint

from ..smtp_fixtures import Certs
from .conftest import (
    PASSWORD,
    POSTFIX_CONTENT_REFUSAL,
    POSTFIX_CONTENT_TRIGGER,
    POSTFIX_REFUSAL,
    POSTFIX_REFUSES,
    USER,
    RelayFactory,
)
from .mta import Delivery, Mark, PrivatePostfix, SwaksRun, free_port, swaks

pytestmark = pytest.mark.interop

SENDER = "sales@corp.example"
ALLOWED = "bob@ok.example"
SUPPRESSED = "jane.doe@example.com"
LOGIN = ("--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD)  # swaks options
_tokens = itertools.count(1)


def message(*extra: str) -> list[str]:
    """swaks options for a message whose subject and body carry a unique token."""
    token = f"interop-{os.getpid()}-{next(_tokens)}"
    return ["--header", f"Subject: {token}", "--body", f"Hello from the interop suite.\n{token}\n", *extra]


def token_of(args: list[str]) -> str:
    return args[args.index("--header") + 1].removeprefix("Subject: ")


def only(deliveries: list[Delivery], why: str) -> Delivery:
    assert len(deliveries) == 1, f"{why}: expected one delivery, got {deliveries}"
    return deliveries[0]


def nothing_delivered(postfix: PrivatePostfix, mark: Mark, run: SwaksRun) -> str:
    """Assert Postfix queued and delivered nothing since mark; the context for messages."""
    ctx = f"{run}\n{postfix.diagnostics(mark)}"
    assert postfix.deliveries(mark) == [], ctx
    assert "status=sent" not in postfix.log_text(mark.log_offset), ctx
    assert "Mail queue is empty" in postfix.queue_listing(), ctx
    return ctx


# -- reject mode -------------------------------------------------------------------


async def test_allowed_recipient_is_delivered_through_postfix(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay()
    args = message()
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", ALLOWED, *args)
    assert run.returncode == 0, f"{run}\n{postfix.diagnostics(mark)}"
    assert run.server_replies()[0].startswith("220 relay.test")
    qid = run.queue_id()  # Postfix's own 250, relayed word for word
    d = only(await postfix.wait_done(qid, mark), str(run))
    assert d.mail_from == SENDER
    assert d.rcpts == (ALLOWED,)
    assert d.header("Subject") == [token_of(args)]
    assert d.header("To") == [ALLOWED]
    assert token_of(args) in d.text.split("\n\n", 1)[1]
    assert f"to=<{ALLOWED}>" in postfix.log_text(mark.log_offset)


async def test_suppressed_recipient_is_refused_and_never_reaches_postfix(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay()
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", SUPPRESSED, *message())
    assert run.returncode == 24, str(run)  # no RCPT accepted
    (err,) = run.errors()
    assert err.startswith("550 5.7.1 Not sent to jane.doe@example.com:"), str(run)
    assert "since 2026-10-03" in err and "source: lemlist" in err, str(run)
    await postfix.settle(mark)
    ctx = nothing_delivered(postfix, mark, run)
    assert SUPPRESSED not in postfix.log_text(mark.log_offset), ctx


async def test_mixed_recipients_only_the_allowed_ones_are_delivered(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay()
    # swaks goes on after a refused RCPT as long as one was accepted.
    rcpts = [ALLOWED, "Jane.Doe+news@Example.com", "carol@ok.example", "x@sub.blocked.example"]
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", ",".join(rcpts), *message())
    assert run.returncode == 0, str(run)
    errors = run.errors()
    assert len(errors) == 2, str(run)
    assert errors[0].startswith("550 5.7.1 Not sent to Jane.Doe+news@Example.com:"), str(run)
    assert errors[1].startswith("550 5.7.1 Not sent to x@sub.blocked.example:"), str(run)
    assert "everyone at blocked.example" in errors[1], str(run)
    d = only(await postfix.wait_done(run.queue_id(), mark), str(run))
    assert d.rcpts == (ALLOWED, "carol@ok.example")
    # reject mode leaves the headers alone: the client was told, per recipient.
    assert d.header("To") == [",".join(rcpts)]
    log = postfix.log_text(mark.log_offset)
    assert "jane" not in log.lower() and "blocked.example" not in log, postfix.diagnostics(mark)


# -- reject-message mode -------------------------------------------------------------


async def test_reject_message_lists_every_suppressed_recipient_and_sends_nothing(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay(policy={"mode": "reject-message"})
    rcpts = [ALLOWED, SUPPRESSED, "someone@blocked.example"]
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", ",".join(rcpts), *message())
    assert run.returncode == 26, str(run)  # refused after DATA
    # Every RCPT was accepted: the verdict comes once, at the end of DATA.
    assert [r for r in run.server_replies() if r.startswith("250 2.1.5")] == [
        "250 2.1.5 Ok",
        "250 2.1.5 Recipient OK",
        "250 2.1.5 Recipient OK",
    ], str(run)
    errors = run.errors()
    head = "550-5.7.1 Message not sent: these recipients are on the do-not-contact list:"
    assert errors[0] == head, str(run)
    assert errors[1].startswith(f"550-5.7.1 {SUPPRESSED}: since 2026-10-03")  # the head says "on the list" once
    assert errors[2].startswith("550-5.7.1 someone@blocked.example: everyone at blocked.example")
    assert errors[-1] == "550 5.7.1 Remove them and send again; nobody received this message", str(run)
    await postfix.settle(mark)
    nothing_delivered(postfix, mark, run)


async def test_reject_message_without_suppressed_recipients_delivers(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay(policy={"mode": "reject-message"})
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", f"{ALLOWED},carol@ok.example", *message())
    assert run.returncode == 0 and run.errors() == [], str(run)
    d = only(await postfix.wait_done(run.queue_id(), mark), str(run))
    assert d.rcpts == (ALLOWED, "carol@ok.example")


# -- strip mode ----------------------------------------------------------------------


async def test_strip_mode_delivers_without_the_suppressed_and_notifies_the_sender(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay(policy={"mode": "strip"})
    args = message()
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", f"{ALLOWED},{SUPPRESSED}", *args)
    assert run.returncode == 0 and run.errors() == [], str(run)
    await postfix.wait_done(run.queue_id(), mark)
    await postfix.settle(mark)  # the notice is a second transaction on the same upstream session
    deliveries = postfix.deliveries(mark)
    ctx = f"{run}\n{postfix.diagnostics(mark)}"
    assert len(deliveries) == 2, ctx
    main = only([d for d in deliveries if d.rcpts == (ALLOWED,)], ctx)
    assert main.header("Subject") == [token_of(args)]
    assert main.header("To") == [ALLOWED], ctx  # the suppressed address is gone from To
    notice = only([d for d in deliveries if d.rcpts == (SENDER,)], ctx)
    assert SUPPRESSED in notice.text, ctx
    assert all(SUPPRESSED not in d.rcpts for d in deliveries), ctx


# -- authentication ------------------------------------------------------------------


async def test_auth_plain_with_a_local_account(make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark) -> None:
    relay = await make_relay(users={USER: PASSWORD}, server={"auth": "local"})
    port = relay.endpoints[0].port
    run = await swaks(
        port,
        *LOGIN,
        "--from",
        SENDER,
        "--to",
        f"{ALLOWED},{SUPPRESSED}",
        *message(),
    )
    assert run.returncode == 0, str(run)
    assert any(r.startswith("235 ") for r in run.server_replies()), str(run)
    (err,) = run.errors()
    assert err.startswith(f"550 5.7.1 Not sent to {SUPPRESSED}:"), str(run)
    d = only(await postfix.wait_done(run.queue_id(), mark), str(run))
    assert d.rcpts == (ALLOWED,)


async def test_auth_plain_with_a_wrong_password_is_refused(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay(users={USER: PASSWORD}, server={"auth": "local"})
    run = await swaks(
        relay.endpoints[0].port,
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
        "--auth-password",
        "nope",
        "--from",
        SENDER,
        "--to",
        ALLOWED,
        *message(),
    )
    assert run.returncode == 28, str(run)  # AUTH failed
    assert run.errors() == ["535 5.7.8 Username or password not accepted."], str(run)
    await postfix.settle(mark)
    nothing_delivered(postfix, mark, run)


async def test_local_auth_loopback_client_without_auth_gets_530(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay(users={USER: PASSWORD}, server={"auth": "local"})
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", ALLOWED, *message())
    assert run.returncode == 23, str(run)  # MAIL refused: loopback is no excuse outside auth = "none"
    (err,) = run.errors()
    assert err.startswith("530 5.7.0 "), str(run)
    await postfix.settle(mark)
    nothing_delivered(postfix, mark, run)


def _swaks_has_tls() -> bool:
    r = subprocess.run(["swaks", "--support"], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    return "=== TLS supported" in r.stdout + r.stderr


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
async def test_team_server_tls_both_ways(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark, certs: Certs, implicit: bool
) -> None:
    """swaks -(STARTTLS or implicit TLS, AUTH PLAIN)-> smtpguard -(STARTTLS)-> Postfix."""
    if not _swaks_has_tls():
        pytest.skip("swaks without TLS support (Net::SSLeay): run scripts/install-interop.sh")
    relay = await make_relay(
        users={USER: PASSWORD},
        server={
            "auth": "local",
            "tls_cert": certs.cert_file,
            "tls_key": certs.key_file,
            "smtps_listen": Endpoint("127.0.0.1", 0),
        },
        upstream={"security": "starttls"},
    )
    port = relay.endpoints[1 if implicit else 0].port
    tls = ["--tls-on-connect"] if implicit else ["--tls"]
    run = await swaks(
        port,
        *tls,
        "--tls-verify",
        "--tls-ca-path",
        str(certs.ca_file),
        *LOGIN,
        "--from",
        SENDER,
        "--to",
        f"{ALLOWED},{SUPPRESSED}",
        *message(),
    )
    assert run.returncode == 0, f"{run}\n{postfix.diagnostics(mark)}"
    assert "=== TLS started with cipher" in run.output, str(run)
    (err,) = run.errors()
    assert err.startswith(f"550 5.7.1 Not sent to {SUPPRESSED}:"), str(run)
    d = only(await postfix.wait_done(run.queue_id(), mark), str(run))
    assert d.rcpts == (ALLOWED,)
    assert any("with ESMTPS id" in r for r in d.header("Received")), d.text


# -- STARTTLS to Postfix -----------------------------------------------------------------


async def test_starttls_to_postfix_with_a_private_ca(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay(upstream={"security": "starttls"})
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", f"{ALLOWED},{SUPPRESSED}", *message())
    assert run.returncode == 0, f"{run}\n{postfix.diagnostics(mark)}"
    d = only(await postfix.wait_done(run.queue_id(), mark), str(run))
    assert d.rcpts == (ALLOWED,)
    log = postfix.log_text(mark.log_offset)
    assert "TLS connection established from" in log, postfix.diagnostics(mark)
    # Postfix's Received header says the hop from smtpguard was encrypted.
    assert any("with ESMTPS id" in r for r in d.header("Received")), d.text


# -- Postfix's own refusals reach the client ------------------------------------------


async def test_postfix_recipient_refusal_is_relayed(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay()
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", f"{POSTFIX_REFUSES},{ALLOWED}", *message())
    assert run.returncode == 0, str(run)
    (err,) = run.errors()
    assert err == f"554 5.7.1 <{POSTFIX_REFUSES}>: Recipient address rejected: {POSTFIX_REFUSAL}", str(run)
    d = only(await postfix.wait_done(run.queue_id(), mark), str(run))
    assert d.rcpts == (ALLOWED,)


async def test_postfix_refusal_of_the_only_recipient(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay()
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", POSTFIX_REFUSES, *message())
    assert run.returncode == 24, str(run)
    assert run.errors() == [f"554 5.7.1 <{POSTFIX_REFUSES}>: Recipient address rejected: {POSTFIX_REFUSAL}"]
    await postfix.settle(mark)
    nothing_delivered(postfix, mark, run)


async def test_postfix_content_refusal_after_data_is_relayed(
    make_relay: RelayFactory, postfix: PrivatePostfix, mark: Mark
) -> None:
    relay = await make_relay()
    run = await swaks(
        relay.endpoints[0].port,
        "--from",
        SENDER,
        "--to",
        ALLOWED,
        *message("--add-header", f"{POSTFIX_CONTENT_TRIGGER}: yes"),
    )
    assert run.returncode == 26, str(run)  # the client hears Postfix's refusal, not a 250
    (err,) = run.errors()
    assert err == f"550 {POSTFIX_CONTENT_REFUSAL}", str(run)
    await postfix.settle(mark)
    nothing_delivered(postfix, mark, run)


async def test_unreachable_upstream_is_a_temporary_failure(make_relay: RelayFactory) -> None:
    relay = await make_relay(upstream={"port": free_port()})  # nothing listens there
    run = await swaks(relay.endpoints[0].port, "--from", SENDER, "--to", ALLOWED, *message())
    assert run.returncode == 23, str(run)  # MAIL refused
    (err,) = run.errors()
    assert err.startswith("451 4.4.1 "), str(run)
