"""The relay's own RCPT to the upstream sends what aiosmtplib's `rcpt()` sends, and raises as it does."""

from __future__ import annotations

from collections import Counter

import aiosmtplib
import pytest
from aiosmtplib.email import quote_address
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpguard.smtp.upstream import _PLAIN_MAILBOX, rcpt
from tests.smtp_fixtures import Certs, Upstream

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
# Near-plain: atext, dots, @, and a few characters that make it not plain.
TEXT = st.text(alphabet=ATEXT + '.@ <>"()[]\\,;:', min_size=1, max_size=20)
PLAIN = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.lists(st.text(alphabet=ATEXT, min_size=1, max_size=6), min_size=1, max_size=3).map(".".join),
    st.lists(st.text(alphabet="abz09-", min_size=1, max_size=6), min_size=1, max_size=3).map(".".join),
)


def test_a_plain_mailbox_is_what_aiosmtplib_would_quote() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=600)
    @given(st.one_of(PLAIN, TEXT))
    def check(address: str) -> None:
        if _PLAIN_MAILBOX.fullmatch(address):
            seen["plain"] += 1
            assert quote_address(address) == f"<{address}>"
        else:
            seen["other"] += 1

    check()
    assert seen["plain"] > 50 and seen["other"] > 50, seen


async def test_rcpt_sends_the_same_command_and_raises_the_same(upstream: Upstream, certs: Certs) -> None:
    up = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=upstream.port, timeout=10, start_tls=True, tls_context=certs.client_context()
    )
    await up.connect()
    try:
        await up.mail("a@example.org")
        r = await rcpt(up, "jane.doe@example.com", [], "ascii")
        assert (r.code, r.message) == (250, "2.1.5 Ok")
        await rcpt(up, '"odd one"@example.com', [], "ascii")  # not plain: aiosmtplib's own path
        upstream.refuse_rcpt["no@example.com"] = "550 5.1.1 no such user"
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as info:
            await rcpt(up, "no@example.com", [], "ascii")
        assert (info.value.code, info.value.message, info.value.recipient) == (
            550,
            "5.1.1 no such user",
            "no@example.com",
        )
        upstream.refuse_rcpt["maybe@example.com"] = "252 2.1.5 will try"
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):  # as up.rcpt(): recipient.py takes 2xx back
            await rcpt(up, "maybe@example.com", [], "ascii")
        await up.data(b"Subject: x\r\n\r\nbody\r\n")
    finally:
        up.close()
    assert upstream.rcpt_seen == [
        "jane.doe@example.com",
        '"odd one"@example.com',
        "no@example.com",
        "maybe@example.com",
    ]
    assert upstream.received[-1].rcpt_tos == ["jane.doe@example.com", '"odd one"@example.com', "maybe@example.com"]
