#!/usr/bin/env bash
# Runs plugbay's whole test suite on a fresh machine: installs what is missing (a C
# compiler for the C plugins and the ABI layout check, clang/lld/wasi-libc for the C plugins
# compiled to WebAssembly, python3's gRPC packages for the Python example plugin,
# python3's cryptography for the signature-format script, schemathesis for the HTTP API,
# cargo-nextest), then formatting and lint checks, every unit and integration test, and
# the doctests. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_c_compiler
ensure_wasm_c_toolchain
ensure_python_grpc
ensure_python_cryptography
ensure_schemathesis

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features "$SUITE_FEATURES" --quiet -- -D warnings

echo "== test plugins (built once, before the tests' time limits start)"
cargo xtask testkit

echo "== unit and integration tests"
if ensure_nextest; then
    cargo nextest run --workspace --features "$SUITE_FEATURES" --no-fail-fast
else
    cargo test --workspace --features "$SUITE_FEATURES" --no-fail-fast
fi

echo "== doctests"
cargo test --workspace --doc --features "$SUITE_FEATURES" --quiet
