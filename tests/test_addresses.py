"""Canonical keys and lookup keys: the matching rules of SPEC.md "Entries and matching"."""

from __future__ import annotations

import unicodedata

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from smtpguard.suppression.addresses import (
    _INVISIBLE,
    AddressError,
    MatchRules,
    RoutingRefused,
    address_key,
    domain_key,
    fast_split,
    lookup_keys,
    parse_entry,
    recipient_key,
    split_address,
    strip_source_route,
)

STRICT_OFF = MatchRules(ignore_subaddress=False, gmail_dots=False)


# --- examples: one per rule ----------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Jane.Doe@Example.COM", "jane.doe@example.com"),
        ("JANE@example.com", "jane@EXAMPLE.com"),
        ("user@bücher.example", "user@xn--bcher-kva.example"),
        ("user@BÜCHER.example", "user@xn--bcher-kva.example"),
        ("jane+news@example.com", "jane@example.com"),
        ("jane+a+b@example.com", "jane@example.com"),
        ("John.Doe+promo@GoogleMail.com", "johndoe@gmail.com"),
        ("j.o.h.n.d.o.e@gmail.com", "johndoe@gmail.com"),
        ("johndoe@googlemail.com", "johndoe@gmail.com"),
        # composed é (U+00E9) vs e + combining acute (U+0301)
        ("jos\u00e9@example.com", "jose\u0301@example.com"),
        # full-width letters are their ASCII forms after NFKC
        ("\uff4a\uff41\uff4e\uff45@example.com", "jane@example.com"),
        ("user@example\uff0ecom", "user@example.com"),
        ("Stra\u00dfe@example.com", "strasse@example.com"),
        ("\u00c9MILE@example.com", "\u00e9mile@example.com"),
        ('"jane"@example.com', "jane@example.com"),
        ('"Jane.Doe"@example.com', "jane.doe@example.com"),
        ("jane@example.com.", "jane@example.com"),
        ("  jane@example.com  ", "jane@example.com"),
    ],
)
def test_same_mailbox(a: str, b: str) -> None:
    assert address_key(a) == address_key(b)


def test_key_shapes() -> None:
    assert address_key("John.Doe+promo@GoogleMail.com") == "johndoe@gmail.com"
    assert address_key("user@bücher.example") == "user@xn--bcher-kva.example"
    assert address_key('"john doe"@example.com') == "john doe@example.com"
    assert address_key('"a\\"b"@example.com') == 'a"b@example.com'
    # a tag needs a user in front of it: "+x" is the whole local part
    assert address_key("+promo@example.com") == "+promo@example.com"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("j.ohn@example.com", "john@example.com"),  # dots matter outside gmail
        ("j.ohn@gmail.com.example", "john@gmail.com.example"),
        ("j.ohn@mail.gmail.com", "john@mail.gmail.com"),
        ("jane@example.com", "jane@example.org"),
        ("jane@example.com", "jane@sub.example.com"),
        ('"jane doe"@example.com', "janedoe@example.com"),
    ],
)
def test_different_mailboxes(a: str, b: str) -> None:
    assert address_key(a) != address_key(b)


def test_rules_switched_off() -> None:
    assert address_key("jane+news@example.com", STRICT_OFF) == "jane+news@example.com"
    assert address_key("John.Doe+promo@GoogleMail.com", STRICT_OFF) == "john.doe+promo@googlemail.com"
    assert address_key("j.ohn@gmail.com", STRICT_OFF) != address_key("john@gmail.com", STRICT_OFF)
    assert address_key("x@googlemail.com", STRICT_OFF) != address_key("x@gmail.com", STRICT_OFF)
    assert domain_key("googlemail.com", STRICT_OFF) == "@googlemail.com"
    # each rule alone
    tags_only = MatchRules(ignore_subaddress=True, gmail_dots=False)
    assert address_key("j.ohn+x@gmail.com", tags_only) == "j.ohn@gmail.com"
    dots_only = MatchRules(ignore_subaddress=False, gmail_dots=True)
    assert address_key("j.ohn+x@googlemail.com", dots_only) == "john+x@gmail.com"


def test_case_and_unicode_still_apply_with_rules_off() -> None:
    assert address_key("JANE@Bücher.Example.", STRICT_OFF) == "jane@xn--bcher-kva.example"


