"""The watched folder's file operations, none of which follows a symlink.

Whoever drops exports into the folder can also plant symlinks there: a
`done/` pointing elsewhere, a dangling `failed/x.report.txt`, a file swapped
for a link between the scan and the import.  So the folder and its `done/`
and `failed/` are opened as directory descriptors with O_NOFOLLOW (a symlink
or a regular file in their place is refused, saying so), files are opened
relative to them with O_NOFOLLOW, moved with `rename(src_dir_fd, dst_dir_fd)`
and reports are created with O_CREAT|O_EXCL|O_NOFOLLOW, then renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

FileId = tuple[int, int, int]  # (size, mtime_ns, inode): what "unchanged" compares

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class FolderProblem(OSError):
    """The watched folder (or its done/, failed/) cannot be used safely; the message says why and the fix."""


def shown(name: str) -> str:
    """`name` safe for one log or report line: control characters as \\xNN (a newline cannot forge a line)."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}" for c in name)


def _open_dir(name: str | Path, dir_fd: int | None, shown_as: str) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o750, dir_fd=dir_fd)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise FolderProblem(f"{shown_as} is a symbolic link, which the watcher does not follow; make it a real folder")
    raise FolderProblem(f"{shown_as} is a file, not a folder; rename or remove it so the watcher can use it")


@dataclass
class Folders:
    """Open descriptors of the watched folder and its done/ and failed/."""

    root: int
    done: int
    failed: int

    @classmethod
    def open(cls, folder: Path, done: str, failed: str) -> Folders:
        folder.parent.mkdir(parents=True, exist_ok=True)
        root = _open_dir(folder, None, str(folder))
        fds = [root]
        try:
            for sub in (done, failed):
                fds.append(_open_dir(sub, root, f"{folder / sub}"))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return cls(*fds)

    def close(self) -> None:
        for fd in (self.root, self.done, self.failed):
            os.close(fd)


def file_id(st: os.stat_result) -> FileId:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def scan(root: int, skip: Callable[[str], bool]) -> dict[str, FileId]:
    """The regular files of the folder (not subfolders, not symlinks) for which `skip(name)` is false."""
    found: dict[str, FileId] = {}
    with os.scandir(root) as it:
        for entry in it:
            if skip(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:  # gone since listed
                continue
            if stat.S_ISREG(st.st_mode):
                found[entry.name] = file_id(st)
    return found


def current_id(root: int, name: str) -> FileId | None:
    """The id of `name` now, None when it is gone or no longer a regular file (e.g. swapped for a symlink)."""
    try:
        st = os.stat(name, dir_fd=root, follow_symlinks=False)
    except OSError:
        return None
    return file_id(st) if stat.S_ISREG(st.st_mode) else None


def open_file(root: int, name: str, expected: FileId) -> int:
    """A read descriptor of the regular file `name`, refusing a symlink or a file other than the one scanned."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=root)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or file_id(st) != expected:
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "replaced since it was scanned")
    return fd


def exists(dir_fd: int, name: str) -> bool:
    """Whether `name` is taken in the folder; a dangling symlink counts."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def move(root: int, name: str, dst: int, new_name: str) -> None:
    os.rename(name, new_name, src_dir_fd=root, dst_dir_fd=dst)


def write_new(dir_fd: int, name: str, write: Callable[[TextIO], object], *, replace: bool = False) -> None:
    """Create the text file `name` in the folder whole (readers never see it half-written).

    Written under a hidden name created with O_EXCL|O_NOFOLLOW, then renamed:
    a symlink planted under either name is never followed.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    tmp = f".{name}.{os.getpid()}.tmp"
    fd = os.open(tmp, flags, 0o640, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            write(fh)
        if not replace and exists(dir_fd, name):
            raise FileExistsError(errno.EEXIST, "already there", name)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
