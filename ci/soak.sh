#!/usr/bin/env bash
# The long soak (issue 12, item 8): polarc-perf (release build) on 2
# reactors with a 1 GiB O_DIRECT file device, every L2 and backing-store
# fault kind on, short deadlines, a mix of every operation, and --verify
# checking every byte read against the versions written. It fails if a read
# was wrong or stale, an operation hung (--hang-limit), or pool buffers
# were still out after the engine shut down; it prints the key figures.
#
#   ci/soak.sh                    # 10M measured operations: ~7 min on
#                                 # 2 cores (~25k ops/s with 1M keys
#                                 # spread over both tiers)
#   SOAK_OPS=200000 ci/soak.sh    # a short one
#
# Environment:
#   SOAK_OPS   measured operations (default 10000000); warm-up is a tenth
#   SOAK_JSON  the JSON report (default ./soak.json, where it was started)
#   TMPDIR     where the device file goes (default /var/tmp: /tmp is often
#              tmpfs, which refuses O_DIRECT); removed at the end
#   RUST_LOG   engine log level (default error: injected faults log a
#              warning each)
set -euo pipefail
json="${SOAK_JSON:-$PWD/soak.json}"
cd "$(dirname "$0")/.."

ops="${SOAK_OPS:-10000000}"
case "$ops" in
    ''|*[!0-9]*) echo "ci/soak.sh: SOAK_OPS must be a whole number, not '$ops'" >&2; exit 2 ;;
esac
warmup=$((ops / 10))

dir="$(mktemp -d "${TMPDIR:-/var/tmp}/polarc-soak.XXXXXX")"
trap 'rm -rf "$dir"' EXIT

echo "== cargo build --release -p polarc-perf"
cargo build --release -p polarc-perf

echo "== soak: $ops operations (+ $warmup warm-up), device $dir/soak.img, report $json"
out="$dir/soak.txt"
status=0
RUST_LOG="${RUST_LOG:-error}" target/release/polarc-perf \
    --reactors 2 \
    --l2 "file:$dir/soak.img:1GiB" \
    --keys 1000000 \
    --arc 64MiB \
    --value-size 4096 \
    --backing sim:200us \
    --mix read:80,insert:8,invalidate:6,prefetch:6 \
    --warmup-ops "$warmup" \
    --ops "$ops" \
    --timeline-interval 5s \
    --verify \
    --faults eio=0.001,torn=0.01,flip=0.001,hang=0.0001,slow=0.01:5ms \
    --backing-faults fail=0.001,slow=0.01:20ms,hang=0.0001 \
    --backing-timeout 1s \
    --l2-read-deadline 20ms \
    --l2-write-deadline 500ms \
    --json "$json" | tee "$out" || status=$?

echo
echo "== key figures"
grep -E '^(note: fell back|polarc-perf:|ops/s|soak:|verify:)' "$out" || true
if grep -q 'buffered I/O' "$out"; then
    echo "ci/soak.sh: warning: the device ran buffered (the filesystem refused O_DIRECT); set TMPDIR" >&2
fi
if [ "$status" -ne 0 ]; then
    echo "ci/soak.sh: FAILED: polarc-perf exited $status (wrong bytes or hung operations: see above)" >&2
    exit "$status"
fi
if ! grep -Eq '"pool_outstanding_after_shutdown": 0(,|$)' "$json"; then
    echo "ci/soak.sh: FAILED: pool buffers outstanding after shutdown (see \"soak\" in $json)" >&2
    exit 1
fi
echo "ci/soak.sh: passed"
