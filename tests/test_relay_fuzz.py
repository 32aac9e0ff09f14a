"""Fuzzed SMTP sessions against a running relay, over a raw TCP socket.

Hypothesis builds whole client sessions from a small grammar that mixes what
real clients send with what hostile or broken ones do: odd EHLO names,
suppressed recipients in many spellings (case, +tags, quoted local parts,
source routes, subdomains, trailing dots, full-width forms), `%` / `!`
routing and address literals, overlong lines, NUL bytes, bare LFs, invalid
UTF-8, DATA bodies with dot lines and `\\n.\\n` smuggling attempts,
pipelined batches, AUTH garbage, STARTTLS without TLS, unknown verbs, QUIT
and abrupt disconnects at random points.

One relay (and one upstream) per test function, reused by every example;
after each example the test checks:

* every reply line is a well-formed SMTP reply, with no Python exception
  text, no aiosmtpd `500 Error: (Class) ...` and no "something went wrong
  in the relay" (a hook caught an exception it did not expect), and every
  command gets its reply (read with a timeout) unless the relay said 421 or
  its "too many unrecognized commands" goodbye first;
* in reject / reject-message / strip modes nothing addressed to a suppressed
  recipient reaches the upstream (neither RCPT nor envelope), and in
  reject-message mode a message with any suppressed recipient reaches nobody;
* a 250 after DATA's final dot exactly when the upstream recorded the
  message (strip mode's sender notices aside), with the envelope the client
  was promised and, where headers are not rewritten, the very bytes sent;
* the relay is still healthy: a fresh client sends one clean message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
from dataclasses import dataclass, field
from typing import Literal

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from smtpguard.runtime.server import Relay
from smtpguard.suppression.addresses import AddressError, address_key, strip_source_route

from .conftest import RelayFactory
from .relay_helpers import port_of, wait_for
from .smtp_fixtures import Received, Upstream

Label = Literal["blocked", "clean", "refused", "other"]

READ_TIMEOUT = 5.0
REPLY_LINE = re.compile(rb"^[2-5]\d\d(?:[ -]|\r\n$)")
# What must never reach a client: Python internals, aiosmtpd's exception reply.
LEAKS = re.compile(
    r"Traceback|\bFile \"|\.py\b|Error: \(|Cannot describe error|\b[A-Z][A-Za-z]*(?:Error|Exception)\b"
    r"|\bNone\b|Something went wrong|Erreur interne"
)
GOODBYES = (b"421", b"502 5.5.1 Too many unrecognized")

# -- the suppression list, seen independently of smtpguard's matching code ----------

BLOCKED_ADDRESS = "jane.doe@example.com"
BLOCKED_DOMAIN = "blocked.example"


def canonical(path: str) -> str | None:
    """The key an address is compared by (None: not an address we can read)."""
    try:
        return address_key(strip_source_route(path), strict=False)
    except AddressError:
        return None


def is_blocked_key(key: str) -> bool:
    domain = key.rsplit("@", 1)[1]
    return key == BLOCKED_ADDRESS or domain == BLOCKED_DOMAIN or domain.endswith("." + BLOCKED_DOMAIN)


_PARSER = SMTP.__new__(SMTP)  # _getaddr reads nothing per connection but this:
_PARSER.local_part_limit = 0


def as_parsed(line: bytes) -> str | None:
    """The address aiosmtpd hands the relay for `RCPT TO:...` (None: refused as malformed)."""
    arg = line.decode("utf-8", "surrogateescape").partition(":")[2].strip()
    try:
        address, _ = SMTP._getaddr(_PARSER, arg)
    except Exception:  # aiosmtpd's parser has raised on some junk; no address then
        return None
    return address or None


def looks_blocked(address: str) -> bool:
    """Does an address the upstream saw belong to a suppressed mailbox?"""
    key = canonical(address)
    if key is not None:
        return is_blocked_key(key)
    # Unreadable for email-validator: compare loosely instead.
    flat = re.sub(r"[\"\\\s<>]", "", address).lower().rstrip(".")
    return flat.endswith("@" + BLOCKED_DOMAIN) or f".{BLOCKED_DOMAIN}" in flat or flat.endswith(BLOCKED_ADDRESS)


# -- the grammar -------------------------------------------------------------------------

# Each recipient spelling carries what the list *must* make of it.
RECIPIENTS: list[tuple[str, Label]] = [
    # suppressed, in many spellings
    ("jane.doe@example.com", "blocked"),
    ("JANE.DOE@EXAMPLE.COM", "blocked"),
    ("Jane.Doe@Example.Com", "blocked"),
    ("jane.doe+news@example.com", "blocked"),
    ("JANE.DOE+Tag@example.COM", "blocked"),
    ("jane.doe+@example.com", "blocked"),
    ('"jane.doe"@example.com', "blocked"),
    ('"jane.doe+x"@example.com', "blocked"),
    ('"jane\\.doe"@example.com', "blocked"),
    ('"JANE.DOE"@EXAMPLE.COM', "blocked"),
    ("@relay.example,@other.example:jane.doe@example.com", "blocked"),
    ("@relay.example:JANE.DOE+x@Example.com", "blocked"),
    ("jane.doe@example.com.", "blocked"),
    ("ｊａｎｅ.ｄｏｅ@example.com", "blocked"),
    ("jane.doe@ｅｘａｍｐｌｅ.com", "blocked"),
    ("x@blocked.example", "blocked"),
    ("X@BLOCKED.EXAMPLE", "blocked"),
    ("a@sub.blocked.example", "blocked"),
    ("a@deep.sub.Blocked.Example.", "blocked"),
    ("a+b@blocked.example", "blocked"),
    ('"quoted local"@blocked.example', "blocked"),
    ("@r.example:a@blocked.example", "blocked"),
    ("a@ｂｌｏｃｋｅｄ.example", "blocked"),
    ("ünïcode@blocked.example", "blocked"),
    # allowed, some of them close to a suppressed spelling
    ("bob@ok.example", "clean"),
    ("carol+x@ok.example", "clean"),
    ("jane.doe@example.org", "clean"),
    ("jane.doe2@example.com", "clean"),
    ("janedoe@example.com", "clean"),
    ("jane.doe-x@example.com", "clean"),
    ('"jane.doe@example.com"@ok.example', "clean"),
    ("x@blocked.example.com", "clean"),
    ("x@notblocked.example", "clean"),
    ("x@blocked-example.com", "clean"),
    ("jane.doe@example.com.ok.example", "clean"),
    ('"a b"@ok.example', "clean"),
    ("dave@OK.example", "clean"),
    ("bücher@ok.example", "clean"),
    ("@blocked.example:bob@ok.example", "clean"),
    # routing and literals: refused whatever the list says
    ("jane.doe%example.com@ok.example", "refused"),
    ("example.com!jane.doe@ok.example", "refused"),
    ('"jane.doe%example.com"@ok.example', "refused"),
    ("a%b@blocked.example", "refused"),
    ("jane.doe@[127.0.0.1]", "refused"),
    ("jane.doe@[IPv6:::1]", "refused"),
    ("bob@[127.0.0.1]", "refused"),
    # broken or odd: no promise but "no crash"
    ("", "other"),
    ("jane.doe@", "other"),
    ("@example.com", "other"),
    ("jane doe@example.com", "other"),
    ("jane.doe@example..com", "other"),
    ("jane.doe(comment)@example.com", "other"),
    ("jane.doe@example.com (comment)", "other"),
    ("jane.doe\x00@example.com", "other"),
    ("jane.doe@exam\udcffple.com", "other"),  # an invalid UTF-8 byte (see encode())
    ("\udcfe\udcff@ok.example", "other"),
    ("x" * 80 + "@ok.example", "other"),
    ("a@" + "b" * 70 + ".example", "other"),
    ("<jane.doe@example.com>", "other"),
    # Not here: an unclosed literal (`jane.doe@[192.0.2.1`) makes aiosmtpd's parser raise
    # and the relay answer 451; known, see the strict xfail in tests/test_evasion.py.
    ("jane.doe@xn--exmple-cua.com", "other"),
]

SENDERS = [
    "alice@corp.example",
    "<>",
    "Alice@Corp.Example",
    "bücher@corp.example",
    "jane.doe@example.com",  # a suppressed address as the sender (strip mode notifies it)
    "x@sub.blocked.example",
    "alice%corp.example@ok.example",
    "alice@[127.0.0.1]",
    "not an address",
    "alice@corp.example\x00",
    "\udcffalice@corp.example",
]

HOSTNAMES = ["client.test", "[127.0.0.1]", "x", "ünïcode.test", "a" * 300, "bad name with spaces", "\x00", "-"]
UNKNOWN = ["BDAT 10 LAST", "XYZZY", "EXPN staff", "TURN", "ETRN example.com", "mail", "RCPT", "GET / HTTP/1.0",
           "\udcff\udcfe", "STARTTLS extra", "QUIT now", "RSET extra", "DATA extra", "HELO", "EHLO"]  # fmt: skip

BODY_LINES = [
    "Subject: fuzz",
    "To: Jane <jane.doe@example.com>, bob@ok.example",
    "Cc: x@sub.blocked.example",
    "",
    "hello",
    ".",
    "..",
    ".dot line",
    "...",
    ". ",
    "bare\n.\nLF smuggle",
    "bare\n.\r\nMAIL FROM:<evil@x.example>",
    "cr\r.\rsmuggle",
    "x\r\n.\nRCPT TO:<jane.doe@example.com>",  # split by the sender: see body_bytes()
    "\x00nul",
    "ünïcode ✓",
    "\udcff\udcfeinvalid utf-8",
    "z" * 990,
    "MAIL FROM:<evil@x.example>",
    "\t",
]


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class Cmd:
    """One command line: exactly one reply (two for AUTH challenges, handled apart)."""

    line: bytes


@dataclass(frozen=True)
class Rcpt:
    line: bytes
    address: str
    label: Label


@dataclass(frozen=True)
class Mail:
    line: bytes


@dataclass(frozen=True)
class Data:
    body: tuple[str, ...]
    # "dot": end normally; "drop": hang up mid-body, nothing may be delivered.
    end: Literal["dot", "drop"] = "dot"
    stuff: bool = True  # False: ".x" lines go out unstuffed (the relay must drop that dot)


@dataclass(frozen=True)
class Batch:
    """Pipelined: the lines go out in one write, DATA (if any) last."""

    steps: tuple[Mail | Rcpt | Cmd, ...]
    data: Data | None
    vanish: bool = False  # hang up right after writing, replies unread


@dataclass(frozen=True)
class Auth:
    line: bytes
    answers: tuple[bytes, ...]


@dataclass(frozen=True)
class RawLines:
    """Bytes with bare LFs: aiosmtpd ends a command line at each LF."""

    raw: bytes


@dataclass(frozen=True)
class Quit:
    """QUIT in the middle of the session: 221, then the relay hangs up."""


@dataclass(frozen=True)
class End:
    how: Literal["quit", "close", "abort", "none"]


Step = Cmd | Rcpt | Mail | Data | Batch | Auth | RawLines | Quit


def rarely(draw: st.DrawFn, odds: int) -> bool:
    """True about once in `odds + 1` draws (Hypothesis favours small integers: not 0 == rare)."""
    return draw(st.sampled_from([False] * odds + [True]))


@st.composite
def rcpt_step(draw: st.DrawFn) -> Rcpt:
    kind = draw(st.sampled_from(["clean", "blocked", "clean", "blocked", "refused", "other"]))
    address, label = draw(st.sampled_from([r for r in RECIPIENTS if r[1] == kind]))
    shape = "RCPT TO:<{}>" if not rarely(draw, 2) else draw(
        st.sampled_from(["rcpt to: <{}>", "RCPT TO:{}", "RCPT TO:<{}> XYZ", "RCPT TO:<{}> NOTIFY=NEVER",
                         "RCPT  TO:<{}>", "RCPT TO:<{}>  ", "Rcpt To:<{}> SIZE=10"])
    )  # fmt: skip
    return Rcpt(encode(shape.format(address)), address, label)


@st.composite
def mail_step(draw: st.DrawFn) -> Mail:
    sender = draw(st.sampled_from(SENDERS))
    path = sender if sender == "<>" else f"<{sender}>"
    params = draw(st.sampled_from(["", "", " SIZE=100", " BODY=8BITMIME", " SMTPUTF8", " SIZE=999999999",
                                   " BODY=BINARYMIME", " RET=HDRS", " SIZE=x", " SMTPUTF8=yes"]))  # fmt: skip
    shape = draw(st.sampled_from(["MAIL FROM:{}{}", "mail from: {}{}", "MAIL FROM:{}{}"]))
    return Mail(encode(shape.format(path, params)))


@st.composite
def body(draw: st.DrawFn) -> tuple[str, ...]:
    lines = draw(st.lists(st.sampled_from(BODY_LINES), max_size=8))
    if draw(st.booleans()):
        lines = ["Subject: fuzz", f"Message-ID: <{draw(st.integers(0, 10**6))}@fuzz.test>", "", *lines]
    if rarely(draw, 4):
        lines.append("y" * 1200)  # over the 1000-octet line limit: 500 after the dot
    if rarely(draw, 25):
        lines.append(BIG)  # past the relay's max_message_size: 552
    return tuple(lines)


BIG = "<25 kB of legal lines>"


def body_bytes(lines: tuple[str, ...], stuff: bool) -> bytes:
    """The DATA payload as sent: CRLF lines, dot-stuffed (all of them, or only a lone ".")."""
    raw = b"".join((b"w" * 998 + b"\r\n") * 25 if line == BIG else encode(line) + b"\r\n" for line in lines)
    out = []
    for line in raw.split(b"\r\n")[:-1]:
        if line == b"." or (stuff and line.startswith(b".")):
            line = b"." + line
        out.append(line + b"\r\n")
    return b"".join(out)


@st.composite
def data_step(draw: st.DrawFn) -> Data:
    end = "drop" if rarely(draw, 9) else "dot"
    return Data(draw(body()), end, draw(st.booleans()))  # type: ignore[arg-type]


@st.composite
def batch_step(draw: st.DrawFn) -> Batch:
    steps: list[Mail | Rcpt | Cmd] = []
    if draw(st.booleans()):
        steps.append(draw(mail_step()))
    steps += draw(st.lists(rcpt_step(), min_size=1, max_size=4))
    if rarely(draw, 4):
        steps.insert(draw(st.integers(0, len(steps))), Cmd(b"NOOP"))
    vanish = rarely(draw, 6)
    return Batch(tuple(steps), None if vanish else draw(st.none() | data_step()), vanish)


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


AUTH_LINES = [b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH PLAIN !!!", b"AUTH PLAIN " + b64(b"\0alice\0s3cret"),
              b"AUTH PLAIN " + b64(b"\0alice\0wrong"), b"AUTH PLAIN " + b64(b"junk"), b"AUTH LOGIN " + b64(b"alice"),
              b"AUTH CRAM-MD5", b"AUTH XOAUTH2 abc", b"AUTH", b"AUTH PLAIN a b c",
              b"auth plain " + b64(b"\0\xff\0\xfe"), b"AUTH PLAIN " + b64(b"\0" * 5)]  # fmt: skip
AUTH_ANSWERS = [b"*", b"!!!", b64(b"alice"), b64(b"s3cret"), b64(b"\0alice\0s3cret"), b"", b64(b"\xff\xfe"), b"=" * 3]


@st.composite
def auth_step(draw: st.DrawFn) -> Auth:
    return Auth(draw(st.sampled_from(AUTH_LINES)), tuple(draw(st.lists(st.sampled_from(AUTH_ANSWERS), max_size=3))))


@st.composite
def raw_lines_step(draw: st.DrawFn) -> RawLines:
    # Several commands glued with bare LFs (no DATA/AUTH/QUIT among them: the
    # test counts one reply per line).
    pieces = draw(
        st.lists(
            st.sampled_from(["NOOP", "RSET", "MAIL FROM:<alice@corp.example>", "RCPT TO:<jane.doe@example.com>",
                             "RCPT TO:<bob@ok.example>", "VRFY jane.doe@example.com", "", "HELP"]),
            min_size=2, max_size=4,
        )
    )  # fmt: skip
    return RawLines(b"\n".join(encode(p) for p in pieces) + draw(st.sampled_from([b"\r\n", b"\n"])))


simple_commands: st.SearchStrategy[Cmd] = st.one_of(
    st.sampled_from(HOSTNAMES).flatmap(
        lambda h: st.sampled_from([Cmd(encode(f"EHLO {h}")), Cmd(encode(f"HELO {h}")), Cmd(encode(f"ehlo {h}"))])
    ),
    st.sampled_from(
        [
            Cmd(c)
            for c in (
                b"RSET",
                b"NOOP",
                b"NOOP hello",
                b"HELP",
                b"HELP MAIL",
                b"HELP NOPE",
                b"VRFY jane.doe@example.com",
                b"VRFY",
                b"VRFY <@x:y@z",
                b"STARTTLS",
                b"DATA",
                b"EXPN x",
            )
        ]
    ),  # fmt: skip
    st.sampled_from(UNKNOWN).map(lambda u: Cmd(encode(u))),
    st.sampled_from(
        [
            b"",
            b" ",
            b"\x00",
            b"NO\x00OP",
            b"\xff\xfe",
            b"N" * 2000,
            b"\r",
            b"MAIL FROM:<" + b"a" * 600 + b"@x.example>",
            b"RCPT TO:<" + b"b" * 1100 + b"@x.example>",
        ]
    ).map(Cmd),  # fmt: skip
)

steps: st.SearchStrategy[Step] = st.one_of(
    mail_step(), mail_step(), rcpt_step(), rcpt_step(), rcpt_step(), data_step(), data_step(),
    batch_step(), batch_step(), auth_step(), raw_lines_step(), simple_commands, st.just(Quit()),
)  # fmt: skip


@st.composite
def transaction(draw: st.DrawFn) -> list[Step]:
    """MAIL, RCPTs, DATA as a client sends them, with hostile noise mixed in."""
    plain = Mail(b"MAIL FROM:<alice@corp.example>")
    out: list[Step] = [draw(mail_step()) if rarely(draw, 4) else plain]
    out += draw(st.lists(rcpt_step(), min_size=1, max_size=4))
    if not rarely(draw, 2):  # most messages have someone left to deliver to
        out.insert(draw(st.integers(1, len(out))), Rcpt(b"RCPT TO:<bob@ok.example>", "bob@ok.example", "clean"))
    if rarely(draw, 3):
        out.insert(draw(st.integers(0, len(out))), draw(steps))
    end: st.SearchStrategy[Step] = st.sampled_from([Cmd(b"RSET"), Cmd(b"DATA")]) if rarely(draw, 6) else data_step()
    out.append(draw(end))
    return out


@dataclass(frozen=True)
class Session:
    greeting: bytes | None
    login: bool
    steps: tuple[Step, ...]
    end: End


@st.composite
def sessions(draw: st.DrawFn) -> Session:
    greeting = draw(st.sampled_from([b"HELO client.test", None])) if rarely(draw, 6) else b"EHLO client.test"
    return Session(
        greeting=greeting,
        login=not rarely(draw, 5),
        steps=tuple(
            step
            for chunk in draw(st.lists(transaction() | transaction() | steps.map(lambda s: [s]), max_size=5))
            for step in chunk
        ),
        end=End(draw(st.sampled_from(["quit", "quit", "close", "abort", "none"]))),
    )


# -- driving a session -------------------------------------------------------------------


class Closed(Exception):
    """The relay closed the connection (legitimately, after a goodbye reply)."""


@dataclass
class Outcome:
    """What the client was told, and what that promises about the upstream."""

    replies: list[bytes] = field(default_factory=list)
    delivered: list[tuple[list[tuple[str, Label]], bytes | None]] = field(default_factory=list)
    # (accepted recipients, body when headers are not rewritten) for every 250 after DATA


@dataclass
class Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    mode: str
    out: Outcome
    txn: list[tuple[str, Label]] | None = None  # accepted recipients of the open transaction
    said_goodbye: bool = False

    async def reply(self) -> bytes:
        lines: list[bytes] = []
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readline(), READ_TIMEOUT)
            except TimeoutError:
                raise AssertionError(f"no reply within {READ_TIMEOUT}s; so far {self.out.replies!r}") from None
            except ConnectionResetError:
                line = b""
            if not line:
                if lines:
                    raise AssertionError(f"reply cut short: {lines!r}")
                if self.said_goodbye:
                    raise Closed
                raise AssertionError(f"connection closed without a reply; so far {self.out.replies!r}")
            check_line(line)
            lines.append(line)
            if line[3:4] != b"-":
                break
        reply = b"".join(lines)
        self.out.replies.append(reply)
        if reply.startswith(GOODBYES):
            self.said_goodbye = True
        return reply

    def send(self, raw: bytes) -> None:
        self.writer.write(raw)

    async def command(self, line: bytes) -> bytes:
        self.send(line + b"\r\n")
        return await self.reply()

    def saw(self, line: bytes, reply: bytes) -> None:
        """Follow the transaction state as aiosmtpd keeps it."""
        verb = line.split(b" ", 1)[0].upper()
        ok = reply[:1] == b"2"
        if verb in (b"RSET", b"EHLO", b"HELO") and ok:
            self.txn = None
        elif verb == b"MAIL" and ok:
            self.txn = []

    def rcpt(self, step: Rcpt, reply: bytes) -> None:
        code = reply[:3]
        if step.label == "refused":
            assert code[:1] != b"2", f"routed / literal recipient accepted: {step.address!r} -> {reply!r}"
        if step.label == "blocked" and self.mode == "reject":
            assert code[:1] != b"2", f"suppressed recipient accepted in reject mode: {step.address!r} -> {reply!r}"
        event(f"RCPT {step.label} -> {code.decode()}")
        if code[:1] == b"2":
            assert self.txn is not None, f"RCPT accepted outside a transaction: {reply!r}"
            address = as_parsed(step.line)
            assert address is not None, f"RCPT accepted for an unparsable path: {step.line!r}"
            label = step.label
            if label == "other":
                key = canonical(address)
                label = "clean" if key is None else ("blocked" if is_blocked_key(key) else "clean")
            self.txn.append((address, label))

    async def data(self, step: Data, reply_354: bytes) -> None:
        if not reply_354.startswith(b"354"):
            self.txn = None if reply_354[:1] == b"2" else self.txn
            return
        payload = body_bytes(step.body, step.stuff)
        if step.end == "drop":
            self.send(payload[: len(payload) // 2])
            await self.writer.drain()
            self.writer.transport.abort()
            raise Closed
        self.send(payload + b".\r\n")
        final = await self.reply()
        accepted, self.txn = self.txn or [], None
        event(f"DATA final reply {final[:3].decode()}")
        if final.startswith(b"250"):
            self.out.delivered.append((accepted, payload))
            if any(label == "blocked" for _, label in accepted):
                event(f"{self.mode}: delivered with a suppressed recipient accepted at RCPT")

    async def run(self, step: Step) -> None:
        if isinstance(step, Cmd) and step.line.upper() == b"DATA":
            await self.data(Data(()), await self.command(b"DATA"))
        elif isinstance(step, Cmd | Mail):
            reply = await self.command(step.line)
            self.saw(step.line, reply)
        elif isinstance(step, Rcpt):
            self.rcpt(step, await self.command(step.line))
        elif isinstance(step, Data):
            await self.data(step, await self.command(b"DATA"))
        elif isinstance(step, Batch):
            lines = [s.line for s in step.steps] + ([b"DATA"] if step.data else [])
            self.send(b"".join(line + b"\r\n" for line in lines))
            if step.vanish:
                await self.writer.drain()
                self.writer.transport.abort()
                event("client vanished after a pipelined batch")
                raise Closed
            for s in step.steps:
                reply = await self.reply()
                if isinstance(s, Rcpt):
                    self.rcpt(s, reply)
                else:
                    self.saw(s.line, reply)
            if step.data:
                await self.data(step.data, await self.reply())
        elif isinstance(step, Quit):
            assert (await self.command(b"QUIT")).startswith(b"221 ")
            self.said_goodbye = True
            if await asyncio.wait_for(self.reader.read(1), READ_TIMEOUT):
                raise AssertionError("data after 221")
            raise Closed
        elif isinstance(step, Auth):
            reply = await self.command(step.line)
            answers = list(step.answers)
            while reply.startswith(b"334"):
                reply = await self.command(answers.pop(0) if answers else b"*")
        else:
            self.send(step.raw)
            for piece in step.raw.split(b"\n")[:-1]:
                self.saw(piece.rstrip(b"\r"), await self.reply())
                if piece.upper().startswith(b"RCPT"):
                    # Only the two spellings in raw_lines_step: labelled by hand.
                    label: Label = "blocked" if b"jane.doe" in piece else "clean"
                    self.rcpt(Rcpt(piece, piece.decode()[9:-1], label), self.out.replies[-1])


def check_line(line: bytes) -> None:
    assert REPLY_LINE.match(line), f"malformed reply line {line!r}"
    assert line.endswith(b"\r\n"), f"reply line without CRLF {line!r}"
    text = line.decode("utf-8", "replace")
    assert not LEAKS.search(text), f"internal detail in a reply: {line!r}"


async def run_session(relay: Relay, mode: str, auth: str, session: Session) -> Outcome:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(relay))
    client = Client(reader, writer, mode, Outcome())
    try:
        greeting = await client.reply()
        assert greeting.startswith(b"220 "), greeting
        if session.greeting is not None:
            client.saw(session.greeting, await client.command(session.greeting))
        if auth == "passthrough" and session.login:
            reply = await client.command(b"AUTH PLAIN " + b64(b"\0alice\0s3cret"))
            assert reply.startswith(b"235 ") or session.greeting is None or session.greeting.startswith(b"HELO")
        for step in session.steps:
            await client.run(step)
            if client.said_goodbye:
                raise Closed
        if session.end.how == "quit":
            assert (await client.command(b"QUIT")).startswith(b"221 ")
        elif session.end.how == "abort":
            writer.transport.abort()
    except Closed:
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return client.out


def expected_upstream_content(payload: bytes) -> bytes:
    """aiosmtpd unstuffs per CRLF line; aiosmtplib makes lone CR / LF into CRLF."""
    lines = payload.split(b"\r\n")[:-1]
    unstuffed = b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)
    normal = re.sub(rb"\r\n|\n|\r(?!\n)", b"\r\n", unstuffed)
    return normal if normal.endswith(b"\r\n") else normal + b"\r\n"


def is_notice(r: Received) -> bool:
    return b"\nAuto-Submitted: auto-generated" in r.content


def check_upstream(mode: str, out: Outcome, up: Upstream, rcpt_before: int, received_before: int) -> None:
    seen = up.rcpt_seen[rcpt_before:]
    new = up.received[received_before:]
    if mode != "monitor":
        leaked = [a for a in seen if looks_blocked(a)]
        leaked += [a for r in new for a in r.rcpt_tos if looks_blocked(a)]
        assert not leaked, f"suppressed recipient reached the upstream in {mode} mode: {leaked!r}"
    messages = [r for r in new if not is_notice(r)]
    assert len(messages) == len(out.delivered), (
        f"{len(out.delivered)} x 250 after DATA, {len(messages)} messages upstream: {messages!r}"
    )
    for (accepted, payload), got in zip(out.delivered, messages, strict=True):
        if mode == "reject-message":
            held = [a for a, label in accepted if label == "blocked"]
            assert not held, f"message with suppressed {held!r} delivered to {got.rcpt_tos!r}"
        promised = [a for a, label in accepted if not (mode == "strip" and label == "blocked")]
        keys = sorted(canonical(a) or a for a in got.rcpt_tos)
        assert keys == sorted(canonical(a) or a for a in promised), (got.rcpt_tos, accepted)
        if mode != "strip" and payload is not None:
            assert got.content == expected_upstream_content(payload), (payload, got.content)
    for notice in (r for r in new if is_notice(r)):
        event("strip: sender notice sent")
        assert mode == "strip", "a sender notice outside strip mode"
        assert notice.rcpt_tos == [notice.mail_from]


async def healthy(relay: Relay, up: Upstream, auth: str) -> None:
    before = len(up.received)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(relay))
    client = Client(reader, writer, "reject", Outcome())
    try:
        assert (await client.reply()).startswith(b"220 ")
        assert (await client.command(b"EHLO health.test")).startswith(b"250")
        if auth == "passthrough":
            assert (await client.command(b"AUTH PLAIN " + b64(b"\0alice\0s3cret"))).startswith(b"235 ")
        assert (await client.command(b"MAIL FROM:<alice@corp.example>")).startswith(b"250 ")
        assert (await client.command(b"RCPT TO:<bob@ok.example>")).startswith(b"250 ")
        assert (await client.command(b"DATA")).startswith(b"354 ")
        assert (await client.command(b"Subject: health\r\n\r\nstill here\r\n.")).startswith(b"250 ")
        assert (await client.command(b"QUIT")).startswith(b"221 ")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    assert len(up.received) == before + 1 and up.received[-1].rcpt_tos == ["bob@ok.example"]


# -- the tests ---------------------------------------------------------------------------

CONFIGS = [
    ("reject", "none"),
    ("reject-message", "none"),
    ("strip", "none"),
    ("monitor", "none"),
    ("reject", "passthrough"),
    ("strip", "passthrough"),
]


class Target:
    """The relay under test and its upstream (a short repr: Hypothesis prints it)."""

    def __init__(self, relay: Relay, upstream: Upstream, mode: str, auth: str) -> None:
        self.relay, self.upstream, self.mode, self.auth = relay, upstream, mode, auth

    def __repr__(self) -> str:
        return f"Target(mode={self.mode!r}, auth={self.auth!r})"


@pytest.fixture(params=CONFIGS, ids=[f"{m}-{a}" for m, a in CONFIGS])
async def target(request: pytest.FixtureRequest, make_relay: RelayFactory, upstream: Upstream) -> Target:
    mode, auth = request.param
    relay = await make_relay(
        server={"auth": auth, "max_recipients": 6, "max_message_size": 20_000},
        policy={"mode": mode, "notify_sender": True, "rewrite_headers": True},
    )
    return Target(relay, upstream, mode, auth)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(session=sessions())
async def test_fuzzed_sessions(target: Target, session: Session) -> None:
    up = target.upstream
    rcpt_before, received_before = len(up.rcpt_seen), len(up.received)
    out = await run_session(target.relay, target.mode, target.auth, session)
    check_upstream(target.mode, out, up, rcpt_before, received_before)
    await healthy(target.relay, up, target.auth)
    # Every upstream session the example opened is closed again (QUIT, hang-up,
    # abort) or waits idle in the relay's pool for the next client.
    pool = target.relay.ctx.pool
    assert await wait_for(lambda: up.open_sessions == len(pool)), (
        f"{up.open_sessions} upstream sessions open, {len(pool)} of them pooled"
    )


# -- what the fuzzing found (fixed in smtp/session.py and the handler) ------------------------------------------


async def _raw(relay: Relay) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(relay))
    client = Client(reader, writer, "reject", Outcome())
    assert (await client.reply()).startswith(b"220 ")
    assert (await client.command(b"EHLO client.test")).startswith(b"250")
    return client


async def test_invalid_utf8_in_an_address_gets_a_5xx_not_451(make_relay: RelayFactory, upstream: Upstream) -> None:
    # The refusal echoes the address; its invalid bytes (lone surrogates after
    # aiosmtpd's decoding) used to make the reply unencodable: 451 "something
    # went wrong", which a client retries for days.
    relay = await make_relay(server={"auth": "none"})
    client = await _raw(relay)
    assert (await client.command(b"MAIL FROM:<\xffalice@corp.example>")).startswith(b"501 5.1.7 \\xffalice@")
    assert (await client.command(b"MAIL FROM:<alice@corp.example>")).startswith(b"250 ")
    assert (await client.command(b"RCPT TO:<\xfe\xff@ok.example>")).startswith(b"501 5.1.3 \\xfe\\xff@ok.example ")
    assert (await client.command(b"RCPT TO:<jane.doe@exam\xffple.com>")).startswith(b"501 5.1.3 ")
    assert (await client.command(b"QUIT")).startswith(b"221 ")
    client.writer.close()
    assert upstream.rcpt_seen == []


async def test_strip_sends_no_notice_to_a_suppressed_sender(make_relay: RelayFactory, upstream: Upstream) -> None:
    # The sender notice is mail too: it used to go to the sender whatever the
    # list said, carrying the client's Subject to a suppressed address.
    relay = await make_relay(server={"auth": "none"}, policy={"mode": "strip"})
    client = await _raw(relay)
    for line in (b"MAIL FROM:<Jane.Doe+x@example.com>", b"RCPT TO:<jane.doe@example.com>", b"RCPT TO:<bob@ok.example>"):
        assert (await client.command(line)).startswith(b"250 "), line
    assert (await client.command(b"DATA")).startswith(b"354 ")
    assert (await client.command(b"Subject: for you, Jane\r\n\r\nhi\r\n.")).startswith(b"250 ")
    # A sender who is not suppressed still gets the notice.
    for line in (b"MAIL FROM:<alice@corp.example>", b"RCPT TO:<x@blocked.example>", b"RCPT TO:<bob@ok.example>"):
        assert (await client.command(line)).startswith(b"250 "), line
    assert (await client.command(b"DATA")).startswith(b"354 ")
    assert (await client.command(b"Subject: hello\r\n\r\nhi\r\n.")).startswith(b"250 ")
    assert (await client.command(b"QUIT")).startswith(b"221 ")
    client.writer.close()
    assert [(r.mail_from, r.rcpt_tos, is_notice(r)) for r in upstream.received] == [
        ("Jane.Doe+x@example.com", ["bob@ok.example"], False),
        ("alice@corp.example", ["bob@ok.example"], False),
        ("alice@corp.example", ["alice@corp.example"], True),
    ]
    assert not [a for a in upstream.rcpt_seen if looks_blocked(a)]
