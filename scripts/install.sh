#!/usr/bin/env bash
# Builds the extension and installs it into the system PostgreSQL 15.
#
#   scripts/install.sh [--release]
#
# `cargo pgrx install` overwrites smsbus.so in place, which crashes any
# running cluster that has it loaded (a `make run` beside a `make test`).
# So: package into target/, then replace each file with a new inode.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

profile=debug
flags=(--debug)
if [ "${1:-}" = "--release" ]; then
    profile=release
    flags=()
fi
out=target/pgrx-package/$profile
rm -rf "$out"
cargo pgrx package -p smsbus "${flags[@]}" --pg-config "$PG_CONFIG" --out-dir "$out" >/dev/null
(cd "$out" && find . -type f) | while read -r file; do
    dest=/${file#./}
    mkdir -p "$(dirname "$dest")"
    cp --remove-destination "$out/$file" "$dest"
done
# Earlier releases and the steps up from them, for CREATE EXTENSION ...
# VERSION and ALTER EXTENSION smsbus UPDATE.
extension_dir=$("$PG_CONFIG" --sharedir)/extension
for script in migrations/smsbus--*.sql; do
    cp --remove-destination "$script" "$extension_dir/"
done
