"""Import speed: smtpguard against a bare csv.reader -> SQLite loader.

    .venv/bin/python bench/import_bench.py [--rows 1000000] [--dir DIR] [--inprocess] [--no-fail]

Writes a French-style export (`;`, UTF-8 BOM, five columns, realistic domains,
some tagged, uppercase and IDN addresses, ~1.5% invalid rows), then runs, each
in its own subprocess so that wall clock and peak RSS compare:

- reference: `csv.reader` -> `executemany("INSERT OR IGNORE ...")` of the
  address column into a fresh SQLite file (WAL, one transaction), no checks;
- smtpguard: `smtpguard import FILE --db NEW --json` (CLI start-up included),
  or with `--inprocess` `iter_entries` + `SQLiteStore.add_entries` in a child
  Python (useful under a profiler: `--inprocess --profile`).

Exits 1 when smtpguard takes more than 3x the reference or peaks at >= 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

MAX_RATIO = 3.0
MAX_RSS_MB = 300.0
ROOT = Path(__file__).resolve().parent.parent

FIRST = [
    "Jean",
    "Marie",
    "Pierre",
    "Sophie",
    "Luc",
    "Camille",
    "Hélène",
    "François",
    "Zoé",
    "Thomas",
    "Léa",
    "Nicolas",
    "Chloé",
    "Mathieu",
    "Inès",
    "Julien",
    "Élodie",
    "Antoine",
    "Manon",
    "Céline",
]
LAST = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
    "Simon",
    "Laurent",
    "Lefèvre",
    "Michel",
    "Garcia",
    "Müller",
    "N'Diaye",
    "Da Silva",
]
COMPANIES = [
    "ACME",
    "Dupont & Fils",
    "Boulangerie Martin, SARL",
    "Transports Leroy",
    "Cabinet Moreau",
    "Société Générale de Conseil",
    "Bücher GmbH",
    "Atelier Petit",
    "Groupe Simon",
    "Nexity",
]
FREEMAIL = [
    "gmail.com",
    "hotmail.fr",
    "hotmail.com",
    "orange.fr",
    "wanadoo.fr",
    "free.fr",
    "yahoo.fr",
    "laposte.net",
    "outlook.fr",
    "sfr.fr",
    "googlemail.com",
    "icloud.com",
]
IDN = ["bücher.de", "société.fr", "café-crème.fr", "müller.ch"]
INVALID = [
    "jean.dupont@",
    "marie martin@orange.fr",
    "pierre(at)gmail.com",
    "",
    "n/a",
    "luc@@free.fr",
    "sophie@gmail",
    "camille.dubois@.fr",
    "@wanadoo.fr",
    "thomas@exa_mple.com",
]
HEADER = "Prénom;Nom;Société;Adresse e-mail;Date de désinscription"


def ascii_fold(text: str) -> str:
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isalnum() and c.isascii()).lower()


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """A `rows`-row export like lemlist/Humanlinker's unsubscribed list."""
    rnd = random.Random(seed)
    company_domains = [f"{ascii_fold(c)[:12]}{i}.fr" for i, c in enumerate(COMPANIES * 300)]
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        fh.write(HEADER + "\r\n")
        lines = []
        for n in range(rows):
            first, last = rnd.choice(FIRST), rnd.choice(LAST)
            company = rnd.choice(COMPANIES)
            r = rnd.random()
            if r < 0.015:
                email = rnd.choice(INVALID)
            else:
                local = f"{ascii_fold(first)}.{ascii_fold(last)}{n}"
                if r < 0.017:
                    domain = rnd.choice(IDN)
                elif r < 0.5:
                    domain = rnd.choice(FREEMAIL)
                else:
                    domain = rnd.choice(company_domains)
                if r % 0.1 < 0.01:
                    local += "+news"
                email = f"{local}@{domain}"
                if r % 0.05 < 0.005:
                    email = email.upper()
            if "," in company or ";" in company:
                company = f'"{company}"'
            day = 1 + n % 28
            lines.append(f"{first};{last};{company};{email};{day:02d}/03/2024 10:{n % 60:02d}")
            if len(lines) == 10000:
                fh.write("\r\n".join(lines) + "\r\n")
                lines.clear()
        if lines:
            fh.write("\r\n".join(lines) + "\r\n")


REFERENCE = r"""
import csv, sqlite3, sys
src, db = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db, isolation_level=None)
con.execute("PRAGMA journal_mode=WAL")
con.execute("PRAGMA synchronous=NORMAL")
con.execute("CREATE TABLE t (email TEXT PRIMARY KEY) WITHOUT ROWID")
with open(src, encoding="utf-8-sig", newline="") as fh:
    rows = csv.reader(fh, delimiter=";")
    next(rows)
    con.execute("BEGIN")
    con.executemany("INSERT OR IGNORE INTO t(email) VALUES (?)", ((r[3],) for r in rows if len(r) > 3))
    con.execute("COMMIT")
print(con.execute("SELECT count(*) FROM t").fetchone()[0])
"""

