#!/usr/bin/env bash
# plugbay's main job, on a fresh machine: build the host and the example plugins (Rust, C
# and Python) into target/plugins/, list them, and make real calls through them. The Rust
# text-tools example is also built as a process plugin, into target/plugins-process/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_c_compiler
ensure_python_grpc

echo "== building plugbay and the example plugins"
cargo build --release --quiet -p plugbay
cargo xtask plugins
plugbay=target/release/plugbay
plugins=target/plugins

run() {
    echo
    echo "\$ plugbay $*"
    "$plugbay" "$@" || echo "(exit status $?)"
}

run list --plugins "$plugins"
run call text.transform@1 upper '"hello"' --plugins "$plugins"
run call text.transform@1 word-count '"the quick brown fox\njumps"' --plugins "$plugins"
run call checksum@1 crc32 123456789 --plugins "$plugins"
run call kv@1 put '{"key":"greeting","value":"hi"}' --plugins "$plugins" --json
echo
echo "# a process plugin written in Python (examples/plugins/py-wordfreq), over gRPC:"
run call text.stats@1 word-frequencies '"the cat and the hat and the bat"' --plugins "$plugins"
echo
echo "# the same Rust text-tools source built as a process plugin (target/plugins-process):"
run call text.transform@1 upper '"hello from a process"' --plugins target/plugins-process
echo
echo "# a method the manifest does not whitelist is refused before it reaches the plugin:"
run call text.transform@1 delete-everything '"x"' --plugins "$plugins"
