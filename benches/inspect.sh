#!/usr/bin/env bash
# `hashgate scan` of one large .tar.gz (1,000 members; content that deflates about 2:1)
# against `gzip -dc FILE | openssl dgst -sha256` (two processes, so both cores), in one
# run, REPS times each, interleaved; prints each time, the medians and the ratio of
# throughputs (baseline time / scan time: above 1 the scan is faster), and the scan's peak
# memory. Filters: SHA-256 only, and MD5 + SHA-1 + SHA-256 (a third of ENTRIES each), as
# the lists authorities ship.
# Usage: benches/inspect.sh   (env: MB=1024 MEMBERS=1000 ENTRIES=1000000 REPS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
MB=${MB:-1024}
MEMBERS=${MEMBERS:-1000}
ENTRIES=${ENTRIES:-1000000}
REPS=${REPS:-3}
source benches/lib.sh
bench_setup inspect
need openssl openssl gzip gzip
build_hashgate
"$hg" keygen --out "$work/k" --force 2>/dev/null
random_list "$work/sha256.txt" "$ENTRIES"
python3 - "$work/mixed.txt" "$ENTRIES" <<'PY'
import os, sys
n = int(sys.argv[2]) // 3
with open(sys.argv[1], "w") as f:
    for size, name in ((16, "md5"), (20, "sha1"), (32, "sha256")):
        f.write("".join(f"{name}:{os.urandom(size).hex()}\n" for _ in range(n)))
PY
"$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/sha256.hgf" "$work/sha256.txt" 2>/dev/null
"$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/mixed.hgf" "$work/mixed.txt" 2>/dev/null
python3 - "$work/big.tar.gz" "$MB" "$MEMBERS" <<'PY'
import io, random, sys, tarfile
out, mb, members = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
each = mb * 1024 * 1024 // members
random.seed(1)
with tarfile.open(out, "w:gz", compresslevel=6) as t:
    for i in range(members):
        data = bytes(97 + (b & 15) for b in random.randbytes(each))
        info = tarfile.TarInfo(f"dir/member-{i:05}")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
PY
size=$(stat -c %s "$work/big.tar.gz")
echo "archive: $size bytes, $MB MiB in $MEMBERS members; $(nproc) cores; $ENTRIES entries"
seconds() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }
base=(); sha=(); mixed=()
for _ in $(seq 1 "$REPS"); do
  cat "$work/big.tar.gz" >/dev/null  # the page cache holds it for every contender
  base+=("$(seconds sh -c "gzip -dc '$work/big.tar.gz' | openssl dgst -sha256")")
  sha+=("$(seconds "$hg" scan --filter "$work/sha256.hgf" --pub "$work/k.pub" "$work/big.tar.gz")")
  mixed+=("$(seconds "$hg" scan --filter "$work/mixed.hgf" --pub "$work/k.pub" "$work/big.tar.gz")")
done
peak=$( { /usr/bin/time -f %M "$hg" scan --filter "$work/mixed.hgf" --pub "$work/k.pub" "$work/big.tar.gz" >/dev/null; } 2>&1 | tail -1)
b=$(median "${base[@]}"); s=$(median "${sha[@]}"); m=$(median "${mixed[@]}")
echo "gzip -dc | openssl dgst -sha256: ${base[*]} s (median $b)"
echo "scan, SHA-256 filter:            ${sha[*]} s (median $s); ratio $(echo "scale=2; $b / $s" | bc)x"
echo "scan, MD5+SHA-1+SHA-256 filter:  ${mixed[*]} s (median $m); ratio $(echo "scale=2; $b / $m" | bc)x"
echo "scan peak RSS: $peak KiB"