INPROCESS = r"""
import asyncio, json, sys
from pathlib import Path
from smtpguard.suppression.addresses import MatchRules
from smtpguard.suppression.formats import FileStats, iter_entries
from smtpguard.suppression.store import open_store, utc_now

async def main(src, db):
    rules = MatchRules()
    store = await open_store(Path(db), rules)
    stats = FileStats()
    rows = iter_entries(Path(src), rules=rules, source="bench", reason="unsubscribed",
                        added=utc_now(), stats=stats, rejects=[])
    result = await store.add_entries(rows)
    await store.close()
    print(json.dumps({"rows": stats.rows, "added": result.added,
                      "duplicates": result.duplicates, "invalid": stats.invalid}))

if len(sys.argv) > 3:
    import cProfile, pstats
    cProfile.run("asyncio.run(main(sys.argv[1], sys.argv[2]))", sys.argv[3])
    pstats.Stats(sys.argv[3]).sort_stats("tottime").print_stats(25)
else:
    asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def smtpguard_command() -> list[str]:
    script = Path(sys.executable).with_name("smtpguard")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "smtpguard"]


class Run(NamedTuple):
    seconds: float  # wall clock
    cpu: float  # user + system seconds
    rss_mb: float  # peak resident set size
    out: str


def run_isolated(cmd: list[str]) -> Run:
    """Wall clock, CPU time, peak RSS and stdout of `cmd`, run from a fresh helper process so that
    its RUSAGE_CHILDREN peak is this command's alone (not an earlier, bigger child's)."""
    helper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "s = time.perf_counter() - t\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'s': s, 'cpu': u.ru_utime + u.ru_stime, 'rss': u.ru_maxrss / 1024,\n"
        "                  'rc': p.returncode, 'out': p.stdout, 'err': p.stderr}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", helper, *cmd], capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout)
    if res["rc"] != 0:
        sys.exit(f"{' '.join(cmd)} failed ({res['rc']}):\n{res['err'][-2000:]}")
    return Run(float(res["s"]), float(res["cpu"]), float(res["rss"]), str(res["out"]))


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, help="keep the files here (default: a temporary directory)")
    ap.add_argument("--inprocess", action="store_true", help="iter_entries + add_entries, not the CLI")
    ap.add_argument("--profile", action="store_true", help="with --inprocess: cProfile the import")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; the best wall clock counts")
    ap.add_argument("--no-fail", action="store_true", help="only print, never exit non-zero")
    args = ap.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="smtpguard-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / f"unsubscribed-{args.rows}.csv"
        if not src.exists():
            t = time.perf_counter()
            generate(src, args.rows)
            print(f"generated {src} ({src.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.1f} s")
        ref_cmd = [sys.executable, "-c", REFERENCE, str(src), str(work / "reference.db")]
        if args.inprocess:
            cmd = [sys.executable, "-c", INPROCESS, str(src), str(work / "smtpguard.db")]
            if args.profile:
                cmd.append(str(work / "import.prof"))
                print(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
                return 0
        else:
            cmd = [*smtpguard_command(), "import", str(src), "--db", str(work / "smtpguard.db"), "--json"]
        refs, ours = [], []
        for _ in range(args.repeat):  # alternate, so that a busy moment hits both
            for name in ("reference.db", "smtpguard.db"):
                for suffix in ("", "-wal", "-shm"):
                    (work / (name + suffix)).unlink(missing_ok=True)
            refs.append(run_isolated(ref_cmd))
            ours.append(run_isolated(cmd))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)

    ref, sg = min(refs), min(ours)  # best wall clock of each
    result = json.loads(sg.out)
    ratio = sg.seconds / ref.seconds
    mode = "in-process" if args.inprocess else "CLI"
    print(f"rows: {args.rows:,}  reference kept {int(ref.out.strip()):,}")
    print("smtpguard: " + ", ".join(f"{k} {result[k]:,}" for k in ("rows", "added", "duplicates", "invalid")))
    print(f"{'':<22} {'rows/s':>12} {'wall s':>8} {'CPU s':>8} {'peak RSS':>10}   (best of {args.repeat})")
    for name, r in (("reference", ref), (f"smtpguard ({mode})", sg)):
        rate = args.rows / r.seconds
        print(f"{name:<22} {rate:>12,.0f} {r.seconds:>8.2f} {r.cpu:>8.2f} {r.rss_mb:>7.1f} MB")
    peak = max(r.rss_mb for r in ours)
    print(f"ratio smtpguard/reference: {ratio:.2f} wall, {sg.cpu / ref.cpu:.2f} CPU (limit {MAX_RATIO} wall)")
    print(f"load average (1, 5 min) at the end: {os.getloadavg()[0]:.2f}, {os.getloadavg()[1]:.2f}")
    print(f"target (issue 15): import <= {MAX_RATIO}x the plain loader: {ratio:.2f}x {_verdict(ratio <= MAX_RATIO)}")
    print(f"target (issue 15): peak RSS <= {MAX_RSS_MB:.0f} MB: {peak:.1f} MB {_verdict(peak < MAX_RSS_MB)}")
    failed = ratio > MAX_RATIO or peak >= MAX_RSS_MB
    if failed and not args.no_fail:
        print("FAIL: " + ("too slow" if ratio > MAX_RATIO else f"peak RSS >= {MAX_RSS_MB:.0f} MB"))
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
