# Helpers shared by the quick-start scripts. Source it; it defines functions only.

# Installs Debian packages when apt-get is there (as root, or through sudo).
apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing: $*; install them with your package manager" >&2
        return 1
    fi
    echo "installing $* (apt-get)"
    $sudo apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# A C compiler and libc headers, for the C plugins and the ABI layout check.
ensure_c_compiler() {
    if ! command -v "${CC:-cc}" >/dev/null 2>&1 || ! printf '#include <stdlib.h>\n' | "${CC:-cc}" -E - >/dev/null 2>&1; then
        apt_install gcc libc6-dev
    fi
}
