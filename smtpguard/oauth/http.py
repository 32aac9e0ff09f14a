"""The one HTTP client for both providers, in the shape MSAL's `http_client` expects.

`verify` is passed on every request: `requests` lets REQUESTS_CA_BUNDLE override a
Session's `verify`, which silently ignores a configured CA file. `loopback_only`
refuses any host but this machine, so a test can never reach a real identity provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class RefusedHost(RuntimeError):
    """A request to a host this client must not reach (a configuration or test bug)."""


class PinnedHTTP:
    def __init__(self, ca_file: Path | None = None, *, loopback_only: bool = False, timeout: float = 15.0) -> None:
        self.verify: str | bool = str(ca_file) if ca_file else True
        self.loopback_only = loopback_only
        self.timeout = timeout
        self.session = requests.Session()

    def _check(self, url: str) -> None:
        if self.loopback_only and urlsplit(url).hostname not in LOOPBACK_HOSTS:
            raise RefusedHost(f"refusing to contact {urlsplit(url).hostname}: loopback only")

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> requests.Response:
        self._check(url)
        kwargs.setdefault("timeout", self.timeout)
        return self.session.get(url, params=params, headers=headers, verify=self.verify, **kwargs)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> requests.Response:
        self._check(url)
        kwargs.setdefault("timeout", self.timeout)
        return self.session.post(url, params=params, data=data, headers=headers, verify=self.verify, **kwargs)

    def close(self) -> None:
        self.session.close()
