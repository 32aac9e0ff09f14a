"""The `[oauth]` and `[credentials]` configuration sections (parsed here, wired into config.py).

    [oauth]                      # shared defaults for every account below, and where tokens live
    state_dir = "/var/lib/smtpguard"   # default: the store's folder; tokens in <state_dir>/oauth/
    provider = "microsoft"
    tenant = "contoso.onmicrosoft.com"
    client_id = "..."

    [oauth.alice]                # one upstream identity; for mode "oauth" NAME is the local user
    mailbox = "alice@contoso.com"

    [oauth.relay]                # the app-only credential (Microsoft SMTP.SendAsApp)
    mode = "oauth-app"
    client_secret_file = "/etc/smtpguard/app-secret"

    [credentials]                # which upstream login each local user's mail goes out with
    default = "password"         # password ([upstream] username/password_file) | oauth | oauth-app
    app_account = "relay"        # the [oauth.X] used by "oauth-app" (optional when there is one)
    users = { bob = "oauth-app" }

A user's credential: `users[NAME]`, else "oauth" when `[oauth.NAME]` is a delegated account,
else `default`. Errors are ValueError naming the key; config.py turns them into ConfigError.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from smtpguard.config_values import KeySpec, choice, nonempty, path, table_values
from smtpguard.oauth.account import AccountIdentity, OAuthAccount

CredentialKind = Literal["password", "oauth", "oauth-app"]
CREDENTIAL_KINDS: tuple[CredentialKind, ...] = ("password", "oauth", "oauth-app")

# valid in [oauth] (as a default) and in [oauth.NAME]
_ACCOUNT_KEYS: dict[str, KeySpec] = {
    "provider": (str, choice("microsoft", "google")),
    "client_id": (str, nonempty),
    "tenant": (str, nonempty),
    "mailbox": (str, nonempty),
    "mode": (str, choice("oauth", "oauth-app")),
    "client_secret_file": (str, path),
    "authority": (str, nonempty),
    "auth_url": (str, nonempty),
    "token_url": (str, nonempty),
    "ca_file": (str, path),
}


@dataclass(frozen=True, slots=True)
class AccountSettings(AccountIdentity):
    """`[oauth.NAME]`: the identity, and where its client secret is kept."""

    client_secret_file: Path | None = None

    def account(self, *, loopback_only: bool = False) -> OAuthAccount:
        """The OAuth code's account; reads the client secret file (a clear one-line error if it cannot)."""
        secret = None
        if self.client_secret_file is not None:
            try:
                secret = self.client_secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                where = f"[oauth.{self.name}] client_secret_file {self.client_secret_file}"
                raise ValueError(f"{where}: {exc.strerror}") from None
        return OAuthAccount(**self.identity(), client_secret=secret, loopback_only=loopback_only)


@dataclass(frozen=True, slots=True)
class OAuthSettings:
    state_dir: Path | None = None  # None: the store's folder
    accounts: tuple[AccountSettings, ...] = ()

    def get(self, name: str) -> AccountSettings | None:
        return next((a for a in self.accounts if a.name == name), None)


@dataclass(frozen=True, slots=True)
class CredentialSettings:
    default: CredentialKind = "password"
    app_account: str = ""
    users: tuple[tuple[str, CredentialKind], ...] = field(default=())

    def kind_for(self, user: str, oauth: OAuthSettings) -> CredentialKind:
        explicit = dict(self.users).get(user)
        if explicit is not None:
            return explicit
        own = oauth.get(user)
        return "oauth" if own is not None and own.mode == "oauth" else self.default

    def uses(self, kind: CredentialKind) -> bool:
        return self.default == kind or any(k == kind for _, k in self.users)


