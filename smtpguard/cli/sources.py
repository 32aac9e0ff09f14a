"""A whole source at once: `import --replace` (the list follows its source) and `remove --source`."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import typer

from smtpguard.cli.options import fail, run
from smtpguard.cli.output import emit_json, plural
from smtpguard.config import Settings
from smtpguard.service import ReplaceResult, open_service

DIFF_LINES = 20  # per side, in the text output of a dry run


def diff_lines(r: ReplaceResult, dry_run: bool) -> list[str]:
    verb = ("would add", "would remove") if dry_run else ("added", "removed")
    lines = [
        f"{r.file}: source {r.source!r}: {verb[0]} {r.added_count:,}, {verb[1]} {r.removed_count:,},"
        f" {r.unchanged:,} unchanged; {plural(r.elsewhere, 'entry', 'entries')} listed by another source"
        f" and left there, {r.invalid:,} invalid"
    ]
    if dry_run:
        for sign, found in (("+", r.added), ("-", r.removed)):
            lines += [f"  {sign} {e}" for e in found[:DIFF_LINES]]
            if len(found) > DIFF_LINES:
                lines.append(f"  {sign} … {len(found) - DIFF_LINES:,} more")
    return lines


def replace_import(
    settings: Settings, files: list[str], source: str | None, *, dry_run: bool, force: bool, json_: bool, **opts: Any
) -> None:
    """`import FILE --source NAME --replace`."""
    if len(files) != 1 or files[0] == "-":
        fail("--replace takes exactly one file (not -): the file becomes the whole of its source")
    path = Path(files[0])
    name = source or path.stem

    async def main() -> ReplaceResult:
        async with open_service(settings) as service:
            return await service.replace_source(path, source=name, dry_run=dry_run, force=force, **opts)

    r = run(main)
    if json_:
        d = asdict(r)
        d["rejects"] = d["rejects"][:20]
        emit_json({**d, "dry_run": dry_run})
        return
    for line in diff_lines(r, dry_run):
        typer.echo(line)
    for rej in r.rejects[:5]:
        typer.echo(f"  line {rej.line}: {rej.text!r}: {rej.reason}", err=True)
    if dry_run:
        typer.echo("dry run: nothing was changed")


def remove_source(settings: Settings, source: str, *, yes: bool, json_: bool) -> None:
    """`remove --source NAME`: every entry of one source (after a confirmation)."""

    async def count() -> int:
        async with open_service(settings, create=False) as service:
            return await service.source_count(source)

    found = run(count)
    if not found:
        fail(f"source {source!r} has no entries; nothing removed", code=1)
    if not yes:
        typer.confirm(f"remove all {plural(found, 'entry', 'entries')} of source {source!r}?", abort=True, err=True)

    async def main() -> int:
        async with open_service(settings, create=False) as service:
            return await service.remove_source(source)

    gone = run(main)
    if json_:
        emit_json({"source": source, "removed": gone})
    else:
        typer.echo(f"removed {plural(gone, 'entry', 'entries')} of source {source!r}")
