#!/usr/bin/env bash
# End-to-end figures for the core (docs/PERFORMANCE.md), measured in one run so that
# ratios compare like with like on a shared, noisy machine:
#   - build of N SHA-256 entries at 1e-9: wall time and peak memory against filter size;
#   - scan of ~1 GiB in ~1000 files: 2 threads against 1 thread;
#   - scan of one 1 GiB file on one core against `openssl dgst -sha256` (the hashing limit).
# Usage: benches/core.sh [ENTRIES]   (default 10000000; needs python3, openssl, GNU time)
set -euo pipefail
cd "$(dirname "$0")/.."
entries=${1:-10000000}
work=${HASHGATE_BENCH_DIR:-$(mktemp -d)}
mkdir -p "$work"
trap '[ -n "${HASHGATE_BENCH_DIR:-}" ] || rm -rf "$work"' EXIT
command -v openssl >/dev/null || { echo "needs openssl" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs GNU time (/usr/bin/time)" >&2; exit 2; }

cargo build --release --locked --quiet
hg=target/release/hashgate
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timeit() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$hg" keygen --out "$work/k" --force 2>/dev/null

echo "== build: $entries random SHA-256 digests at 1e-9"
if [ ! -s "$work/list.txt" ] || [ "$(wc -l < "$work/list.txt")" != "$entries" ]; then
python3 - "$work/list.txt" "$entries" <<'PY'
import os, sys
n = int(sys.argv[2])
with open(sys.argv[1], "wb") as f:
    for start in range(0, n, 100000):
        f.write(b"".join(os.urandom(32).hex().encode() + b"\n" for _ in range(min(100000, n - start))))
PY
fi
for i in 1 2 3; do
  /usr/bin/time -f "%e %M" -o "$work/time.$i" "$hg" build --key "$work/k.key" --series bench \
    --version 1 --out "$work/f.hgf" "$work/list.txt" 2>/dev/null
done
size=$(stat -c %s "$work/f.hgf")
secs=$(cat "$work"/time.* | awk '{print $1}' | median)
peak_kb=$(cat "$work"/time.* | awk '{print $2}' | median)
echo "build: median ${secs}s, peak RSS $((peak_kb / 1024)) MiB, filter $((size / 1048576)) MiB, peak/filter $(echo "$peak_kb * 1024 / $size" | bc -l | cut -c1-4)x"

echo "== scan: 1 GiB in 1000 files, 1 thread vs 2"
mkdir -p "$work/tree"
[ -s "$work/tree/f1000" ] || for i in $(seq 1 1000); do head -c 1073741 /dev/urandom > "$work/tree/f$i"; done
cat "$work/tree"/* > /dev/null
phase() { "$hg" scan --json "$@" 2>/dev/null | tail -1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])'; }
one=$(for i in 1 2 3; do timeit "$hg" scan --threads 1 --filter "$work/f.hgf" --pub "$work/k.pub" "$work/tree"; done | median)
two=$(for i in 1 2 3; do timeit "$hg" scan --threads 2 --filter "$work/f.hgf" --pub "$work/k.pub" "$work/tree"; done | median)
one_p=$(for i in 1 2 3; do phase --threads 1 --filter "$work/f.hgf" --pub "$work/k.pub" "$work/tree"; done | median)
two_p=$(for i in 1 2 3; do phase --threads 2 --filter "$work/f.hgf" --pub "$work/k.pub" "$work/tree"; done | median)
echo "scan tree, whole command (filter load included): 1 thread ${one}s, 2 threads ${two}s, speed-up $(echo "$one / $two" | bc -l | cut -c1-4)x"
echo "scan tree, scanning phase: 1 thread ${one_p}s, 2 threads ${two_p}s, speed-up $(echo "$one_p / $two_p" | bc -l | cut -c1-4)x"

echo "== scan: one 1 GiB file on one core vs openssl dgst -sha256"
cat "$work/tree"/* > "$work/big.bin"; cat "$work/big.bin" > /dev/null
ssl=$(for i in 1 2 3; do timeit openssl dgst -sha256 "$work/big.bin"; done | median)
hgs=$(for i in 1 2 3; do timeit "$hg" scan --threads 1 --filter "$work/f.hgf" --pub "$work/k.pub" "$work/big.bin"; done | median)
hgp=$(for i in 1 2 3; do phase --threads 1 --filter "$work/f.hgf" --pub "$work/k.pub" "$work/big.bin"; done | median)
echo "one file: openssl ${ssl}s; hashgate ${hgs}s whole command, ${hgp}s scanning phase; hashgate/openssl throughput $(echo "$ssl / $hgs" | bc -l | cut -c1-4)x whole, $(echo "$ssl / $hgp" | bc -l | cut -c1-4)x scanning"
