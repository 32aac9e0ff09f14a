"""Reading a dropped file in a child process whose memory is capped.

Files in the watched folder come from people and tools we do not control: an
XLSX bomb (61 KB of ZIP, hundreds of MB of shared strings) read inside the
relay would take the relay down with it.  So the watcher parses each file in
`python -m smtpguard.suppression.watchchild`, under RLIMIT_AS (its size after
start-up plus `[watch] import_memory_mb`), and only writes the entries the
child streams back.  The list is still written by the relay, in one
transaction: a child that fails, for any reason, makes the import raise and
the transaction roll back.

The child gets the file as an inherited descriptor (opened by the watcher
without following symlinks) and writes one JSON array per line on stdout:
`["E", key, kind, original]` an entry, `["R", line, text, reason]` a refused
row, then `["S", rows, invalid, blank]` at the end, or `["X", message]` when
the file is unusable, or `["M"]` when it ran out of memory.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.formats import FileStats, ImportFormatError, Reject
from smtpguard.suppression.store import EntryRow

_MEMORY_EXIT = 3


class TooBig(ImportFormatError):
    """The file needs more memory to read than the watched folder allows."""


@dataclass
class ChildImport:
    """One child reading one file; `rows()` is the entry stream for `Store.add_entries`."""

    fd: int
    source: str
    reason: str
    added: str
    rules: MatchRules
    memory_mb: int
    stats: FileStats = field(default_factory=FileStats)
    rejects: list[Reject] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [json.dumps([self.fd, self.source, self.reason, self.added, self.rules.ignore_subaddress,
                            self.rules.gmail_dots, self.memory_mb])]  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smtpguard.suppression.watchchild", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            pass_fds=(self.fd,),
        )

    def rows(self) -> Iterator[EntryRow]:
        """The entries, read from the child as it parses (runs in the store's thread)."""
        assert self.proc is not None and self.proc.stdout is not None
        meta = (self.source, self.reason, self.added, None)
        tag = ""
        for line in self.proc.stdout:
            msg = json.loads(line)
            tag = msg[0]
            if tag == "E":
                yield EntryRow(msg[1], msg[2], msg[3], *meta)
            elif tag == "R":
                self.rejects.append(Reject(msg[1], msg[2], msg[3]))
            elif tag == "S":
                self.stats.rows, self.stats.invalid, self.stats.blank = msg[1], msg[2], msg[3]
                return
            elif tag == "X":
                raise ImportFormatError(msg[1])
            else:
                break
        code = self.proc.wait()
        if code in (_MEMORY_EXIT, -9) or tag == "M":
            raise TooBig(
                f"reading it needs more than the {self.memory_mb} MB of memory allowed to a watched-folder import"
                " (a compressed XLSX can expand enormously); nothing was added. If the file is genuine, split it"
                " or import it with `smtpguard import`"
            )
        raise ImportFormatError(f"the file could not be read (the reader stopped with status {code})")

    def kill(self) -> None:
        """Stop the child now (a cancelled import must not wait for it); closes the entry stream."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> None:
        if self.proc is not None:
            self.kill()
            self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def _cap_memory(extra_mb: int) -> None:
    """Limit the address space to what start-up took plus `extra_mb`."""
    with open("/proc/self/statm") as fh:
        size = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = size + extra_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _send(out: IO[str], *msg: Any) -> None:
    out.write(json.dumps(msg, ensure_ascii=False) + "\n")


def main(arg: str) -> int:
    from pathlib import Path

    from smtpguard.suppression.formats import iter_entries

    fd, source, reason, added, ignore_sub, dots, memory_mb = json.loads(arg)
    _cap_memory(memory_mb)
    out = sys.stdout
    stats, rejects = FileStats(), list[Reject]()
    # openpyxl goes by the name's extension: reach the inherited descriptor
    # through a link of our own, in a private directory, named like a workbook.
    private = Path(tempfile.mkdtemp(prefix="smtpguard-import-"))
    path = private / "dropped.xlsx"
    path.symlink_to(f"/proc/self/fd/{fd}")
    rules = MatchRules(ignore_subaddress=ignore_sub, gmail_dots=dots)
    try:
        for row in iter_entries(
            path, rules=rules, source=source, reason=reason, added=added, stats=stats, rejects=rejects
        ):
            _send(out, "E", row.key, row.kind, row.original)
        for rej in rejects:
            _send(out, "R", rej.line, rej.text, rej.reason)
        _send(out, "S", stats.rows, stats.invalid, stats.blank)
    except MemoryError:
        rejects.clear()
        _send(out, "M")
        out.flush()
        return _MEMORY_EXIT
    except ImportFormatError as exc:
        _send(out, "X", str(exc).replace(f"{path}: ", "", 1))
    except (UnicodeError, OSError) as exc:
        _send(out, "X", f"unreadable: {exc}")
    finally:
        shutil.rmtree(private, ignore_errors=True)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
