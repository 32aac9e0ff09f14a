"""The [oauth] / [credentials] configuration, and binding users to their sender addresses from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smtpguard import config
from smtpguard.cli import app
from smtpguard.config import ConfigError

BASE = """
[server]
auth = "local"
[oauth]
provider = "microsoft"
tenant = "contoso.onmicrosoft.com"
client_id = "abc"
[oauth.alice]
mailbox = "alice@contoso.test"
[oauth.relay]
mode = "oauth-app"
client_secret_file = "/etc/smtpguard/app-secret"
"""


def load(tmp_path: Path, text: str) -> config.Settings:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config.load(path)


def test_accounts_inherit_the_defaults_and_users_get_their_credential(tmp_path: Path) -> None:
    s = load(tmp_path, BASE + '[credentials]\ndefault = "oauth-app"\nusers = { carol = "password" }\n')
    alice, relay = s.oauth.accounts
    assert (alice.name, alice.tenant, alice.client_id, alice.mode) == (
        "alice",
        "contoso.onmicrosoft.com",
        "abc",
        "oauth",
    )
    assert relay.mode == "oauth-app" and relay.client_secret_file == Path("/etc/smtpguard/app-secret")
    assert s.credentials.app_account == "relay"  # the only oauth-app account
    kinds = {u: s.credentials.kind_for(u, s.oauth) for u in ("alice", "bob", "carol")}
    assert kinds == {"alice": "oauth", "bob": "oauth-app", "carol": "password"}
    assert s.oauth_state_dir == s.store.path.parent  # beside the list by default
    assert load(tmp_path, BASE.replace("[oauth]\n", '[oauth]\nstate_dir = "/srv/tok"\n')).oauth_state_dir == Path(
        "/srv/tok"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[oauth.bob]\nprovider = "yahoo"\n', '[oauth.bob] provider must be "microsoft" or "google"'),
        ("[oauth.bob]\n", "[oauth.bob] needs mailbox"),
        ('[oauth.bob]\nmailbox = "b@x.test"\ncolour = "red"\n', "unknown key [oauth.bob] colour"),
        ('[oauth.g]\nprovider = "google"\nmode = "oauth-app"\nclient_secret_file = "/s"\n', "Microsoft 365 only"),
        ('[credentials]\nusers = { bob = "oauth" }\n', 'users.bob = "oauth" needs an [oauth.bob] account'),
        ('[credentials]\ndefault = "kerberos"\n', '[credentials] default must be "password", "oauth" or "oauth-app"'),
        ('[credentials]\ndefault = "oauth-app"\napp_account = "alice"\n', "needs app_account = one of relay"),
    ],
)
def test_bad_oauth_configuration_is_one_clear_line(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, BASE + extra)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_oauth_credentials_need_local_accounts(tmp_path: Path) -> None:
    text = BASE.replace('auth = "local"', 'auth = "passthrough"') + '[credentials]\ndefault = "oauth-app"\n'
    with pytest.raises(ConfigError, match=r'need \[server\] auth = "local"'):
        load(tmp_path, text)


def test_user_add_binds_sender_addresses(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")

    def cli(*args: str, stdin: str | None = None) -> tuple[int, str]:
        r = CliRunner().invoke(app, [*args, "--db", db], input=stdin)
        return r.exit_code, r.output

    code, out = cli("user", "add", "alice", "--password-stdin", "--address", "alice@corp.example", stdin="pw\n")
    assert code == 0 and "created user alice" in out and "may send from: alice@corp.example" in out
    code, out = cli("user", "add", "alice", "--address", "alice@corp.example", "--address", "sales@corp.example")
    assert code == 0 and "password" not in out  # an existing user: only the addresses change
    users = json.loads(cli("user", "list", "--json")[1])
    assert users == [
        {"name": "alice", "created": users[0]["created"], "addresses": ["alice@corp.example", "sales@corp.example"]}
    ]
    code, out = cli("user", "add", "alice", "--address", "not an address")
    assert code == 2 and "must be a plain address" in out
    code, out = cli("user", "add", "alice", "--any-sender")
    assert code == 0 and "may send from: any address" in out
    assert json.loads(cli("user", "list", "--json")[1])[0]["addresses"] == []


def test_config_show_writes_the_oauth_sections_back(tmp_path: Path) -> None:
    import tomllib

    from smtpguard.config import from_mapping

    s = load(tmp_path, BASE + '[credentials]\ndefault = "oauth-app"\nusers = { carol = "password" }\n')
    r = CliRunner().invoke(app, ["config", "show", "--config", str(tmp_path / "c.toml")])
    assert r.exit_code == 0, r.output
    parsed = tomllib.loads(r.stdout)
    assert parsed["oauth"]["relay"]["client_secret_file"] == "/etc/smtpguard/app-secret"
    assert from_mapping(parsed, s.source) == s
