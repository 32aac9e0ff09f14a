"""The PostgreSQL fixtures, for the contract suite's postgres case."""

from __future__ import annotations

from tests.postgres.fixtures import pg_cluster, pg_dsn

__all__ = ["pg_cluster", "pg_dsn"]
