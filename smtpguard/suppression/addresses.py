"""Address and domain canonicalisation, and the keys a recipient is looked up by.

Pure functions, no I/O. The canonical key of an address is
``local@ascii-domain`` where the local part is unquoted, NFKC-normalised and
case-folded, with its sub-address tag dropped (RFC 5233) and, for gmail.com /
googlemail.com, its dots removed.  A domain entry's key is ``@ascii-domain``.

Syntax and IDNA are email-validator's.  It costs ~40 µs an address, so
ordinary ASCII addresses take a fast path that only *accepts* what
email-validator provably accepts with the same result (see
tests/test_addresses.py, property ``test_fast_path_agrees``); anything else
falls through to email-validator.
"""

from __future__ import annotations

import re
import socket
import unicodedata
from dataclasses import dataclass
from typing import Literal

from email_validator import (
    SPECIAL_USE_DOMAIN_NAMES,
    EmailNotValidError,
    validate_email,
)

# "allow": an exception (Postfix's OK in an access table) for an address or a
# (sub)domain inside a blocked one; its `original` says which (see rekey).
Kind = Literal["address", "domain", "allow"]

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)

# RFC 5322 atext, dot-atom; an ASCII hostname whose labels never hold "--"
# (so no Punycode and no reserved R-LDH labels) and whose TLD is letters only.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_FAST_ADDRESS = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@((?:{_LABEL}\.)+[a-z]{{2,63}})")
_FAST_DOMAIN = re.compile(rf"(?:{_LABEL}\.)+[a-z]{{2,63}}")
# A mailbox as most clients send it, loosely (any case, hyphens anywhere in a
# label): the SMTP side's fast paths, whose answer e-mail parsers agree with.
PLAIN_MAILBOX = rf"{_ATEXT}+(?:\.{_ATEXT}+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"


class AddressError(ValueError):
    """The text is not a usable address or domain; the message says why."""


@dataclass(frozen=True, slots=True)
class MatchRules:
    """The `[matching]` settings: which spellings count as the same mailbox."""

    ignore_subaddress: bool = True
    gmail_dots: bool = True

    def tag(self) -> str:
        """A short stable text that changes whenever the rules (or how keys are made) change."""
        # keys=2: googlemail.com subdomains became gmail.com ones; stores re-key on open.
        return f"keys={KEYS_VERSION};subaddress={int(self.ignore_subaddress)};gmail_dots={int(self.gmail_dots)}"

    @classmethod
    def from_tag(cls, tag: str) -> tuple[MatchRules, bool]:
        """The rules a `tag()` names, and whether its keys are made the current way."""
        fields = dict(part.partition("=")[::2] for part in tag.split(";"))
        rules = cls(fields.get("subaddress", "1") != "0", fields.get("gmail_dots", "1") != "0")
        return rules, fields.get("keys") == str(KEYS_VERSION)

    def describe(self) -> str:
        """As the configuration spells them: `ignore_subaddress = true, gmail_dots = false`."""
        return f"ignore_subaddress = {str(self.ignore_subaddress).lower()}, gmail_dots = {str(self.gmail_dots).lower()}"


KEYS_VERSION = 2


DEFAULT_RULES = MatchRules()


@dataclass(frozen=True, slots=True)
class Entry:
    """One parsed list entry: its canonical key, kind and the text as given."""

    key: str
    kind: Kind
    original: str


