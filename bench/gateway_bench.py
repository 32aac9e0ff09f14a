"""Gateway throughput: messages per second through smtpguard's [gateway] listener, an MTA as the client.

    .venv/bin/python bench/gateway_bench.py [--messages 2000] [--recipients 5] [--sessions 10]
        [--size 4096] [--entries 1000000] [--dir DIR] [--repeat 3] [--no-postfix]

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

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from relay_bench import (  # bench/ is on sys.path when this file is run; it puts the project root there too
    BenchPostfix,
    Run,
    Sink,
    Target,
    _interrupt,
    build_postfix_table,
    build_sqlite_list,
    measure,
    process_cpu,
    report,
    smtpguard_command,
    stop_process,
    tree_cpu,
    wait_port,
    which,
    zero_cpu,
)

from tests.interop.mta import LOOPBACK, free_port


def write_gateway_config(path: Path, port: int, gateway_port: int, sink_port: int, db: Path, secret: Path) -> None:
    secret.write_text(os.urandom(24).hex())
    path.write_text(
        "[server]\n"
        f'listen = "{LOOPBACK}:{port}"\n'
        'auth = "none"\n'
        "\n[gateway]\n"
        f'listen = "{LOOPBACK}:{gateway_port}"\n'
        'networks = ["127.0.0.0/8"]\n'
        f'loop_secret_file = "{secret}"\n'
        "\n[gateway.next_hop]\n"
        f'host = "{LOOPBACK}"\n'
        f"port = {sink_port}\n"
        'security = "none"\n'
        "\n[policy]\n"
        'mode = "reject"\n'
        "\n[store]\n"
        f'path = "{db}"\n'
    )


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--recipients", type=int, default=5, help="recipients per message")
    ap.add_argument("--sessions", type=int, default=10, help="parallel SMTP sessions of smtp-source")
    ap.add_argument("--size", type=int, default=4096, help="message payload, bytes")
    ap.add_argument("--entries", type=int, default=1_000_000, help="suppression list size")
    ap.add_argument("--dir", type=Path, help="keep the built lists here (default: a temporary directory)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each target; the best msg/s counts")
    ap.add_argument("--no-postfix", action="store_true", help="skip the Postfix baseline")
    args = ap.parse_args()
    args.reuse = True  # smtp-source -d: what an MTA does
    return args


def start_postfix(work: Path, cache: Path, sink: Sink, entries: int) -> tuple[BenchPostfix, Target]:
    postfix = BenchPostfix(work / "postfix", sink.port, cache / f"postfix-access-{entries}")
    postfix.root.mkdir()
    postfix.root.chmod(0o755)
    postfix.prepare()
    build_postfix_table(postfix.table, entries, postfix.etc)
    postfix.launch()

    def postfix_cpu() -> float:
        pid = postfix.master_pid()
        return tree_cpu(pid) if pid else 0.0

    return postfix, Target("postfix", postfix.port, postfix_cpu, filtered=True)


def run_all(args: argparse.Namespace, targets: list[Target], sink: Sink, work: Path) -> bool:
    """Warm up, then --repeat alternating runs; the report; True when every check held."""
    ok = True
    for t in targets:
        r = measure(args, t, sink, min(200, args.messages), work)
        print(f"warm-up {t.name}: {r.rate:,.0f} msg/s", flush=True)
    runs: dict[str, list[Run]] = {t.name: [] for t in targets}
    for i in range(args.repeat):
        for t in targets:
            r = measure(args, t, sink, args.messages, work)
            runs[t.name].append(r)
            print(f"run {i + 1}/{args.repeat} {t.name}: {r.rate:,.0f} msg/s", flush=True)
            for p in r.problems:
                ok = False
                print(f"FAIL {t.name}: {p}", flush=True)
    report(targets, runs, args)
    return ok


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    missing = [t for t in ("smtp-source", "smtp-sink") if which(t) is None]
    if missing:
        print(f"needs {', '.join(missing)}: run `bash scripts/install-interop.sh`", file=sys.stderr)
        return 2
    with_postfix = not args.no_postfix and os.geteuid() == 0 and which("postfix") is not None
    cache = (args.dir or Path(tempfile.mkdtemp(prefix="smtpguard-gateway-bench-"))).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sggb-", dir="/tmp"))
    work.chmod(0o755)
    sink = Sink(work / "sink")
    postfix: BenchPostfix | None = None
    relay: subprocess.Popen[bytes] | None = None
    ok = False
    try:
        sg_list = cache / f"smtpguard-list-{args.entries}.db"
        build_sqlite_list(sg_list, args.entries)
        sink.start()
        targets = [Target("direct", sink.port, zero_cpu, filtered=False)]
        if with_postfix:
            postfix, target = start_postfix(work, cache, sink, args.entries)
            targets.append(target)
        else:
            print("Postfix baseline skipped (--no-postfix, not root, or no postfix)", flush=True)
        db = work / "smtpguard.db"
        shutil.copyfile(sg_list, db)
        cfg, gateway_port = work / "smtpguard.toml", free_port()
        write_gateway_config(cfg, free_port(), gateway_port, sink.port, db, work / "loop.secret")
        with (work / "smtpguard.log").open("ab") as log:
            relay = subprocess.Popen(
                [*smtpguard_command(), "serve", "--config", str(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = relay
        wait_port(gateway_port, lambda: proc.poll() is None, "smtpguard serve")
        targets.append(Target("smtpguard", gateway_port, lambda: process_cpu(proc.pid), filtered=True))
        ok = run_all(args, targets, sink, work) and relay.poll() is None
        if ok:
            print("correctness: no suppressed recipient reached the sink; every other recipient did")
    finally:
        if relay is not None:
            stop_process(relay)
        if postfix is not None:
            with contextlib.suppress(Exception):
                postfix.stop()
        sink.stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)
        if args.dir is None:
            shutil.rmtree(cache, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