# --- entries and lookup keys -----------------------------------------------------


@pytest.mark.parametrize("text", ["@Example.com", "example.com", " example.com. ", "@EXAMPLE.COM."])
def test_domain_entry_forms(text: str) -> None:
    entry = parse_entry(text)
    assert (entry.key, entry.kind, entry.original) == ("@example.com", "domain", text.strip())


def test_address_and_idn_domain_entries() -> None:
    assert parse_entry("Jane.Doe@Example.com").key == "jane.doe@example.com"
    assert parse_entry("Jane.Doe@Example.com").kind == "address"
    assert parse_entry("bücher.example").key == "@xn--bcher-kva.example"
    assert parse_entry("@xn--bcher-kva.example").key == "@xn--bcher-kva.example"
    assert parse_entry("googlemail.com").key == "@gmail.com"


def test_lookup_keys_order_and_no_bare_tld() -> None:
    assert lookup_keys("jane@a.b.example.com") == [
        "jane@a.b.example.com",
        "@a.b.example.com",
        "@b.example.com",
        "@example.com",
    ]
    assert lookup_keys("jane@example.com") == ["jane@example.com", "@example.com"]
    assert "@com" not in lookup_keys("jane@a.b.example.com")
    # a quoted local part may hold "@": the domain is after the last one
    assert lookup_keys(address_key('"a@b"@x.example.com')) == [
        "a@b@x.example.com",
        "@x.example.com",
        "@example.com",
    ]


def test_domain_entry_covers_subdomains() -> None:
    entry = parse_entry("example.com")
    assert entry.key in lookup_keys(address_key("jane@mail.eu.example.com"))
    assert entry.key not in lookup_keys(address_key("jane@notexample.com"))
    assert entry.key not in lookup_keys(address_key("jane@example.com.evil.org"))


def test_googlemail_domain_entry_covers_its_subdomains() -> None:
    # gmail.com and googlemail.com are one domain, subdomains included
    for entry_text in ("googlemail.com", "gmail.com"):
        key = parse_entry(entry_text).key
        assert key in lookup_keys(address_key("x@googlemail.com"))
        assert key in lookup_keys(address_key("x@gmail.com"))
        assert key in lookup_keys(address_key("x@mail.googlemail.com"))
        assert key in lookup_keys(address_key("x@mail.gmail.com"))
    assert parse_entry("mail.googlemail.com").key in lookup_keys(address_key("x@mail.googlemail.com"))
    # dots are ignored only in the gmail mailboxes themselves
    assert address_key("j.ohn@mail.googlemail.com") != address_key("john@mail.googlemail.com")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("com", "period"),
        ("@com", "period"),
        ("example..com", "two periods"),
        ("-example.com", "hyphen"),
        ("exa mple.com", "invalid characters"),
        ("example.local", "special-use"),
        ("", "empty"),
        ("   ", "empty"),
    ],
)
def test_bad_domain_entries(text: str, words: str) -> None:
    with pytest.raises(AddressError, match=words):
        parse_entry(text)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("jane", "period"),  # read as a domain: one label
        ("jane@", "something after the @-sign"),
        ("@", "period|something"),
        ("jane@@example.com", "invalid characters"),
        ("ja ne@example.com", "invalid characters"),
        (".jane@example.com", "cannot start with a period"),
        ("jane.@example.com", "period immediately before the @-sign"),
        ("ja..ne@example.com", "two periods"),
        ("jane@example", "should have a period"),
        ("jane@example.123", "top-level domain"),
        ("jane@-example.com", "hyphen"),
        ("jane@ab--cd.example.com", "two dashes"),
        ("jane@printer.local", "special-use"),
        ("jane@" + "a" * 64 + ".com", "periods cannot be separated by so many characters"),
        ("j" * 250 + "@example.com", "too long"),
        ("Jane Doe <jane@example.com>", "display name"),
    ],
)
def test_invalid_addresses_say_why(text: str, words: str) -> None:
    with pytest.raises(AddressError, match=words):
        parse_entry(text)


def test_address_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        address_key("no-at-sign")


# --- RCPT paths ---------------------------------------------------------------------


