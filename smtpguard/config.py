"""Configuration: TOML into frozen, validated settings.

Every error names the key and the expected form, e.g.
`config /etc/smtpguard/smtpguard.toml: [upstream] port must be 1-65535, got 70000`.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from smtpguard.oauth.settings import CredentialSettings, OAuthSettings, parse_credentials, parse_oauth
from smtpguard.suppression.addresses import MatchRules

DEFAULT_CONFIG = Path("/etc/smtpguard/smtpguard.toml")
DEFAULT_DB = Path("/var/lib/smtpguard/smtpguard.db")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
AuthMode = Literal["passthrough", "local", "none"]
Security = Literal["starttls", "tls", "none"]
PolicyMode = Literal["reject", "reject-message", "strip", "monitor"]
EventLoop = Literal["auto", "asyncio", "uvloop"]


class ConfigError(ValueError):
    """The configuration is unusable; the message names the key and the fix."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: Endpoint = Endpoint("127.0.0.1", 2525)
    smtps_listen: Endpoint | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth: AuthMode = "passthrough"
    max_message_size: int = 36_700_160
    max_recipients: int = 500
    trusted_networks: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    hostname: str = "smtpguard.localhost"  # our EHLO / banner name
    timeout: int = 300  # seconds a client may stay silent
    # Idle connections cost the attacker nothing: cap them (Postfix: smtpd_client_connection_count_limit = 50).
    max_connections: int = 1000
    max_connections_per_client: int = 50
    # --- issue 15: processes and event loop (docs/performance.md) ---
    workers: int = 1  # relay processes sharing the listeners; "auto" in the file = one per CPU
    event_loop: EventLoop = "auto"  # "auto": uvloop when installed, else asyncio


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    host: str = "smtp.example.com"
    port: int = 587
    security: Security = "starttls"
    username: str = ""
    password_file: Path | None = None
    timeout: int = 60
    ca_file: Path | None = None  # a private CA for the upstream's certificate
    verify: bool = True  # certificate verification; off only for tests and demos


@dataclass(frozen=True, slots=True)
class PolicySettings:
    mode: PolicyMode = "reject"
    notify_sender: bool = True
    rewrite_headers: bool = True
    language: Literal["en", "fr"] = "en"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    path: Path = DEFAULT_DB
    # PostgreSQL store (several relays, one list): used instead of `path` when set.
    url: str | None = None  # postgresql://...; libpq's PG* environment variables fill in the rest
    password_file: Path | None = None  # else $CREDENTIALS_DIRECTORY/store-password (systemd), else URL/PGPASSFILE
    relay_name: str | None = None  # this relay in the shared audit log; default [server] hostname


@dataclass(frozen=True, slots=True)
class WatchSettings:
    folder: Path | None = None
    interval: float = 2.0  # seconds between scans; a file must be unchanged for one
    import_memory_mb: int = 1024  # memory a dropped file may take to read (an XLSX bomb cannot take more)


# --- [audit] (issue 9): how long the audit trail is kept -------------------


@dataclass(frozen=True, slots=True)
class AuditSettings:
    retention_days: int = 365  # events older than this are deleted daily; 0 keeps them forever


