#!/usr/bin/env bash
# End-to-end upload benchmark (docs/PERFORMANCE.md, issue 3). In one run, on loopback:
#   direct   - wrk PUTs straight to the sink origin (nginx WebDAV into tmpfs: it reads
#              and stores every body, unlike `return 204`, which answers before reading);
#   nginx    - through nginx as a plain streaming pass-through (proxy_request_buffering
#              off, keep-alive upstream), with as many workers as the gateway has threads;
#   hashgate - through `hashgate gateway` with a SHA-256 filter of ENTRIES entries.
# For 4 KiB, 64 KiB, 1 MiB and 16 MiB objects at concurrency 1 and 16, it prints
# requests/s, MiB/s, p50 and p99 latency, and hashgate's ratios against nginx.
# Usage: benches/gateway.sh   (env: ENTRIES=10000000 DURATION=5 SIZES="4096 65536 ...")
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-10000000}
DURATION=${DURATION:-5}
SIZES=${SIZES:-"4096 65536 1048576 16777216"}
source benches/lib.sh
bench_setup gateway
need nginx nginx-light wrk wrk
build_hashgate
threads=$(nproc)


echo "machine: $threads cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${DURATION}s per point"
"$hg" keygen --out "$work/k" --force 2>/dev/null
[ -s "$work/list-$ENTRIES.txt" ] || random_list "$work/list-$ENTRIES.txt" "$ENTRIES"
"$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/f.hgf" "$work/list-$ENTRIES.txt" 2>/dev/null

gw=$(free_port)
start_sink "$threads"
start_proxy "$threads"
"$hg" gateway --filter "$work/f.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$gw" \
  --origin "http://127.0.0.1:$sink" 2>"$work/gateway.err" & pids+=($!)
wait_port "$sink"; wait_port "$proxy"; wait_port "$gw"

write_put_lua
run() { wrk_put "http://127.0.0.1:$1/bench/obj-$2-$3" "$work/body-$2" "$3"; }  # port size conns

printf '\n%-9s %-4s | %-32s | %-32s | %-32s | %s\n' size conc "direct: req/s MiB/s p50 p99 (ms)" "nginx" "hashgate" "hashgate/nginx: thrpt, p99 added"
for size in $SIZES; do
  head -c "$size" /dev/urandom > "$work/body-$size"
  for conns in 1 16; do
    read -r d_rps d_mib d_p50 d_p99 <<<"$(run "$sink" "$size" "$conns")"
    read -r n_rps n_mib n_p50 n_p99 <<<"$(run "$proxy" "$size" "$conns")"
    read -r h_rps h_mib h_p50 h_p99 <<<"$(run "$gw" "$size" "$conns")"
    printf '%-9s %-4s | %8s %7s %7s %7s | %8s %7s %7s %7s | %8s %7s %7s %7s | %.2fx, %+.3f ms\n' \
      "$size" "$conns" "$d_rps" "$d_mib" "$d_p50" "$d_p99" "$n_rps" "$n_mib" "$n_p50" "$n_p99" \
      "$h_rps" "$h_mib" "$h_p50" "$h_p99" "$(echo "$h_rps / $n_rps" | bc -l)" "$(echo "$h_p99 - $n_p99" | bc -l)"
  done
done
