# smsbus — see README.md. `make help` lists the targets.

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
export PG_CONFIG

.DEFAULT_GOAL := help
.PHONY: help setup install run test test-faults fuzz bench bench-scale bench-poolers bench-retention lint stop clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## Install what a fresh machine lacks (packages, cargo-pgrx, pgrx init)
	@scripts/setup.sh

install: setup ## Build and install the extension into the system PostgreSQL 15
	@scripts/install.sh

run: ## Start a local database, the worker and example messages; show them flowing
	@scripts/run.sh

test: ## Lint, install, start a test cluster and run every test
	@scripts/test.sh

test-faults: ## The crash-safety suite at full size (100,000 messages, ten faults of each kind) and a failover mid-flood of 20,000
	@SMSBUS_FAULT_MESSAGES=100000 SMSBUS_FAULT_ROUNDS=10 scripts/test.sh -p smsbus-tests --test crash_safety -- --nocapture
	@SMSBUS_FAILOVER_MESSAGES=20000 scripts/test.sh -p smsbus-tests --test failover -- --nocapture

fuzz: ## Fuzz every input parser (FUZZ_SECONDS each, default 60); keeps what breaks them
	@scripts/fuzz.sh

bench: ## Run the benchmarks (release build) and write bench-results.json
	@scripts/bench.sh

bench-scale: ## The end-to-end benchmark with 1M finished and 10M archived messages, and bloat after a long run
	@scripts/bench.sh --only-scale

bench-poolers: ## End to end directly and through PgBouncer (session; transaction with --listen-url; poll-only)
	@scripts/bench.sh --scenario poolers

bench-retention: ## A month of 10M archived messages dropped against as many deleted (time, WAL, size)
	@scripts/bench.sh --scenario retention

lint: ## cargo fmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

stop: ## Stop the local clusters started by run/test/bench
	@SMSBUS_CLUSTER=dev scripts/cluster.sh stop
	@SMSBUS_CLUSTER=test scripts/cluster.sh stop
	@SMSBUS_CLUSTER=bench scripts/cluster.sh stop

clean: stop ## Remove the local clusters and build output
	rm -rf .cluster target
