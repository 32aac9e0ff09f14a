"""Start and stop the relay: listeners, store, signals, systemd notifications.

Graceful stop (SIGTERM/SIGINT): stop accepting, let every transaction in
flight finish (up to `STOP_DEADLINE`), then say 421 to the remaining
sessions and exit 0.  Reload (SIGHUP): re-read the configuration; sessions
see it from their next command; listeners are re-bound when their keys
changed.  Nothing accepted is lost across either: a client hears 250 only
after the upstream took the message, and is never cut between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from smtpguard import config
from smtpguard.config import ConfigError, Endpoint, Settings
from smtpguard.metrics import METRICS
from smtpguard.runtime.extras import start_extras
from smtpguard.runtime.limits import AcceptErrors, fit_connections
from smtpguard.runtime.retention import retention_loop
from smtpguard.runtime.safety import relay_problems
from smtpguard.runtime.systemd import monotonic_usec, notify, watchdog_interval
from smtpguard.smtp.audit import AuditWriter
from smtpguard.smtp.context import RelayContext
from smtpguard.smtp.gateway import server_tls_context as gateway_tls_context
from smtpguard.smtp.handler import RelayHandler
from smtpguard.smtp.session import RelaySession, writable
from smtpguard.suppression.rules import mismatch
from smtpguard.suppression.store import Store, StoreError, connect
from smtpguard.suppression.watch import watch_folder

log = logging.getLogger("smtpguard.server")

STOP_DEADLINE = 30.0  # seconds given to transactions in flight at SIGTERM
HEARTBEAT = 5.0  # seconds between a worker's "still alive" to its supervisor
_LISTENER_KEYS = ("listen", "smtps_listen", "tls_cert", "tls_key", "hostname", "timeout", "max_message_size", "auth")


def _gateway_listeners(s: Settings) -> tuple[object, ...]:
    gw = s.gateway
    return (gw.listen, gw.tls_cert, gw.tls_key, gw.client_ca_file)


@dataclass(frozen=True)
class Role:
    """This process as one of several workers (runtime/workers.py); None when it is the only one."""

    index: int  # from 1; worker 1 also runs the one-place jobs (watcher, retention, HTTP, sync)
    sockets: Mapping[Endpoint, tuple[socket.socket, ...]]  # bound by the supervisor (one per address)
    tell: Callable[..., object]  # systemd notifications go to the supervisor, which speaks for all
    metrics_dir: Path | None = None  # where the workers' counters meet for worker 1's /metrics

    @property
    def primary(self) -> bool:
        return self.index == 1


def pinned_listeners(new: Settings, old: Settings) -> Settings:
    """Worker processes keep the supervisor's sockets: listener addresses (and workers) change at the next restart."""
    srv, old_srv = new.server, old.server
    if (srv.listen, srv.smtps_listen, new.gateway.listen) != (old_srv.listen, old_srv.smtps_listen, old.gateway.listen):
        log.warning("reload: listener addresses changed; with [server] workers > 1 they change at the next restart")
    if srv.workers != old_srv.workers:
        log.warning("reload: [server] workers changed; it takes effect at the next restart")
    return replace(
        new,
        server=replace(srv, listen=old_srv.listen, smtps_listen=old_srv.smtps_listen, workers=old_srv.workers),
        gateway=replace(new.gateway, listen=old.gateway.listen),
    )


class RelayRefused(Exception):
    """The configuration would make an unsafe relay; the message says why."""


