#!/usr/bin/env bash
# plugbay's main job, on a fresh machine: build the host and the example plugins (Rust, C,
# C as a process and Python) into target/plugins/, list them, and make real calls through
# them, first with one-shot in-process commands, then (signed with a key made here, and
# required to be) through the daemon (`plugbay run`) over its HTTP/JSON API (curl), the
# CLI as its client, and its gRPC API (a Python grpcio client); then stop the daemon with
# SIGTERM. The Rust text-tools example is also built as
# a process plugin, into target/plugins-process/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_c_compiler
ensure_python_grpc
command -v curl >/dev/null 2>&1 || apt_install curl

echo "== building plugbay and the example plugins"
cargo build --release --quiet -p plugbay
cargo xtask plugins
plugbay=target/release/plugbay
plugins=target/plugins

# Process plugins run in the sandbox, which shows the system's /usr; a python3 installed
# elsewhere (a pyenv, a venv) is shown to it as well (docs/sandbox.md, "Granting access").
sandbox=()
config=target/demo-plugbay.toml
echo "[sandbox]" > "$config"
echo "read = [" >> "$config"
while read -r path; do
    sandbox+=(--sandbox-read "$path")
    echo "    \"$path\"," >> "$config"
done < <(python_sandbox_read)
echo "]" >> "$config"

run() {
    echo
    echo "\$ plugbay $*"
    "$plugbay" "$@" || echo "(exit status $?)"
}

run list --plugins "$plugins" "${sandbox[@]}"
run call text.transform@1 upper '"hello"' --plugins "$plugins" "${sandbox[@]}"
run call text.transform@1 word-count '"the quick brown fox\njumps"' --plugins "$plugins" "${sandbox[@]}"
run call checksum@1 crc32 123456789 --plugins "$plugins" "${sandbox[@]}"
run call kv@1 put '{"key":"greeting","value":"hi"}' --plugins "$plugins" "${sandbox[@]}" --json
echo
echo "# a process plugin written in Python (examples/plugins/py-wordfreq), over gRPC:"
run call text.stats@1 word-frequencies '"the cat and the hat and the bat"' --plugins "$plugins" "${sandbox[@]}"
echo
echo "# a process plugin written in plain C (examples/plugins/c-rot13), over the framed transport:"
run call rot13@1 encode '"Hello, World!"' --plugins "$plugins" "${sandbox[@]}"
echo
echo "# the same Rust text-tools source built as a process plugin (target/plugins-process):"
run call text.transform@1 upper '"hello from a process"' --plugins target/plugins-process "${sandbox[@]}"
echo
echo "# a method the manifest does not whitelist is refused before it reaches the plugin:"
run call text.transform@1 delete-everything '"x"' --plugins "$plugins" "${sandbox[@]}"

echo
echo "== signing the example plugins (docs/trust.md): a key made once, every folder signed"
keys=target/demo-keys
[ -f "$keys/demo.key" ] || run key new demo --dir "$keys"
for folder in "$plugins"/*/; do
    "$plugbay" sign "$folder" --key "$keys/demo.key"
done
run verify "$plugins/text-tools" --key "$keys/demo.pub"
# The daemon trusts that key only; with a key listed, its policy is "require": a plugin
# that is unsigned, changed since signing, or signed by another key is refused.
cat >> "$config" <<TOML

[trust]
policy = "require"

[[trust.keys]]
file = "$keys/demo.pub"
TOML

echo
echo "== the daemon: plugbay run on the example plugins (HTTP 127.0.0.1:7878, gRPC 127.0.0.1:7879)"
http=127.0.0.1:7878
grpc=127.0.0.1:7879
echo "\$ plugbay run --plugins $plugins --config $config &"
"$plugbay" run --plugins "$plugins" --config "$config" --http "$http" --grpc "$grpc" &
daemon=$!
trap 'kill -TERM "$daemon" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fsS "http://$http/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done

show() {
    echo
    echo "\$ $*"
    "$@" || echo "(exit status $?)"
    echo
}

show curl -sS -X POST "http://$http/v1/call/text.transform@1/upper" -H 'content-type: application/json' -d '"hello over http"'
show curl -sS "http://$http/v1/plugins/text-tools"
show curl -sS -X POST "http://$http/v1/call/text.transform@1/delete-everything" -d '"x"'
run call text.transform@1 upper '"hello through the daemon"'
run list   # each plugin's signature: line names its signer
run reload text-tools
echo
echo "\$ python3 examples/clients/host_client.py $grpc call text.transform@1 upper '\"hello over grpc\"'"
python3 examples/clients/host_client.py "$grpc" call text.transform@1 upper '"hello over grpc"' || echo "(exit status $?)"
echo
echo "\$ curl -sS http://$http/metrics | grep 'plugbay_calls_total'"
curl -sS "http://$http/metrics" | grep '^plugbay_calls_total' || true
echo
echo "# stopping the daemon: SIGTERM lets calls in flight finish, stops the plugins, exits 0"
echo "\$ kill -TERM $daemon"
kill -TERM "$daemon"
wait "$daemon" && echo "(the daemon exited with status 0)"
trap - EXIT
