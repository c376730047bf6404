#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 60) on
# its committed corpus. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`); without them it says so and exits 0.
# Full run: ci/fuzz.sh 600
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-60}"
case "$seconds" in
    ''|*[!0-9]*) echo "ci/fuzz.sh: SECONDS must be a whole number, not '$seconds'" >&2; exit 2 ;;
esac
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "skipped: fuzzing needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)"
    exit 0
fi
for t in device_header log_block lz4_unpack trace_lis trace_csv trace_oracle config_file; do
    echo "== fuzz $t for ${seconds}s"
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=8192 2>&1 | grep -E '^Done|ERROR|panicked' || true
    if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
        echo "ci/fuzz.sh: $t found a crash: $(ls "artifacts/$t")" >&2
        exit 1
    fi
done
