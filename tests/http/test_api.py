"""The JSON API over real HTTP against a running relay: tokens, entries, imports, sources, audit, health."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from smtpguard.config import ConfigError, Endpoint, Settings, from_mapping
from smtpguard.http.server import HttpRefused, check_http, http_problems
from smtpguard.runtime.extras import start_extras
from smtpguard.suppression.store import MemoryStore

from .conftest import Side, open_session


async def test_tokens_are_required_and_scoped(side: Side) -> None:
    async with side.client() as anonymous, side.client("sg_not-a-token") as forged, side.client(side.read) as reader:
        assert (await anonymous.get("/api/v1/entries")).status_code == 401
        assert (await forged.get("/api/v1/entries")).status_code == 401
        assert (await reader.get("/api/v1/entries")).status_code == 200
        refused = await reader.post("/api/v1/entries", json={"entries": ["x@example.com"]})
        assert refused.status_code == 403
    assert await side.relay.ctx.store.match(["x@example.com"]) is None
    await side.relay.ctx.store.remove_token("grafana")
    async with side.client(side.read) as revoked:
        assert (await revoked.get("/api/v1/entries")).status_code == 401


async def test_add_check_list_remove_and_the_audit_trail(side: Side) -> None:
    async with side.client(side.write) as api:
        added = await api.post("/api/v1/entries", json={"entries": ["A.One@Example.com", "@spam.example",
                               "jane.doe@example.com"], "source": "crm", "reason": "asked by phone"})  # fmt: skip
        assert added.status_code == 200
        assert [(r["key"], r["added"]) for r in added.json()] == [
            ("a.one@example.com", True), ("@spam.example", True), ("jane.doe@example.com", False)]  # fmt: skip
        bad = await api.post("/api/v1/entries", json={"entries": ["ok@example.com", "not an address"]})
        assert bad.status_code == 400 and "not an address" in bad.json()["detail"]
        assert await side.relay.ctx.store.match(["ok@example.com"]) is None  # nothing written
        hit = (await api.get("/api/v1/check", params={"address": "x@spam.example"})).json()
        assert hit["blocked"] is True and hit["source"] == "crm" and hit["key"] == "@spam.example"
        many = (await api.post("/api/v1/check", json={"addresses": ["a.one@example.com", "b@ok.example"]})).json()
        assert [r["blocked"] for r in many] == [True, False]
        page = (await api.get("/api/v1/entries", params={"limit": 2})).json()
        assert [e["key"] for e in page["entries"]] == ["@spam.example", "a.one@example.com"]
        assert page["next_offset"] == 2
        last = (await api.get("/api/v1/entries", params={"limit": 2, "offset": 2})).json()
        assert [e["key"] for e in last["entries"]] == ["jane.doe@example.com"] and last["next_offset"] is None
        found = (await api.get("/api/v1/entries", params={"search": "SPAM"})).json()
        assert [e["key"] for e in found["entries"]] == ["@spam.example"]
        removed = await api.post("/api/v1/entries/remove", json={"entries": ["a.one@example.com", "no@x.example"]})
        assert [r["removed"] for r in removed.json()] == [True, False]
        events = (await api.get("/api/v1/events", params={"user": "token:crm-bot"})).json()
        assert [(e["action"], e["entry"], e["client"]) for e in events] == [
            ("api-add", "a.one@example.com", "127.0.0.1"), ("api-add", "@spam.example", "127.0.0.1"),
            ("api-remove", "a.one@example.com", "127.0.0.1")]  # fmt: skip
        assert (await api.get("/api/v1/events", params={"until": "2000-01-01"})).json() == []
        assert (await api.get("/api/v1/events", params={"until": "yesterday"})).status_code == 400


async def test_import_upload_gives_the_cli_counts_and_rejects(side: Side) -> None:
    csv = b"email,name\njane.doe@example.com,Jane\nnew.one@example.com,New\nnot-an-address,Bad\ntwo@example.com,Two\n"
    async with side.client(side.write) as api:
        r = await api.post("/api/v1/imports", files={"file": ("hubspot-export.csv", csv, "text/csv")},
                           data={"reason": "export"})  # fmt: skip
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["source"], got["rows"], got["added"], got["duplicates"], got["invalid"]) == (
            "hubspot-export", 4, 2, 1, 1)  # fmt: skip
        assert [(x["line"], x["text"]) for x in got["rejects"]] == [(4, "not-an-address,Bad")]
        broken = await api.post("/api/v1/imports", files={"file": ("empty.csv", b"", "text/csv")})
        assert broken.status_code == 400 and "empty.csv" in broken.json()["detail"]
        events = (await api.get("/api/v1/events", params={"user": "token:crm-bot"})).json()
        assert [(e["action"], e["source"]) for e in events] == [("api-import", "hubspot-export")]
    assert await side.relay.ctx.store.match(["new.one@example.com"]) is not None


async def test_put_a_source_syncs_it_and_the_guard_refuses_emptying_it(side: Side) -> None:
    async with side.client(side.write) as api:
        first = await api.put("/api/v1/sources/crm", json={"entries": ["a@example.com", "b@example.com"]})
        assert first.json()["added"] == 2
        second = (await api.put("/api/v1/sources/crm", json={"entries": ["b@example.com", "c@example.com"]})).json()
        assert (second["added"], second["removed"], second["unchanged"]) == (1, 1, 1)
        empty = await api.put("/api/v1/sources/crm", json={"entries": []})
        assert empty.status_code == 400 and "would remove all" in empty.json()["detail"]
        forced = (await api.put("/api/v1/sources/crm", json={"entries": [], "force": True})).json()
        assert forced["removed"] == 2
    assert await side.relay.ctx.store.match(["jane.doe@example.com"]) is not None  # other sources untouched


def metric(text: str, series: str) -> float:
    """A series' value in a scrape (0 when absent); the registry is process-wide, so compare deltas."""
    return next((float(line.rpartition(" ")[2]) for line in text.splitlines() if line.rpartition(" ")[0] == series), 0)


