"""Refusal texts as a salesperson reads them (issue 9, item 10), over a real relay."""

from __future__ import annotations

from .conftest import RelayFactory
from .relay_helpers import SENDER, blocking_client, in_thread, message, port_of


def refusals(port: int, *rcpts: str) -> tuple[list[bytes], bytes]:
    s = blocking_client(port)
    try:
        s.login("alice", "s3cret")
        s.mail(SENDER)
        answers = [s.rcpt(r)[1] for r in rcpts]
        code, text = s.data(message())
        return answers, text if code == 550 else b""
    finally:
        s.quit()


async def test_french_refusal_translates_the_reason(make_relay: RelayFactory) -> None:
    relay = await make_relay(policy={"language": "fr"})
    [text, _], _ = await in_thread(lambda: refusals(port_of(relay), "jane.doe@example.com", "ok@ok.example"))
    assert "motif : désinscrit, source : lemlist" in text.decode()
    assert "unsubscribed" not in text.decode()


async def test_reject_message_says_the_list_once_and_ends_without_a_full_stop(make_relay: RelayFactory) -> None:
    relay = await make_relay(policy={"mode": "reject-message"})
    _, text = await in_thread(
        lambda: refusals(port_of(relay), "jane.doe@example.com", "someone@blocked.example", "ok@ok.example")
    )
    lines = [line.removeprefix("5.7.1 ") for line in text.decode().splitlines()]
    assert lines[0] == "Message not sent: these recipients are on the do-not-contact list:"
    assert lines[1].startswith("jane.doe@example.com: since 2026-10-03 (reason: unsubscribed")
    assert lines[2].startswith("someone@blocked.example: everyone at blocked.example, since 2026-10-03")
    assert sum("do-not-contact" in line for line in lines) == 1
    assert lines[-1] == "Remove them and send again; nobody received this message"  # Thunderbird adds the "."

    relay_fr = await make_relay(policy={"mode": "reject-message", "language": "fr"})
    _, text = await in_thread(lambda: refusals(port_of(relay_fr), "jane.doe@example.com", "ok@ok.example"))
    fr = [line.removeprefix("5.7.1 ") for line in text.decode().splitlines()]
    assert "désinscrit" in fr[1] and not fr[-1].endswith(".") and sum("liste d'exclusion" in x for x in fr) == 1
