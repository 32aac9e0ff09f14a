"""Pull connectors against local stubs that answer like the real APIs:
paging, 429 with Retry-After, 5xx back-off and outages."""

from __future__ import annotations

import base64
import datetime as dt
import socket

import pytest

from smtpguard.sync.connectors import (
    ConnectorError,
    CsvUrl,
    Http,
    HubSpotOptOuts,
    LemlistUnsubscribes,
    MailchimpUnsubscribed,
    hubspot_lookup,
    retry_after,
    where,
)

from .conftest import Sleeps, StubFactory
from .stub_http import StubRequest, StubResponse


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- HubSpot -----------------------------------------------------------------------


async def test_hubspot_pages_by_contact_id_and_waits_on_429(stub: StubFactory, http: Http, sleeps: Sleeps) -> None:
    # 450 opted-out contacts, every 50th without an email; ids with gaps.
    contacts = {id_: (None if id_ % 50 == 0 else f"c{id_}@example.com") for id_ in range(3, 3 + 3 * 450, 3)}
    throttled = [True]

    async def api(req: StubRequest) -> StubResponse:
        assert req.method == "POST" and req.path == "/crm/v3/objects/contacts/search"
        if req.headers.get("authorization") != "Bearer pat-token":
            return StubResponse.of_json({"status": "error", "category": "INVALID_AUTHENTICATION"}, 401)
        if throttled:
            throttled.clear()
            return StubResponse.of_json({"status": "error", "category": "RATE_LIMITS"}, 429, **{"Retry-After": "2"})
        query = req.json()
        filters = {f["propertyName"]: f for f in query["filterGroups"][0]["filters"]}
        assert filters["hs_email_optout"] == {"propertyName": "hs_email_optout", "operator": "EQ", "value": "true"}
        assert filters["hs_object_id"]["operator"] == "GT"
        after_id = int(filters["hs_object_id"]["value"])
        assert query["sorts"] == [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
        limit = query["limit"]
        matching = [i for i in sorted(contacts) if i > after_id]
        page = matching[:limit]
        results = [
            {"id": str(i), "properties": {"email": contacts[i], "hs_object_id": str(i)}, "archived": False}
            for i in page
        ]
        body: dict[str, object] = {"total": len(matching), "results": results}
        if len(matching) > limit:
            body["paging"] = {"next": {"after": str(limit)}}
        return StubResponse.of_json(body)

    server = await stub(api)
    found = await HubSpotOptOuts("pat-token", base_url=server.url).fetch(http)
    assert sorted(found) == sorted(a for a in contacts.values() if a)
    assert len(found) == 450 - 9
    assert sleeps == [2.0]  # the Retry-After, nothing else
    assert len(server.requests) == 1 + 3  # the 429, then pages of 200, 200, 50


async def test_hubspot_lookup_reads_the_contact_email(stub: StubFactory, http: Http) -> None:
    async def api(req: StubRequest) -> StubResponse:
        assert req.headers["authorization"] == "Bearer pat-token"
        assert req.arg("properties") == "email"
        if req.path == "/crm/v3/objects/contacts/123":
            return StubResponse.of_json({"id": "123", "properties": {"email": "Jane@Example.com"}})
        return StubResponse.of_json({"status": "error", "message": "resource not found"}, 404)

    server = await stub(api)
    lookup = hubspot_lookup(http, "pat-token", server.url)
    assert await lookup("123") == "Jane@Example.com"
    assert await lookup("999") is None
    assert await lookup("../admin") is None  # never put into the path
    assert len(server.requests) == 2


# --- lemlist -----------------------------------------------------------------------


async def test_lemlist_pages_by_offset_and_keeps_addresses_and_domains(
    stub: StubFactory, http: Http, sleeps: Sleeps
) -> None:
    values = [f"lead{i}@example.com" for i in range(230)]
    values[5] = "+33612345678"
    values[17] = "https://www.linkedin.com/in/someone"
    values[120] = "@competitor.example"
    answered = []

    async def api(req: StubRequest) -> StubResponse:
        assert req.path == "/api/v2/unsubscribes/variables"
        if req.headers.get("authorization") != basic("", "lem-key"):
            return StubResponse(401, b"The authentication you supplied is incorrect")
        offset, limit = int(req.arg("offset") or 0), int(req.arg("limit") or 100)
        if offset == 100 and offset not in answered:
            answered.append(offset)
            return StubResponse.of_json("Too many requests", 429, **{"Retry-After": "1"})
        page = [
            {"_id": f"uns_{i}", "value": v, "source": "user", "createdAt": "2026-10-12T10:45:21.367Z"}
            for i, v in enumerate(values[offset : offset + min(limit, 100)], start=offset)
        ]
        return StubResponse.of_json(page)

    server = await stub(api)
    found = await LemlistUnsubscribes("lem-key", base_url=server.url).fetch(http)
    assert found == [v for v in values if v not in (values[5], values[17])]
    assert "@competitor.example" in found
    assert [r.arg("offset") for r in server.requests] == ["0", "100", "100", "200"]
    assert sleeps == [1.0]


async def test_lemlist_bad_key_is_one_clear_error(stub: StubFactory, http: Http, sleeps: Sleeps) -> None:
    async def api(req: StubRequest) -> StubResponse:
        return StubResponse(401, b"The authentication you supplied is incorrect")

    server = await stub(api)
    with pytest.raises(ConnectorError, match=r"lemlist: .* answered 401 Unauthorized \(check the API key"):
        await LemlistUnsubscribes("wrong", base_url=server.url).fetch(http)
    assert len(server.requests) == 1 and sleeps == []  # a 4xx is not retried


# --- Mailchimp ---------------------------------------------------------------------


async def test_mailchimp_pages_with_count_and_offset(stub: StubFactory, http: Http) -> None:
    members = [f"member{i}@example.org" for i in range(2345)]

    async def api(req: StubRequest) -> StubResponse:
        assert req.path == "/3.0/lists/a6b5da1054/members"
        assert req.headers["authorization"] == basic("smtpguard", "0123abcd-us6")
        assert req.arg("status") == "unsubscribed"
        count, offset = int(req.arg("count") or 10), int(req.arg("offset") or 0)
        page = [{"email_address": m, "status": "unsubscribed"} for m in members[offset : offset + count]]
        return StubResponse.of_json({"members": page, "total_items": len(members)})

    server = await stub(api)
    found = await MailchimpUnsubscribed("0123abcd-us6", "a6b5da1054", base_url=server.url).fetch(http)
    assert found == members
    assert [r.arg("offset") for r in server.requests] == ["0", "1000", "2000"]
    assert {r.arg("count") for r in server.requests} == {"1000"}


def test_mailchimp_base_url_is_the_keys_data_center() -> None:
    assert MailchimpUnsubscribed("0123abcd-us6", "a1").root() == "https://us6.api.mailchimp.com"
    for key in ("0123abcd", "0123abcd-evil.example/x", "abc-"):
        with pytest.raises(ConnectorError, match="data-center suffix") as caught:
            MailchimpUnsubscribed(key, "a1").root()
        assert key not in str(caught.value)  # a key is never echoed


# --- export at a URL, retries and outages ---------------------------------------------

EXPORT = (
    "Email;Name;Unsubscribed\r\njane.doe@example.com;Jane;yes\r\nnot an address;X;yes\r\nbob@example.org;Bob;yes\r\n"
)


async def test_csv_url_backs_off_on_5xx_then_reads_like_an_import(
    stub: StubFactory, http: Http, sleeps: Sleeps
) -> None:
    failures = [503, 502]

    async def api(req: StubRequest) -> StubResponse:
        if req.headers.get("authorization") != "Bearer export-token":
            return StubResponse(403)
        if failures:
            return StubResponse(failures.pop(0), b"<html>maintenance</html>")
        return StubResponse(200, EXPORT.encode("utf-8"), {"Content-Type": "text/csv"})

    server = await stub(api)
    connector = CsvUrl(server.url + "/export.csv?token=s3cret", headers=(("Authorization", "Bearer export-token"),))
    assert await connector.fetch(http) == ["jane.doe@example.com", "bob@example.org"]
    assert sleeps == [1.0, 2.0]  # exponential back-off


async def test_outage_gives_up_with_a_clear_error_and_no_secret(stub: StubFactory, http: Http, sleeps: Sleeps) -> None:
    async def api(req: StubRequest) -> StubResponse:
        return StubResponse(503, b"down")

    server = await stub(api)
    with pytest.raises(ConnectorError) as caught:
        await CsvUrl(server.url + "/export.csv?token=s3cret").fetch(http)
    message = str(caught.value)
    assert message == f"csv: {server.url}/export.csv failed 5 times, last: 503 Service Unavailable"
    assert "s3cret" not in message
    assert sleeps == [1.0, 2.0, 4.0, 8.0]
    assert len(server.requests) == 5


async def test_unreachable_server_is_retried_then_reported(http: Http, sleeps: Sleeps) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectorError, match=r"hubspot: .* failed 5 times, last: ConnectError"):
        await HubSpotOptOuts("t", base_url=f"http://127.0.0.1:{port}").fetch(http)
    assert len(sleeps) == 4


