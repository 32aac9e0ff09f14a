"""PostgreSQL fixtures shared by tests/postgres and the store contract suite (tests/store).

One private cluster for the whole run, however many conftests import these
(each import is its own fixture for pytest: the cluster itself is shared
here); a fresh database per test. Skipped, with the reason, when the server
binaries are missing; .ci/run installs them (scripts/install-postgres.sh).
"""

from __future__ import annotations

import atexit
import itertools

import pytest

from .cluster import Cluster, find_bin_dir

_databases = itertools.count(1)
_shared: list[Cluster] = []


def _cluster() -> Cluster:
    if not _shared:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: run scripts/install-postgres.sh")
        cluster = Cluster(bin_dir)
        atexit.register(cluster.destroy)
        cluster.init()
        cluster.start()
        _shared.append(cluster)
    return _shared[0]


@pytest.fixture(scope="session")
def pg_cluster() -> Cluster:
    return _cluster()


@pytest.fixture
def pg_dsn(pg_cluster: Cluster) -> str:
    """A new, empty database on the private cluster: tests never see each other's data.

    A plain fixture (createdb), so that async fixtures may ask for it by name.
    """
    name = f"t{next(_databases)}"
    pg_cluster.create_database(name)
    return f"{pg_cluster.dsn_base}/{name}"
