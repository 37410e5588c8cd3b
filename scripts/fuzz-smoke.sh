#!/usr/bin/env bash
# A short run of every fuzz target in fuzz/ (cargo-fuzz, libFuzzer), seeded from fuzz/seeds:
# a few seconds each, enough to replay the seeds and catch what a change breaks at once. Fails
# on any crash, naming the input that caused it (under fuzz/artifacts/<target>/). The long runs
# and how to read a crash are in docs/testing.md, "Fuzzing".
#
# Needs a nightly toolchain (cargo-fuzz builds with sanitizer flags only nightly has); without
# one it says so and exits 0. Installs cargo-fuzz if it is missing.
#
#   FUZZ_SECONDS=10   seconds per target (default 10)
#   FUZZ_RUNS=1000000 at most this many inputs per target
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-10}"
runs="${FUZZ_RUNS:-1000000}"
targets=(mqtt_v311 mqtt_v5 ws_frame http_request proxy_header broker_session)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz smoke skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cargo fmt --manifest-path fuzz/Cargo.toml -- --check
cargo +nightly fuzz build

failed=()
for target in "${targets[@]}"; do
    echo "--- $target: ${seconds}s"
    # New inputs go to fuzz/corpus/<target> (ignored by git); the seeds are only read.
    mkdir -p "fuzz/corpus/$target"
    log="fuzz/target/smoke-$target.log"
    if cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -max_total_time="$seconds" -runs="$runs" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
    else
        tail -n 40 "$log"
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz smoke FAILED: ${failed[*]} (crash inputs under fuzz/artifacts/; logs in fuzz/target/smoke-*.log)"
    exit 1
fi
echo "fuzz smoke passed: ${#targets[@]} targets, ${seconds}s each"