def test_source_route_is_ignored() -> None:
    assert strip_source_route("<@a.example,@b.example:Jane@Example.com>") == "Jane@Example.com"
    assert recipient_key("<@a.example,@b.example:Jane+x@Example.com>") == "jane@example.com"
    assert recipient_key("@relay.example:jane@example.com") == "jane@example.com"
    assert recipient_key("<jane@example.com>") == "jane@example.com"


def test_recipient_uses_the_rules() -> None:
    assert recipient_key("<J.Ohn+x@googlemail.com>") == "john@gmail.com"
    assert recipient_key("<J.Ohn+x@googlemail.com>", STRICT_OFF) == "j.ohn+x@googlemail.com"


@pytest.mark.parametrize(
    "path",
    [
        "<user%victim.example@relay.example>",
        "<victim.example!user@relay.example>",
        '<"user%victim.example"@relay.example>',
        "<@a.example:user%victim.example@relay.example>",
        "<user@[192.0.2.1]>",
        "<user@[IPv6:2001:db8::1]>",
        "<@a.example:user@[192.0.2.1]>",
    ],
)
def test_routing_and_address_literals_are_refused(path: str) -> None:
    with pytest.raises(RoutingRefused):
        recipient_key(path)


@pytest.mark.parametrize("path", ["<>", "<jane>", "<@example.com>", "<jane@>", "<ja ne@example.com>", ""])
def test_bad_recipient_paths(path: str) -> None:
    with pytest.raises(AddressError) as info:
        recipient_key(path)
    assert not isinstance(info.value, RoutingRefused)
    assert str(info.value)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("<user@x.test>", "user@x.test"),
        ("<user@printer.local>", "user@printer.local"),
        ("<User@Intranet.Corp.Local.>", "user@intranet.corp.local"),
        ("<user@localhost>", "user@localhost"),
        ("<user@host.invalid>", "user@host.invalid"),
    ],
)
def test_recipients_at_special_use_domains_are_checked_not_refused(path: str, key: str) -> None:
    # The relay must not refuse internal mail (AD domains often end in .local);
    # such recipients can never be on the list, but they still get a key.
    assert recipient_key(path) == key
    assert address_key(path.strip("<>"), strict=False) == key
    with pytest.raises(AddressError, match="special-use|period"):
        address_key(path.strip("<>"))  # imports stay strict


def test_lenient_split_keeps_length_limits() -> None:
    long_local = "a" * (254 - len("@x.local")) + "x"
    with pytest.raises(AddressError, match="too long"):
        split_address(long_local + "@x.local", strict=False)
    assert split_address("a" * (254 - len("@x.local")) + "@x.local", strict=False)[1] == "x.local"


# --- properties -------------------------------------------------------------------

_ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-"
_GOOD_TLDS = ["com", "org", "example", "museum", "co", "io", "COM", "a" * 63]
_BAD_TLDS = [
    "x", "c0m", "123", "1a", "local", "test", "invalid", "onion", "arpa", "localhost", "LOCAL", "Test",
    "xn--p1ai", "xn--zz", "ab--cd", "com-", "a" * 64,
]  # fmt: skip
_GOOD_LABELS = ["example", "gmail", "googlemail", "mail", "a", "0", "9x", "a-b", "a--b", "EXAMPLE", "x" * 63]
_BAD_LABELS = ["ab--c", "xn--bcher-kva", "xn--", "xn--zz", "XN--BCHER-KVA", "-a", "a-", "", "a_b", "x" * 64]

