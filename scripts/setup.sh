#!/usr/bin/env bash
# Installs what smsbus needs on a fresh Debian machine, skipping what is
# already there: PostgreSQL 15 with its server headers, clang (for pgrx's
# bindgen), sudo, curl, Chromium (the status page test), PgBouncer (the
# pooler tests), cargo-pgrx 0.18.0 and pgrx's registration of PostgreSQL 15.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGRX_VERSION=0.18.0
PACKAGES=(postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo curl chromium pgbouncer)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION"; then
    echo "setup: installing cargo-pgrx $PGRX_VERSION (a few minutes)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

PGRX_HOME=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -qs '^pg15 = ' "$PGRX_HOME/config.toml"; then
    echo "setup: registering PostgreSQL 15 with pgrx"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        rustup component add "$component"
    fi
done
