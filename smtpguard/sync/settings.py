"""The `[[sync]]` configuration: one entry per source kept in step (parsed here, wired into config.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtpguard.config_values import ConfigError, KeySpec, choice, optional_path, positive, read_secret, table_values

SYNC_PROVIDERS = ("generic", "mailchimp", "hubspot", "lemlist", "brevo", "csv")


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """One `[[sync]]` entry: a source kept in step by webhooks and/or a pull every `interval`."""

    name: str
    provider: str
    interval: float | None = None  # seconds between pulls; None: webhooks only
    webhook_secret_file: Path | None = None  # a webhook receiver at /webhooks/NAME
    token_file: Path | None = None  # HubSpot access token
    api_key_file: Path | None = None  # lemlist, Mailchimp
    list_id: str = ""  # Mailchimp audience ID
    url: str = ""  # csv: the export's URL
    column: str | None = None  # csv: the address column
    base_url: str = ""  # the provider's API root (tests, EU data centres)

    def credential(self) -> str:
        """The token or API key, read when needed (never kept in the settings)."""
        return read_secret(self.token_file or self.api_key_file, f"[[sync]] {self.name}")

    def webhook_secret(self) -> str:
        return read_secret(self.webhook_secret_file, f"[[sync]] {self.name} webhook_secret_file")


def _source_name(value: str) -> str:
    if not value or len(value) > 64 or not all(c.isascii() and (c.isalnum() or c in "._-") for c in value):
        raise ValueError("a name of letters, digits, '.', '_' or '-' (it ends the webhook URL)")
    return value


# What a pull needs besides an interval, per provider.
_PULL_NEEDS = {"hubspot": ("token_file",), "lemlist": ("api_key_file",), "mailchimp": ("api_key_file", "list_id"),
               "csv": ("url",)}  # fmt: skip


_SYNC_KEYS: dict[str, KeySpec] = {
    "name": (str, _source_name),
    "provider": (str, choice(*SYNC_PROVIDERS)),
    "interval": ((int, float), positive),
    "webhook_secret_file": (str, optional_path),
    "token_file": (str, optional_path),
    "api_key_file": (str, optional_path),
    "list_id": (str, None),
    "url": (str, None),
    "column": (str, None),
    "base_url": (str, None),
}


def sync_entries(tables: Any, where: str) -> tuple[SyncSettings, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ConfigError(f"{where}[[sync]] must be an array of tables ([[sync]] then name = ..., provider = ...)")
    out: list[SyncSettings] = []
    for i, table in enumerate(tables, 1):
        label = f"{where}[[sync]] #{i}"
        values = table_values(table, _SYNC_KEYS, label, unknown=f"{label}: unknown key")
        if "name" not in values or "provider" not in values:
            raise ConfigError(f"{where}[[sync]] #{i} needs a name and a provider")
        entry = SyncSettings(**values)
        if any(e.name == entry.name for e in out):
            raise ConfigError(f"{where}[[sync]] name {entry.name!r} is used twice")
        if entry.interval is None and entry.webhook_secret_file is None:
            raise ConfigError(f"{where}[[sync]] {entry.name}: set interval (pull) or webhook_secret_file (webhook)")
        if entry.interval is not None and entry.provider in ("brevo", "generic"):
            raise ConfigError(f"{where}[[sync]] {entry.name}: {entry.provider} has no pull connector; drop interval")
        missing = [k for k in _PULL_NEEDS.get(entry.provider, ()) if entry.interval and not getattr(entry, k)]
        if missing:
            raise ConfigError(f"{where}[[sync]] {entry.name}: a {entry.provider} pull needs {' and '.join(missing)}")
        out.append(entry)
    return tuple(out)
