#!/usr/bin/env bash
# Builds the Debian package: target/debian/log-capturer_<version>-<revision>_amd64.deb
# (cargo-deb's default name). Needs cargo-deb: cargo install --locked cargo-deb
# Extra arguments go to cargo deb (e.g. --no-build after a release build).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deb --version >/dev/null 2>&1; then
    echo "cargo-deb is missing: cargo install --locked cargo-deb" >&2
    exit 1
fi
cargo deb --locked "$@"
ls -1 target/debian/log-capturer_*_amd64.deb
