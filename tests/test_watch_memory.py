"""A dropped file that needs too much memory to read cannot take the relay down.

The file is a genuine-looking XLSX whose shared strings table (which openpyxl
holds whole) needs some tens of MB; the watched folder's memory cap is set
below that.  The child reading it fails, the file goes to failed/ with a
clear report, the list is unchanged, and the relay answers SMTP throughout.
"""

from __future__ import annotations

import asyncio
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smtpguard.runtime.server import Relay
from smtpguard.suppression.watch import watch_folder

from .conftest import RelayFactory
from .test_watch import INTERVAL, entries, rcpt_codes, report, until

ROWS = 200_000

_TYPES = (
    '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/sharedStrings.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>'
)
_R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG = "http://schemas.openxmlformats.org/package/2006/relationships"
_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


def xlsx(path: Path, rows: int) -> None:
    """A minimal workbook: column A "Email", one shared string per row."""
    strings = "".join(f"<si><t>person{i}@big-export.example</t></si>" for i in range(rows))
    cells = "".join(f'<row r="{i + 2}"><c r="A{i + 2}" t="s"><v>{i + 1}</v></c></row>' for i in range(rows))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", _TYPES)
        z.writestr(
            "_rels/.rels",
            f'<?xml version="1.0"?><Relationships xmlns="{_PKG}"><Relationship Id="rId1" '
            f'Type="{_R}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        )
        z.writestr(
            "xl/workbook.xml",
            f'<?xml version="1.0"?><workbook xmlns="{_MAIN}" xmlns:r="{_R}"><sheets>'
            '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            f'<?xml version="1.0"?><Relationships xmlns="{_PKG}">'
            f'<Relationship Id="rId1" Type="{_R}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{_R}/sharedStrings" Target="sharedStrings.xml"/></Relationships>',
        )
        z.writestr(
            "xl/sharedStrings.xml",
            f'<?xml version="1.0"?><sst xmlns="{_MAIN}" count="{rows + 1}" uniqueCount="{rows + 1}">'
            f"<si><t>Email</t></si>{strings}</sst>",
        )
        z.writestr(
            "xl/worksheets/sheet1.xml",
            f'<?xml version="1.0"?><worksheet xmlns="{_MAIN}"><sheetData>'
            f'<row r="1"><c r="A1" t="s"><v>0</v></c></row>{cells}</sheetData></worksheet>',
        )


@pytest.fixture
async def capped(make_relay: RelayFactory, tmp_path: Path) -> AsyncIterator[tuple[Relay, Path]]:
    inbox = tmp_path / "inbox"
    relay = await make_relay(watch={"folder": inbox, "interval": INTERVAL, "import_memory_mb": 16})
    task = asyncio.create_task(watch_folder(relay.ctx))
    await until(lambda: (inbox / "failed").is_dir())
    yield relay, inbox
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_file_beyond_the_memory_cap_fails_and_the_relay_keeps_answering(
    capped: tuple[Relay, Path], tmp_path: Path
) -> None:
    relay, inbox = capped
    xlsx(tmp_path / "big.xlsx", ROWS)
    answered: list[float] = []
    failed = inbox / "failed" / "big.xlsx"

    async def client() -> None:
        while not failed.exists():
            t = time.monotonic()
            assert await rcpt_codes(relay, "jane.doe@example.com", "bob@ok.example") == {
                "jane.doe@example.com": 550,
                "bob@ok.example": 250,
            }
            answered.append(time.monotonic() - t)

    (tmp_path / "big.xlsx").rename(inbox / "big.xlsx")
    await asyncio.wait_for(client(), 60)
    text = report(inbox / "failed", "big.xlsx")
    assert "result:     FAILED: reading it needs more than the 16 MB of memory allowed" in text, text
    assert "added:      0 (nothing was changed)" in text
    assert entries(relay) == 2 and len(answered) >= 2 and max(answered) < 2.0
    # The relay is still whole: a new session after the failure works too.
    assert await rcpt_codes(relay, "bob@ok.example") == {"bob@ok.example": 250}


async def test_the_same_file_imports_under_the_default_cap(make_relay: RelayFactory, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    relay = await make_relay(watch={"folder": inbox, "interval": INTERVAL})
    inbox.mkdir()
    xlsx(inbox / "big.xlsx", 20_000)
    task = asyncio.create_task(watch_folder(relay.ctx))
    try:
        await until(lambda: (inbox / "done" / "big.xlsx").exists(), timeout=60)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "added:      20000" in report(inbox / "done", "big.xlsx")
    assert entries(relay) == 2 + 20_000
