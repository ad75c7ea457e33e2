#!/usr/bin/env bash
# `make test`: set up, lint, install the extension, start the test cluster,
# run every test against it, stop it. One debug build serves all stages.
set -euo pipefail
cd "$(dirname "$0")/.."
export SMSBUS_CLUSTER=test
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

scripts/setup.sh
echo "== lint"
cargo fmt --all -- --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
echo "== install the extension"
scripts/install.sh
echo "== start the test cluster"
scripts/cluster.sh start
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh template >/dev/null
cargo build --quiet -p smsbus-worker
echo "== tests"
export SMSBUS_TEST_PG="$(scripts/cluster.sh env)"
export SMSBUS_WORKER_BIN="$PWD/target/debug/smsbus-worker"
# Arguments pick tests (`scripts/test.sh -p smsbus-tests --test crash_safety`);
# none runs them all.
if [ $# -gt 0 ]; then
    cargo test "$@"
else
    cargo test --workspace --exclude smsbus
fi
