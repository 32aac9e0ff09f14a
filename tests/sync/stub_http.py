"""A tiny HTTP/1.1 server on 127.0.0.1 that answers like a provider's API.

Each test gives a handler (request -> response); the server records every
request it got, so tests assert paging, credentials and retries from the
server's side.  One request per connection (`Connection: close`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class StubRequest:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def arg(self, name: str) -> str | None:
        values = parse_qs(urlsplit(self.target).query).get(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StubResponse:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, data: Any, status: int = 200, **headers: str) -> StubResponse:
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json", **headers})


Handler = Callable[[StubRequest], Awaitable[StubResponse]]


class StubServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[StubRequest] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> StubServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if not line:
                return
            method, target, _ = line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = raw.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = StubRequest(method, target, headers, body)
            self.requests.append(request)
            response = await self.handler(request)
            head = [f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}"]
            head += [f"{k}: {v}" for k, v in response.headers.items()]
            head += [f"Content-Length: {len(response.body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(head).encode("latin-1") + response.body)
            await writer.drain()
        finally:
            writer.close()
