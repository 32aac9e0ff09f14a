"""Pull connectors: a source's full current list of unsubscribes, from a provider's API.

Each connector's `fetch(http)` follows the provider's paging and returns every
suppressed address (or `@domain`) of that source; `sync.sync_source` then
makes the source's entries exactly that set.  `Http` retries: 429 waits for
`Retry-After`, 5xx and network errors back off exponentially, and when the
attempts run out (an outage) `ConnectorError` says which provider and why.
Messages never carry a credential: URLs are shown without query or userinfo.

Settings (the `[[sync]]` entries the config step maps onto these classes):

- `HubSpotOptOuts(token)`: contacts whose `hs_email_optout` is true, through
  the CRM search API; a private app access token with `crm.objects.contacts.read`.
- `LemlistUnsubscribes(api_key)`: lemlist's unsubscribe list (Settings >
  Integrations > API key), addresses and `@domains` (phones, LinkedIn URLs skipped).
- `MailchimpUnsubscribed(api_key, list_id)`: unsubscribed members of one
  audience (Account > Extras > API keys; Audience > Settings > Audience ID).
- `CsvUrl(url)`: any export a tool publishes at a URL (CSV, text list or
  XLSX), read by the same detection as `smtpguard import`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import re
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from smtpguard.suppression.addresses import DEFAULT_RULES
from smtpguard.suppression.formats import FileStats, ImportFormatError, iter_entries

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

HUBSPOT_API = "https://api.hubapi.com"
LEMLIST_API = "https://api.lemlist.com"
# lemlist retired the legacy /api/unsubscribes routes on 2026-11-01; same shape, offset paging.
LEMLIST_UNSUBSCRIBES = "/api/v2/unsubscribes/variables"
CSV_MAX_BYTES = 512 * 1024 * 1024


class ConnectorError(RuntimeError):
    """The source could not be fetched; the message names the provider and why."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 1.0  # then doubled each time, up to max_delay
    max_delay: float = 60.0
    max_retry_after: float = 300.0  # a longer Retry-After is cut to this


