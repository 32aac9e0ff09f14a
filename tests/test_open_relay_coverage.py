"""The open-relay guard judges what trusted networks cover, not how they are spelt."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from smtpguard.config import Endpoint, ServerSettings, Settings
from smtpguard.runtime.safety import relay_problems

from .test_config_check import config_check, write
from .test_service import Notifications, finish, free_port, notifications, start_serve

__all__ = ["notifications"]  # the fixture, imported for the serve test

SPLIT_WORLD = ["0.0.0.0/1", "128.0.0.0/1"]


def _problems(nets: list[str], listen: str = "0.0.0.0") -> list[str]:
    server = ServerSettings(
        listen=Endpoint(listen, 2525),
        auth="none",
        trusted_networks=tuple(ipaddress.ip_network(n) for n in nets),
    )
    return relay_problems(Settings(server=server))


@pytest.mark.parametrize(
    "nets",
    [
        SPLIT_WORLD,
        ["::/1", "8000::/1"],
        ["192.0.0.0/2"],  # a quarter of the Internet
        ["8.8.0.0/16", "9.9.0.0/16"],  # two public /16s: more than one in all
        ["2001:db8::/32"],
        ["0.0.0.0/5"],  # 0/8 is not public, the rest of the /5 is
    ],
)
def test_networks_covering_public_space_are_refused(nets: list[str]) -> None:
    problems = _problems(nets)
    assert len(problems) == 1, problems
    assert "would relay mail for anyone" in problems[0] and nets[0] in problems[0]


@pytest.mark.parametrize(
    "nets",
    [
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8"],
        ["100.64.0.0/10", "169.254.0.0/16", "fc00::/7", "fe80::/10", "::1/128"],
        ["203.0.113.0/24", "198.51.100.0/24"],  # an office's public block
        ["8.8.0.0/16"],  # exactly the bound
        ["2001:db8:1::/48"],
    ],
)
def test_own_networks_are_accepted(nets: list[str]) -> None:
    assert _problems(nets) == []


async def test_config_check_reports_split_world(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        f"[server]\nlisten = '127.0.0.1:2525'\nauth = 'none'\ntrusted_networks = {SPLIT_WORLD!r}\n"
        f"[upstream]\nhost = '127.0.0.1'\nport = {free_port()}\nsecurity = 'none'\n",
    )
    code, out, _ = await config_check(cfg)
    assert code == 1 and "refused: " in out and "would relay mail for anyone" in out and "0.0.0.0/1" in out


async def test_serve_refuses_split_world(tmp_path: Path, notifications: Notifications) -> None:
    cfg = write(
        tmp_path,
        f"[server]\nlisten = '127.0.0.1:{free_port()}'\nauth = 'none'\ntrusted_networks = {SPLIT_WORLD!r}\n"
        f"[upstream]\nhost = '127.0.0.1'\nport = {free_port()}\nsecurity = 'none'\n",
    )
    proc = await start_serve(cfg, notifications)
    try:
        code, err = await finish(proc)
    finally:
        if proc.returncode is None:  # it started: the guard let it through
            proc.kill()
            await proc.wait()
    assert code != 0 and "refusing to start" in err and "would relay mail for anyone" in err
    assert "Traceback" not in err