def fold(text: str) -> str:
    """Unicode caseless form: NFKC, case fold, NFKC again (NFKC_Casefold-like)."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def _local_key(local: str, ascii_domain: str, rules: MatchRules) -> str:
    local = fold(local)
    if rules.ignore_subaddress:
        plus = local.find("+")
        if plus > 0:
            local = local[:plus]
    if rules.gmail_dots and ascii_domain in GMAIL_DOMAINS:
        local = local.replace(".", "")
    return local


def _domain_key(ascii_domain: str, rules: MatchRules) -> str:
    # googlemail.com is gmail.com, subdomains included, so that a domain entry
    # for either covers `x@mail.googlemail.com` (lookup_keys walks parents).
    if rules.gmail_dots and (ascii_domain == "googlemail.com" or ascii_domain.endswith(".googlemail.com")):
        return ascii_domain[: -len("googlemail.com")] + "gmail.com"
    return ascii_domain


def _special_use(domain: str) -> bool:
    return domain.rsplit(".", 1)[-1] in _SPECIAL_USE


def fast_split(address: str) -> tuple[str, str] | None:
    """(local, ascii domain) for a plain ASCII address email-validator accepts.

    None means "not sure": the caller must ask email-validator.
    """
    if len(address) > 254 or not address.isascii():
        return None
    at = address.rfind("@")
    if at < 0:
        return None
    local, domain = address[:at], address[at + 1 :].lower()
    if len(domain) > 253 or "--" in domain:
        return None
    m = _FAST_ADDRESS.fullmatch(f"{local}@{domain}")
    if m is None or _special_use(domain):
        return None
    return local, domain


# Unicode Default_Ignorable_Code_Point (DerivedCoreProperties.txt): invisible
# and meaningless in a name.  email-validator refuses most of them, but lets
# U+034F, U+115F/U+1160, U+17B4/U+17B5, the variation selectors and the Hangul
# fillers through, and NFKC keeps them: `jane.do\u034fe@` would look like the
# suppressed address without its key.  Refused everywhere (RCPT and imports:
# an entry holding one could never match, yet would count as added).
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)


def _invisible(address: str) -> None:
    if (bad := _INVISIBLE.search(address)) is not None:
        name = unicodedata.name(bad.group(), f"U+{ord(bad.group()):04X}")
        raise AddressError(f"the address contains an invisible character ({name})")


def _unquote(local: str) -> str:
    # email-validator returns quoted local parts with their quotes; compare the
    # content (RFC 5321 4.1.2: "a"@x and a@x are the same mailbox).
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        return re.sub(r"\\(.)", r"\1", local[1:-1])
    return local


def split_address(address: str, *, strict: bool = True) -> tuple[str, str]:
    """(unquoted local part, ASCII domain) of an address, or AddressError.

    `strict` wants a globally deliverable domain (imports); the relay passes
    False so that a recipient at `.local` or `.test` can still be checked.
    """
    address = address.strip()
    if address.endswith("."):
        address = address[:-1]  # a trailing dot on the domain is the same domain
    fast = fast_split(address)
    if fast is not None:
        return fast
    if not address.isascii():
        _invisible(address)
    special = None
    if not strict:
        # email-validator refuses special-use names (.local, localhost, ...) even
        # with test_environment; a relay must still check `user@corp.local`.  The
        # names are ASCII, so validate with `test` (always allowed there) in their
        # place and put them back.
        at = address.rfind("@")
        head, _, last = address[at + 1 :].rpartition(".")
        if at > 0 and last.lower() in _SPECIAL_USE and last.lower() != "test":
            special = last.lower()
            address = f"{address[: at + 1]}{head}{'.' if head else ''}test"
    try:
        info = validate_email(
            address,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=True,
            allow_domain_literal=False,
            globally_deliverable=strict,
            test_environment=not strict,
        )
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from None
    domain = info.ascii_domain
    if special is not None:
        domain = domain[: -len("test")] + special
        if len(info.original) - 4 + len(special) > 254:
            raise AddressError("The email address is too long.")
    return _unquote(info.local_part), domain


def address_key(address: str, rules: MatchRules = DEFAULT_RULES, *, strict: bool = True) -> str:
    """Canonical key of one address: `John.Doe+x@GoogleMail.com` -> `johndoe@gmail.com`."""
    local, domain = split_address(address, strict=strict)
    return f"{_local_key(local, domain, rules)}@{_domain_key(domain, rules)}"


def domain_key(domain: str, rules: MatchRules = DEFAULT_RULES) -> str:
    """Canonical key of a domain entry: `Bücher.Example.` -> `@xn--bcher-kva.example`."""
    text = domain.strip().removeprefix("@")
    if text.endswith("."):
        text = text[:-1]
    lowered = text.lower()
    if (
        lowered.isascii()
        and "--" not in lowered
        and _FAST_DOMAIN.fullmatch(lowered)
        and len(lowered) <= 253
        and not _special_use(lowered)
    ):
        ascii_domain = lowered
    else:
        # Validate the domain the same way as an address's, with a stand-in local part.
        try:
            ascii_domain = validate_email(f"x@{text}", check_deliverability=False, allow_smtputf8=True).ascii_domain
        except EmailNotValidError as exc:
            raise AddressError(str(exc).replace("after the @-sign", "in the domain")) from None
    return f"@{_domain_key(ascii_domain, rules)}"


def parse_entry(text: str, rules: MatchRules = DEFAULT_RULES) -> Entry:
    """An address (`jane@x.com`) or a domain (`@x.com` or `x.com`) as a list entry."""
    raw = text.strip()
    if not raw:
        raise AddressError("empty entry")
    if raw.startswith("@") or "@" not in raw:
        return Entry(domain_key(raw, rules), "domain", raw)
    return Entry(address_key(raw, rules), "address", raw)


def rekey(original: str, kind: Kind, rules: MatchRules) -> str:
    """The key of a stored entry under (possibly different) matching rules."""
    if kind == "allow":
        return parse_entry(original, rules).key
    if kind == "domain":
        return domain_key(original, rules)
    return address_key(original, rules)


def lookup_keys(address_key_: str) -> list[str]:
    """Keys to look a canonical address up by, most specific first.

    `jane@a.b.example.com` -> the address, then `@a.b.example.com`,
    `@b.example.com`, `@example.com` (Postfix's order: address, domain,
    parent domains).  A bare TLD is never a key: domain entries need a dot.
    """
    domain = address_key_.rsplit("@", 1)[1]
    keys = [address_key_]
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        keys.append("@" + ".".join(labels[i:]))
    return keys


# --- RCPT paths --------------------------------------------------------------


class RoutingRefused(AddressError):
    """Sender-specified routing or an address literal: refused with 553 5.7.1."""


# Postfix's "sender-specified routing" is user[@%!]remote[@%!]site: an "@" can
# only be in a local part when quoted ("user@remote"@relay), and still routes.
_ROUTING = re.compile(r"[@%!]")


def _numeric_host(ascii_domain: str) -> bool:
    """`192.0.2.1`, `127.1`, `0x7f.0.0.1`: an IP address without brackets.

    No top-level domain is all digits; a resolver (getaddrinfo, inet_aton)
    reads such a name as an address, so it is an address literal in disguise.
    """
    if ascii_domain.rsplit(".", 1)[-1].isdigit():
        return True
    try:
        socket.inet_aton(ascii_domain)
    except OSError:
        return False
    return True


def strip_source_route(path: str) -> str:
    """`@a,@b:user@domain` -> `user@domain` (RFC 5321 4.1.2 ignores A-d-l)."""
    path = path.strip()
    if path.startswith("<") and path.endswith(">"):
        path = path[1:-1]
    if path.startswith("@"):
        colon = path.find(":")
        if colon > 0:
            return path[colon + 1 :]
    return path


def recipient_key(path: str, rules: MatchRules = DEFAULT_RULES) -> str:
    """The canonical key of an RCPT TO path, or RoutingRefused / AddressError.

    The local part must not route further (`user%host@relay`,
    `host!user@relay`, `"user@host"@relay`) and the domain must be a name,
    not `[192.0.2.1]` nor `192.0.2.1`: either would reach a mailbox without
    the list seeing its domain.  Invisible characters are refused.
    """
    address = strip_source_route(path)
    at = address.rfind("@")
    if at <= 0:
        raise AddressError("a recipient needs a user and a domain (user@example.com)")
    if address[at + 1 :].startswith("["):
        raise RoutingRefused("address literals are not accepted, use the domain name")
    local, domain = split_address(address, strict=False)  # refuses invisible characters
    # Checked after NFKC too: U+FF05 FULLWIDTH PERCENT SIGN keys as "%".
    if _ROUTING.search(local) or (not local.isascii() and _ROUTING.search(fold(local))):
        raise RoutingRefused("sender-specified routing (%, ! or @ in the user part) is not accepted")
    if _numeric_host(domain):
        raise RoutingRefused("an IP address is not accepted in place of a domain name, use the domain name")
    return f"{_local_key(local, domain, rules)}@{_domain_key(domain, rules)}"
