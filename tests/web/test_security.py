"""The page over real HTTP: sign-in, CSRF on every write, roles, cookies, throttling, failures."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from smtpguard.config import Settings
from smtpguard.service import open_service

from ..smtp_fixtures import Certs
from .conftest import PASSWORD, Page, serve, stop

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html[:500]
    return found.group(1)


def signed_in(page: Page, name: str, **kw: object) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=page.url, **kw)  # type: ignore[arg-type]
    token = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"name": name, "password": PASSWORD, "csrf": token})
    assert r.status_code == 303, r.text
    return c, csrf_of(c.get("/").text)


def blocked(settings: Settings, address: str) -> bool:
    async def check() -> bool:
        async with open_service(settings) as svc:
            return (await svc.check([address]))[0].blocked

    return asyncio.run(check())


def uploaded(c: httpx.Client, token: str, body: bytes, name: str = "list.csv") -> httpx.Response:
    return c.post("/import", data={"csrf": token}, files={"file": (name, body, "text/csv")})


def test_pages_need_sign_in(page: Page) -> None:
    with httpx.Client(base_url=page.url) as c:
        for path in ("/", "/import", "/sources", "/activity", "/activity.csv"):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/page/login", path


def test_every_write_without_the_csrf_token_is_refused(page: Page) -> None:
    c, token = signed_in(page, "ad")
    writes: list[tuple[str, dict[str, str]]] = [
        ("/add", {"entry": "new@example.com"}),
        ("/remove", {"entry": "jane.doe@example.com"}),
        ("/import/anything/start", {}),
        ("/logout", {}),
    ]
    for path, data in writes:
        for bad in ({}, {"csrf": "forged"}, {"csrf": ""}):
            r = c.post(path, data={**data, **bad})
            assert r.status_code == 403, (path, bad, r.status_code)
            assert "expired" in r.text
    assert uploaded(c, "forged", b"email\nz@example.com\n").status_code == 403
    assert blocked(page.settings, "jane.doe@example.com")
    assert not blocked(page.settings, "new@example.com")
    assert c.get("/").status_code == 200  # still signed in: logout was refused too
    # the sign-in form itself: double-submit token
    with httpx.Client(base_url=page.url) as anon:
        anon.get("/login")
        r = anon.post("/login", data={"name": "ed", "password": PASSWORD, "csrf": "forged"})
        assert r.status_code == 403 and "smtpguard_session" not in r.cookies
    # and with the token, the same write goes through
    assert c.post("/add", data={"entry": "new@example.com", "csrf": token}).status_code == 303
    assert blocked(page.settings, "new@example.com")


def test_a_viewer_can_look_but_not_write(page: Page) -> None:
    c, token = signed_in(page, "vi")
    r = c.get("/", params={"q": "jane.doe@example.com"})
    assert "unsubscribed 2026-11-02" in r.text and "/remove?" not in r.text
    assert c.post("/add", data={"entry": "new@example.com", "csrf": token}).status_code == 403
    assert c.post("/remove", data={"entry": "jane.doe@example.com", "csrf": token}).status_code == 403
    assert c.get("/remove", params={"entry": "jane.doe@example.com"}).status_code == 403
    assert uploaded(c, token, b"email\nz@example.com\n").status_code == 403
    assert blocked(page.settings, "jane.doe@example.com") and not blocked(page.settings, "new@example.com")
    assert c.get("/activity").status_code == 200


def test_accounts_without_a_web_role_cannot_sign_in(page: Page) -> None:
    with httpx.Client(base_url=page.url) as c:
        token = csrf_of(c.get("/login").text)
        r = c.post("/login", data={"name": "mailonly", "password": PASSWORD, "csrf": token})
        assert r.status_code == 401 and "smtpguard_session" not in r.cookies


def cookie_flags(response: httpx.Response, name: str) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            return header.lower()
    raise AssertionError(f"no {name} cookie in {response.headers}")


def test_session_cookie_is_httponly_samesite_and_not_secure_over_plain_http(page: Page) -> None:
    with httpx.Client(base_url=page.url) as c:
        login = c.get("/login")
        assert "httponly" in cookie_flags(login, "smtpguard_csrf")
        r = c.post("/login", data={"name": "ed", "password": PASSWORD, "csrf": csrf_of(login.text)})
        flags = cookie_flags(r, "smtpguard_session")
        assert "httponly" in flags and "samesite=strict" in flags and "path=/page" in flags
        assert "secure" not in flags.split(";")[1:] and "; secure" not in flags


def test_session_cookie_is_secure_over_tls(settings: Settings, certs: Certs) -> None:
    page = serve(settings, certs)
    try:
        with httpx.Client(base_url=page.url, verify=ssl.create_default_context(cafile=str(certs.ca_file))) as c:
            login = c.get("/login")
            assert "; secure" in cookie_flags(login, "smtpguard_csrf")
            r = c.post("/login", data={"name": "ed", "password": PASSWORD, "csrf": csrf_of(login.text)})
            flags = cookie_flags(r, "smtpguard_session")
            assert "; secure" in flags and "httponly" in flags and "samesite=strict" in flags
            assert c.get("/").status_code == 200
    finally:
        stop(page)


def test_sign_in_is_throttled_per_address_and_logged(page: Page, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smtpguard.web")
    with httpx.Client(base_url=page.url) as c:
        token = csrf_of(c.get("/login").text)
        for _ in range(5):
            r = c.post("/login", data={"name": "ed", "password": "wrong", "csrf": token})
            assert r.status_code == 401
        # the right password no longer helps from this address
        r = c.post("/login", data={"name": "ed", "password": PASSWORD, "csrf": token})
        assert r.status_code == 429 and "Too many attempts" in r.text
        assert "smtpguard_session" not in r.cookies
    failures = [m for m in caplog.messages if "failed sign-in for 'ed' from 127.0.0.1" in m]
    assert len(failures) == 5
    assert any("too many attempts" in m and "127.0.0.1" in m for m in caplog.messages)
    assert not any("wrong" in m or PASSWORD in m for m in caplog.messages)  # passwords never logged


def test_unreadable_store_gives_a_clear_page(page: Page) -> None:
    c, _ = signed_in(page, "ed")
    db = Path(page.settings.store.path)
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 100)
    r = c.get("/", params={"q": "jane.doe@example.com"})
    assert r.status_code == 503
    assert "cannot be read" in r.text and "Traceback" not in r.text
    r = c.get("/sources")
    assert r.status_code == 503 and "cannot be read" in r.text
    with httpx.Client(base_url=page.url) as anon:  # signing in needs the store too
        r = anon.post("/login", data={"name": "ed", "password": PASSWORD, "csrf": csrf_of(anon.get("/login").text)})
        assert r.status_code == 503 and "cannot be read" in r.text and "Traceback" not in r.text


def test_broken_import_shows_the_reason(page: Page) -> None:
    c, token = signed_in(page, "ed")
    r = uploaded(c, token, bytes(range(256)) * 10, "photo.csv")
    assert r.status_code == 400
    assert "cannot be imported" in r.text and "photo.csv" in r.text and "not a text, CSV or XLSX" in r.text
    r = uploaded(c, token, b"name;city\nJean;Paris\nMarie;Lyon\n", "noaddr.csv")
    assert r.status_code == 400 and "no address column" in r.text


def test_import_counts_and_refused_rows_download(page: Page) -> None:
    c, token = signed_in(page, "ed")
    body = b"email\nok1@example.com\nnot an address\nok2@example.com\njane.doe@example.com\n"
    r = uploaded(c, token, body)
    assert r.status_code == 200 and "email" in r.text
    job = re.search(r"/import/([\w-]+)/start", r.text)
    assert job
    r = c.post(f"/import/{job.group(1)}/start", data={"csrf": token, "source": "april"})
    assert r.status_code == 303
    for _ in range(200):
        progress = c.get(f"/import/{job.group(1)}/progress").json()
        if progress["state"] != "running":
            break
        asyncio.run(asyncio.sleep(0.05))
    assert progress["state"] == "done" and progress["percent"] == 100
    page_text = c.get(f"/import/{job.group(1)}").text
    assert re.search(r'id="count-added">2<', page_text) and re.search(r'id="count-invalid">1<', page_text)
    refused = c.get(f"/import/{job.group(1)}/rejects.csv")
    assert refused.headers["content-type"].startswith("text/csv")
    assert refused.text.splitlines()[0] == "line,text,reason" and refused.text.splitlines()[1].startswith("3,")
    # another user cannot see this import
    other, _ = signed_in(page, "ad")
    assert other.get(f"/import/{job.group(1)}/rejects.csv").status_code == 400


def test_a_large_import_shows_its_progress(page: Page) -> None:
    c, token = signed_in(page, "ed")
    body = "email;name\n" + "".join(f"user{i}@bulk{i % 97}.example;Name {i}\n" for i in range(150_000))
    r = uploaded(c, token, body.encode())
    job = re.search(r"/import/([\w-]+)/start", r.text)
    assert job and r.status_code == 200
    c.post(f"/import/{job.group(1)}/start", data={"csrf": token})
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        progress = c.get(f"/import/{job.group(1)}/progress").json()
        seen.append(progress["percent"])
        if progress["state"] != "running":
            break
        time.sleep(0.01)
    assert progress["state"] == "done" and progress["percent"] == 100
    assert progress["read"] == progress["size"] == len(body)  # every byte counted once
    assert any(0 < p < 100 for p in seen), seen  # it moved while running
    assert seen == sorted(seen)
    assert re.search(r'id="count-added">150000<', c.get(f"/import/{job.group(1)}").text)


def test_activity_filters_by_person_and_date_and_exports_csv(page: Page) -> None:
    c, _ = signed_in(page, "vi")
    r = c.get("/activity", params={"person": "bob"})
    assert 'id="total">2<' in r.text and "alice@corp.example" not in r.text and "<svg" in r.text
    r = c.get("/activity", params={"start": "2026-11-21", "end": "2026-11-21"})
    assert 'id="total">2<' in r.text
    csv_text = c.get("/activity.csv", params={"person": "alice"}).text
    lines = csv_text.splitlines()
    assert lines[0].startswith("time,action,sender") and len(lines) == 3
    assert c.get("/activity", params={"start": "yesterday"}).status_code == 400


def test_sources_show_counts_and_sync_state(page: Page) -> None:
    c, _ = signed_in(page, "vi")
    r = c.get("/sources")
    assert "2026-12-01T08:00:00+00:00" in r.text  # crm's connector
    assert "not configured" in r.text  # legal has none
    assert re.search(r"crm</td><td class=\"num\">2<", r.text)


def test_language_from_the_browser_and_the_switch(page: Page) -> None:
    with httpx.Client(base_url=page.url) as c:
        assert "Se connecter" in c.get("/login", headers={"Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5"}).text
        assert "Sign in" in c.get("/login", headers={"Accept-Language": "de, en;q=0.5"}).text
        r = c.get("/lang/fr", params={"next": "/page/login"})
        assert r.status_code == 303 and r.headers["location"] == "/page/login"
        assert "Se connecter" in c.get("/login", headers={"Accept-Language": "en"}).text
        # the switch never sends anyone off-site
        for away in ("https://evil.example/", "//evil.example/", "/page/\\evil.example", "/\\evil.example"):
            assert c.get("/lang/en", params={"next": away}).headers["location"] == "/page/", away
        cookie = SimpleCookie(r.headers["set-cookie"])
        assert cookie["smtpguard_lang"].value == "fr"
