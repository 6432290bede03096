#!/usr/bin/env bash
# End-to-end figures for the core (docs/PERFORMANCE.md), measured in one run so that
# ratios compare like with like on a shared, noisy machine:
#   - build of N SHA-256 entries at 1e-9: wall time and peak memory against filter size;
#   - scan of ~1 GiB in ~1000 files: 2 threads against 1 thread;
#   - scan of one 1 GiB file on one core against `openssl dgst -sha256` (the hashing limit);
#   - with a filter as authorities ship them (MD5 + SHA-1 + SHA-256, 1M entries): scan of
#     the 1 GiB file against three `openssl dgst` (-md5, -sha1, -sha256) in parallel, and
#     of the 1000 files against twice the one-core multi-buffer limit that the criterion
#     bench `lanes/mixed` measures in the same run.
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

echo "== scan with an MD5 + SHA-1 + SHA-256 filter (1M entries, a third each)"
python3 - "$work/mixed.txt" <<'PY'
import os, sys
n = 1000000 // 3
with open(sys.argv[1], "w") as f:
    for size, name in ((16, "md5"), (20, "sha1"), (32, "sha256")):
        f.write("".join(f"{name}:{os.urandom(size).hex()}\n" for _ in range(n)))
PY
"$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/mixed.hgf" "$work/mixed.txt" 2>/dev/null
three=$(for i in 1 2 3; do timeit bash -c "openssl dgst -md5 '$work/big.bin' & openssl dgst -sha1 '$work/big.bin' & openssl dgst -sha256 '$work/big.bin' & wait"; done | median)
mix=$(for i in 1 2 3; do phase --filter "$work/mixed.hgf" --pub "$work/k.pub" "$work/big.bin"; done | median)
echo "one file: three openssl dgst in parallel ${three}s; hashgate scan ${mix}s (scanning phase); hashgate/openssl throughput $(echo "$three / $mix" | bc -l | cut -c1-4)x"
cargo bench --quiet --bench core -- lanes/mixed --warm-up-time 1 --measurement-time 5 >/dev/null 2>&1
# Criterion's mean time of one iteration (16 x 64 KiB), in ns: the one-core limit.
ns=$(python3 -c 'import json; print(json.load(open("target/criterion/lanes/mixed/new/estimates.json"))["mean"]["point_estimate"])')
limit=$(echo "2 * 16 * 65536 / $ns" | bc -l)  # bytes per ns = GB/s, two cores
tree=$(for i in 1 2 3; do phase --filter "$work/mixed.hgf" --pub "$work/k.pub" "$work/tree"; done | median)
got=$(echo "1073741000 / $tree / 1000000000" | bc -l)
echo "1000 files: hashgate scan ${tree}s = $(echo "$got" | cut -c1-4) GB/s; multi-buffer limit of two cores (lanes/mixed) $(echo "$limit" | cut -c1-4) GB/s; ratio $(echo "$got / $limit" | bc -l | cut -c1-4)x"
