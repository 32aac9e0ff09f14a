"""One cell or line of an export file -> an entry, or a counted, reported reject."""

from __future__ import annotations

from smtpguard.suppression.addresses import AddressError, MatchRules, address_key, parse_entry
from smtpguard.suppression.formats.sniff import (
    INLINE_COMMENT,
    REASON_MAX,
    TEXT_MAX,
    FileStats,
    Reject,
    clean_cell,
    one_line,
)
from smtpguard.suppression.store import EntryRow


class RowReader:
    """The careful path for the rows the flat loops do not take: counts, rejects, cleanup."""

    def __init__(
        self,
        rules: MatchRules,
        fields: tuple[str, str, str | None],
        stats: FileStats,
        rejects: list[Reject] | None,
    ) -> None:
        self.rules = rules
        self.source, self.reason, self.expires = fields
        self.stats = stats
        self.rejects = rejects

    def reject(self, line: int, text: str, reason: str) -> None:
        self.stats.invalid += 1
        if self.rejects is not None:
            self.rejects.append(Reject(line, one_line(text, TEXT_MAX), one_line(reason, REASON_MAX)))

    def row(self, key: str, kind: str, original: str, added: str) -> EntryRow:
        return EntryRow(key, "domain" if kind == "domain" else "address", original, self.source,
                        self.reason, added, self.expires)  # fmt: skip

    def address(self, cell: str, line: int, text: str, added: str, note: str = "") -> EntryRow | None:
        """A data row whose address cell is `cell`; None when it is rejected."""
        self.stats.rows += 1
        address = clean_cell(cell)
        if not address:
            self.reject(line, text, "the address cell is empty" + note)
            return None
        try:
            if address.startswith("@"):  # a whole domain, as `smtpguard add` and export write it
                entry = parse_entry(address, self.rules)
                return self.row(entry.key, entry.kind, entry.original, added)
            key = address_key(address, self.rules)
        except AddressError as exc:
            self.reject(line, text, str(exc) + note)
            return None
        return self.row(key, "address", address, added)

    def allow(self, cell: str, line: int, text: str) -> None:
        """An allow entry of an export: never turned into a block; said how to re-create it."""
        self.stats.rows += 1
        self.reject(
            line,
            text,
            f"an allow entry (an exception), not imported: re-create it with `smtpguard allow {clean_cell(cell)}`",
        )

    def entry(self, raw: str, line: int, added: str) -> EntryRow | None:
        """A line of a text list: an address or a domain, maybe with a `# comment`."""
        text = INLINE_COMMENT.split(raw, 1)[0].strip()
        if not text or text.startswith("#"):
            self.stats.blank += 1
            return None
        self.stats.rows += 1
        if "<" in text or ":" in text or text[0] in "\"'":
            text = clean_cell(text)
        try:
            entry = parse_entry(text, self.rules)
        except AddressError as exc:
            what = "" if "@" in text[1:] else "not an address, nor a domain: "
            self.reject(line, raw, what + str(exc))
            return None
        return self.row(entry.key, entry.kind, entry.original, added)
