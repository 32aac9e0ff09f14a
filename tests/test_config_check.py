"""`smtpguard config check`: validates, then really tries the upstream."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path

from .smtp_fixtures import Certs, Upstream
from .test_service import ROOT, free_port


async def config_check(cfg: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "smtpguard",
        "config",
        "check",
        "--config",
        str(cfg),
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write(tmp: Path, body: str) -> Path:
    """A configuration over an (empty) list in `tmp`: `serve` refuses a missing list."""
    cfg = tmp / "c.toml"
    cfg.write_text(body + f"\n[store]\npath = '{tmp / 'list.db'}'\n")
    if not (tmp / "list.db").exists():
        sqlite3.connect(tmp / "list.db").close()  # migrated to the schema when opened
    return cfg


def with_login(tmp: Path, upstream: Upstream, certs: Certs, *, password: str, auth: str, security: str = "") -> Path:
    """A configuration logging in to the test upstream as `relay` with this password."""
    (tmp / "pw").write_text(password + "\n")
    security_line = f'security = "{security}"\n' if security else ""
    return write(
        tmp,
        f'[server]\nauth = "{auth}"\n[upstream]\nhost = "localhost"\nport = {upstream.port}\n{security_line}'
        f'ca_file = "{certs.ca_file}"\nusername = "relay"\npassword_file = "{tmp / "pw"}"\n',
    )


async def test_reachable_upstream_with_tls_and_login(tmp_path: Path, upstream: Upstream, certs: Certs) -> None:
    cfg = with_login(tmp_path, upstream, certs, password="relaypw", auth="none", security="starttls")
    code, out, err = await config_check(cfg)
    assert code == 0, out + err
    assert f"configuration: {cfg}: valid" in out
    assert "connected, TLS TLSv1." in out and "EHLO ok" in out and "login as relay: ok" in out


async def test_wrong_password_and_unreachable_upstream(tmp_path: Path, upstream: Upstream, certs: Certs) -> None:
    cfg = with_login(tmp_path, upstream, certs, password="wrong", auth="local")
    code, out, _ = await config_check(cfg)
    assert code == 1 and "login as relay: FAILED: 535" in out

    cfg = write(tmp_path, f"[upstream]\nhost = '127.0.0.1'\nport = {free_port()}\nsecurity = 'none'\n")
    code, out, _ = await config_check(cfg)
    assert code == 1 and "upstream: FAILED" in out


async def test_untrusted_certificate_is_reported(tmp_path: Path, upstream: Upstream) -> None:
    cfg = write(tmp_path, f"[upstream]\nhost = 'localhost'\nport = {upstream.port}\n")  # no ca_file
    code, out, _ = await config_check(cfg)
    assert code == 1 and "upstream: FAILED" in out and "CERTIFICATE_VERIFY_FAILED" in out


async def test_unsafe_configuration_is_refused(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        "[server]\nauth = 'none'\ntrusted_networks = ['0.0.0.0/0']\n"
        f"[upstream]\nhost = '127.0.0.1'\nport = {free_port()}\nsecurity = 'none'\n",
    )
    code, out, _ = await config_check(cfg)
    assert code == 1 and "refused: " in out and "would relay mail for anyone" in out


def show(*args: str) -> str:
    from typer.testing import CliRunner

    from smtpguard.cli import app

    r = CliRunner().invoke(app, ["config", "show", *args], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    return r.stdout


def test_config_show_prints_the_effective_settings_as_toml(tmp_path: Path) -> None:
    import tomllib

    from smtpguard.config import from_mapping, load

    secret = tmp_path / "pw"
    secret.write_text("s3cret-Passw0rd\n")
    cfg = write(
        tmp_path,
        f'[upstream]\nhost = "smtp.corp.example"\nusername = "relay"\npassword_file = "{secret}"\n'
        '[server]\ntrusted_networks = ["127.0.0.0/8", "192.168.1.0/24"]\n[policy]\nmode = "strip"\n',
    )
    changed = show("--config", str(cfg))
    assert "s3cret" not in changed and f'password_file = "{secret}"' in changed
    assert tomllib.loads(changed) == {
        "server": {"trusted_networks": ["127.0.0.0/8", "192.168.1.0/24"]},
        "upstream": {"host": "smtp.corp.example", "username": "relay", "password_file": str(secret)},
        "policy": {"mode": "strip"},
        "store": {"path": str(tmp_path / "list.db")},
    }
    everything = show("--config", str(cfg), "--all")
    assert "s3cret" not in everything
    parsed = tomllib.loads(everything)
    assert set(parsed) == {"server", "upstream", "policy", "store", "matching", "watch", "gateway", "http", "audit"}
    # What it prints is a configuration that loads back to the same settings.
    assert from_mapping(parsed, cfg) == load(cfg)
