"""Configurations that would make an open relay or send passwords in clear.

`serve` refuses to start on any of these; `config check` lists them.

With `auth = "none"`, trusted networks are judged by the public address
space they cover together (collapsed, minus private, loopback, link-local,
CGNAT, multicast and reserved blocks), not by how they are spelt:
`0.0.0.0/1` + `128.0.0.0/1` is `0.0.0.0/0`.  More than a /16 of public IPv4
or a /48 of public IPv6 is refused.
"""

from __future__ import annotations

import ipaddress

from smtpguard.config import Network, Settings

_LOOPBACK = {4: ipaddress.ip_network("127.0.0.0/8"), 6: ipaddress.ip_network("::1/128")}

# Address space no stranger on the Internet can connect from (disjoint blocks):
# "this network", private, shared CGNAT, loopback, link-local, multicast and
# reserved; for IPv6 also IPv4-mapped (the relay judges those as IPv4).
_NOT_PUBLIC: dict[int, tuple[Network, ...]] = {
    4: tuple(
        ipaddress.IPv4Network(n)
        for n in (
            "0.0.0.0/8",
            "10.0.0.0/8",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "224.0.0.0/3",
        )
    ),
    6: tuple(ipaddress.IPv6Network(n) for n in ("::/127", "::ffff:0:0/96", "fc00::/7", "fe80::/10", "ff00::/8")),
}
# The most public space trusted networks may cover together: a /16 of IPv4,
# a /48 of IPv6 (one site's allocation). Beyond it the relay is open to strangers.
PUBLIC_BOUND = {4: 16, 6: 48}


def public_addresses(nets: tuple[Network, ...] | list[Network], version: int) -> int:
    """How many globally routable addresses of `version` the networks cover together."""
    mine = [n for n in nets if n.version == version]
    total = 0
    for net in ipaddress.collapse_addresses(mine):  # type: ignore[type-var]
        covered = net.num_addresses
        for block in _NOT_PUBLIC[version]:
            if net.subnet_of(block):  # type: ignore[arg-type]
                covered = 0
                break
            if block.subnet_of(net):  # type: ignore[arg-type]
                covered -= block.num_addresses
        total += covered
    return total


def _too_public(nets: tuple[Network, ...]) -> list[str]:
    """Why these trusted networks let strangers relay, one phrase per IP version."""
    out = []
    for version, prefix in PUBLIC_BOUND.items():
        bits = 32 if version == 4 else 128
        if public_addresses(nets, version) > 2 ** (bits - prefix):
            listed = ", ".join(str(n) for n in nets if n.version == version)
            out.append(f"{listed} (more public IPv{version} space than a /{prefix})")
    return out


def relay_problems(settings: Settings) -> list[str]:
    srv = settings.server
    problems: list[str] = []
    nets = srv.trusted_networks
    if srv.auth == "none":
        too_public = _too_public(nets)
        if too_public:
            problems.append(
                f'auth = "none" with trusted_networks {"; ".join(too_public)} would relay mail for anyone;'
                " list only your own networks (private ranges such as 192.168.0.0/16 are fine,"
                f" public ones at most a /{PUBLIC_BOUND[4]} of IPv4 or a /{PUBLIC_BOUND[6]} of IPv6 in all)"
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
