#!/usr/bin/env bash
# End-to-end upload benchmark (docs/PERFORMANCE.md, issue 3). In one run, on loopback:
#   direct   - wrk PUTs straight to the sink origin (nginx WebDAV into tmpfs: it reads
#              and stores every body, unlike `return 204`, which answers before reading);
#   nginx    - through nginx as a plain streaming pass-through (proxy_request_buffering
#              off, keep-alive upstream), with as many workers as the gateway has threads;
#   hashgate - through `hashgate gateway` with a filter of ENTRIES entries as authorities
#              ship them (MD5, SHA-1 and SHA-256, a third each);
#   sha256   - the same gateway build with ENTRIES SHA-256 entries only (the second row).
# For 4 KiB, 64 KiB, 1 MiB and 16 MiB objects at concurrency 1 and 16, it prints
# requests/s, MiB/s, p50 and p99 latency, and both gateways' ratios against nginx.
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
build_filters "$ENTRIES"

gw=$(free_port); gw256=$(free_port)
start_sink "$threads"
start_proxy "$threads"
"$hg" gateway --filter "$work/f.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$gw" \
  --origin "http://127.0.0.1:$sink" 2>"$work/gateway.err" & pids+=($!)
"$hg" gateway --filter "$work/f256.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$gw256" \
  --origin "http://127.0.0.1:$sink" 2>"$work/gateway256.err" & pids+=($!)
wait_port "$sink"; wait_port "$proxy"; wait_port "$gw"; wait_port "$gw256"

write_put_lua
run() { wrk_put "http://127.0.0.1:$1/bench/obj-$2-$3" "$work/body-$2" "$3"; }  # port size conns

printf '\n%-9s %-4s | %-32s | %-32s | %-32s | %-32s | %s\n' size conc "direct: req/s MiB/s p50 p99 (ms)" "nginx" \
  "hashgate, MD5+SHA-1+SHA-256" "hashgate, SHA-256 only" "hashgate/nginx: thrpt, p99 added; sha256-only"
for size in $SIZES; do
  head -c "$size" /dev/urandom > "$work/body-$size"
  for conns in 1 16; do
    read -r d_rps d_mib d_p50 d_p99 <<<"$(run "$sink" "$size" "$conns")"
    read -r n_rps n_mib n_p50 n_p99 <<<"$(run "$proxy" "$size" "$conns")"
    read -r h_rps h_mib h_p50 h_p99 <<<"$(run "$gw" "$size" "$conns")"
    read -r s_rps s_mib s_p50 s_p99 <<<"$(run "$gw256" "$size" "$conns")"
    printf '%-9s %-4s | %8s %7s %7s %7s | %8s %7s %7s %7s | %8s %7s %7s %7s | %8s %7s %7s %7s | %.2fx, %+.3f ms; %.2fx, %+.3f ms\n' \
      "$size" "$conns" "$d_rps" "$d_mib" "$d_p50" "$d_p99" "$n_rps" "$n_mib" "$n_p50" "$n_p99" \
      "$h_rps" "$h_mib" "$h_p50" "$h_p99" "$s_rps" "$s_mib" "$s_p50" "$s_p99" \
      "$(echo "$h_rps / $n_rps" | bc -l)" "$(echo "$h_p99 - $n_p99" | bc -l)" \
      "$(echo "$s_rps / $n_rps" | bc -l)" "$(echo "$s_p99 - $n_p99" | bc -l)"
  done
done