# --- end [audit] -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NextHopSettings:
    """Where the gateway hands allowed mail on (docs/gateway.md): TLS and verification on by default."""

    host: str = ""
    port: int = 25
    security: Security = "starttls"
    verify: bool = True
    ca_file: Path | None = None  # a private CA for the next hop's certificate
    client_cert: Path | None = None  # presented to the next hop (Microsoft 365 inbound connector)
    client_key: Path | None = None
    username: str = ""  # SMTP AUTH at the next hop (Google's smtp-relay), with password_file
    password_file: Path | None = None
    timeout: int = 60

    def password(self) -> str:
        if self.password_file is None:
            return ""
        try:
            return self.password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"[gateway.next_hop] password_file {self.password_file}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """Gateway mode: the organisation's mail server hands its outgoing mail over (docs/gateway.md)."""

    listen: tuple[Endpoint, ...] = ()  # empty: no gateway listener
    networks: tuple[Network, ...] = ()  # the organisation's servers, by address
    client_cert_names: tuple[str, ...] = ()  # ... or by the subject/SAN of their TLS client certificate
    client_ca_file: Path | None = None  # the CA those certificates are checked against
    tls_cert: Path | None = None  # STARTTLS certificate; [server] tls_cert/tls_key when empty
    tls_key: Path | None = None
    loop_secret_file: Path | None = None  # key of the loop-prevention header's HMAC
    next_hop: NextHopSettings | None = None
    next_hops: tuple[NextHopSettings, ...] = ()  # tried in order at connect time, after next_hop

    @property
    def enabled(self) -> bool:
        return bool(self.listen)

    @property
    def hops(self) -> tuple[NextHopSettings, ...]:
        return ((self.next_hop,) if self.next_hop else ()) + self.next_hops


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    matching: MatchRules = field(default_factory=MatchRules)
    watch: WatchSettings = field(default_factory=WatchSettings)
    oauth: OAuthSettings = field(default_factory=OAuthSettings)  # smtpguard/oauth/settings.py
    credentials: CredentialSettings = field(default_factory=CredentialSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    http: HttpSettings = field(default_factory=lambda: HttpSettings())
    sync: tuple[SyncSettings, ...] = ()
    audit: AuditSettings = field(default_factory=AuditSettings)
    source: Path | None = None  # the file these came from, None for built-in defaults

    def upstream_password(self) -> str:
        """The relay's own upstream password (auth "local" / "none"), read when needed."""
        if self.upstream.password_file is None:
            return ""
        path = credential_path(self.upstream.password_file)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"[upstream] password_file {path}: {exc.strerror}") from None

    @property
    def oauth_state_dir(self) -> Path:
        """Where the encrypted tokens live (`<dir>/oauth/`): [oauth] state_dir, else beside the store."""
        return self.oauth.state_dir or self.store.path.parent


CREDENTIAL = "credential:"


def credential_path(path: Path) -> Path:
    """`credential:NAME` is systemd's LoadCredential= file NAME in $CREDENTIALS_DIRECTORY."""
    text = str(path)
    if not text.startswith(CREDENTIAL):
        return path
    name = text.removeprefix(CREDENTIAL)
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        raise ConfigError(
            f"[upstream] password_file {text}: $CREDENTIALS_DIRECTORY is not set"
            f" (set LoadCredential={name}:/path/to/file in the systemd unit)"
        )
    if not name or "/" in name:
        raise ConfigError(f"[upstream] password_file {text}: a credential name has no '/' and is not empty")
    return Path(folder) / name


# --- value parsers: each returns the typed value or raises ValueError(expected form)


def parse_endpoint(text: str) -> Endpoint:
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError('"host:port", e.g. "127.0.0.1:2525" or "[::1]:2525"')
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError('"host:port" with a port 1-65535')
    return Endpoint(host, int(port))


def _optional_endpoint(text: str) -> Endpoint | None:
    return parse_endpoint(text) if text.strip() else None


def _optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text.strip() else None


