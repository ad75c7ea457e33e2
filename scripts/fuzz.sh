#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS
# (default 60) each, from the seeds and what earlier runs found. An input
# that breaks a target is copied to fuzz/regressions/<target>/, which
# `make test` replays: fix the bug, commit the input.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== install cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz builds with nightly flags (sanitizer coverage); the stable
# compiler accepts them with RUSTC_BOOTSTRAP, and ships the sanitizer runtimes.
export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-60}
cd fuzz
failed=()
for target in $(cargo fuzz list); do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "corpus/$target" "regressions/$target"
    cp -n seeds/"$target"/* "corpus/$target/" 2>/dev/null || true
    if ! cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048; then
        failed+=("$target")
    fi
    for crash in artifacts/"$target"/*; do
        [ -f "$crash" ] || continue
        cp "$crash" "regressions/$target/"
        echo "kept $crash as regressions/$target/$(basename "$crash")"
    done
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing broke: ${failed[*]} (inputs in fuzz/regressions/)"
    exit 1
fi
echo "fuzzing: every target ran ${seconds}s without a failure"
