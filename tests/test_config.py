from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from smtpguard import config
from smtpguard.config import ConfigError, Endpoint, parse_endpoint
from smtpguard.runtime.safety import relay_problems

ROOT = Path(__file__).resolve().parent.parent


def load_text(tmp_path: Path, text: str) -> config.Settings:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config.load(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_text(tmp_path, text)
    return str(exc.value)


def test_defaults_without_any_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMTPGUARD_CONFIG", raising=False)
    monkeypatch.delenv("SMTPGUARD_DB", raising=False)
    monkeypatch.setattr(config, "DEFAULT_CONFIG", Path("/nonexistent/smtpguard.toml"))
    s = config.load()
    assert s.source is None
    assert s.server.listen == Endpoint("127.0.0.1", 2525)
    assert s.server.auth == "passthrough" and s.policy.mode == "reject"
    assert s.store.path == Path("/var/lib/smtpguard/smtpguard.db")
    assert s.matching.ignore_subaddress and s.matching.gmail_dots


def test_full_example_from_the_contract(tmp_path: Path) -> None:
    s = load_text(
        tmp_path,
        """
[server]
listen = "127.0.0.1:2525"
smtps_listen = ""
tls_cert = ""
tls_key = ""
auth = "passthrough"
max_message_size = 36700160
max_recipients = 500
trusted_networks = ["127.0.0.0/8", "::1/128"]
[upstream]
host = "smtp.example.com"
port = 587
security = "starttls"
username = ""
password_file = ""
timeout = 60
[policy]
mode = "reject"
notify_sender = true
rewrite_headers = true
language = "en"
[store]
path = "/var/lib/smtpguard/smtpguard.db"
[matching]
ignore_subaddress = true
gmail_dots = true
[watch]
folder = ""
""",
    )
    assert s.server.smtps_listen is None and s.server.tls_cert is None
    assert s.server.trusted_networks == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert s.upstream.password_file is None and s.watch.folder is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[upstream]\nport = 70000\n", "[upstream] port must be 1-65535, got 70000"),
        ("[upstream]\nprot = 25\n", "unknown key [upstream] prot"),
        ("[srever]\nlisten = 'x'\n", "unknown section [srever]"),
        ("[server]\nlisten = 'localhost'\n", '[server] listen must be "host:port"'),
        ("[server]\nauth = 'ldap'\n", '[server] auth must be "passthrough" or "local" or "none"'),
        ("[server]\nmax_recipients = '10'\n", "[server] max_recipients must be an integer, got '10'"),
        ("[server]\nmax_recipients = true\n", "[server] max_recipients must be an integer, got True"),
        ("[policy]\nmode = 'block'\n", '[policy] mode must be "reject" or "reject-message"'),
        ("[policy]\nnotify_sender = 'yes'\n", "[policy] notify_sender must be true or false"),
        ("[server]\ntrusted_networks = ['10.0.0.300/8']\n", "[server] trusted_networks must be a list of networks"),
        ("[server]\ntls_cert = '/x.pem'\n", "tls_cert and tls_key go together"),
        ("[server]\nsmtps_listen = '127.0.0.1:465'\n", "smtps_listen needs tls_cert and tls_key"),
        ("[upstream\nhost = 'x'\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    message = error_of(tmp_path, text)
    assert expected in message
    assert str(tmp_path / "c.toml") in message  # which file


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "env.toml"
    env_file.write_text("[server]\nlisten = '127.0.0.1:2600'\n")
    flag_file = tmp_path / "flag.toml"
    flag_file.write_text("[server]\nlisten = '127.0.0.1:2700'\n[store]\npath = '/x/from-file.db'\n")
    monkeypatch.setenv("SMTPGUARD_CONFIG", str(env_file))
    monkeypatch.delenv("SMTPGUARD_DB", raising=False)
    assert config.load().server.listen.port == 2600
    assert config.load(flag_file).server.listen.port == 2700  # --config wins
    assert config.load(flag_file).store.path == Path("/x/from-file.db")
    monkeypatch.setenv("SMTPGUARD_DB", str(tmp_path / "env.db"))
    assert config.load(flag_file).store.path == tmp_path / "env.db"  # $SMTPGUARD_DB over [store] path
    assert config.load(flag_file, tmp_path / "flag.db").store.path == tmp_path / "flag.db"  # --db wins


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "absent.toml")


def test_endpoints() -> None:
    assert parse_endpoint("[::1]:2525") == Endpoint("::1", 2525)
    assert parse_endpoint("0.0.0.0:587").is_loopback is False
    assert parse_endpoint("127.0.0.2:25").is_loopback and parse_endpoint("[::1]:25").is_loopback
    assert str(Endpoint("::1", 25)) == "[::1]:25"
    for bad in ("2525", ":25", "host:0", "host:x"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


@pytest.mark.parametrize("name", ["laptop.toml", "team-server.toml"])
def test_example_configurations_are_valid_and_safe(name: str) -> None:
    s = config.load(ROOT / "examples" / name)
    assert relay_problems(s) == []


def test_safety_refusals(tmp_path: Path) -> None:
    open_relay = load_text(tmp_path, "[server]\nauth = 'none'\ntrusted_networks = ['0.0.0.0/0']\n")
    assert "would relay mail for anyone" in relay_problems(open_relay)[0]
    lan_no_trust = load_text(tmp_path, "[server]\nauth = 'none'\nlisten = '0.0.0.0:2525'\n")
    assert "only loopback in trusted_networks" in relay_problems(lan_no_trust)[0]
    clear_passwords = load_text(tmp_path, "[server]\nauth = 'local'\nlisten = '0.0.0.0:2525'\n")
    assert "passwords in clear" in relay_problems(clear_passwords)[0]
    lan_trusted = load_text(
        tmp_path, "[server]\nauth = 'none'\nlisten = '0.0.0.0:2525'\ntrusted_networks = ['192.168.1.0/24']\n"
    )
    assert relay_problems(lan_trusted) == []


@pytest.mark.parametrize("value", ["nan", "inf", "+inf", "-inf"])
def test_watch_interval_must_be_finite(tmp_path: Path, value: str) -> None:
    msg = error_of(tmp_path, f"[watch]\nfolder = '/tmp/x'\ninterval = {value}\n")
    assert "[watch] interval must be a finite number of seconds above 0" in msg and value.lstrip("+") in msg


def test_latin1_config_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes("[policy]\nlanguage = 'fr'\n# Réglages de l'équipe\n".encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    assert str(exc.value) == f"config {path}: not UTF-8 (byte 0xe9 on line 3); save the file as UTF-8"
