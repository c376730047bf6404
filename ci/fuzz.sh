#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 60) on
# its committed corpus. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`); without them it says so and exits 0.
# Full run: ci/fuzz.sh 600
# New inputs libFuzzer finds go to a temporary directory, so a run leaves
# the checkout clean; FUZZ_KEEP=1 adds them to the committed corpus
# instead (then `cargo fuzz cmin TARGET` keeps it small).
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
new="$(mktemp -d)"
trap 'rm -rf "$new"' EXIT
for t in device_header log_block lz4_unpack trace_lis trace_csv trace_oracle trace_bin_keys config_file; do
    echo "== fuzz $t for ${seconds}s"
    if [ "${FUZZ_KEEP:-0}" = 1 ]; then
        dirs=("corpus/$t")
    else
        mkdir -p "$new/$t"
        dirs=("$new/$t" "corpus/$t")
    fi
    cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$seconds" -max_len=8192 2>&1 | grep -E '^Done|ERROR|panicked' || true
    if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
        echo "ci/fuzz.sh: $t found a crash: $(ls "artifacts/$t")" >&2
        exit 1
    fi
done
