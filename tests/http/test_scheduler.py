"""Pull connectors on a timer, against local stubs that answer like the providers' APIs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smtpguard.cli import app
from smtpguard.config import SyncSettings
from smtpguard.metrics import METRICS
from smtpguard.suppression.store import SQLiteStore
from smtpguard.sync.connectors import ConnectorError, Http
from smtpguard.sync.scheduler import Scheduler, read_status
from smtpguard.sync.sync import SyncRefused

from ..sync import conftest as sync_fixtures
from ..sync.conftest import Sleeps, StubFactory, seed
from ..sync.stub_http import StubRequest, StubResponse

stub, http, sleeps, store = sync_fixtures.stub, sync_fixtures.http, sync_fixtures.sleeps, sync_fixtures.store


class Mailchimp:
    """`GET /3.0/lists/{id}/members?status=&count=&offset=` with a 429 first, or an outage."""

    def __init__(self, members: list[str]) -> None:
        self.members = members
        self.throttle = True
        self.down = False

    async def __call__(self, req: StubRequest) -> StubResponse:
        if self.down:
            return StubResponse.of_json({"title": "Service Unavailable"}, 503)
        if self.throttle:
            self.throttle = False
            return StubResponse.of_json({"title": "Too Many Requests"}, 429, **{"Retry-After": "3"})
        assert req.path == "/3.0/lists/a6b5da1054/members" and req.arg("status") == "unsubscribed"
        count, offset = int(req.arg("count") or 10), int(req.arg("offset") or 0)
        page = [{"email_address": m} for m in self.members[offset : offset + count]]
        return StubResponse.of_json({"members": page, "total_items": len(self.members)})


def entry(tmp_path: Path, base_url: str) -> SyncSettings:
    (tmp_path / "mc.key").write_text("key-us6\n")
    return SyncSettings("news", "mailchimp", interval=3600, api_key_file=tmp_path / "mc.key", list_id="a6b5da1054",
                        base_url=base_url)  # fmt: skip


async def test_a_run_pages_waits_on_429_and_records_its_status(
    tmp_path: Path, stub: StubFactory, http: Http, sleeps: Sleeps, store: SQLiteStore
) -> None:
    api = Mailchimp([f"m{i}@example.com" for i in range(2500)])  # three pages of 1000
    server = await stub(api)
    status = tmp_path / "list.db.sync.json"
    runs = METRICS.counters.get(("smtpguard_sync_runs_total", (("source", "news"),)), 0)
    result = await Scheduler(store, [entry(tmp_path, server.url)], status, http=http).run("news")
    assert (result.added, result.removed) == (2500, 0)
    assert sleeps == [3.0]  # Retry-After honoured
    assert len(server.requests) == 4
    saved = read_status(status)["news"]
    assert saved.last_success is not None and saved.failures == 0 and saved.added == 2500
    assert METRICS.counters[("smtpguard_sync_runs_total", (("source", "news"),))] == runs + 1


async def test_an_outage_changes_nothing_and_is_recorded(
    tmp_path: Path, stub: StubFactory, http: Http, store: SQLiteStore
) -> None:
    await seed(store, "news", "kept@example.com")
    api = Mailchimp([])
    api.down = True
    server = await stub(api)
    scheduler = Scheduler(store, [entry(tmp_path, server.url)], tmp_path / "status.json", http=http)
    with pytest.raises(ConnectorError, match="mailchimp"):
        await scheduler.run("news")
    with pytest.raises(ConnectorError):
        await scheduler.run("news")
    saved = read_status(tmp_path / "status.json")["news"]
    assert saved.failures == 2 and saved.last_success is None and "503" in saved.last_error
    assert [e.key async for e in store.entries(source="news")] == ["kept@example.com"]


async def test_an_empty_fetch_never_empties_the_source(
    tmp_path: Path, stub: StubFactory, http: Http, store: SQLiteStore
) -> None:
    await seed(store, "news", *(f"k{i}@example.com" for i in range(40)))
    api = Mailchimp([])  # the audience came back empty: a broken export, not 40 re-subscribes
    server = await stub(api)
    scheduler = Scheduler(store, [entry(tmp_path, server.url)], None, http=http)
    with pytest.raises(SyncRefused, match="would remove all 40"):
        await scheduler.run("news")
    api.members = [f"k{i}@example.com" for i in range(5)]  # 35 of 40 going: more than half
    with pytest.raises(SyncRefused, match="more than 50%"):
        await scheduler.run("news")
    assert len([e async for e in store.entries(source="news")]) == 40
    forced = await scheduler.run("news", force=True)
    assert forced.removed == 35


# --- the CLI: sync run NAME, sync status; token add/list/remove -------------------------------


class _Export(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"email\none@example.com\ntwo@example.com\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def export_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Export)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/unsubscribes.csv"
    server.shutdown()
    thread.join()


def test_sync_run_and_status_from_the_command_line(tmp_path: Path, export_url: str) -> None:
    config = tmp_path / "smtpguard.toml"
    sync = f'[[sync]]\nname = "export"\nprovider = "csv"\ninterval = 3600\nurl = "{export_url}"\n'
    config.write_text(f'[store]\npath = "{tmp_path / "list.db"}"\n\n{sync}')
    cli = CliRunner()
    r = cli.invoke(app, ["sync", "run", "export", "--config", str(config)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "export: 2 added, 0 removed, 0 unchanged" in r.output
    r = cli.invoke(app, ["sync", "status", "--json", "--config", str(config)], catch_exceptions=False)
    [line] = json.loads(r.stdout)
    assert (line["source"], line["entries"], line["last_failure"]) == ("export", 2, None)
    assert line["last_success"] is not None
    r = cli.invoke(app, ["sync", "run", "nosuch", "--config", str(config)])
    assert r.exit_code == 2 and "nosuch" in r.output


def test_token_add_list_remove(tmp_path: Path) -> None:
    db = str(tmp_path / "list.db")
    cli = CliRunner()
    r = cli.invoke(app, ["token", "add", "crm", "--scope", "write", "--db", db], catch_exceptions=False)
    assert r.exit_code == 0
    token = r.stdout.strip()
    assert token.startswith("sg_") and len(token) > 40
    assert cli.invoke(app, ["token", "add", "crm", "--db", db]).exit_code == 2
    listed = cli.invoke(app, ["token", "list", "--json", "--db", db]).stdout
    assert [(t["name"], t["scope"]) for t in json.loads(listed)] == [("crm", "write")]
    assert "hash" not in listed
    assert token not in listed and token not in (tmp_path / "list.db").read_bytes().decode("latin-1")
    assert cli.invoke(app, ["token", "remove", "crm", "--db", db]).exit_code == 0
    assert cli.invoke(app, ["token", "remove", "crm", "--db", db]).exit_code == 1
