#!/usr/bin/env bash
# Install what the browser tests (tests/web/test_browser.py) need: Debian's chromium.
# Playwright drives it by path (/usr/bin/chromium): `playwright install` cannot
# download browser builds on these machines.
#
# Idempotent and non-interactive; meant for CI (root, no TTY) and dev boxes.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "install-browser: chromium already installed, nothing to do"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: must run as root to install chromium" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 chromium fonts-dejavu-core </dev/null
}

echo "install-browser: installing chromium"
# apt-get update only when the package lists do not know the package or are stale.
if ! apt-cache show chromium >/dev/null 2>&1 || ! apt_install; then
    apt-get update -q -o DPkg::Lock::Timeout=300
    apt_install
fi

if [ ! -x /usr/bin/chromium ]; then
    echo "install-browser: /usr/bin/chromium still missing after install" >&2
    exit 1
fi
echo "install-browser: ok ($(/usr/bin/chromium --version 2>/dev/null || echo chromium))"
