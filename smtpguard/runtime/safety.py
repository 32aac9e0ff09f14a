"""Configurations that would make an open relay or send passwords in clear.

`serve` refuses to start on any of these; `config check` lists them.
"""

from __future__ import annotations

import ipaddress

from smtpguard.config import Settings

_LOOPBACK = {4: ipaddress.ip_network("127.0.0.0/8"), 6: ipaddress.ip_network("::1/128")}


def relay_problems(settings: Settings) -> list[str]:
    srv = settings.server
    problems: list[str] = []
    nets = srv.trusted_networks
    if srv.auth == "none":
        catch_all = [str(n) for n in nets if n.prefixlen == 0]
        if catch_all:
            problems.append(
                f'auth = "none" with trusted_networks {", ".join(catch_all)} would relay mail for anyone;'
                " list only your own networks"
            )
        only_loopback = all(n.subnet_of(_LOOPBACK[n.version]) for n in nets)  # type: ignore[arg-type]
        public = [str(e) for e in (srv.listen, srv.smtps_listen) if e is not None and not e.is_loopback]
        if public and only_loopback:
            problems.append(
                f'auth = "none" on {", ".join(public)} with only loopback in trusted_networks:'
                " nobody could send, or you meant to list your LAN; set trusted_networks or use"
                ' auth = "passthrough"/"local"'
            )
    elif not srv.listen.is_loopback and srv.tls_cert is None:
        problems.append(
            f'auth = "{srv.auth}" on {srv.listen} without tls_cert/tls_key would send passwords in clear;'
            " configure TLS or listen on 127.0.0.1"
        )
    return problems
