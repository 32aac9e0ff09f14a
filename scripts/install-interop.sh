#!/usr/bin/env bash
# Install what the interop tests (tests/interop, `pytest -m interop`) need:
#   swaks               the SMTP client (Debian package swaks)
#   Net::SSLeay         swaks' STARTTLS support (libnet-ssleay-perl)
#   postfix, postmap, postqueue, smtp-sink
#                       the upstream MTA and its sink (all in Debian's postfix)
#
# Idempotent and non-interactive; meant for CI (root, no TTY) and dev boxes.
# Postfix is installed with debconf "No configuration": no /etc/postfix/main.cf
# is written, the system Postfix never starts and nothing listens on port 25.
# The tests run their own private instance (postfix -c DIR) on 127.0.0.1.
set -euo pipefail
. "$(dirname "$0")/debian.sh"

postfix_tools=(/usr/sbin/postfix /usr/sbin/postconf /usr/sbin/postmap /usr/sbin/postqueue /usr/sbin/smtp-sink)

missing_packages() {
    local pkgs=() tool
    command -v swaks >/dev/null 2>&1 || pkgs+=(swaks)
    perl -MNet::SSLeay -e 1 >/dev/null 2>&1 || pkgs+=(libnet-ssleay-perl)
    for tool in "${postfix_tools[@]}"; do
        if [ ! -x "$tool" ]; then
            pkgs+=(postfix)
            break
        fi
    done
    echo "${pkgs[@]}"
}

read -r -a missing <<<"$(missing_packages)"
if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-interop: swaks and postfix already installed, nothing to do"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-interop: must run as root to install: ${missing[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Install Postfix's files without setting up the system's mail (no main.cf, no daemon).
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

echo "install-interop: installing ${missing[*]}"
install_debs "${missing[@]}"

read -r -a still <<<"$(missing_packages)"
if [ "${#still[@]}" -ne 0 ]; then
    echo "install-interop: still missing after install: ${still[*]}" >&2
    exit 1
fi
echo "install-interop: ok ($(swaks --version 2>/dev/null | head -n1); postfix $(postconf -d -h mail_version 2>/dev/null))"
