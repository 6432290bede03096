#!/usr/bin/env bash
# Several authorities at once (issue 18; docs/PERFORMANCE.md). In one run, on loopback,
# against the same nginx WebDAV sink:
#   one    - `hashgate gateway` with one filter of ENTRIES entries (MD5 + SHA-1 + SHA-256,
#            a third each, as authorities ship them);
#   three  - the same build with three such filters of ENTRIES entries each, one
#            `[[feed]]` table per authority (three guest instances).
# For each size and concurrency it prints both gateways' requests/s and the ratio
# three/one; then each gateway's resident memory against the sizes of its filters.
# Usage: benches/feeds.sh   (env: ENTRIES=10000000 DURATION=5 SIZES="4096 65536 1048576")
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-10000000}
DURATION=${DURATION:-5}
SIZES=${SIZES:-"4096 65536 1048576"}
source benches/lib.sh
bench_setup feeds
need nginx nginx-light wrk wrk
build_hashgate
threads=$(nproc)
echo "machine: $threads cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${DURATION}s per point; $ENTRIES entries per filter"

"$hg" keygen --out "$work/k" --force 2>/dev/null
for name in a b c; do
  [ -s "$work/mixed-$name.txt" ] || mixed_list "$work/mixed-$name.txt" "$ENTRIES"
  "$hg" build --key "$work/k.key" --series "bench-$name" --version 1 \
    --out "$work/$name.hgf" "$work/mixed-$name.txt" 2>/dev/null
done
{
  for name in a b c; do
    printf '[[feed]]\nname = "%s"\nfilter = "%s"\npub = "%s"\n\n' "$name" "$work/$name.hgf" "$work/k.pub"
  done
} > "$work/three.toml"

one=$(free_port); three=$(free_port)
start_sink "$threads"
"$hg" gateway --filter "$work/a.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$one" \
  --origin "http://127.0.0.1:$sink" 2>"$work/one.err" & one_pid=$!; pids+=($one_pid)
"$hg" gateway --config "$work/three.toml" --listen "127.0.0.1:$three" \
  --origin "http://127.0.0.1:$sink" 2>"$work/three.err" & three_pid=$!; pids+=($three_pid)
wait_port "$sink"; wait_port "$one"; wait_port "$three"

write_put_lua
run() { wrk_put "http://127.0.0.1:$1/bench/obj-$2-$3" "$work/body-$2" "$3"; }  # port size conns

printf '\n%-9s %-4s | %-10s | %-10s | %s\n' size conc "one req/s" "three" "three/one"
for size in $SIZES; do
  head -c "$size" /dev/urandom > "$work/body-$size"
  for conns in 1 16; do
    # Alternated, twice each, so that drift on a shared machine hits both alike.
    read -r o1 _ <<<"$(run "$one" "$size" "$conns")"
    read -r t1 _ <<<"$(run "$three" "$size" "$conns")"
    read -r t2 _ <<<"$(run "$three" "$size" "$conns")"
    read -r o2 _ <<<"$(run "$one" "$size" "$conns")"
    o=$(median "$o1" "$o2"); t=$(median "$t1" "$t2")
    printf '%-9s %-4s | %10s | %10s | %.2fx\n' "$size" "$conns" "$o" "$t" "$(echo "$t / $o" | bc -l)"
  done
done

rss() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
mib() { echo "$(stat -c %s "$@" | paste -sd+ | bc) / 1048576" | bc -l | xargs printf '%.0f'; }
echo
echo "resident memory after the run (MiB): one filter $(rss "$one_pid") (filter file $(mib "$work/a.hgf")); three filters $(rss "$three_pid") (filter files $(mib "$work/a.hgf" "$work/b.hgf" "$work/c.hgf"))"
