#!/usr/bin/env bash
# Install what the browser tests (tests/web/test_browser.py) need: Debian's chromium.
# Playwright drives it by path (/usr/bin/chromium): `playwright install` cannot
# download browser builds on these machines.
#
# Idempotent and non-interactive; meant for CI (root, no TTY) and dev boxes.
set -euo pipefail
. "$(dirname "$0")/debian.sh"

if [ -x /usr/bin/chromium ]; then
    echo "install-browser: chromium already installed, nothing to do"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-browser: must run as root to install chromium" >&2
    exit 1
fi

echo "install-browser: installing chromium"
install_debs chromium fonts-dejavu-core

if [ ! -x /usr/bin/chromium ]; then
    echo "install-browser: /usr/bin/chromium still missing after install" >&2
    exit 1
fi
echo "install-browser: ok ($(/usr/bin/chromium --version 2>/dev/null || echo chromium))"
