#!/usr/bin/env bash
# `make bench`: set up, build the release harness, install the release build
# of the extension, start the bench cluster, run the benchmarks, stop it.
# Extra arguments go to smsbus-bench (`scripts/bench.sh --messages 200000`,
# `scripts/bench.sh --help`); the figures land in bench-results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
# A cluster of its own (port 54317), so a benchmark never meets `make run`'s
# demo or a test run's databases.
export SMSBUS_CLUSTER=bench

scripts/setup.sh
echo "== build the benchmark (release)"
cargo build --quiet --release -p smsbus-tests -p smsbus-worker --bin smsbus-bench --bin smsbus-worker
echo "== install the extension (release)"
# The figures are meant for the release build: the extension's Rust
# functions are several times slower in debug. install.sh puts the files in
# place with new inodes, so clusters running beside this one do not crash.
scripts/install.sh --release
echo "== start the bench cluster"
trap 'scripts/cluster.sh stop' EXIT
scripts/cluster.sh start
scripts/cluster.sh template >/dev/null
echo "== benchmarks"
SMSBUS_BENCH_PG="$(scripts/cluster.sh env)" target/release/smsbus-bench \
    --output "$PWD/bench-results.json" "$@"
