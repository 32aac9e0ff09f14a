"""Configuration: TOML into frozen, validated settings.

Every error names the key and the expected form, e.g.
`config /etc/smtpguard/smtpguard.toml: [upstream] port must be 1-65535, got 70000`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from smtpguard import config_values as v
from smtpguard.config_values import ConfigError as ConfigError
from smtpguard.config_values import Endpoint as Endpoint
from smtpguard.config_values import Network as Network
from smtpguard.config_values import parse_endpoint as parse_endpoint
from smtpguard.oauth.settings import CredentialSettings, OAuthSettings, parse_credentials, parse_oauth
from smtpguard.suppression.addresses import MatchRules
from smtpguard.sync.settings import SYNC_PROVIDERS as SYNC_PROVIDERS
from smtpguard.sync.settings import SyncSettings as SyncSettings
from smtpguard.sync.settings import sync_entries

DEFAULT_CONFIG = Path("/etc/smtpguard/smtpguard.toml")
DEFAULT_DB = Path("/var/lib/smtpguard/smtpguard.db")

AuthMode = Literal["passthrough", "local", "none"]
Security = Literal["starttls", "tls", "none"]
PolicyMode = Literal["reject", "reject-message", "strip", "monitor"]
EventLoop = Literal["auto", "asyncio", "uvloop"]


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


_NEXT_HOP_KEYS: dict[str, v.KeySpec] = {}


def _next_hop(table: Mapping[str, Any], where: str = "[gateway.next_hop]") -> NextHopSettings:
    """One next-hop table; ConfigError names the key (from_mapping keeps the message)."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where} must be a table")
    values = v.table_values(table, _NEXT_HOP_KEYS, where, unknown=f"{where}: unknown key")
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


# section -> key -> (TOML type, parser). The parser may be None for plain values.
SCHEMA: dict[str, dict[str, v.KeySpec]] = {
    "server": {
        "listen": (str, parse_endpoint),
        "smtps_listen": (str, v.optional_endpoint),
        "tls_cert": (str, v.optional_path),
        "tls_key": (str, v.optional_path),
        "auth": (str, v.choice("passthrough", "local", "none")),
        "max_message_size": (int, v.int_range(1024, 2**31)),
        "max_recipients": (int, v.int_range(1, 100_000)),
        "trusted_networks": (list, v.networks),
        "hostname": (str, v.hostname),
        "timeout": (int, v.int_range(5, 3600)),
        "max_connections": (int, v.int_range(1, 1_000_000)),
        "max_connections_per_client": (int, v.int_range(1, 1_000_000)),
        "workers": ((int, str), v.workers),
        "event_loop": (str, v.choice("auto", "asyncio", "uvloop")),
    },
    "upstream": {
        "host": (str, v.hostname),
        "port": (int, v.int_range(1, 65535)),
        "security": (str, v.choice("starttls", "tls", "none")),
        "username": (str, None),
        "password_file": (str, v.optional_path),
        "timeout": (int, v.int_range(1, 3600)),
        "ca_file": (str, v.optional_path),
        "verify": (bool, None),
    },
    "policy": {
        "mode": (str, v.choice("reject", "reject-message", "strip", "monitor")),
        "notify_sender": (bool, None),
        "rewrite_headers": (bool, None),
        "language": (str, v.choice("en", "fr")),
    },
    "store": {
        "path": (str, lambda s: Path(s).expanduser()),
        "url": (str, v.store_url),
        "password_file": (str, v.optional_path),
        "relay_name": (str, v.hostname),
    },
    "matching": {"ignore_subaddress": (bool, None), "gmail_dots": (bool, None)},
    "watch": {
        "folder": (str, v.optional_path),
        "interval": ((int, float), v.positive),
        "import_memory_mb": (int, v.int_range(64, 1_048_576)),
    },
    "gateway": {
        "listen": ((str, list), v.endpoints),
        "networks": (list, v.networks),
        "client_cert_names": (list, v.names),
        "client_ca_file": (str, v.optional_path),
        "tls_cert": (str, v.optional_path),
        "tls_key": (str, v.optional_path),
        "loop_secret_file": (str, v.optional_path),
        "next_hop": (dict, _next_hop),
        "next_hops": (list, _next_hops),
    },
    "http": {
        "listen": (str, v.optional_endpoint),
        "tls_cert": (str, v.optional_path),
        "tls_key": (str, v.optional_path),
        "public_url": (str, None),
    },
    "sync": {},  # [[sync]]: an array of tables, read by _sync_entries
    "audit": {"retention_days": (int, v.int_range(0, 36_500))},
}
_NEXT_HOP_KEYS.update(
    {
        "host": (str, v.hostname),
        "port": (int, v.int_range(1, 65535)),
        "security": (str, v.choice("starttls", "tls", "none")),
        "verify": (bool, None),
        "ca_file": (str, v.optional_path),
        "client_cert": (str, v.optional_path),
        "client_key": (str, v.optional_path),
        "username": (str, None),
        "password_file": (str, v.optional_path),
        "timeout": (int, v.int_range(1, 3600)),
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


def from_mapping(data: Mapping[str, Any], source: Path | None = None) -> Settings:
    """Validate parsed TOML; raise ConfigError naming the first bad key."""
    where = f"config {source}: " if source else "config: "
    sections: dict[str, Any] = _upstream_auth_sections(data, where)
    for name, table in data.items():
        if name in _UPSTREAM_AUTH_SECTIONS:
            continue
        if name == "sync":
            sections["sync"] = sync_entries(table, where)
            continue
        if name not in SCHEMA:
            known = ", ".join([*SCHEMA, *_UPSTREAM_AUTH_SECTIONS])
            raise ConfigError(f"{where}unknown section [{name}] (known: {known})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}[{name}] must be a table")
        try:
            values = v.table_values(table, SCHEMA[name], f"[{name}]", unknown=f"unknown key [{name}]")
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


def _check_workers(s: Settings, where: str) -> None:
    """Several workers need a store they can all open: a file or PostgreSQL, never one process's memory."""
    if s.server.workers > 1 and s.store.url is None and str(s.store.path) == ":memory:":
        raise ConfigError(
            f"{where}[server] workers = {s.server.workers} needs a shared list ([store] path to a file,"
            " or [store] url); an in-memory store cannot be shared between processes: set workers = 1"
        )


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
