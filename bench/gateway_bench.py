"""Gateway throughput: messages per second through smtpguard's [gateway] listener, an MTA as the client.

    .venv/bin/python bench/gateway_bench.py [--messages 2000] [--recipients 5] [--sessions 10]
        [--size 4096] [--entries 1000000] [--dir DIR] [--repeat 3] [--no-postfix] [--workers N] [--event-loop L]

Like bench/relay_bench.py (whose helpers it imports: the sink, the lists, the
private before-queue Postfix, the measurement and the report), but the load is
what an organisation's mail server sends: `smtp-source -d`, each of --sessions
connections carrying message after message.  Targets, in turn:

- direct: smtp-sink itself (baseline);
- postfix: Postfix's before-queue proxy (`smtpd_proxy_filter` = the sink) with
  `check_recipient_access` over the same N-entry table, connections reused too;
- smtpguard: `smtpguard serve` with a `[gateway]` listener (trusted network
  127.0.0.0/8, next hop = the sink without TLS, mode reject, the loop header
  added to every message), its session to the next hop kept across messages.

Correctness is checked as in relay_bench: no suppressed recipient reached
the sink, every other recipient did.  Exits 1 when a check fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from relay_bench import (  # bench/ is on sys.path when this file is run; it puts the project root there too
    BenchPostfix,
    Sink,
    _interrupt,
    missing_tools,
    parse_args,
    report,
    run_all,
    server_keys,
    sink_and_list_config,
    start_baselines,
    start_smtpguard,
    stop_all,
)

from tests.interop.mta import LOOPBACK, free_port


def write_gateway_config(
    path: Path, port: int, gateway_port: int, sink_port: int, db: Path, secret: Path, server: str = ""
) -> None:
    secret.write_text(os.urandom(24).hex())
    path.write_text(
        "[server]\n"
        f'listen = "{LOOPBACK}:{port}"\n'
        'auth = "none"\n' + server + "\n[gateway]\n"
        f'listen = "{LOOPBACK}:{gateway_port}"\n'
        'networks = ["127.0.0.0/8"]\n'
        f'loop_secret_file = "{secret}"\n'
        "\n[gateway.next_hop]\n" + sink_and_list_config(sink_port, db)
    )


def main() -> int:
    args = parse_args(__doc__)
    args.reuse = True  # smtp-source -d: what an MTA does
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if missing_tools():
        return 2
    cache = (args.dir or Path(tempfile.mkdtemp(prefix="smtpguard-gateway-bench-"))).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sggb-", dir="/tmp"))
    work.chmod(0o755)
    sink = Sink(work / "sink")
    postfix: BenchPostfix | None = None
    relay: subprocess.Popen[bytes] | None = None
    ok = False
    try:
        postfix, targets, db = start_baselines(args, cache, work, sink)
        cfg, gateway_port = work / "smtpguard.toml", free_port()
        write_gateway_config(cfg, free_port(), gateway_port, sink.port, db, work / "loop.secret", server_keys(args))
        relay, target = start_smtpguard(cfg, gateway_port, work)
        targets.append(target)
        runs, ok = run_all(args, targets, sink, work)
        report(targets, runs, args)
        ok = ok and relay.poll() is None
        if ok:
            print("correctness: no suppressed recipient reached the sink; every other recipient did")
    finally:
        stop_all(relay, postfix, sink, work, ok)
        if args.dir is None:
            shutil.rmtree(cache, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
