#!/usr/bin/env bash
# Install the PostgreSQL server binaries the PostgreSQL store tests (tests/postgres) need:
#   initdb, pg_ctl, postgres   Debian's postgresql package (postgresql-NN)
#
# Idempotent and non-interactive; meant for CI (root, no TTY) and dev boxes.
# The system cluster is never used: Debian's postinst may create and start a
# "main" cluster, so it is told not to (create_main_cluster = false), and any
# system cluster found running is stopped and left disabled. The tests start
# their own private cluster (initdb into a temporary directory, 127.0.0.1 and
# a free port). Prints the binaries' directory on its last line.
set -euo pipefail
. "$(dirname "$0")/debian.sh"

bin_dir() {
    # The newest installed server version's binaries, or nothing.
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ]; then
        echo "$dir"
    fi
}

stop_system_clusters() {
    # A cluster the package started (or an earlier install left) must not hold port 5432.
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    local ver name port status
    while read -r ver name port status _; do
        if [ "$status" = "online" ] || [[ "$status" == online,* ]]; then
            echo "install-postgres: stopping the system cluster $ver/$name (port $port); the tests use their own"
            pg_ctlcluster "$ver" "$name" stop || true
        fi
        # "manual": never started at boot either.
        if [ -w "/etc/postgresql/$ver/$name/start.conf" ]; then
            echo manual >"/etc/postgresql/$ver/$name/start.conf"
        fi
    done < <(pg_lsclusters --no-header 2>/dev/null || true)
}

if [ -z "$(bin_dir)" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-postgres: must run as root to install postgresql" >&2
        exit 1
    fi
    # Ask postgresql-common not to create (and start) the "main" cluster.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/50-smtpguard-no-main.conf
    echo "install-postgres: installing postgresql"
    install_debs postgresql
fi

if [ "$(id -u)" -eq 0 ]; then
    stop_system_clusters
fi

dir=$(bin_dir)
if [ -z "$dir" ]; then
    echo "install-postgres: initdb/pg_ctl/postgres still missing after install" >&2
    exit 1
fi
if command -v ss >/dev/null 2>&1 && ss -ltn 2>/dev/null | grep -qE '[:.]5432\b'; then
    echo "install-postgres: warning: something listens on port 5432 (not ours; the tests use their own port)" >&2
fi
echo "install-postgres: ok ($("$dir/postgres" --version))"
echo "$dir"