_good_label = st.one_of(
    st.sampled_from(_GOOD_LABELS), st.from_regex(r"[a-z0-9](?:[a-zA-Z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
)
_bad_label = st.one_of(st.sampled_from(_BAD_LABELS), st.integers(58, 66).map(lambda n: "q" * n))
_good_local = st.from_regex(r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(?:\.[a-zA-Z0-9_+-]{1,8}){0,3}", fullmatch=True)
_bad_local = st.one_of(
    st.sampled_from(["info", "Postmaster", "SALES", "a..b", ".a", "a.", '"a"', '"a b"', "a b", "a\\b", "a@b"]),
    st.integers(60, 70).map(lambda n: "l" * n),
    st.text(_ATEXT + '.@"( )[]:;<>,\\', max_size=6),
)


def _mostly(draw: st.DrawFn, good: st.SearchStrategy[str], bad: st.SearchStrategy[str], odds: int) -> str:
    """A draw from `good`, except one time in `odds` from `bad`."""
    return draw(bad if draw(st.integers(1, odds)) == 1 else good)


@st.composite
def plausible_addresses(draw: st.DrawFn) -> str:
    """ASCII strings near the edge of validity: both sides of every fast-path check."""
    local = _mostly(draw, _good_local, _bad_local, 5)
    labels = [_mostly(draw, _good_label, _bad_label, 8) for _ in range(draw(st.integers(0, 3)))]
    tld = _mostly(draw, st.sampled_from(_GOOD_TLDS), st.sampled_from(_BAD_TLDS), 4)
    domain = ".".join([*labels, tld])
    stretch = draw(st.integers(-4, 12))
    if stretch > 4:
        # pad with full labels so the whole address ends up within a few characters of 254
        target = 254 + stretch - 8
        while len(local) + 1 + len(domain) + 2 <= target:
            domain = "p" * min(63, target - len(local) - len(domain) - 2) + "." + domain
    elif stretch == -4:
        domain = draw(st.sampled_from([".", "-", "@", "[", "."])) + domain
    address = f"{local}@{domain}"
    return address.upper() if stretch == -3 else address


def _validator(address: str) -> tuple[str, str] | None:
    try:
        info = validate_email(address, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=True)
    except EmailNotValidError:
        return None
    return info.local_part, info.ascii_domain


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(plausible_addresses(), st.text(_ATEXT + ".@-", max_size=40)))
@example("a" * 65 + "@example.com")
@example("a@" + "b" * 63 + ".com")
@example("a@xn--bcher-kva.example")
@example("a@ab--cd.com")
@example("a@x.local")
def test_fast_path_agrees(address: str) -> None:
    fast = fast_split(address)
    if fast is None:
        return
    slow = _validator(address)
    assert slow is not None, f"fast path accepted {address!r}, email-validator refuses it"
    # email-validator lower-cases RFC 2142 role names (Info@ -> info@); ASCII case of
    # the local part is folded by the key anyway.
    assert (fast[0].lower(), fast[1]) == (slow[0].lower(), slow[1])
    assert fast[0] == address[: address.rfind("@")]


def test_fast_path_is_exercised_both_ways() -> None:
    # Guards the property above against a strategy that only ever hits one side.
    from hypothesis import find

    find(plausible_addresses(), lambda s: fast_split(s) is not None)
    find(plausible_addresses(), lambda s: fast_split(s) is None and _validator(s) is not None)
    find(plausible_addresses(), lambda s: _validator(s) is None)
    find(plausible_addresses(), lambda s: 240 <= len(s) <= 260 and _validator(s) is not None)


def test_fast_path_declines_what_it_cannot_prove() -> None:
    for address in ["a@xn--bcher-kva.example", "a@x.local", "a@x.test", "é@x.com", '"a"@x.com', "a@x.c0m"]:
        assert fast_split(address) is None
    assert fast_split("John.Doe+x@GMail.COM") == ("John.Doe+x", "gmail.com")


# Unicode whose case mapping round-trips, so a case change is a caseless no-op.
_CASE_SAFE = st.characters(categories=["Ll", "Lu"], max_codepoint=0x052F).filter(
    lambda c: c.upper().casefold() == c.casefold() == c.lower().casefold()
)
_LOCAL_CHARS = st.one_of(
    st.sampled_from("abcXYZ019_-."),
    _CASE_SAFE,
    st.sampled_from("éÉüÜñÑøÅçßﬁｊＡ１"),  # precomposed, ligature, full-width
    # Other letters, less the invisible ones (U+115F HANGUL CHOSEONG FILLER is "Lo"), which
    # addresses refuse on purpose: a key that can never be typed must not be imported.
    st.characters(categories=["Lo"], max_codepoint=0x9FFF).filter(lambda c: _INVISIBLE.search(c) is None),
)
_DOMAINS = st.sampled_from(
    [
        "example.com",
        "Example.ORG",
        "bücher.example",
        "xn--bcher-kva.example",
        "gmail.com",
        "GoogleMail.com",
        "mail.example.co.uk",
        "例え.jp",
        "straße.example",
        "example.com.",
    ]
)


@st.composite
def unicode_addresses(draw: st.DrawFn, plus: bool = True) -> tuple[str, str]:
    words = draw(
        st.lists(st.text(_LOCAL_CHARS.filter(lambda c: c != "."), min_size=1, max_size=6), min_size=1, max_size=3)
    )
    local = ".".join(words)
    if plus and draw(st.booleans()):
        local += "+" + draw(st.text("abc", min_size=0, max_size=4))
    return local, draw(_DOMAINS)


_ALL_RULES = st.builds(MatchRules, st.booleans(), st.booleans())


@settings(max_examples=500, deadline=None)
@given(unicode_addresses(plus=False), _ALL_RULES)
@example(("Jöhn.Doe", "GoogleMail.com"), MatchRules())
def test_address_key_is_idempotent(parts: tuple[str, str], rules: MatchRules) -> None:
    local, domain = parts
    key = address_key(f"{local}@{domain}", rules)
    try:
        again = address_key(key, rules)
    except AddressError:
        # NFKC can turn valid text into text that is not an address (U+FE52 SMALL
        # FULL STOP twice gives "..", U+2474 gives "(1)"): such a key is still a
        # fine key, only not a parseable address.
        assume(False)
    assert again == key


@settings(max_examples=500, deadline=None)
@given(unicode_addresses(), _ALL_RULES, st.sampled_from([str.upper, str.lower, str.title, str.swapcase]))
def test_address_key_ignores_case(parts: tuple[str, str], rules: MatchRules, change: object) -> None:
    local, domain = parts
    assert callable(change)
    # Not for IDN domains: IDNA2008 keeps "ß", so STRASSE.example is another domain than straße.example.
    variant = f"{change(local)}@{change(domain) if domain.isascii() else domain}"
    assert address_key(variant, rules) == address_key(f"{local}@{domain}", rules)


@settings(max_examples=500, deadline=None)
@given(unicode_addresses(), _ALL_RULES, st.sampled_from(["NFC", "NFD", "NFKC", "NFKD"]))
@example(("José", "example.com"), MatchRules(), "NFD")
@example(("ｊｏｈｎ", "example.com"), MatchRules(), "NFKC")
def test_address_key_ignores_unicode_normal_form(parts: tuple[str, str], rules: MatchRules, form: str) -> None:
    local, domain = parts
    variant = unicodedata.normalize(form, local)  # type: ignore[arg-type]
    assert address_key(f"{variant}@{domain}", rules) == address_key(f"{local}@{domain}", rules)


_ENTRY_DOMAINS = st.sampled_from(
    [
        "example.com",
        "gmail.com",
        "googlemail.com",
        "GoogleMail.COM",
        "bücher.example",
        "xn--bcher-kva.example",
        "co.uk",
        "a.b.example.org",
        "例え.jp",
    ]
)


@settings(max_examples=500, deadline=None)
@given(
    _ENTRY_DOMAINS,
    st.sampled_from(["", "@"]),
    st.sampled_from(["", "."]),
    st.lists(st.sampled_from(["mail", "eu", "x-1", "bücher", "A"]), max_size=3),
    unicode_addresses(),
    _ALL_RULES,
)
def test_domain_entry_covers_every_subdomain(
    domain: str, at: str, dot: str, subs: list[str], parts: tuple[str, str], rules: MatchRules
) -> None:
    entry = parse_entry(f"{at}{domain}{dot}", rules)
    assert entry.kind == "domain"
    address = f"{parts[0]}@{'.'.join([*subs, domain])}"
    keys = lookup_keys(address_key(address, rules))
    assert entry.key in keys
    assert all(k.startswith("@") and "." in k for k in keys[1:])  # never a bare TLD


# --- invisible characters: refused in imports as at RCPT --------------------------------

INVISIBLES = ["\u034f", "\ufe0f", "\u3164", "\u200b", "\u2060", "\u115f", "\u17b4", "\ufe00", "\U000e0041"]


@pytest.mark.parametrize("char", INVISIBLES, ids=lambda c: f"U+{ord(c):04X}")
def test_invisible_characters_are_refused_in_list_entries(char: str) -> None:
    for text in (f"jane.do{char}e@example.com", f"{char}jane@example.com", f"jane{char}@gmail.com"):
        with pytest.raises(AddressError, match="invisible character"):
            parse_entry(text)
        with pytest.raises(AddressError, match="invisible character"):
            address_key(text)
        assert fast_split(text) is None  # the fast path never takes them either
