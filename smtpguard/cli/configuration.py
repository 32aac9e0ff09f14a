"""`config check` and `config show`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from smtpguard.cli.app import Command, config_app
from smtpguard.cli.options import ConfigOpt, DbOpt, run, settings_for
from smtpguard.config import SCHEMA, Endpoint, Settings
from smtpguard.suppression.store.postgres_connect import redact_url


@config_app.command("check", cls=Command)
def config_check(config_path: ConfigOpt = None, db: DbOpt = None) -> None:
    """Validate the configuration, every file and permission serve needs, and try the upstream
    (connect, TLS, EHLO, login); with [oauth] accounts, a real token refresh and an XOAUTH2 login
    for each; with [gateway], each next hop."""
    from smtpguard.runtime.oauthprobe import oauth_probe
    from smtpguard.runtime.preflight import findings
    from smtpguard.runtime.probe import probe
    from smtpguard.runtime.safety import relay_problems

    settings = settings_for(config_path, db)
    typer.echo(f"configuration: {settings.source or 'built-in defaults'}: valid")
    problems = relay_problems(settings)
    for p in problems:
        typer.echo(f"refused: {p}")
    for f in findings(settings):
        typer.echo(f"{'refused' if f.problem else 'warning'}: {f.text}")
        problems += [f.text] if f.problem else []
    if not problems:
        typer.echo("files and permissions: ok (store, TLS, password file, watched folder)")
    ok = run(lambda: probe(settings, typer.echo))
    ok = run(lambda: oauth_probe(settings, typer.echo)) and ok
    if settings.gateway.enabled:
        from smtpguard.smtp.nexthop import probe_next_hops

        hops, name = settings.gateway.hops, settings.server.hostname
        ok = run(lambda: probe_next_hops(hops, name, typer.echo)) and ok
    if problems or not ok:
        raise typer.Exit(1)


def toml_value(value: Any) -> str | None:
    """A setting as a TOML value; None when it is unset (TOML has no null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type | Endpoint):  # a next hop: an inline table
        pairs = ((f.name, toml_value(getattr(value, f.name))) for f in dataclasses.fields(value))
        return "{ " + ", ".join(f"{k} = {v}" for k, v in pairs if v is not None) + " }"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) or '""' for v in value) + "]"
    if isinstance(value, Path | Endpoint | str):
        return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML basic string
    return json.dumps(str(value), ensure_ascii=False)


def show_lines(settings: Settings, *, everything: bool) -> list[str]:
    """The effective configuration as TOML: the values that differ from the defaults, or all of them.

    Only the settings themselves are printed: the upstream password stays in
    its password_file, which is shown by path; a password in [store] url as ***.
    """
    defaults = Settings()
    lines = [f"# smtpguard configuration: {settings.source or 'built-in defaults'}"]
    for section, keys in SCHEMA.items():
        body = []
        for key in keys:
            value = getattr(getattr(settings, section), key)
            if section == "store" and key == "url" and value:
                value = redact_url(value)  # a password in the URL is not shown
            if not everything and value == getattr(getattr(defaults, section), key):
                continue
            text = toml_value(value)
            body.append(f"{key} = {text}" if text is not None else f"# {key} is not set")
        if body:
            lines += ["", f"[{section}]", *body]
    for entry in settings.sync:  # [[sync]]: the keys that are set (secrets stay in their files)
        values = ((f, toml_value(getattr(entry, f))) for f in entry.__dataclass_fields__)
        lines += ["", "[[sync]]", *(f"{f} = {t}" for f, t in values if t not in (None, '""'))]
    from smtpguard.oauth.settings import show_lines as oauth_lines  # tables of tables: rendered there

    return lines + oauth_lines(settings.oauth, settings.credentials)


@config_app.command("show", cls=Command)
def config_show(
    all_: Annotated[bool, typer.Option("--all", "-a", help="Every setting, defaults included.")] = False,
    config_path: ConfigOpt = None,
    db: DbOpt = None,
) -> None:
    """Print the effective configuration as TOML (like postconf -n; --all for every value)."""
    settings = settings_for(config_path, db)
    for line in show_lines(settings, everything=all_):
        typer.echo(line)