def server_tls_context(settings: Settings) -> ssl.SSLContext | None:
    srv = settings.server
    if srv.tls_cert is None or srv.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(srv.tls_cert, srv.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[server] tls_cert/tls_key {srv.tls_cert}, {srv.tls_key}: {exc}") from None
    return ctx


class Relay:
    """The running relay: its listeners and the context its sessions share."""

    def __init__(
        self, settings: Settings, store: Store, sockets: Mapping[Endpoint, tuple[socket.socket, ...]] | None = None
    ) -> None:
        self.ctx = RelayContext(settings=settings, store=store, audit=AuditWriter(store))
        self.inherited = dict(sockets or {})  # worker mode: listening sockets bound by the supervisor
        self.guard = RelayHandler(self.ctx)
        self.listeners: list[asyncio.Server] = []
        self.endpoints: list[Endpoint] = []  # as bound (port 0 resolved)
        self.tls: ssl.SSLContext | None = None  # the listeners' context: renewed certificates load into it

    @classmethod
    async def start(
        cls, settings: Settings, sockets: Mapping[Endpoint, tuple[socket.socket, ...]] | None = None
    ) -> Relay:
        problems = relay_problems(settings)
        if problems:
            raise RelayRefused("refusing to start: " + "; ".join(problems))
        store = await connect(settings, create=False)
        relay = cls(settings, store, sockets)
        try:
            relay.listeners, relay.endpoints = await relay._bind(settings)
        except BaseException:
            await store.close()
            raise
        relay.ctx.audit.start()
        return relay

    def _factory(
        self, settings: Settings, tls: ssl.SSLContext | None, endpoint: Endpoint, implicit: bool, gateway: bool = False
    ) -> Callable[[], RelaySession]:
        srv = settings.server
        loopback = endpoint.is_loopback and not gateway  # the gateway never requires STARTTLS: MTAs use "may"
        loop = asyncio.get_running_loop()

        def make() -> RelaySession:
            return RelaySession(
                self.guard,
                self.ctx,
                implicit_tls=implicit,
                gateway=gateway,
                loop=loop,
                hostname=srv.hostname,
                ident="smtpguard",
                enable_SMTPUTF8=True,
                data_size_limit=srv.max_message_size,
                timeout=srv.timeout,
                tls_context=None if implicit else tls,
                # Off loopback, nothing but EHLO/STARTTLS/QUIT before TLS.
                require_starttls=tls is not None and not loopback and not implicit and not gateway,
                # Passwords in clear only on loopback; implicit TLS is already
                # encrypted (aiosmtpd does not know it: issue #281).
                auth_require_tls=not loopback and not implicit,
                auth_required=False,  # enforced at MAIL: trusted networks may skip AUTH
            )

        return make

    async def _bind(self, settings: Settings) -> tuple[list[asyncio.Server], list[Endpoint]]:
        loop = asyncio.get_running_loop()
        tls = server_tls_context(settings)
        self.tls = tls
        plan = [(settings.server.listen, False, False)]
        if settings.server.smtps_listen is not None:
            plan.append((settings.server.smtps_listen, True, False))
        plan += [(e, False, True) for e in settings.gateway.listen]
        gateway_tls = gateway_tls_context(settings) if settings.gateway.enabled else None
        servers: list[asyncio.Server] = []
        bound: list[Endpoint] = []
        try:
            for endpoint, implicit, gateway in plan:
                factory = self._factory(settings, gateway_tls if gateway else tls, endpoint, implicit, gateway)
                if endpoint in self.inherited:
                    # Duplicates: closing a server (reload, stop) leaves the inherited socket open.
                    made = [
                        await loop.create_server(factory, sock=sock.dup(), ssl=tls if implicit else None, backlog=512)
                        for sock in self.inherited[endpoint]
                    ]
                else:
                    made = [
                        await loop.create_server(
                            factory,
                            host=endpoint.host,
                            port=endpoint.port,
                            ssl=tls if implicit else None,
                            backlog=512,
                            reuse_address=True,
                        )
                    ]
                servers += made
                bound.append(Endpoint(endpoint.host, int(made[0].sockets[0].getsockname()[1])))
        except OSError as exc:
            for s in servers:
                s.close()
            section = "gateway" if gateway else "server"
            raise ConfigError(f"[{section}] cannot listen on {endpoint}: {exc.strerror or exc}") from None
        for e, (_, implicit, gateway) in zip(bound, plan, strict=True):
            kind = "implicit TLS" if implicit else "SMTP, STARTTLS" if (gateway_tls if gateway else tls) else "SMTP"
            log.info("listening on %s (%s%s)", e, "gateway, " if gateway else "", kind)
        return servers, bound

    async def reload(self, new: Settings) -> None:
        """Apply new settings; re-bind listeners when their keys changed."""
        old = self.ctx.settings
        if self.inherited:
            new = pinned_listeners(new, old)
        problems = relay_problems(new)
        if problems:
            raise RelayRefused("reload refused, keeping the running configuration: " + "; ".join(problems))
        if (new.store.path, new.store.url) != (old.store.path, old.store.url):
            log.warning("reload: [store] path or url changed; it takes effect at the next restart")
            new = replace(new, store=old.store)
        if new.matching != old.matching and (
            warning := mismatch(await self.ctx.store.rules(), new.matching, new.store.path)
        ):
            log.warning("reload: %s", warning)
        changed_keys = [k for k in _LISTENER_KEYS if getattr(new.server, k) != getattr(old.server, k)]
        if _gateway_listeners(new) != _gateway_listeners(old):
            changed_keys.append("[gateway]")
        if changed_keys:
            listeners, endpoints = await self._bind(new)  # raises before we let go of the old ones
            for s in self.listeners:
                s.close()
            self.listeners, self.endpoints = listeners, endpoints
            log.info("reload: listeners re-bound (%s changed)", ", ".join(changed_keys))
        elif self.tls is not None and new.server.tls_cert is not None and new.server.tls_key is not None:
            # Same paths, perhaps renewed files (certbot renews in place): check
            # them in a fresh context first, so a bad pair keeps the old one.
            server_tls_context(new)
            self.tls.load_cert_chain(new.server.tls_cert, new.server.tls_key)
            log.info("reload: TLS certificate %s loaded again (new sessions use it)", new.server.tls_cert)
        self.ctx.settings = new
        log.info("reload: configuration applied")

    async def stop(self, deadline: float = STOP_DEADLINE) -> None:
        """Stop accepting, let transactions finish, close the rest with 421."""
        self.ctx.accepting = False
        for s in self.listeners:
            s.close()
        for socks in self.inherited.values():  # else the kernel would keep queueing connections for us
            for sock in socks:
                sock.close()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        self._close_idle()
        while any(s.txn is not None or s.in_data for s in self.ctx.sessions) and loop.time() < end:
            await asyncio.sleep(0.05)
            self._close_idle()
        for session in list(self.ctx.sessions):
            self._say_goodbye(session)
        while self.ctx.sessions and loop.time() < end + 5:
            await asyncio.sleep(0.05)
        await self.ctx.pool.close()
        await self.ctx.audit.close()
        await self.ctx.store.close()

    def _close_idle(self) -> None:
        for s in list(self.ctx.sessions):
            if s.txn is None and not s.in_data and not s.busy:
                self._say_goodbye(s)

    @staticmethod
    def _say_goodbye(s: RelaySession) -> None:
        transport = writable(s.transport)
        if transport is None:
            s.ctx.sessions.discard(s)
            return
        with contextlib.suppress(Exception):
            transport.write(b"421 4.3.2 smtpguard is restarting, please send again in a moment\r\n")
        transport.close()


async def serve_forever(
    settings: Settings, *, config_path: Path | None = None, db: Path | None = None, role: Role | None = None
) -> int:
    """`smtpguard serve`: run until SIGTERM/SIGINT; SIGHUP reloads. Returns the exit code.

    As one of several workers (`role`), the supervisor has checked the
    configuration and bound the listeners, and hears the notifications;
    only worker 1 runs the watcher, audit retention, HTTP side and syncs.
    """
    tell = notify if role is None else role.tell
    primary = role is None or role.primary
    if role is None:
        from smtpguard.runtime.preflight import problems

        refused = await asyncio.to_thread(problems, settings)
        if refused:
            raise ConfigError("refusing to start: " + "; ".join(refused))
    settings = fit_connections(settings)
    try:
        relay = await Relay.start(settings, None if role is None else role.sockets)
    except (RelayRefused, StoreError) as exc:
        raise ConfigError(str(exc)) from None  # the CLI prints it once, on stderr
    asyncio.get_running_loop().set_exception_handler(AcceptErrors(relay.ctx.sessions))
    try:
        extras = await start_extras(relay, settings) if primary else None  # HTTP side and pulls, when configured
    except BaseException:
        await relay.stop(deadline=0)
        raise
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloads: asyncio.Queue[None] = asyncio.Queue()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloads.put_nowait, None)

    reload = _reload_loop(relay, reloads, config_path, db, tell, extras=extras is not None)
    tasks = [asyncio.create_task(reload, name="reload")]
    # A worker's heartbeat tells the supervisor its loop still turns (it forwards WATCHDOG=1 to systemd).
    interval = watchdog_interval() if role is None else HEARTBEAT
    if interval:
        tasks.append(asyncio.create_task(_watchdog(interval, tell), name="watchdog"))
    if role is not None and role.metrics_dir is not None:
        from smtpguard.runtime import workermetrics

        if primary:
            METRICS.peers = functools.partial(workermetrics.read_peers, role.metrics_dir, role.index)
        else:
            sessions = relay.ctx.sessions
            publish = workermetrics.publish(role.metrics_dir, role.index, lambda: len(sessions))
            tasks.append(asyncio.create_task(publish, name="metrics"))
    if primary:
        # Always running: it idles without a folder, so a reload can set one.
        tasks.append(asyncio.create_task(watch_folder(relay.ctx), name="watch"))
        tasks.append(asyncio.create_task(retention_loop(relay.ctx), name="audit-retention"))
    tell("READY=1", f"STATUS=listening on {', '.join(map(str, relay.endpoints))}")
    log.info(
        "smtpguard ready (mode %s, auth %s, upstream %s:%d, list %s with %d entries)",
        settings.policy.mode,
        settings.server.auth,
        settings.upstream.host,
        settings.upstream.port,
        getattr(relay.ctx.store, "server", settings.store.path),  # PostgreSQL: where, without the password
        await relay.ctx.store.count(),
    )
    await stop.wait()
    tell("STOPPING=1")
    log.info("stopping: finishing transactions in flight (up to %.0f s)", STOP_DEADLINE)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if extras is not None:
        await extras.stop()
    await relay.stop()
    log.info("stopped")
    return 0


async def _reload_loop(
    relay: Relay,
    reloads: asyncio.Queue[None],
    config_path: Path | None,
    db: Path | None,
    tell: Callable[..., object] = notify,
    *,
    extras: bool = False,
) -> None:
    while True:
        await reloads.get()
        tell("RELOADING=1", monotonic_usec())
        old = relay.ctx.settings
        try:
            new = fit_connections(config.load(config_path, db))
            await relay.reload(new)
        except (ConfigError, RelayRefused, StoreError) as exc:
            log.error("reload failed, still running with the previous configuration: %s", exc)
        else:
            for section in restart_needed(old, new) if extras else ():
                log.warning("reload: %s changed; the running one is kept until the next restart", section)
        tell("READY=1", f"STATUS=listening on {', '.join(map(str, relay.endpoints))}")


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """The sections a reload does not apply: the HTTP side and the pull connectors start once."""
    return [name for name, a, b in (("[http]", old.http, new.http), ("[[sync]]", old.sync, new.sync)) if a != b]


async def _watchdog(interval: float, tell: Callable[..., object] = notify) -> None:
    while True:
        tell("WATCHDOG=1")
        await asyncio.sleep(interval)
