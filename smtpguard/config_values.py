"""The TOML configuration's building blocks: value parsers and the table checker.

Each parser returns the typed value or raises ValueError naming the expected
form; `table_values` turns that into a ConfigError naming the key, e.g.
`[upstream] port must be 1-65535, got 70000`. The sections themselves are in
config.py (and oauth/settings.py, sync/settings.py).
"""

from __future__ import annotations

import ipaddress
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Parser = Callable[[Any], Any] | None  # None: the TOML value as it is
KeySpec = tuple[type | tuple[type, ...], Parser]  # a key's TOML type and parser


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


def optional_endpoint(text: str) -> Endpoint | None:
    return parse_endpoint(text) if text.strip() else None


def nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("a non-empty string")
    return value


def path(value: str) -> Path:
    return Path(nonempty(value)).expanduser()


def optional_path(text: str) -> Path | None:
    return Path(text).expanduser() if text.strip() else None


def choice(*allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(" or ".join(f'"{a}"' for a in allowed))
        return value

    return check


def int_range(low: int, high: int) -> Callable[[int], int]:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"{low}-{high}")
        return value

    return check


def networks(values: list[str]) -> tuple[Network, ...]:
    out = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise ValueError(f'a list of networks like ["127.0.0.0/8", "192.168.1.0/24"], not "{v}"') from None
    return tuple(out)


def store_url(value: str) -> str | None:
    if not value.strip():
        return None
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError('a "postgresql://..." URL (or leave it out for the SQLite file at [store] path)')
    return value


def hostname(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError("a host name without spaces")
    return value


def positive(value: float) -> float:
    if not math.isfinite(value) or value <= 0:  # nan and inf would make the watcher never scan
        raise ValueError("a finite number of seconds above 0")
    return float(value)


MAX_WORKERS = 64


def workers(value: int | str) -> int:
    """`[server] workers = N` or "auto" (one per CPU the process may run on)."""
    if value == "auto":
        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
    if isinstance(value, int) and 1 <= value <= MAX_WORKERS:
        return value
    raise ValueError(f'1-{MAX_WORKERS} or "auto"')


def endpoints(value: str | list[str]) -> tuple[Endpoint, ...]:
    items = [value] if isinstance(value, str) else value
    if not all(isinstance(v, str) for v in items):
        raise ValueError('"host:port" or a list of them, e.g. ["0.0.0.0:25"]')
    return tuple(parse_endpoint(v) for v in items if v.strip())


def names(values: list[str]) -> tuple[str, ...]:
    if not all(isinstance(v, str) and v.strip() and not any(c.isspace() for c in v.strip()) for v in values):
        raise ValueError('a list of certificate names like ["mail.example.com"]')
    return tuple(v.strip().lower().rstrip(".") for v in values)


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}


def type_name(t: type | tuple[type, ...]) -> str:
    if t == (str, list):
        return "a string or a list"
    if t == (int, str):
        return 'a number or "auto"'
    if isinstance(t, tuple):
        return "a number"
    return _TYPE_NAMES.get(t, t.__name__)


def table_values(table: Mapping[str, Any], keys: Mapping[str, KeySpec], label: str, *, unknown: str) -> dict[str, Any]:
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
            raise ConfigError(f"{label} {key} must be {type_name(expected)}, got {raw!r}")
        try:
            values[key] = parser(raw) if parser else raw
        except ConfigError:
            raise
        except ValueError as exc:
            raise ConfigError(f"{label} {key} must be {exc}, got {raw!r}") from None
    return values


def read_secret(path: Path | None, what: str) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: {path}: {exc.strerror}") from None
