#!/usr/bin/env bash
# Compares the 64 B native call benchmarks of two checkouts, run alternately (before,
# after, before, after) so the machine's drift falls on both. Both build into one target
# directory (default /tmp/plugbay-bench-target), so only what differs is rebuilt.
#
#   scripts/bench-ab.sh <before-checkout> <after-checkout> [criterion filter]
#
# Prints one line per benchmark: tree, name, midpoint in ns. A checkout from before the
# testkit honoured CARGO_TARGET_DIR needs its target/ linked to that directory.
set -euo pipefail
before=$1 after=$2 filter=${3:-echo/.*/64}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/plugbay-bench-target}
run() {
    (cd "$1" && cargo bench -q --bench native_call -- --warm-up-time 1 --measurement-time 3 "$filter" 2>/dev/null) |
        grep -E "^echo|time:" | grep -v "%" | paste - - | awk -v tree="$2" '{print tree, $1, $5}'
}
for _ in 1 2; do
    run "$before" before
    run "$after" after
done
