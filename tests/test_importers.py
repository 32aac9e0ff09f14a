"""The importers on files shaped like real exports, detection, and round-trip properties.

Fixtures are made by tests/fixtures/make_fixtures.py; the counts below are
what a person reading each file would expect.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from smtpguard.suppression.addresses import AddressError, MatchRules, address_key, parse_entry
from smtpguard.suppression.formats import (
    FileStats,
    ImportFormatError,
    Reject,
    detect_encoding,
    iter_entries,
    sniff_delimiter,
    sniff_layout,
    total_size,
    write_rejects,
)
from smtpguard.suppression.store import EntryRow, open_store

FIXTURES = Path(__file__).parent / "fixtures"
EXAMPLE = Path(__file__).parent.parent / "examples" / "unsubscribed.csv"
RULES = MatchRules()
ADDED = "2026-03-01T09:00:00+00:00"


def load(path: Path, **kw: object) -> tuple[list[EntryRow], FileStats, list[Reject]]:
    stats, rejects = FileStats(), []  # type: ignore[var-annotated]
    rows = list(
        iter_entries(path, rules=RULES, source="test", reason="unsubscribed", added=ADDED,
                     stats=stats, rejects=rejects, **kw)  # type: ignore[arg-type]
    )  # fmt: skip
    return rows, stats, rejects


def keys(rows: list[EntryRow]) -> set[str]:
    return {r.key for r in rows}


# --- the fixtures ----------------------------------------------------------------


def test_french_semicolon_utf8_bom() -> None:
    rows, stats, rejects = load(FIXTURES / "fr_semicolon_bom.csv")
    assert (stats.rows, len(rows), stats.invalid, stats.blank) == (20, 20, 0, 0)
    assert len(keys(rows)) == 19  # John.Doe@gmail.com and j.o.h.n.doe+promo@googlemail.com
    assert {"johndoe@gmail.com", "juergen@xn--bcher-kva.example", "élodie.durand@exemple.fr",
            "luc.moreau@cabinet-moreau.fr", "camille.simon@groupe-simon.fr"} <= keys(rows)  # fmt: skip
    first = rows[0]
    assert first == EntryRow("jean.dupont@orange.fr", "address", "jean.dupont@orange.fr", "test",
                             "unsubscribed", ADDED, None)  # fmt: skip
    assert rejects == []


def test_windows_1252() -> None:
    rows, stats, rejects = load(FIXTURES / "windows1252.csv")
    assert (stats.rows, len(rows), stats.invalid) == (12, 11, 1)
    assert "zoe@oeuvres-art.fr" in keys(rows)
    # cp1252 decoded as such: the reject shows the name as written.
    assert rejects == [Reject(6, "Renée Noël,Noël SA,renee.noel(at)noel-sa.fr,2024-02-03",
                              "An email address must have an @-sign.")]  # fmt: skip


def test_utf16_excel_unicode_text() -> None:
    rows, stats, _ = load(FIXTURES / "excel_unicode.txt")
    assert (stats.rows, len(rows), stats.invalid) == (10, 10, 0)
    assert {"eleni.papadopoulou@example.gr", "info@xn--bcher-kva.example", "sarah.cohen@example.co.il",
            "olga.ivanova@example.ru"} <= keys(rows)  # fmt: skip


def test_xlsx_first_sheet_title_rows_and_cells() -> None:
    rows, stats, rejects = load(FIXTURES / "humanlinker.xlsx")
    assert (stats.rows, len(rows), stats.invalid, stats.blank) == (12, 11, 1, 1)
    assert {"johndoe@gmail.com", "jurgen@xn--bcher-kva.example", "marie.curie@institut.fr",
            "pierre.martin@example.fr", "sophie@sb-conseil.fr", "leasimon@gmail.com",
            } <= keys(rows)  # fmt: skip
    assert "not.imported@example.com" not in keys(rows)  # second sheet
    assert [(r.line, r.reason) for r in rejects] == [(11, "An email address must have an @-sign.")]
    assert rejects[0].text.startswith("Paul,Numéro,Tel,33612345678")


def test_plain_text_list() -> None:
    rows, stats, rejects = load(FIXTURES / "list.txt")
    assert (stats.rows, len(rows), stats.invalid, stats.blank) == (11, 8, 3, 5)
    by_key = {r.key: r for r in rows}
    assert by_key["@example.org"].kind == "domain"
    assert by_key["@example.net"].original == "example.net"
    assert by_key["@xn--bcher-kva.example"].kind == "domain"
    assert by_key["johndoe@gmail.com"].kind == "address"
    assert {"spaced@example.com", "sales@example.com", "müller@xn--bcher-kva.de"} <= set(by_key)
    assert [r.line for r in rejects] == [11, 15, 16]


def test_hubspot_display_names_and_mailto() -> None:
    rows, stats, rejects = load(FIXTURES / "hubspot_contacts.csv")
    assert (stats.rows, len(rows), stats.invalid) == (10, 10, 0)
    assert keys(rows) == {
        "jane.doe@example.com", "johndoe@gmail.com", "ana.silva@example.com", "bob.stone@example.com",
        "chloe.martin@example.fr", "li.wei@example.cn", "ola@example.no", "max@example.de",
        "eve.adams@example.com", "raj.patel@example.in",
    }  # fmt: skip
    originals = {r.key: r.original for r in rows}
    assert originals["jane.doe@example.com"] == "jane.doe@example.com"  # the address, not the cell
    assert originals["max@example.de"] == "max+news@example.de"  # mailto: is percent-decoded


def test_broken_rows_are_reported_and_good_rows_kept() -> None:
    rows, stats, rejects = load(FIXTURES / "broken.csv")
    assert (stats.rows, len(rows), stats.invalid, stats.blank) == (13, 6, 7, 3)
    assert keys(rows) == {"jean.valide@example.com", "noe@example.com", "anne.bonne@example.com",
                          "hugo@example.com", "ines@example.com", "tom@example.com"}  # fmt: skip
    assert [r.line for r in rejects] == [3, 4, 6, 7, 9, 10, 13]
    reasons = {r.line: r.reason for r in rejects}
    assert "@-sign" in reasons[3]
    assert "2 fields" in reasons[6]
    assert "empty" in reasons[7]
    assert "5 fields" in reasons[9]  # a shifted row says why its address cell is wrong
    assert "unbalanced quote" in reasons[13]
    assert all("\n" not in r.reason and "\n" not in r.text for r in rejects)


def test_example_list_for_the_demo() -> None:
    rows, stats, _ = load(EXAMPLE)
    assert stats.invalid == 0 and 15 <= stats.rows <= 30
    assert {"johndoe@gmail.com", "jane.doe@example.com"} <= keys(rows)
    assert address_key("colleague@example.com") not in keys(rows)


def test_column_forces_the_address_column(tmp_path: Path) -> None:
    path = tmp_path / "two.csv"
    path.write_text("Email;Backup E-mail\nold@example.com;new@example.com\n", encoding="utf-8")
    assert keys(load(path)[0]) == {"old@example.com"}
    assert keys(load(path, column="backup e-mail")[0]) == {"new@example.com"}
    with pytest.raises(ImportFormatError, match=r"Email;Backup E-mail"):
        load(path, column="Courriel")


def test_a_comma_separated_header_is_shown_with_commas(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("Name,Phone,City\nJean,0123,Paris\nMarie,0456,Lyon\n", encoding="utf-8")
    with pytest.raises(ImportFormatError, match="no address column found in header: Name, Phone, City — use --column"):
        load(path)


def test_no_address_column_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("Nom;Prénom;Ville\nDupont;Jean;Paris\nMartin;Marie;Lyon\n", encoding="utf-8")
    with pytest.raises(ImportFormatError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "no address column found in header: Nom;Prénom;Ville — use --column" in str(info.value)  # as in the file


@pytest.mark.parametrize(
    ("content", "why"),
    [(b"", "empty"), (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100), ".xls"),
     (b"PK\x03\x04" + bytes(100), "XLSX"), (b"\x00\x01\x02\x03\x00\xff\x00\x00\x10" * 50, "binary")],
)  # fmt: skip
def test_unusable_files(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFormatError, match=why):
        load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError, match="No such file"):
        load(tmp_path / "nope.csv")
    assert total_size(tmp_path / "nope.csv") == 0


@pytest.mark.parametrize(
    ("name", "text", "counted"),
    [
        ("odd.csv", "Nom|Contact|Ville\nDupont|jean@example.com|Paris\nMartin|marie@example.com|Lyon\n", {"rows": 2}),
        ("bare.csv", "jean@example.com,Jean\nmarie@example.com,Marie\n", {"rows": 2}),
        ("one.csv", "E-mail\njean@example.com\n\nmarie@example.com\n", {"blank": 1}),
    ],
    ids=["header_found_by_content", "headerless_csv", "one_column_csv"],
)
def test_csv_without_a_usual_header(tmp_path: Path, name: str, text: str, counted: dict[str, int]) -> None:
    path = tmp_path / name
    path.write_text(text)
    rows, stats, _ = load(path)
    assert keys(rows) == {"jean@example.com", "marie@example.com"}
    assert {field: getattr(stats, field) for field in counted} == counted


def test_excel_sep_line(tmp_path: Path) -> None:
    sep = tmp_path / "sep.csv"
    sep.write_text("sep=;\r\nName;Email\r\nJean;jean@example.com\r\n")
    assert keys(load(sep)[0]) == {"jean@example.com"}


def test_cp1252_bytes_after_the_sample_still_decode(tmp_path: Path) -> None:
    # The first 64 KiB are ASCII (so UTF-8 is chosen); a cp1252 row comes later.
    path = tmp_path / "late.csv"
    body = "".join(f"n{i};n{i}@example.com\r\n" for i in range(5000))
    path.write_bytes(("Nom;Email\r\n" + body).encode() + "Noël;noël@example.com\r\n".encode("cp1252"))
    rows, stats, _ = load(path)
    assert stats.rows == 5001 and stats.invalid == 0
    assert rows[-1].original == "noël@example.com"


def test_progress_counts_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("Email\n" + "".join(f"user{i}@example.com\n" for i in range(20000)))
    calls: list[int] = []
    rows, _, _ = load(path, progress=calls.append)
    assert len(rows) == 20000
    assert sum(calls) == total_size(path) == path.stat().st_size
    assert 2 <= len(calls) <= 20  # not once a row


def test_xlsx_progress_counts_rows() -> None:
    calls: list[int] = []
    load(FIXTURES / "humanlinker.xlsx", progress=calls.append)
    assert sum(calls) == total_size(FIXTURES / "humanlinker.xlsx") == 16


def test_write_rejects(tmp_path: Path) -> None:
    _, _, rejects = load(FIXTURES / "broken.csv")
    out = tmp_path / "rejects.csv"
    write_rejects(out, rejects)
    with out.open(encoding="utf-8", newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["line", "text", "reason"]
    assert [int(r[0]) for r in table[1:]] == [3, 4, 6, 7, 9, 10, 13]
    assert table[4][1] == "Zoé;Vide;;2024-01-02"


def test_rejects_list_is_optional() -> None:
    stats = FileStats()
    rows = list(iter_entries(FIXTURES / "broken.csv", rules=RULES, source="s", reason="r",
                             added=ADDED, stats=stats))  # fmt: skip
    assert len(rows) == 6 and stats.invalid == 7


def test_matching_rules_and_expiry_are_applied(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("email\nJohn.Doe+x@gmail.com\n")
    stats = FileStats()
    rules = MatchRules(ignore_subaddress=False, gmail_dots=False)
    [row] = iter_entries(path, rules=rules, source="s", reason="r", added=ADDED, expires="2027-01-01",
                         stats=stats)  # fmt: skip
    assert row.key == "john.doe+x@gmail.com" and row.expires == "2027-01-01"


# --- detection ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (codecs.BOM_UTF8 + b"email\n", "utf-8-sig"),
        (codecs.BOM_UTF16_LE + "email\n".encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + "email\n".encode("utf-16-be"), "utf-16"),
        ("email;nom\nj@x.fr;Zoé\n".encode("utf-16-le"), "utf-16-le"),
        ("email;nom\nj@x.fr;Zoé\n".encode("utf-16-be"), "utf-16-be"),
        ("Prénom;email\n".encode(), "utf-8"),
        ("Prénom;email\n".encode("cp1252"), "cp1252"),
        (b"plain ascii\n", "utf-8"),
    ],
)
def test_detect_encoding(sample: bytes, expected: str) -> None:
    assert detect_encoding(sample, final=True) == expected


def test_detect_encoding_tolerates_a_cut_utf8_character() -> None:
    sample = ("é" * 10).encode()[:-1]  # the sample ends inside a character
    assert detect_encoding(sample, final=False) == "utf-8"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["a;b;c", "1;2;3", "4;5;6"], ";"),
        (["a,b,c", "1,2,3"], ","),
        (["a\tb", "1\t2"], "\t"),
        (["a|b", "1|2"], "|"),
        (["Nom;Société;Email", 'Dupont;"ACME, Inc";j@x.fr', 'Martin;"B, C";m@x.fr'], ";"),
        (["name,email", '"Doe; Jane",j@x.fr', '"Roe; Ann",a@x.fr'], ","),
        (["jane@example.com", "example.net"], None),
    ],
)
def test_sniff_delimiter(lines: list[str], expected: str | None) -> None:
    assert sniff_delimiter(lines) == expected


def test_sniff_layout_text_vs_csv() -> None:
    assert sniff_layout("# list\njane@example.com\n@example.org\n", final=True).kind == "text"
    layout = sniff_layout("Prénom;Nom;Adresse e-mail\nJean;D;j@x.fr\n", final=True)
    assert (layout.kind, layout.delimiter, layout.column, layout.skip, layout.width) == ("csv", ";", 2, 1, 3)


@pytest.mark.parametrize(
    "header",
    ["Email", "E-mail", "MAIL", "Email Address", "E-mail Address", "Adresse e-mail", "Adresse email",
     "adresse mail", "Courriel", "Work Email", "email_address", "EmailAddress", "Contact Email", "Email 1",
     "\ufeff\"Adresse E-Mail\"", "Adresse électronique de courriel"],
)  # fmt: skip
def test_address_header_names(header: str) -> None:
    layout = sniff_layout(f"Nom;{header};Email Status\nX;n/a;valid\n", final=True)
    assert layout.column == 1


# --- properties ------------------------------------------------------------------------

_LOCAL = st.from_regex(r"[A-Za-z0-9]{1,8}(\.[A-Za-z0-9_-]{1,6}){0,2}(\+[a-z0-9]{1,5})?", fullmatch=True)
_LABEL = st.one_of(st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True), st.sampled_from(["bücher", "société"]))
_DOMAIN = st.tuples(
    st.sampled_from(["", "mail.", "eu."]), _LABEL, st.sampled_from(["com", "fr", "org", "de", "co.uk"])
).map(lambda t: f"{t[0]}{t[1]}.{t[2]}")
ADDRESSES = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, st.one_of(_DOMAIN, st.just("gmail.com")))
# "X" becomes the file's delimiter: names that need quoting, and quoted line breaks.
NAMES = st.text(alphabet="abcdefgh ÉéèçàüØ'-X\"\n", max_size=12)
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "cp1252"]
QUOTING = [csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]


def valid(address: str) -> bool:
    try:
        address_key(address, RULES)
    except AddressError:
        return False
    return True


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(NAMES, ADDRESSES), min_size=1, max_size=40),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    quoting=st.sampled_from(QUOTING),
    encoding=st.sampled_from(ENCODINGS),
    newline=st.sampled_from(["\r\n", "\n"]),
    email_first=st.booleans(),
)
def test_csv_round_trip(
    tmp_path: Path,
    rows: list[tuple[str, str]],
    delimiter: str,
    quoting: Literal[0, 1, 2, 3],
    encoding: str,
    newline: str,
    email_first: bool,
) -> None:
    rows = [(name, address) for name, address in rows if valid(address)]
    assume(rows)
    table = [("Email", "Nom complet")] + [(a, n.replace("X", delimiter)) for n, a in rows]
    if not email_first:
        table = [(b, a) for a, b in table]
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator=newline).writerows(table)
    try:
        data = out.getvalue().encode(encoding)
    except UnicodeEncodeError:
        assume(False)
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    got, stats, rejects = load(path)
    assert rejects == []
    assert stats.rows == len(rows)
    assert keys(got) == {address_key(a, RULES) for _, a in rows}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    entries=st.lists(st.one_of(ADDRESSES, _DOMAIN, _DOMAIN.map(lambda d: "@" + d)), min_size=1, max_size=40),
    comments=st.lists(st.sampled_from(["# comment", "", "   ", "#"]), max_size=5),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
)
def test_text_list_round_trip(tmp_path: Path, entries: list[str], comments: list[str], encoding: str) -> None:
    entries = [e for e in entries if valid(e) or "@" not in e[1:]]
    parsed = []
    for e in entries:
        try:
            parsed.append(parse_entry(e, RULES))
        except AddressError:
            continue
    assume(parsed)
    lines = comments + [p.original for p in parsed]
    path = tmp_path / "list.txt"
    path.write_bytes("\n".join(lines).encode(encoding))
    got, stats, rejects = load(path)
    assert rejects == []
    assert [(r.key, r.kind) for r in got] == [(p.key, p.kind) for p in parsed]


# --- with the store ---------------------------------------------------------------------


async def store_keys(db: Path) -> set[str]:
    store = await open_store(db, RULES)
    try:
        return {e.key async for e in store.entries()}
    finally:
        await store.close()


async def test_import_into_the_store(tmp_path: Path) -> None:
    store = await open_store(tmp_path / "x.db", RULES)
    try:
        stats = FileStats()
        rows = iter_entries(FIXTURES / "fr_semicolon_bom.csv", rules=RULES, source="lemlist",
                            reason="unsubscribed", added=ADDED, stats=stats)  # fmt: skip
        result = await store.add_entries(rows)
    finally:
        await store.close()
    assert (result.rows, result.added, result.duplicates) == (20, 19, 1)
    assert "johndoe@gmail.com" in await store_keys(tmp_path / "x.db")


async def test_failed_import_leaves_the_store_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    store = await open_store(db, RULES)
    try:
        await store.add_entries(load(FIXTURES / "hubspot_contacts.csv")[0])
        before = await store_keys(db)

        def interrupted() -> Iterator[EntryRow]:
            for n, row in enumerate(load(FIXTURES / "fr_semicolon_bom.csv")[0]):
                if n == 5:
                    raise KeyboardInterrupt  # Ctrl-C half-way through the file
                yield row

        with pytest.raises(KeyboardInterrupt):
            await store.add_entries(interrupted())
        assert await store_keys(db) == before

        # A format error surfaces from inside the transaction too.
        people = tmp_path / "people.csv"
        people.write_text("Nom;Ville\nDupont;Paris\n")
        with pytest.raises(ImportFormatError):
            await store.add_entries(iter_entries(people, rules=RULES, source="s", reason="r", added=ADDED,
                                                 stats=FileStats()))  # fmt: skip
        assert await store_keys(db) == before

        # Stopped by the progress callback after thousands of rows were read.
        big = tmp_path / "big.csv"
        big.write_text("Email\n" + "".join(f"user{i}@example.com\n" for i in range(30000)))

        def stop(_: int) -> None:
            raise RuntimeError("disk full")

        with pytest.raises(RuntimeError, match="disk full"):
            await store.add_entries(iter_entries(big, rules=RULES, source="s", reason="r", added=ADDED,
                                                 stats=FileStats(), progress=stop))  # fmt: skip
        assert await store_keys(db) == before
    finally:
        await store.close()


def test_invisible_characters_are_counted_invalid_never_added(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    hidden = ["jane.do\u034fe@example.com", "bob\ufe0f@example.com", "\u3164ann@example.com", "zo\u200be@example.com"]
    path.write_text("Email\n" + "\n".join([*hidden, "ok@example.com"]) + "\n", encoding="utf-8")
    got, stats, rejects = load(path)
    assert keys(got) == {"ok@example.com"}
    assert (stats.rows, stats.invalid) == (5, 4)
    assert all("invisible character" in r.reason for r in rejects)


# --- hostile XLSX files --------------------------------------------------------------------


def _xlsx_with(path: Path, replace: dict[str, bytes | Iterator[bytes]]) -> None:
    """A real workbook (openpyxl) whose members named in `replace` are swapped."""
    import io
    import zipfile

    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Email", "Name"])
    for i in range(20):
        sheet.append([f"user{i}@example.com", f"User {i}"])
    buf = io.BytesIO()
    book.save(buf)
    strings = b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>'  # noqa: E501
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        names = src.namelist() + [n for n in replace if n not in src.namelist()]
        for name in names:
            new = replace.get(name)
            if new is None:
                data = src.read(name)
                if name == "[Content_Types].xml" and "xl/sharedStrings.xml" in replace:
                    data = data.replace(b"</Types>", strings)
                out.writestr(name, data)
            elif isinstance(new, bytes):
                out.writestr(name, new)
            else:
                with out.open(name, "w", force_zip64=True) as fh:
                    for part in new:
                        fh.write(part)


def test_an_xlsx_shared_strings_bomb_is_refused_before_memory_grows(tmp_path: Path) -> None:
    import tracemalloc

    def strings() -> Iterator[bytes]:
        # ~90 MB of XML in ~100 KB: three million strings openpyxl would each keep
        yield b'<?xml version="1.0"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        chunk = b"<si><t>bomb@example.com</t></si>" * 10_000
        for _ in range(300):
            yield chunk
        yield b"</sst>"

    path = tmp_path / "bomb.xlsx"
    _xlsx_with(path, {"xl/sharedStrings.xml": strings()})
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(ImportFormatError, match="refused.*sharedStrings.xml.*ZIP bomb"):
            load(path)
        assert total_size(path) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 1024 * 1024


def test_an_xlsx_with_truncated_xml_is_one_clear_error(tmp_path: Path) -> None:
    import zipfile

    good = tmp_path / "good.xlsx"
    _xlsx_with(good, {})
    with zipfile.ZipFile(good) as z:
        sheet = z.read("xl/worksheets/sheet1.xml")
    path = tmp_path / "cut.xlsx"
    _xlsx_with(path, {"xl/worksheets/sheet1.xml": sheet[: len(sheet) * 2 // 3]})
    with pytest.raises(ImportFormatError, match=r"cut\.xlsx: not a readable XLSX workbook \(broken sheet"):
        load(path)


async def test_import_file_parses_in_a_worker_thread_whatever_the_backend(tmp_path: Path) -> None:
    import threading

    from smtpguard.suppression.ingest import import_file
    from smtpguard.suppression.store import MemoryStore

    path = tmp_path / "list.txt"
    path.write_text("".join(f"user{i}@example.com\n" for i in range(10_000)))
    for store in (MemoryStore(RULES), await open_store(tmp_path / "x.db", RULES)):
        threads: set[int] = set()

        def note(_: int, seen: set[int] = threads) -> None:
            seen.add(threading.get_ident())

        try:
            done = await import_file(store, path, progress=note)
            assert (done.stats.rows, done.result.added, await store.count()) == (10_000, 10_000, 10_000)
        finally:
            await store.close()
        assert threads and threading.get_ident() not in threads  # never on the event loop's thread