async def test_health_and_metrics(side: Side) -> None:
    async with side.client() as http:
        before = (await http.get("/metrics")).text
    client = await open_session(side)
    await client.rcpt("bob@ok.example")
    with pytest.raises(aiosmtplib.SMTPRecipientRefused):
        await client.rcpt("jane.doe@example.com")
    await client.data(b"From: alice@corp.example\r\nTo: bob@ok.example\r\nSubject: hi\r\n\r\nHello\r\n")
    await client.quit()
    async with side.client() as http:
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json() | {"entries": None} == {"status": "ok", "relay_accepting": True, "store_readable": True,
                                                     "upstream_reachable": True, "entries": None}  # fmt: skip
        text = (await http.get("/metrics")).text
    for series, delta in [
        ("smtpguard_messages_relayed_total", 1),
        ('smtpguard_recipients_total{action="rejected",source="lemlist"}', 1),
        ('smtpguard_rcpt_lookup_seconds_bucket{le="+Inf"}', 2),
        ("smtpguard_rcpt_lookup_seconds_count", 2),
    ]:
        assert metric(text, series) - metric(before, series) == delta, series
    assert metric(text, 'smtpguard_list_entries{source="lemlist"}') == 1
    side.relay.ctx.accepting = False
    async with side.client() as http:
        assert (await http.get("/healthz")).status_code == 503


async def test_off_loopback_needs_tls_and_a_token() -> None:
    public = Settings(http=from_mapping({"http": {"listen": "192.0.2.1:8443"}}).http)
    assert "tls_cert" in http_problems(public)[0]
    with pytest.raises(HttpRefused, match="token add"):
        await check_http(public, MemoryStore())
    assert http_problems(Settings(http=from_mapping({"http": {"listen": "127.0.0.1:8080"}}).http)) == []


async def test_serve_refuses_the_http_side_off_loopback_without_tls(side: Side) -> None:
    settings = side.relay.ctx.settings
    public = from_mapping({"http": {"listen": "192.0.2.1:8443"}})
    with pytest.raises(ConfigError, match="tls_cert"):
        await start_extras(side.relay, replace(settings, http=public.http))


def test_config_reads_http_and_sync() -> None:
    s = from_mapping({"http": {"listen": "127.0.0.1:8080"}, "sync": [
        {"name": "hubspot", "provider": "hubspot", "interval": 3600, "token_file": "/etc/smtpguard/hubspot.token"},
        {"name": "news", "provider": "mailchimp", "webhook_secret_file": "/etc/smtpguard/mc.secret"}]})  # fmt: skip
    assert s.http.listen == Endpoint("127.0.0.1", 8080)
    assert [(e.name, e.interval) for e in s.sync] == [("hubspot", 3600.0), ("news", None)]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"sync": [{"name": "x", "provider": "nosuch", "interval": 60}]}, "provider"),
        ({"sync": [{"name": "x", "provider": "brevo"}]}, "interval"),
        ({"sync": [{"name": "x", "provider": "brevo", "interval": 60}]}, "no pull connector"),
        ({"sync": {"name": "x"}}, "array of tables"),
        ({"sync": [{"name": "a b", "provider": "brevo", "webhook_secret_file": "/s"}]}, "letters, digits"),
        ({"sync": [{"name": "mc", "provider": "mailchimp", "interval": 60, "api_key_file": "/k"}]}, "needs list_id"),
        ({"http": {"listen": "127.0.0.1:8080", "tls_cert": "/c.pem"}}, "go together"),
    ]
    for bad, why in cases:
        with pytest.raises(ConfigError, match=why):
            from_mapping(bad)


def test_config_show_prints_sync_entries_that_load_back(tmp_path: Path) -> None:
    from smtpguard.cli.configuration import show_lines

    settings = from_mapping({"sync": [
        {"name": "hubspot", "provider": "hubspot", "interval": 3600, "token_file": str(tmp_path / "hs.token")},
        {"name": "news", "provider": "mailchimp", "webhook_secret_file": str(tmp_path / "mc.secret")}]})  # fmt: skip
    text = "\n".join(show_lines(settings, everything=True))
    assert from_mapping(tomllib.loads(text)).sync == settings.sync


async def test_the_list_owners_page_is_served_by_the_same_http_side(side: Side) -> None:
    """Issue 13: the page is a client of the same service layer, mounted on the relay's HTTP side."""
    async with side.client() as http:
        login = await http.get("/page/login")
        assert login.status_code == 200 and "<form" in login.text and "csrf" in login.text.lower()
        assert (await http.get("/page/")).status_code in (303, 307, 302)  # not signed in: to the sign-in page
        assert "/page" not in (await http.get("/api/v1/openapi.json")).text  # the API document stays the API's