def _choice(*allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(" or ".join(f'"{a}"' for a in allowed))
        return value

    return check


def _int_range(low: int, high: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"{low}-{high}")
        return value

    return check


def _networks(values: list[str]) -> tuple[Network, ...]:
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ValueError(f'a list of networks like ["127.0.0.0/8", "192.168.1.0/24"], not "{v}"') from None
    return tuple(out)


def _store_url(value: str) -> str | None:
    if not value.strip():
        return None
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError('a "postgresql://..." URL (or leave it out for the SQLite file at [store] path)')
    return value


def _hostname(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError("a host name without spaces")
    return value


def _positive(value: float) -> float:
    if not math.isfinite(value) or value <= 0:  # nan and inf would make the watcher never scan
        raise ValueError("a finite number of seconds above 0")
    return float(value)


# --- [server] workers (issue 15) ---------------------------------------------
MAX_WORKERS = 64


def _workers(value: int | str) -> int:
    """`workers = N` or "auto" (one per CPU the process may run on)."""
    if value == "auto":
        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
    if isinstance(value, int) and 1 <= value <= MAX_WORKERS:
        return value
    raise ValueError(f'1-{MAX_WORKERS} or "auto"')


def _check_workers(s: Settings, where: str) -> None:
    """Several workers need a store they can all open: a file or PostgreSQL, never one process's memory."""
    if s.server.workers > 1 and s.store.url is None and str(s.store.path) == ":memory:":
        raise ConfigError(
            f"{where}[server] workers = {s.server.workers} needs a shared list ([store] path to a file,"
            " or [store] url); an in-memory store cannot be shared between processes: set workers = 1"
        )


# --- end [server] workers ------------------------------------------------------


def _endpoints(value: str | list[str]) -> tuple[Endpoint, ...]:
    items = [value] if isinstance(value, str) else value
    if not all(isinstance(v, str) for v in items):
        raise ValueError('"host:port" or a list of them, e.g. ["0.0.0.0:25"]')
    return tuple(parse_endpoint(v) for v in items if v.strip())


def _names(values: list[str]) -> tuple[str, ...]:
    if not all(isinstance(v, str) and v.strip() and not any(c.isspace() for c in v.strip()) for v in values):
        raise ValueError('a list of certificate names like ["mail.example.com"]')
    return tuple(v.strip().lower().rstrip(".") for v in values)


_NEXT_HOP_KEYS: dict[str, tuple[type, _Parser]] = {}


def _next_hop(table: Mapping[str, Any], where: str = "[gateway.next_hop]") -> NextHopSettings:
    """One next-hop table; ConfigError names the key (from_mapping keeps the message)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    values = _table_values(table, _NEXT_HOP_KEYS, where, unknown=f"{where}: unknown key")
    if "host" not in values:
        raise ConfigError(f"{where} host is missing (the server allowed mail is handed to)")
    hop = NextHopSettings(**values)
    if (hop.client_cert is None) != (hop.client_key is None):
        raise ConfigError(f"{where} client_cert and client_key go together: set both or neither")
    if hop.username and (hop.password_file is None or hop.security == "none"):
        raise ConfigError(f"{where} username needs password_file and TLS (security starttls or tls)")
    return hop


def _next_hops(tables: list[Any]) -> tuple[NextHopSettings, ...]:
    return tuple(_next_hop(t, f"[gateway] next_hops[{i}]") for i, t in enumerate(tables))


# --- [http] and [[sync]]: the HTTP API, webhook receivers and pull connectors ------------


@dataclass(frozen=True, slots=True)
class HttpSettings:
    listen: Endpoint | None = None  # off by default; loopback unless TLS and tokens
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The public https://host[:port] the providers call (HubSpot signs the URL it called).
    public_url: str = ""


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
        return _read_secret(self.token_file or self.api_key_file, f"[[sync]] {self.name}")

    def webhook_secret(self) -> str:
        return _read_secret(self.webhook_secret_file, f"[[sync]] {self.name} webhook_secret_file")


def _read_secret(path: Path | None, what: str) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: {path}: {exc.strerror}") from None


def _source_name(value: str) -> str:
    if not value or len(value) > 64 or not all(c.isascii() and (c.isalnum() or c in "._-") for c in value):
        raise ValueError("a name of letters, digits, '.', '_' or '-' (it ends the webhook URL)")
    return value


# What a pull needs besides an interval, per provider.
_PULL_NEEDS = {"hubspot": ("token_file",), "lemlist": ("api_key_file",), "mailchimp": ("api_key_file", "list_id"),
               "csv": ("url",)}  # fmt: skip


_SYNC_KEYS: dict[str, tuple[type | tuple[type, ...], _Parser]] = {
    "name": (str, _source_name),
    "provider": (str, _choice(*SYNC_PROVIDERS)),
    "interval": ((int, float), _positive),
    "webhook_secret_file": (str, _optional_path),
    "token_file": (str, _optional_path),
    "api_key_file": (str, _optional_path),
    "list_id": (str, None),
    "url": (str, None),
    "column": (str, None),
    "base_url": (str, None),
}


def _sync_entries(tables: Any, where: str) -> tuple[SyncSettings, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ConfigError(f"{where}[[sync]] must be an array of tables ([[sync]] then name = ..., provider = ...)")
    out: list[SyncSettings] = []
    for i, table in enumerate(tables, 1):
        label = f"{where}[[sync]] #{i}"
        values = _table_values(table, _SYNC_KEYS, label, unknown=f"{label}: unknown key")
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


# section -> key -> (TOML type, parser). The parser may be None for plain values.
_Parser = Callable[[Any], Any] | None
SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], _Parser]]] = {
    "server": {
        "listen": (str, parse_endpoint),
        "smtps_listen": (str, _optional_endpoint),
        "tls_cert": (str, _optional_path),
        "tls_key": (str, _optional_path),
        "auth": (str, _choice("passthrough", "local", "none")),
        "max_message_size": (int, _int_range(1024, 2**31)),
        "max_recipients": (int, _int_range(1, 100_000)),
        "trusted_networks": (list, _networks),
        "hostname": (str, _hostname),
        "timeout": (int, _int_range(5, 3600)),
        "max_connections": (int, _int_range(1, 1_000_000)),
        "max_connections_per_client": (int, _int_range(1, 1_000_000)),
        "workers": ((int, str), _workers),
        "event_loop": (str, _choice("auto", "asyncio", "uvloop")),
    },
    "upstream": {
        "host": (str, _hostname),
        "port": (int, _int_range(1, 65535)),
        "security": (str, _choice("starttls", "tls", "none")),
        "username": (str, None),
        "password_file": (str, _optional_path),
        "timeout": (int, _int_range(1, 3600)),
        "ca_file": (str, _optional_path),
        "verify": (bool, None),
    },
    "policy": {
        "mode": (str, _choice("reject", "reject-message", "strip", "monitor")),
        "notify_sender": (bool, None),
        "rewrite_headers": (bool, None),
        "language": (str, _choice("en", "fr")),
    },
    "store": {
        "path": (str, lambda s: Path(s).expanduser()),
        "url": (str, _store_url),
        "password_file": (str, _optional_path),
        "relay_name": (str, _hostname),
    },
    "matching": {"ignore_subaddress": (bool, None), "gmail_dots": (bool, None)},
    "watch": {
        "folder": (str, _optional_path),
        "interval": ((int, float), _positive),
        "import_memory_mb": (int, _int_range(64, 1_048_576)),
    },
    "gateway": {
        "listen": ((str, list), _endpoints),
        "networks": (list, _networks),
        "client_cert_names": (list, _names),
        "client_ca_file": (str, _optional_path),
        "tls_cert": (str, _optional_path),
        "tls_key": (str, _optional_path),
        "loop_secret_file": (str, _optional_path),
        "next_hop": (dict, _next_hop),
        "next_hops": (list, _next_hops),
    },
    "http": {
        "listen": (str, _optional_endpoint),
        "tls_cert": (str, _optional_path),
        "tls_key": (str, _optional_path),
        "public_url": (str, None),
    },
    "sync": {},  # [[sync]]: an array of tables, read by _sync_entries
    "audit": {"retention_days": (int, _int_range(0, 36_500))},
}
_NEXT_HOP_KEYS.update(
    {
        "host": (str, _hostname),
        "port": (int, _int_range(1, 65535)),
        "security": (str, _choice("starttls", "tls", "none")),
        "verify": (bool, None),
        "ca_file": (str, _optional_path),
        "client_cert": (str, _optional_path),
        "client_key": (str, _optional_path),
        "username": (str, None),
        "password_file": (str, _optional_path),
        "timeout": (int, _int_range(1, 3600)),
    }
)


_SECTION_TYPES: dict[str, type] = {
    "server": ServerSettings,
    "upstream": UpstreamSettings,
    "policy": PolicySettings,
    "store": StoreSettings,
    "matching": MatchRules,
    "watch": WatchSettings,
    "gateway": GatewaySettings,
    "http": HttpSettings,
    "audit": AuditSettings,
}

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}


def _type_name(t: type | tuple[type, ...]) -> str:
    if t == (str, list):
        return "a string or a list"
    if t == (int, str):
        return 'a number or "auto"'
    if isinstance(t, tuple):
        return "a number"
    return _TYPE_NAMES.get(t, t.__name__)


def _table_values(
    table: Mapping[str, Any], keys: Mapping[str, tuple[type | tuple[type, ...], _Parser]], label: str, *, unknown: str
) -> dict[str, Any]:
    """Each value of `table` checked and parsed by `keys` (TOML type, parser).

    `label` starts a bad value's message, `unknown` an unknown key's; a nested
    table's own ConfigError (already naming its key) passes through.
    """
    values: dict[str, Any] = {}
    for key, raw in table.items():
        spec = keys.get(key)
        if spec is None:
            raise ConfigError(f"{unknown} {key} (known: {', '.join(keys)})")
        expected, parser = spec
        # bool is an int in Python; TOML keeps them apart, so do we.
        if not isinstance(raw, expected) or (isinstance(raw, bool) and expected is not bool):
            raise ConfigError(f"{label} {key} must be {_type_name(expected)}, got {raw!r}")
        try:
            values[key] = parser(raw) if parser else raw
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{label} {key} must be {exc}, got {raw!r}") from None
    return values


def from_mapping(data: Mapping[str, Any], source: Path | None = None) -> Settings:
    """Validate parsed TOML; raise ConfigError naming the first bad key."""
    where = f"config {source}: " if source else "config: "
    sections: dict[str, Any] = _upstream_auth_sections(data, where)
    for name, table in data.items():
        if name in _UPSTREAM_AUTH_SECTIONS:
            continue
        if name == "sync":
            sections["sync"] = _sync_entries(table, where)
            continue
        if name not in SCHEMA:
            known = ", ".join([*SCHEMA, *_UPSTREAM_AUTH_SECTIONS])
            raise ConfigError(f"{where}unknown section [{name}] (known: {known})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}[{name}] must be a table")
        try:
            values = _table_values(table, SCHEMA[name], f"[{name}]", unknown=f"unknown key [{name}]")
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
        sections[name] = _SECTION_TYPES[name](**values)
    settings = Settings(**sections, source=source)
    _check_together(settings, where)
    return settings


# --- [oauth] and [credentials]: nested tables, parsed in smtpguard/oauth/settings.py
_UPSTREAM_AUTH_SECTIONS = ("oauth", "credentials")


def _upstream_auth_sections(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _UPSTREAM_AUTH_SECTIONS:
        if name in data and not isinstance(data[name], Mapping):
            raise ConfigError(f"{where}[{name}] must be a table")
    try:
        oauth = parse_oauth(data.get("oauth", {}))
        credentials = parse_credentials(data.get("credentials", {}), oauth)
    except ValueError as exc:
        raise ConfigError(f"{where}{exc}") from None
    if "oauth" in data:
        out["oauth"] = oauth
    if "credentials" in data or "oauth" in data:
        out["credentials"] = credentials
    return out


def _check_together(s: Settings, where: str) -> None:
    srv = s.server
    if (srv.tls_cert is None) != (srv.tls_key is None):
        raise ConfigError(f"{where}[server] tls_cert and tls_key go together: set both or neither")
    if srv.smtps_listen is not None and srv.tls_cert is None:
        raise ConfigError(f"{where}[server] smtps_listen needs tls_cert and tls_key")
    if srv.auth != "local" and (s.credentials.default != "password" or s.credentials.users):
        # OAuth upstream credentials belong to local users, who are bound to their senders.
        raise ConfigError(f'{where}[credentials] other than "password" need [server] auth = "local"')
    if (s.http.tls_cert is None) != (s.http.tls_key is None):
        raise ConfigError(f"{where}[http] tls_cert and tls_key go together: set both or neither")
    _check_gateway(s.gateway, srv, where)
    _check_workers(s, where)


def _check_gateway(gw: GatewaySettings, srv: ServerSettings, where: str) -> None:
    if (gw.tls_cert is None) != (gw.tls_key is None):
        raise ConfigError(f"{where}[gateway] tls_cert and tls_key go together: set both or neither")
    if not gw.enabled:
        return
    if not gw.hops:
        raise ConfigError(f"{where}[gateway] needs a next hop: [gateway.next_hop] host = ... (or next_hops)")
    if gw.loop_secret_file is None:
        raise ConfigError(
            f"{where}[gateway] loop_secret_file is needed: a file of random text that keys the"
            " loop-prevention header (e.g. `head -c 32 /dev/urandom | base64 > FILE`)"
        )
    if gw.client_cert_names and gw.client_ca_file is None:
        raise ConfigError(f"{where}[gateway] client_cert_names needs client_ca_file (the CA that issued them)")
    if gw.client_cert_names and gw.tls_cert is None and srv.tls_cert is None:
        raise ConfigError(f"{where}[gateway] client_cert_names needs TLS: set tls_cert/tls_key")


def resolve_config_path(explicit: Path | None) -> Path | None:
    """--config, else $SMTPGUARD_CONFIG, else /etc/smtpguard/smtpguard.toml if present."""
    if explicit is not None:
        return explicit
    env = os.environ.get("SMTPGUARD_CONFIG")
    if env:
        return Path(env)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def load(config: Path | None = None, db: Path | None = None) -> Settings:
    """Settings from the resolved config file (or defaults), with --db / $SMTPGUARD_DB applied."""
    path = resolve_config_path(config)
    if path is None:
        settings = Settings()
    else:
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config {path}: no such file") from None
        except OSError as exc:
            raise ConfigError(f"config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {path}: not valid TOML ({exc})") from None
        except UnicodeDecodeError as exc:
            line = bytes(exc.object[: exc.start]).count(b"\n") + 1  # tomllib decodes the whole file at once
            raise ConfigError(
                f"config {path}: not UTF-8 (byte 0x{exc.object[exc.start]:02x} on line {line}); save the file as UTF-8"
            ) from None
        settings = from_mapping(data, path)
    db_path = db or (Path(os.environ["SMTPGUARD_DB"]) if os.environ.get("SMTPGUARD_DB") else None)
    if db_path is not None:
        settings = replace(settings, store=StoreSettings(db_path))
        _check_workers(settings, f"config {path}: " if path else "config: ")  # --db :memory:
    return settings
