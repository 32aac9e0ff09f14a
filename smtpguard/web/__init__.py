"""The page for the person who owns the list: a FastAPI router of server-rendered pages.

Mount it in the HTTP app: `app.include_router(router(settings, prefix="/page"))`.
"""

from __future__ import annotations

from smtpguard.web.context import SyncState, SyncStatus
from smtpguard.web.pages import router

__all__ = ["SyncState", "SyncStatus", "router"]
