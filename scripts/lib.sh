# Helpers shared by the quick-start scripts. Source it; it defines functions and one
# variable only.

# The features every cargo command of the test suite is built with (the process builds of
# the Rust plugins). One feature set for the plugin build, the tests and the doctests (and
# the build scripts and proc-macros clippy compiles) means the dependencies compile once. The same list is SUITE_FEATURES in
# crates/plugbay-testkit/src/lib.rs; a test checks that they agree.
SUITE_FEATURES="native-fixture/process,text-tools/process,kv-store/process"

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

# Debian's clang, lld, wasi-libc and the wasm32 compiler-rt builtins, for the C plugins
# compiled to WebAssembly (examples/plugins/text-tools-wasm, the testkit's wasm probe). Never
# downloads a toolchain: only the distribution's packages.
ensure_wasm_c_toolchain() {
    if command -v clang >/dev/null 2>&1 && command -v wasm-ld >/dev/null 2>&1 \
        && [ -f /usr/lib/wasm32-wasi/libc.a ] \
        && printf 'int f(void){return 0;}\n' | clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor \
            -x c - -o /dev/null >/dev/null 2>&1; then
        return 0
    fi
    apt_install clang lld wasi-libc libclang-rt-dev-wasm32
}

# python3 with grpcio, grpcio-tools and grpcio-health-checking, for the Python example
# process plugin (examples/plugins/py-wordfreq): its build generates gRPC stubs with
# grpc_tools, and the program imports grpc and grpc_health. Installed with pip into the
# python3 on PATH, which is the one that runs the plugin.
ensure_python_grpc() {
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
    if python3 -c 'import grpc, grpc_tools, grpc_health.v1' >/dev/null 2>&1; then
        return 0
    fi
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    echo "installing grpcio grpcio-tools grpcio-health-checking (pip)"
    # A distribution's own python3 refuses pip installs (PEP 668) unless told otherwise.
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet grpcio grpcio-tools grpcio-health-checking \
        || PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --break-system-packages \
            grpcio grpcio-tools grpcio-health-checking
    python3 -c 'import grpc, grpc_tools, grpc_health.v1'
}

# python3's cryptography package (PyPI), for scripts/plugin_sig.py, the independent Python
# implementation of docs/trust.md's signature format that the test suite checks plugbay
# against.
ensure_python_cryptography() {
    if python3 -c 'import cryptography.hazmat.primitives.asymmetric.ed25519' >/dev/null 2>&1; then
        return 0
    fi
    echo "installing cryptography (pip)"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet cryptography \
        || PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --break-system-packages cryptography
    python3 -c 'import cryptography.hazmat.primitives.asymmetric.ed25519'
}

# The folders a sandboxed Python plugin needs besides the system's /usr, one per line: where
# the python3 on PATH (a pyenv shim, a venv) and its prefix live when that is elsewhere.
# Empty for the distribution's own python3. For `--sandbox-read` and `[sandbox] read`.
python_sandbox_read() {
    local launcher
    launcher=$(command -v python3) || return 0
    {
        dirname "$(dirname "$launcher")"
        python3 -c 'import sys; print(sys.prefix); print(sys.base_prefix)'
    } | while read -r path; do
        case "$path" in
            /usr | /usr/* | / | "") ;;
            *) realpath -m "$path" ;;
        esac
    done | sort -u | awk 'kept == "" || index($0, kept "/") != 1 { print; kept = $0 }'
}

# schemathesis (PyPI), which tests the daemon's HTTP API against its /openapi.json, in its
# own virtual environment under target/ (the suite runs target/schemathesis/bin/schemathesis).
ensure_schemathesis() {
    local venv=target/schemathesis
    [ -x "$venv/bin/schemathesis" ] && return 0
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3-venv
    echo "installing schemathesis (pip, into $venv)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet schemathesis
    "$venv/bin/schemathesis" --version >/dev/null
}

# cargo-nextest (crates.io), which runs each test in a process of its own; the suite also
# passes under plain `cargo test`, which scripts/test.sh falls back to when the install
# fails (offline, say). Returns 0 when `cargo nextest` can run.
ensure_nextest() {
    cargo nextest --version >/dev/null 2>&1 && return 0
    echo "installing cargo-nextest (cargo install, from crates.io)"
    if ! cargo install cargo-nextest --locked --quiet; then
        echo "cannot install cargo-nextest; the tests run under cargo test instead" >&2
        return 1
    fi
    cargo nextest --version >/dev/null 2>&1
}
