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

from smtpguard.suppression.addresses import MatchRules

DEFAULT_CONFIG = Path("/etc/smtpguard/smtpguard.toml")
DEFAULT_DB = Path("/var/lib/smtpguard/smtpguard.db")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
AuthMode = Literal["passthrough", "local", "none"]
Security = Literal["starttls", "tls", "none"]
PolicyMode = Literal["reject", "reject-message", "strip", "monitor"]


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
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    matching: MatchRules = field(default_factory=MatchRules)
    watch: WatchSettings = field(default_factory=WatchSettings)
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


def _hostname(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError("a host name without spaces")
    return value


def _positive(value: float) -> float:
    if not math.isfinite(value) or value <= 0:  # nan and inf would make the watcher never scan
        raise ValueError("a finite number of seconds above 0")
    return float(value)


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
    "store": {"path": (str, lambda s: Path(s).expanduser())},
    "matching": {"ignore_subaddress": (bool, None), "gmail_dots": (bool, None)},
    "watch": {
        "folder": (str, _optional_path),
        "interval": ((int, float), _positive),
        "import_memory_mb": (int, _int_range(64, 1_048_576)),
    },
    "audit": {"retention_days": (int, _int_range(0, 36_500))},
}


_SECTION_TYPES: dict[str, type] = {
    "server": ServerSettings,
    "upstream": UpstreamSettings,
    "policy": PolicySettings,
    "store": StoreSettings,
    "matching": MatchRules,
    "watch": WatchSettings,
    "audit": AuditSettings,
}

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list"}


def _type_name(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return "a number"
    return _TYPE_NAMES.get(t, t.__name__)


def from_mapping(data: Mapping[str, Any], source: Path | None = None) -> Settings:
    """Validate parsed TOML; raise ConfigError naming the first bad key."""
    where = f"config {source}: " if source else "config: "
    sections: dict[str, Any] = {}
    for name, table in data.items():
        if name not in SCHEMA:
            raise ConfigError(f"{where}unknown section [{name}] (known: {', '.join(SCHEMA)})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}[{name}] must be a table")
        values: dict[str, Any] = {}
        for key, raw in table.items():
            spec = SCHEMA[name].get(key)
            if spec is None:
                raise ConfigError(f"{where}unknown key [{name}] {key} (known: {', '.join(SCHEMA[name])})")
            expected, parser = spec
            # bool is an int in Python; TOML keeps them apart, so do we.
            if not isinstance(raw, expected) or (isinstance(raw, bool) and expected is not bool):
                raise ConfigError(f"{where}[{name}] {key} must be {_type_name(expected)}, got {raw!r}")
            try:
                values[key] = parser(raw) if parser else raw
            except ValueError as exc:
                raise ConfigError(f"{where}[{name}] {key} must be {exc}, got {raw!r}") from None
        sections[name] = _SECTION_TYPES[name](**values)
    settings = Settings(**sections, source=source)
    _check_together(settings, where)
    return settings


def _check_together(s: Settings, where: str) -> None:
    srv = s.server
    if (srv.tls_cert is None) != (srv.tls_key is None):
        raise ConfigError(f"{where}[server] tls_cert and tls_key go together: set both or neither")
    if srv.smtps_listen is not None and srv.tls_cert is None:
        raise ConfigError(f"{where}[server] smtps_listen needs tls_cert and tls_key")


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
    return settings
