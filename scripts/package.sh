#!/usr/bin/env bash
# Builds the Debian package (target/debian/hashgate_VERSION_ARCH.deb) with cargo-deb,
# installed pinned into target/tools on first use. Prints the package's path last.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.6.0
tools="$PWD/target/tools"
if ! "$tools/bin/cargo-deb" --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  cargo install --locked --quiet --root "$tools" "cargo-deb@$CARGO_DEB_VERSION"
fi
cargo build --release --locked --bin hashgate >&2
# --no-build: the binary above; --strip: 25 MiB of code, not 150 with line tables.
"$tools/bin/cargo-deb" --no-build --strip --locked -p hashgate >&2
ls -t target/debian/hashgate_*.deb | head -1
