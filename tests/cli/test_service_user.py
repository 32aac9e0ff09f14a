"""Item 1 and 3 of issue 9: a list root created, served by an unprivileged user.

`serve` must refuse to start (one line: the file, its owner, the fix) rather
than run and lose every audit record; `config check` must say so and exit 1.
The commands run as the real user `nobody` (the tests run as root, whom no
permission stops), through the system Python with this checkout's packages.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from smtpguard.config import from_mapping
from smtpguard.runtime.preflight import problems, tls_findings, watch_findings

from ..smtp_fixtures import Upstream
from ..test_service import ROOT, free_port

SYSTEM_PYTHON = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
SITE = next(p for p in sys.path if p.endswith("site-packages"))


def nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


needs_nobody = pytest.mark.skipif(
    os.geteuid() != 0 or nobody() is None or not SYSTEM_PYTHON.exists(),
    reason="needs root, the user nobody and a system Python of the same version to run a command as nobody",
)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder nobody can reach (pytest's tmp_path is root's only), owned by root."""
    folder = Path(tempfile.mkdtemp(prefix="smtpguard-svc-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def smtpguard(*args: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    if not as_nobody:
        cmd = [sys.executable, "-m", "smtpguard", *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    user = nobody()
    assert user is not None

    def drop() -> None:
        os.setgid(user.pw_gid)
        os.setgroups([])
        os.setuid(user.pw_uid)

    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{ROOT}:{SITE}", "HOME": "/"}
    cmd = [str(SYSTEM_PYTHON), "-m", "smtpguard", *args]
    return subprocess.run(cmd, cwd="/", env=env, preexec_fn=drop, capture_output=True, text=True, timeout=60)


@needs_nobody
async def test_serve_refuses_a_list_it_cannot_write_and_config_check_says_why(shared: Path, upstream: Upstream) -> None:
    db = shared / "list.db"
    cfg = shared / "smtpguard.toml"
    cfg.write_text(
        f'[server]\nlisten = "127.0.0.1:{free_port()}"\nauth = "none"\n'
        f'[upstream]\nhost = "127.0.0.1"\nport = {upstream.port}\nsecurity = "none"\n'
        f'[store]\npath = "{db}"\n'
    )
    cfg.chmod(0o644)
    # Before the list exists: serve and config check point at `smtpguard init`.
    done = await asyncio.to_thread(smtpguard, "serve", "--config", str(cfg), as_nobody=True)
    assert done.returncode == 2 and "smtpguard init" in done.stderr, done.stderr

    made = await asyncio.to_thread(smtpguard, "init", "--config", str(cfg))  # as root, as the issue's admin did
    assert made.returncode == 0, made.stderr
    added = await asyncio.to_thread(smtpguard, "add", "--config", str(cfg), "jane@example.com")
    assert added.returncode == 0

    done = await asyncio.to_thread(smtpguard, "serve", "--config", str(cfg), as_nobody=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"store {db}: not writable by user nobody" in lines[0]
    assert f"{db} (owner root)" in lines[0] and f"{shared} (owner root)" in lines[0]
    assert f"chown nobody: {db}" in lines[0] and "sudo -u nobody smtpguard user add" in lines[0]

    check = await asyncio.to_thread(smtpguard, "config", "check", "--config", str(cfg), as_nobody=True)
    assert check.returncode == 1, check.stdout + check.stderr
    assert f"refused: store {db}: not writable by user nobody" in check.stdout
    assert "upstream: EHLO ok" in check.stdout  # everything else was still checked

    # The fix the line gives: then config check is content.
    for p in (shared, db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if p.exists():
            os.chown(p, nobody().pw_uid, nobody().pw_gid)  # type: ignore[union-attr]
    check = await asyncio.to_thread(smtpguard, "config", "check", "--config", str(cfg), as_nobody=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "files and permissions: ok" in check.stdout


@needs_nobody
def test_config_check_finds_an_unreadable_password_file_and_watch_folder(shared: Path) -> None:
    db = shared / "list.db"
    assert smtpguard("init", "--db", str(db)).returncode == 0
    for p in (shared, db):
        os.chown(p, nobody().pw_uid, nobody().pw_gid)  # type: ignore[union-attr]
    secret = shared / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)  # root's
    drop = shared / "drop"
    drop.mkdir(mode=0o755)  # root's: the watcher could not move files to done/
    cfg = shared / "smtpguard.toml"
    cfg.write_text(
        f'[upstream]\nhost = "127.0.0.1"\nport = {free_port()}\nsecurity = "none"\npassword_file = "{secret}"\n'
        f'[store]\npath = "{db}"\n[watch]\nfolder = "{drop}"\n'
    )
    check = smtpguard("config", "check", "--config", str(cfg), as_nobody=True)
    assert check.returncode == 1
    assert f"refused: [upstream] password_file {secret}: Permission denied" in check.stdout
    assert f"refused: [watch] folder {drop}: user nobody cannot read and write it (owner root)" in check.stdout
    serve = smtpguard("serve", "--config", str(cfg), as_nobody=True)
    assert serve.returncode == 2 and len(serve.stderr.strip().splitlines()) == 1
    assert "password_file" in serve.stderr and "[watch] folder" in serve.stderr


def settings_with(tmp: Path, **server: str) -> object:
    return from_mapping({"server": dict(server), "store": {"path": str(tmp / "list.db")}})


def test_tls_key_not_matching_and_certificate_expiry(tmp_path: Path) -> None:
    ca = trustme.CA()
    one, two = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    one.cert_chain_pems[0].write_to_path(str(cert))
    two.private_key_pem.write_to_path(str(key))
    settings = from_mapping({"server": {"tls_cert": str(cert), "tls_key": str(key)}})
    [found] = tls_findings(settings)
    assert found.problem and "do the certificate and key match?" in found.text

    old = ca.issue_cert("localhost", not_after=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    old.cert_chain_pems[0].write_to_path(str(cert))
    old.private_key_pem.write_to_path(str(key))
    [found] = tls_findings(settings)
    assert found.problem and "expired on 2020-01-01" in found.text

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=5)
    near = ca.issue_cert("localhost", not_after=soon)
    near.cert_chain_pems[0].write_to_path(str(cert))
    near.private_key_pem.write_to_path(str(key))
    [found] = tls_findings(settings)
    assert not found.problem and f"expires on {soon.date()}" in found.text

    (tmp_path / "missing").mkdir()
    gone = from_mapping({"server": {"tls_cert": str(tmp_path / "nope.pem"), "tls_key": str(key)}})
    assert "no such file" in problems(gone)[1]  # [0]: the list is missing


def test_a_symlinked_watch_folder_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    settings = from_mapping({"watch": {"folder": str(tmp_path / "link")}})
    [found] = watch_findings(settings)
    assert found.problem and "is a symlink" in found.text
    settings = from_mapping({"watch": {"folder": str(tmp_path / "absent")}})
    assert "no such folder" in watch_findings(settings)[0].text


@needs_nobody
def test_init_by_root_in_the_service_users_folder_warns(shared: Path) -> None:
    user = nobody()
    assert user is not None
    os.chown(shared, user.pw_uid, user.pw_gid)  # as systemd's StateDirectory= would be
    made = smtpguard("init", "--db", str(shared / "list.db"))
    assert made.returncode == 0
    assert made.stderr.strip() == (
        f"warning: {shared / 'list.db'} belongs to root, its folder to nobody: a relay running as nobody could not"
        f" write it. Fix: chown nobody: {shared / 'list.db'} (or run smtpguard as nobody: sudo -u nobody smtpguard …)"
    )
    mine = smtpguard("init", "--db", str(shared / "theirs.db"), as_nobody=True)
    assert mine.returncode == 0 and mine.stderr == ""