def _account_values(where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    return table_values(table, _ACCOUNT_KEYS, where, unknown=f"unknown key {where}")


def _account(name: str, defaults: Mapping[str, Any], table: Mapping[str, Any]) -> AccountSettings:
    where = f"[oauth.{name}]"
    values = {**{k: v for k, v in defaults.items() if k != "mailbox"}, **_account_values(where, table)}
    for needed in ("provider", "client_id"):
        if needed not in values:
            raise ValueError(f"{where} needs {needed} (here or in [oauth])")
    if values.get("mode") == "oauth-app":
        if values["provider"] != "microsoft":
            raise ValueError(f'{where} mode "oauth-app" exists for Microsoft 365 only (SMTP.SendAsApp)')
        if "client_secret_file" not in values:
            raise ValueError(f'{where} mode "oauth-app" needs client_secret_file')
    elif "mailbox" not in values:
        raise ValueError(f"{where} needs mailbox: the address this account signs in as")
    return AccountSettings(name=name, **values)


def parse_oauth(table: Mapping[str, Any]) -> OAuthSettings:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    state_dir = scalars.pop("state_dir", "")
    if not isinstance(state_dir, str) or ("state_dir" in table and not state_dir.strip()):
        raise ValueError(f"[oauth] state_dir must be a folder path, got {state_dir!r}")
    defaults = _account_values("[oauth]", scalars)
    accounts = tuple(_account(n, defaults, t) for n, t in table.items() if isinstance(t, Mapping))
    return OAuthSettings(Path(state_dir).expanduser() if state_dir else None, accounts)


def _kind(where: str, raw: object) -> CredentialKind:
    for kind in CREDENTIAL_KINDS:
        if raw == kind:
            return kind
    raise ValueError(f'{where} must be "password", "oauth" or "oauth-app", got {raw!r}')


def parse_credentials(table: Mapping[str, Any], oauth: OAuthSettings) -> CredentialSettings:
    unknown = set(table) - {"default", "app_account", "users"}
    if unknown:
        raise ValueError(f"unknown key [credentials] {sorted(unknown)[0]} (known: default, app_account, users)")
    default = _kind("[credentials] default", table.get("default", "password"))
    users_raw = table.get("users", {})
    if not isinstance(users_raw, Mapping):
        raise ValueError('[credentials] users must be a table like { alice = "oauth" }')
    users = tuple(sorted((str(n), _kind(f"[credentials] users.{n}", k)) for n, k in users_raw.items()))
    app = table.get("app_account", "")
    if not isinstance(app, str):
        raise ValueError(f"[credentials] app_account must be the name of an [oauth.NAME] account, got {app!r}")
    creds = CredentialSettings(default, app, users)
    return check_credentials(creds, oauth)


def check_credentials(creds: CredentialSettings, oauth: OAuthSettings) -> CredentialSettings:
    """What can be checked without the users table; `app_account` filled in when there is one choice."""
    for user, kind in creds.users:
        own = oauth.get(user)
        if kind == "oauth" and (own is None or own.mode != "oauth"):
            raise ValueError(f'[credentials] users.{user} = "oauth" needs an [oauth.{user}] account with a mailbox')
    if not creds.uses("oauth-app"):
        return creds
    apps = [a.name for a in oauth.accounts if a.mode == "oauth-app"]
    name = creds.app_account or (apps[0] if len(apps) == 1 else "")
    if name not in apps:
        hint = f"one of {', '.join(apps)}" if apps else 'an [oauth.NAME] account with mode = "oauth-app"'
        raise ValueError(f'[credentials] "oauth-app" needs app_account = {hint}')
    return CredentialSettings(creds.default, name, creds.users)


def show_lines(oauth: OAuthSettings, creds: CredentialSettings) -> list[str]:
    """`config show`: these sections as TOML (each account written out in full), when set."""
    lines: list[str] = []
    if oauth != OAuthSettings():
        lines += ["", "[oauth]"]
        if oauth.state_dir is not None:
            lines.append(f"state_dir = {json.dumps(str(oauth.state_dir))}")
        for account in oauth.accounts:
            lines += ["", f"[oauth.{json.dumps(account.name)}]"]
            for f in fields(account):
                value = getattr(account, f.name)
                if (
                    f.name != "name"
                    and value is not None
                    and (f.name in ("provider", "client_id") or value != f.default)
                ):
                    lines.append(f"{f.name} = {json.dumps(str(value))}")
    if creds != CredentialSettings():
        users = ", ".join(f"{json.dumps(n)} = {json.dumps(k)}" for n, k in creds.users)
        lines += ["", "[credentials]", f"default = {json.dumps(creds.default)}"]
        lines += [f"app_account = {json.dumps(creds.app_account)}"] if creds.app_account else []
        lines += [f"users = {{ {users} }}"] if users else []
    return lines
