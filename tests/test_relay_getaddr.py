"""The relay's fast path for MAIL/RCPT paths gives exactly aiosmtpd's answer."""

from __future__ import annotations

from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtpguard.smtp.session import _PLAIN_PATH, RelaySession

# _getaddr reads no per-connection state: an instance without __init__ will do.
SESSION = RelaySession.__new__(RelaySession)


def ours(arg: str) -> tuple[str | None, str | None]:
    return SESSION._getaddr(arg)


def theirs(arg: str) -> tuple[str | None, str | None]:
    return SMTP._getaddr(SESSION, arg)


PIECES = st.sampled_from(
    ["<", ">", "@", ".", "..", "a", "B", "0", "-", "+", "_", "%", "!", '"', "\\", " ", "\t", "(", ")",
     "[", "]", ":", ",", ";", "é", "SIZE=10", "BODY=8BITMIME", "example.com", "x--y", "\r"]
)  # fmt: skip


@settings(max_examples=3000, deadline=None)
@given(st.lists(PIECES, max_size=14).map("".join))
@example("<jane.doe+news@example.com> SIZE=1234 BODY=8BITMIME")
@example("<a@b.c>x")
@example("<a@b.c.>")
@example("  <a@b.c>  ")
@example("<>")
@example("<@a,@b:user@example.com>")
def test_fast_path_agrees_with_aiosmtpd(arg: str) -> None:
    if _PLAIN_PATH.fullmatch(arg) is not None:  # otherwise ours *is* aiosmtpd's
        assert ours(arg) == theirs(arg)


def test_fast_path_is_taken_for_ordinary_paths() -> None:
    for arg in ("<jane.doe@example.com>", "<a+b@x-y.example> SIZE=10", " <A@B.C>"):
        assert _PLAIN_PATH.fullmatch(arg) is not None


LOCAL = st.text(alphabet="aZ09.!#$%&'*+/=?^_`{|}~-\"\\ (é", min_size=0, max_size=8)
DOMAIN = st.text(alphabet="aZ09.-_[]é ", min_size=0, max_size=10)
REST = st.sampled_from(["", " ", " SIZE=10", "  BODY=8BITMIME SMTPUTF8 ", "x", "\t", " >"])


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(["", " ", "  "]), LOCAL, DOMAIN, REST)
def test_fast_path_agrees_on_path_shaped_input(lead: str, local: str, domain: str, rest: str) -> None:
    arg = f"{lead}<{local}@{domain}>{rest}"
    if _PLAIN_PATH.fullmatch(arg) is not None:
        assert ours(arg) == theirs(arg)