def where(url: str) -> str:
    """`url` without userinfo, query or fragment: safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


class _Retry(Exception):
    def __init__(self, problem: str, wait: float | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.wait = wait


_HINTS = {401: " (check the API key or token)", 403: " (the key lacks a permission)", 404: " (check the URL or ID)"}


@dataclass
class Http:
    """An httpx client with the connectors' retry rules; `sleep` is injectable for tests."""

    client: httpx.AsyncClient
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Sleep = asyncio.sleep

    async def json(self, name: str, method: str, url: str, *, allow: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """The JSON body of a 200 answer; None for a status in `allow` (e.g. 404)."""

        async def once() -> Any:
            response = await self.client.request(method, url, **kwargs)
            if response.status_code in allow:
                return None
            self._check(name, url, response)
            try:
                return response.json()
            except ValueError:
                raise ConnectorError(f"{name}: {where(url)} did not answer JSON") from None

        return await self._retrying(name, url, once)

    async def download(self, name: str, url: str, dest: Path, *, max_bytes: int, **kwargs: Any) -> int:
        """Stream a 200 answer's body into `dest` (rewritten on each attempt); its size."""

        async def once() -> int:
            # Published exports often redirect (httpx drops Authorization across origins).
            async with self.client.stream("GET", url, follow_redirects=True, **kwargs) as response:
                self._check(name, url, response)
                size = 0
                with dest.open("wb") as out:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise ConnectorError(f"{name}: {where(url)} is larger than {max_bytes} bytes")
                        out.write(chunk)
                return size

        return await self._retrying(name, url, once)

    def _check(self, name: str, url: str, response: httpx.Response) -> None:
        code = response.status_code
        if code == 200:
            return
        status = f"{code} {response.reason_phrase}".strip()
        if code == 429:
            raise _Retry(status, retry_after(response.headers.get("Retry-After")))
        if code >= 500:
            raise _Retry(status)
        raise ConnectorError(f"{name}: {where(url)} answered {status}{_HINTS.get(code, '')}")

    async def _retrying(self, name: str, url: str, once: Callable[[], Awaitable[T]]) -> T:
        delay = self.retry.first_delay
        problem = "no attempt"
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await once()
            except _Retry as exc:
                problem, wait = exc.problem, exc.wait
            except httpx.UnsupportedProtocol:
                raise ConnectorError(f"{name}: {where(url)} is not an http(s) URL") from None
            except httpx.TransportError as exc:  # refused, reset, timeouts, bad TLS
                problem, wait = f"{type(exc).__name__}: {exc}".rstrip(": "), None
            if attempt < self.retry.attempts:
                await self.sleep(min(delay if wait is None else wait, self.retry.max_retry_after))
                delay = min(delay * 2, self.retry.max_delay)
        raise ConnectorError(f"{name}: {where(url)} failed {self.retry.attempts} times, last: {problem}")


class Connector(Protocol):
    provider: ClassVar[str]

    async def fetch(self, http: Http) -> list[str]: ...


def _items(name: str, value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConnectorError(f"{name}: unexpected answer (no {what} list)")
    return value


@contextlib.contextmanager
def _answers(name: str) -> Iterator[None]:
    """An answer of the wrong shape is one clear error, not a traceback."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise ConnectorError(f"{name}: unexpected answer ({type(exc).__name__}: {exc})") from None


def _no_progress(name: str) -> ConnectorError:
    return ConnectorError(f"{name}: paging does not advance (the same page came back twice)")


# --- HubSpot -----------------------------------------------------------------------


@dataclass(frozen=True)
class HubSpotOptOuts:
    """Contacts opted out of all email, via `POST /crm/v3/objects/contacts/search`.

    Paged by contact id (`hs_object_id GT last`, ascending), not by `after`,
    because a search stops at 10,000 results.
    """

    provider: ClassVar[str] = "hubspot"
    token: str
    base_url: str = HUBSPOT_API
    property: str = "hs_email_optout"
    page_size: int = 200  # the search API's maximum

    async def fetch(self, http: Http) -> list[str]:
        with _answers(self.provider):
            return await self._fetch(http)

    async def _fetch(self, http: Http) -> list[str]:
        url = f"{self.base_url.rstrip('/')}/crm/v3/objects/contacts/search"
        headers = {"Authorization": f"Bearer {self.token}"}
        found: list[str] = []
        last = 0
        while True:
            filters = [
                {"propertyName": self.property, "operator": "EQ", "value": "true"},
                {"propertyName": "hs_object_id", "operator": "GT", "value": str(last)},
            ]
            query = {
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                "properties": ["email"],
                "limit": self.page_size,
            }
            data = await http.json(self.provider, "POST", url, json=query, headers=headers)
            results = _items(self.provider, data.get("results") if isinstance(data, dict) else None, "results")
            for contact in results:
                address = (contact.get("properties") or {}).get("email")
                if isinstance(address, str) and address.strip():
                    found.append(address.strip())
            if not results or not (data.get("paging") or {}).get("next"):
                return found
            newest = int(results[-1]["id"])
            if newest <= last:
                raise _no_progress(self.provider)
            last = newest


def hubspot_lookup(http: Http, token: str, base_url: str = HUBSPOT_API) -> Callable[[str], Awaitable[str | None]]:
    """contact id -> its email (`GET /crm/v3/objects/contacts/{id}?properties=email`); None if gone."""

    async def lookup(contact_id: str) -> str | None:
        if not contact_id.isdigit():
            return None
        url = f"{base_url.rstrip('/')}/crm/v3/objects/contacts/{contact_id}"
        headers = {"Authorization": f"Bearer {token}"}
        data = await http.json("hubspot", "GET", url, params={"properties": "email"}, headers=headers, allow=(404,))
        address = ((data or {}).get("properties") or {}).get("email")
        return address.strip() if isinstance(address, str) and address.strip() else None

    return lookup


# --- lemlist -----------------------------------------------------------------------


@dataclass(frozen=True)
class LemlistUnsubscribes:
    """`GET /api/v2/unsubscribes/variables?offset=&limit=`, basic auth with the API key as password."""

    provider: ClassVar[str] = "lemlist"
    api_key: str
    base_url: str = LEMLIST_API
    path: str = LEMLIST_UNSUBSCRIBES
    page_size: int = 100  # lemlist's maximum

    async def fetch(self, http: Http) -> list[str]:
        with _answers(self.provider):
            return await self._fetch(http)

    async def _fetch(self, http: Http) -> list[str]:
        url = self.base_url.rstrip("/") + self.path
        found: list[str] = []
        offset = 0
        previous: list[Any] | None = None
        while True:
            params = {"offset": offset, "limit": self.page_size}
            page = _items(
                self.provider,
                await http.json(self.provider, "GET", url, params=params, auth=("", self.api_key)),
                "unsubscribes",
            )
            if page and page == previous:
                raise _no_progress(self.provider)
            for item in page:
                value = item.get("value") if isinstance(item, dict) else None
                # Emails and @domains; phone numbers and LinkedIn URLs are not ours.
                if isinstance(value, str) and "@" in value and "/" not in value:
                    found.append(value.strip())
            if len(page) < self.page_size:
                return found
            offset += len(page)
            previous = page


# --- Mailchimp ---------------------------------------------------------------------

_DATA_CENTER = re.compile(r"[a-z]{2,5}[0-9]{1,3}")
_LIST_ID = re.compile(r"[0-9A-Za-z]{1,32}")


@dataclass(frozen=True)
class MailchimpUnsubscribed:
    """`GET /3.0/lists/{id}/members?status=unsubscribed&count=&offset=`, basic auth `anystring:apikey`.

    The base URL is the key's data center (`...-us6` -> https://us6.api.mailchimp.com).
    """

    provider: ClassVar[str] = "mailchimp"
    api_key: str
    list_id: str
    base_url: str | None = None
    statuses: tuple[str, ...] = ("unsubscribed",)  # ("unsubscribed", "cleaned") adds bounces
    page_size: int = 1000  # Mailchimp's maximum

    def root(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        center = self.api_key.rpartition("-")[2]
        if "-" not in self.api_key or not _DATA_CENTER.fullmatch(center):
            raise ConnectorError("mailchimp: the API key has no data-center suffix (like ...-us6)")
        return f"https://{center}.api.mailchimp.com"

    async def fetch(self, http: Http) -> list[str]:
        with _answers(self.provider):
            return await self._fetch(http)

    async def _fetch(self, http: Http) -> list[str]:
        if not _LIST_ID.fullmatch(self.list_id):
            raise ConnectorError(f"mailchimp: {self.list_id!r} is not an audience ID")
        url = f"{self.root()}/3.0/lists/{self.list_id}/members"
        found: list[str] = []
        for status in self.statuses:
            offset = 0
            while True:
                params = {"status": status, "count": self.page_size, "offset": offset,
                          "fields": "members.email_address,total_items"}  # fmt: skip
                data = await http.json(self.provider, "GET", url, params=params, auth=("smtpguard", self.api_key))
                members = _items(self.provider, data.get("members") if isinstance(data, dict) else None, "members")
                found += [m["email_address"].strip() for m in members if isinstance(m.get("email_address"), str)]
                offset += len(members)
                total = data.get("total_items")
                if not isinstance(total, int):
                    raise ConnectorError("mailchimp: unexpected answer (no total_items)")
                if not members or offset >= total:
                    break
        return found


# --- any export at a URL -----------------------------------------------------------


@dataclass(frozen=True)
class CsvUrl:
    """An export (CSV, text list, XLSX) at `url`, streamed to a temporary file, then
    read by `smtpguard.suppression.formats.iter_entries` (same detection as an import).

    `headers` carries any credential the URL needs (e.g. `Authorization`).
    """

    provider: ClassVar[str] = "csv"
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    column: str | None = None
    max_bytes: int = CSV_MAX_BYTES

    async def fetch(self, http: Http) -> list[str]:
        with tempfile.TemporaryDirectory(prefix="smtpguard-sync-") as tmp:
            path = Path(tmp) / "export"
            await http.download(self.provider, self.url, path, max_bytes=self.max_bytes, headers=dict(self.headers))
            # Reading a large export is CPU work: off the event loop that serves SMTP.
            return await asyncio.to_thread(self._read, path)

    def _read(self, path: Path) -> list[str]:
        stats = FileStats()
        rows = iter_entries(path, rules=DEFAULT_RULES, source=self.provider, reason="", added="",
                            column=self.column, stats=stats)  # fmt: skip
        try:
            return [row.original for row in rows]
        except ImportFormatError as exc:
            raise ConnectorError(f"csv: {str(exc).replace(str(path), where(self.url))}") from None
