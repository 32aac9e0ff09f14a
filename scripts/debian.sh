# Sourced by the install-*.sh scripts: one way to install Debian packages.
# install_debs PKG...: non-interactive, no recommends, waits for the dpkg lock,
# and runs `apt-get update` only when the package lists do not know the
# packages or are stale (the install fails).

install_debs() {
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show "$@" >/dev/null 2>&1 || ! _apt_get_install "$@"; then
        apt-get update -q -o DPkg::Lock::Timeout=300
        _apt_get_install "$@"
    fi
}

_apt_get_install() {
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" </dev/null
}
