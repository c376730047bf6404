#!/usr/bin/env bash
# The project's test command (README.md). On a fresh Debian machine with
# only the Rust toolchain it installs what the build needs, then runs:
# cargo fmt --check, cargo clippy -D warnings, cargo test, and the loom
# model of the reactor ring's wake-up protocol.
#
# Needs neither SPDK nor libclang. Tests that replay the shared traces look
# for ../shared/traces (or $POLARC_TRACES) and print a skip line without it.
# Where an installed SPDK is found through pkg-config (SPDK_DIR or
# PKG_CONFIG_PATH), the SPDK backend is linted and its tests run too (they
# start SPDK's nvmf_tgt on 127.0.0.1); otherwise they say they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

# C toolchain for zstd-sys (trace decompression). Installed only if missing.
if ! command -v cc >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing build-essential and pkg-config (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential pkg-config
    else
        echo "ci/test.sh: a C compiler (cc) and pkg-config are needed; install build-essential and pkg-config" >&2
        exit 1
    fi
fi

# The shell linter for env/setup.sh. Installed only if missing.
if ! command -v shellcheck >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing shellcheck (apt)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck
    else
        echo "ci/test.sh: shellcheck is needed; install it (apt install shellcheck)" >&2
        exit 1
    fi
fi

for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
        say "adding rustup component $comp"
        rustup component add "$comp"
    fi
done

say "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path spdk-sys/Cargo.toml --check
cargo fmt --manifest-path fuzz/Cargo.toml --check

say "shellcheck env/setup.sh and its tests"
shellcheck env/setup.sh env/tests/setup_test.sh ci/test.sh ci/fuzz.sh ci/soak.sh

say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# A hung test fails CI within minutes instead of using up its whole time:
# the tests themselves take about 2 minutes on 2 cores, the build before
# them up to 10 (timeout signals the whole process group).
say "cargo test --workspace (limit ${POLARC_TEST_LIMIT:-1500} s)"
timeout "${POLARC_TEST_LIMIT:-1500}" cargo test --workspace

if [ -n "${SPDK_DIR:-}" ]; then
    export PKG_CONFIG_PATH="$SPDK_DIR/lib/pkgconfig:$SPDK_DIR/build/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
fi
if pkg-config --exists spdk_nvme 2>/dev/null; then
    say "SPDK $(pkg-config --modversion spdk_nvme) found: clippy and tests with --features spdk"
    cargo clippy -p polarc -p polarc-perf --all-targets --features polarc-perf/spdk -- -D warnings
    cargo test -p polarc --features spdk --test spdk
    cargo test -p polarc-perf --features spdk --test spdk_cli
else
    say "skipped: SPDK not found (set SPDK_DIR)"
fi

say "loom model of the reactor ring (cfg loom, separate target dir)"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p polarc --release --lib loom

say "fuzz targets, briefly (ci/fuzz.sh 600 for a full run)"
ci/fuzz.sh 10

say "all checks passed"
