"""The relay's fast path for MAIL/RCPT paths gives exactly aiosmtpd's answer,
and neither path lets an RFC 2047 encoded-word through."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from aiosmtpd.smtp import SMTP
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtpguard.config import Settings, StoreSettings
from smtpguard.smtp.session import _PLAIN_PATH, ENCODED_WORD, RelaySession

# _getaddr reads no per-connection state but the refusal it notes: an instance without __init__ will do.
SESSION = RelaySession.__new__(RelaySession)
SESSION._path_refusal = ""
SESSION.ctx = SimpleNamespace(settings=Settings(store=StoreSettings(Path("unused.db"))))  # type: ignore[assignment]


def ours(arg: str) -> tuple[str | None, str | None]:
    return SESSION._getaddr(arg)


def theirs(arg: str) -> tuple[str | None, str | None]:
    return SMTP._getaddr(SESSION, arg)


def check(arg: str, seen: Counter[str]) -> None:
    """The one property: encoded-words refused; otherwise what we return is aiosmtpd's answer."""
    if ENCODED_WORD.search(arg):
        seen["encoded"] += 1
        assert ours(arg) == (None, None)
        return
    if _PLAIN_PATH.fullmatch(arg) is not None:
        seen["fast"] += 1
        assert ours(arg) == theirs(arg)
    elif ours(arg)[0] is not None:
        seen["slow"] += 1
        assert ours(arg) == theirs(arg)


PIECES = st.sampled_from(
    ["<", ">", "@", ".", "..", "a", "B", "0", "-", "+", "_", "%", "!", '"', "\\", " ", "\t", "(", ")",
     "[", "]", ":", ",", ";", "é", "SIZE=10", "BODY=8BITMIME", "example.com", "x--y", "\r",
     "=?", "?=", "?q?", "?B?", "utf-8", "=3D", "<a", "b@c.d>"]
)  # fmt: skip


# Near-plain paths, so that a good share takes the fast path or carries an encoded-word.
WORDS = st.sampled_from(["jane", ".", "doe", "+x", "=?", "?q?", "?b?", "?=", "utf-8", "=3D", "é", '"', " ", "\\"])
NEAR_PLAIN = st.builds(
    "{}<{}@{}>{}".format,
    st.sampled_from(["", " ", "\t"]),
    st.lists(WORDS, min_size=1, max_size=6).map("".join),
    st.sampled_from(["example.com", "b.c", "x--y.example", "=?utf-8?q?example.com?=", "[1.2.3.4]"]),
    st.sampled_from(["", " SIZE=10", " x"]),
)


def test_fast_path_agrees_with_aiosmtpd() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=3000, deadline=None)
    @given(st.one_of(st.lists(PIECES, max_size=14).map("".join), NEAR_PLAIN))
    @example("<jane.doe+news@example.com> SIZE=1234 BODY=8BITMIME")
    @example("<a@b.c>x")
    @example("<a@b.c.>")
    @example("  <a@b.c>  ")
    @example("<>")
    @example("<@a,@b:user@example.com>")
    @example("<=?utf-8?q?jane.doe?=@example.com>")
    @example("<=??q?=3D@example.com>")  # empty charset, shared `?`: found by this property
    @example('<"=?utf-8?b?amFuZS5kb2U=?="@example.com>')
    def prop(arg: str) -> None:
        check(arg, seen)

    prop()
    # A regex that matched nothing would make the property vacuous.
    assert seen["fast"] >= 30 and seen["encoded"] >= 30 and seen["slow"] >= 30, seen


def test_fast_path_is_taken_for_ordinary_paths() -> None:
    for arg in ("<jane.doe@example.com>", "<a+b@x-y.example> SIZE=10", " <A@B.C>"):
        assert _PLAIN_PATH.fullmatch(arg) is not None


def test_encoded_words_are_refused_in_both_paths() -> None:
    fast = "<=?utf-8?q?jane.doe?=@example.com>"
    slow = '<"=?utf-8?q?jane.doe?="@example.com>'
    assert _PLAIN_PATH.fullmatch(fast) is not None and _PLAIN_PATH.fullmatch(slow) is None
    assert theirs(fast)[0] == theirs(slow)[0] == "jane.doe@example.com"  # what aiosmtpd would hand on
    assert ours(fast) == ours(slow) == (None, None)


LOCAL = st.text(alphabet="aZ09.!#$%&'*+/=?^_`{|}~-\"\\ (é", min_size=0, max_size=8)
DOMAIN = st.text(alphabet="aZ09.-_[]é ", min_size=0, max_size=10)
REST = st.sampled_from(["", " ", " SIZE=10", "  BODY=8BITMIME SMTPUTF8 ", "x", "\t", " >"])


def test_fast_path_agrees_on_path_shaped_input() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=3000, deadline=None)
    @given(st.sampled_from(["", " ", "  "]), LOCAL, DOMAIN, REST)
    def prop(lead: str, local: str, domain: str, rest: str) -> None:
        check(f"{lead}<{local}@{domain}>{rest}", seen)

    prop()
    assert seen["fast"] >= 100 and seen["slow"] >= 30, seen