async def test_export_that_is_not_a_list_is_refused(stub: StubFactory, http: Http) -> None:
    async def api(req: StubRequest) -> StubResponse:
        return StubResponse(200, b"")

    server = await stub(api)
    with pytest.raises(ConnectorError, match=r"csv: http://127\.0\.0\.1:\d+/x\.csv: the file is empty"):
        await CsvUrl(server.url + "/x.csv").fetch(http)


async def test_oversized_export_is_refused(stub: StubFactory, http: Http) -> None:
    async def api(req: StubRequest) -> StubResponse:
        return StubResponse(200, EXPORT.encode() * 100)

    server = await stub(api)
    with pytest.raises(ConnectorError, match="larger than 1000 bytes"):
        await CsvUrl(server.url + "/x.csv", max_bytes=1000).fetch(http)


def test_retry_after_reads_seconds_and_dates() -> None:
    now = dt.datetime(2026, 12, 1, 20, 0, 0, tzinfo=dt.UTC)
    assert retry_after("7", now) == 7.0
    assert retry_after("Tue, 01 Dec 2026 20:00:30 GMT", now) == 30.0
    assert retry_after("Tue, 01 Dec 2026 19:00:00 GMT", now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


def test_where_drops_credentials() -> None:
    assert where("https://user:pw@host.example:8443/a/b.csv?token=x#f") == "https://host.example:8443/a/b.csv"


async def test_a_published_export_that_redirects_is_followed(stub: StubFactory, http: Http) -> None:
    async def api(req: StubRequest) -> StubResponse:
        if req.path == "/published":
            return StubResponse(302, headers={"Location": "/files/export.csv"})
        return StubResponse(200, EXPORT.encode())

    server = await stub(api)
    assert await CsvUrl(server.url + "/published").fetch(http) == ["jane.doe@example.com", "bob@example.org"]


@pytest.mark.parametrize(
    "answer",
    [{"results": [{"properties": {"email": "a@example.com"}}], "paging": {"next": {"after": "1"}}}, {"status": "ok"}],
)
async def test_an_answer_of_the_wrong_shape_is_one_clear_error(
    stub: StubFactory, http: Http, answer: dict[str, object]
) -> None:
    async def api(req: StubRequest) -> StubResponse:
        return StubResponse.of_json(answer)

    server = await stub(api)
    with pytest.raises(ConnectorError, match=r"^hubspot: unexpected answer"):
        await HubSpotOptOuts("t", base_url=server.url).fetch(http)


async def test_a_url_that_is_not_http_is_not_retried(http: Http, sleeps: Sleeps) -> None:
    with pytest.raises(ConnectorError, match=r"^csv: ftp://files\.example/x\.csv is not an http\(s\) URL$"):
        await CsvUrl("ftp://files.example/x.csv").fetch(http)
    assert sleeps == []
