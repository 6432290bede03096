#!/usr/bin/env bash
# The project's test command (README.md): installs what the tests need, then runs the
# format check, clippy with warnings as errors, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# The guest is built for wasm32 by host/build.rs; it installs the target itself when
# rustup is present, but doing it here keeps the first build's output readable.
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -qx wasm32-unknown-unknown \
    || rustup target add wasm32-unknown-unknown
  rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed | grep -q '^clippy' || rustup component add clippy
fi

# The gateway tests drive a real nginx origin with curl; the ICAP tests put Squid in front.
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v squid >/dev/null 2>&1 || [ -x /usr/sbin/squid ] || need+=(squid)
# The fleet test puts three gateways behind HAProxy (tests/s3.rs).
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
# The catalog tests start PostgreSQL servers of their own (tests/common/postgres.rs).
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
# The inspection tests wrap files with the tools users have (tests/inspect.rs).
command -v zip >/dev/null 2>&1 || need+=(zip)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v bzip2 >/dev/null 2>&1 || need+=(bzip2)
command -v brotli >/dev/null 2>&1 || need+=(brotli)
command -v 7z >/dev/null 2>&1 || need+=(p7zip-full)
# The package test (tests/package.sh) installs the .deb and checks what it installs.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || need+=(logrotate)
command -v adduser >/dev/null 2>&1 || [ -x /usr/sbin/adduser ] || need+=(adduser)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v strace >/dev/null 2>&1 || need+=(strace)
# The S3 tests drive boto3 and the AWS CLI (PyPI) against s3s-fs (crates.io; ~4 min to build on 2 cores).
# One pip run, pinned, so that boto3 and the AWS CLI get botocore versions that agree.
{ python3 -c 'import boto3' 2>/dev/null && command -v aws >/dev/null 2>&1; } ||
  pip install -q boto3==1.44.8 awscli==1.46.3
# The PDQ oracle test (tests/pdq.rs) runs Meta's C++ through the pdqhash bindings on
# pictures Pillow makes; pdqhash 0.2.7 is built against numpy 1.
python3 -c 'import PIL, numpy, pdqhash' 2>/dev/null ||
  pip install -q pillow==11.3.0 numpy==1.26.4 pdqhash==0.2.7
command -v s3s-fs >/dev/null 2>&1 || [ -x "$HOME/.cargo/bin/s3s-fs" ] ||
  cargo install --locked --quiet --features binary s3s-fs@0.14.1
# The tus tests drive @tus/server and tus-js-client (npm, pinned by tests/tus/package-lock.json)
# on the machine's Node.js (>= 20.19; Debian 12's nodejs is too old for @tus/server 2).
command -v node >/dev/null 2>&1 || { echo "the tus tests need Node.js >= 20.19 and npm" >&2; exit 1; }
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
  else
    echo "the tests need: ${need[*]} (apt-get install ${need[*]})" >&2
    exit 1
  fi
fi

if ! cmp -s tests/tus/package-lock.json target/tus-node/package-lock.json 2>/dev/null; then
  mkdir -p target/tus-node
  cp tests/tus/package.json tests/tus/package-lock.json target/tus-node/
  (cd target/tus-node && npm ci --no-audit --no-fund --silent)
fi

cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
# Benches are built (not run) so they cannot rot; run them with `cargo bench`.
cargo bench --locked --workspace --no-run

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --release --locked --workspace 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 }
     END { printf "tests: %d passed, %d failed\n", p, f; if (p == 0) exit 1 }' "$log"

# The Debian package: built, installed, run from its configs, rotated, removed (root only:
# it installs on this machine; see the script).
tests/package.sh
