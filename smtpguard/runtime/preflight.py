"""Every file, folder and permission `serve` needs, checked before it starts.

`serve` refuses to start on any problem found here (one line each, naming
the file, its owner and the fix); `config check` lists them all. The store
matters most: a list created by root and served by the `smtpguard` user
answers lookups but cannot record a single refusal ("attempt to write a
readonly database"), so the audit trail would be lost without a word.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from smtpguard.config import ConfigError, Settings

CERT_WARN_DAYS = 14  # a certificate this close to its end is worth a warning


@dataclass(frozen=True, slots=True)
class Finding:
    problem: bool  # True: serve refuses; False: a warning only
    text: str


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _owner(path: Path) -> str:
    try:
        return user_name(path.stat().st_uid)
    except OSError:
        return "?"


def store_findings(path: Path) -> list[Finding]:
    """The list file, its -wal/-shm and its folder must be writable by this user."""
    me = user_name(os.geteuid())
    if not path.exists():
        return [Finding(True, f"store {path}: no list there yet; create it with `smtpguard init` (as user {me})")]
    blocked = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists() and not os.access(p, os.W_OK)]
    folder = path.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        blocked.append(folder)  # SQLite creates the -wal and -shm files there
    if not blocked:
        return []
    names = ", ".join(f"{p} (owner {_owner(p)})" for p in blocked)
    return [
        Finding(
            True,
            f"store {path}: not writable by user {me}: {names}; refusals could not be recorded."
            f" Fix: chown {me}: {' '.join(str(p) for p in blocked)}"
            f" (and run commands that change the list as that user: sudo -u {me} smtpguard user add …)",
        )
    ]


def _readable(path: Path, what: str) -> Finding | None:
    if not path.is_file():
        return Finding(True, f"{what} {path}: no such file")
    if not os.access(path, os.R_OK):
        return Finding(True, f"{what} {path}: not readable by user {user_name(os.geteuid())} (owner {_owner(path)})")
    return None


def tls_findings(settings: Settings, today: dt.date | None = None) -> list[Finding]:
    """tls_cert/tls_key readable, matching, and the certificate not expired."""
    srv = settings.server
    if srv.tls_cert is None or srv.tls_key is None:
        return []
    found = [f for f in (_readable(srv.tls_cert, "[server] tls_cert"), _readable(srv.tls_key, "[server] tls_key")) if f]
    if found:
        return found
    from smtpguard.runtime.server import server_tls_context

    try:
        server_tls_context(settings)
    except ConfigError as exc:
        return [Finding(True, f"{exc} (do the certificate and key match?)")]
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(srv.tls_cert.read_bytes())
    except ValueError:
        return []  # loaded by OpenSSL above: a format we do not read here, nothing to add
    ends = cert.not_valid_after_utc.date()
    left = (ends - (today or dt.datetime.now(dt.UTC).date())).days
    if left < 0:
        return [Finding(True, f"[server] tls_cert {srv.tls_cert}: expired on {ends}; renew it, then SIGHUP the relay")]
    if left <= CERT_WARN_DAYS:
        return [Finding(False, f"[server] tls_cert {srv.tls_cert}: expires on {ends} (in {left} days); renew it soon")]
    return []


def password_findings(settings: Settings) -> list[Finding]:
    if settings.upstream.password_file is None:
        return []
    try:
        settings.upstream_password()
    except ConfigError as exc:
        return [Finding(True, str(exc))]
    return []


def watch_findings(settings: Settings) -> list[Finding]:
    folder = settings.watch.folder
    if folder is None:
        return []
    where = f"[watch] folder {folder}"
    try:
        st = folder.lstat()
    except FileNotFoundError:
        return [Finding(True, f"{where}: no such folder; create it (mkdir) or unset [watch] folder")]
    except OSError as exc:
        return [Finding(True, f"{where}: {exc.strerror}")]
    if stat.S_ISLNK(st.st_mode):
        return [Finding(True, f"{where}: is a symlink, which the watcher never follows; name the real folder")]
    if not stat.S_ISDIR(st.st_mode):
        return [Finding(True, f"{where}: not a folder")]
    if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        me = user_name(os.geteuid())
        return [
            Finding(
                True,
                f"{where}: user {me} cannot read and write it (owner {_owner(folder)});"
                f" imported files are moved to done/ and failed/ there. Fix: chown {me}: {folder}",
            )
        ]
    return []


def findings(settings: Settings) -> list[Finding]:
    """Everything `serve` needs from the file system, in the order it needs it."""
    return [
        # A PostgreSQL list is the database's business; connect() says when it cannot be reached.
        *(store_findings(settings.store.path) if settings.store.url is None else []),
        *tls_findings(settings),
        *password_findings(settings),
        *watch_findings(settings),
    ]


def problems(settings: Settings) -> list[str]:
    """What makes `serve` refuse to start."""
    return [f.text for f in findings(settings) if f.problem]
