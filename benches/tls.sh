#!/usr/bin/env bash
# TLS benchmark (docs/PERFORMANCE.md, issue 8). In one run, on loopback, wrk PUTs objects
# over https (TLS 1.3, one ECDSA P-256 certificate made here with openssl) to:
#   nginx    - nginx terminating TLS and streaming to the sink (proxy_request_buffering
#              off, keep-alive upstream), as many workers as the gateway has threads;
#   hashgate - `hashgate gateway --tls-cert ...` with a filter of ENTRIES entries as
#              authorities ship them (MD5, SHA-1, SHA-256), to the same sink (nginx
#              WebDAV into tmpfs);
#   sha256   - the same with ENTRIES SHA-256 entries only (the second figure).
# For 64 KiB, 1 MiB and 16 MiB objects at concurrency 1 and 16 it prints requests/s, MiB/s,
# p99 and each gateway's throughput against nginx's measured just before it, for ROUNDS rounds
# (this machine drifts by ±10% over minutes, so only same-round ratios compare), and the
# median ratio of each point.
# Usage: benches/tls.sh   (env: ENTRIES=1000000 DURATION=5 ROUNDS=3 SIZES="65536 ...")
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-1000000}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"65536 1048576 16777216"}
source benches/lib.sh
bench_setup tls
need nginx nginx-light wrk wrk openssl openssl
build_hashgate
threads=$(nproc)

echo "machine: $threads cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${DURATION}s per point; $ENTRIES digests"
build_filters "$ENTRIES"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null

gw=$(free_port); gw256=$(free_port)
start_sink "$threads"
start_proxy "$threads" "$work/cert.pem" "$work/key.pem"
"$hg" gateway --filter "$work/f.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$gw" \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
  --origin "http://127.0.0.1:$sink" 2>"$work/gateway.err" & pids+=($!)
"$hg" gateway --filter "$work/f256.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$gw256" \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
  --origin "http://127.0.0.1:$sink" 2>"$work/gateway256.err" & pids+=($!)
wait_port "$sink"; wait_port "$proxy"; wait_port "$gw"; wait_port "$gw256"

write_put_lua
run() { wrk_put "https://127.0.0.1:$1/bench/obj-$2-$3" "$work/body-$2" "$3"; }  # port size conns

printf '\n%-9s %-4s %-6s | %-26s | %-26s | %-26s | %s\n' size conc round "nginx+TLS: req/s MiB/s p99" \
  "hashgate+TLS, MD5+SHA-1+SHA-256" "hashgate+TLS, SHA-256 only" "hashgate/nginx; sha256-only"
for size in $SIZES; do
  head -c "$size" /dev/urandom > "$work/body-$size"
  for conns in 1 16; do
    ratios=(); ratios256=()
    for round in $(seq 1 "$ROUNDS"); do
      read -r n_rps n_mib _ n_p99 <<<"$(run "$proxy" "$size" "$conns")"
      read -r h_rps h_mib _ h_p99 <<<"$(run "$gw" "$size" "$conns")"
      read -r s_rps s_mib _ s_p99 <<<"$(run "$gw256" "$size" "$conns")"
      ratios+=("$(echo "$h_rps / $n_rps" | bc -l)"); ratios256+=("$(echo "$s_rps / $n_rps" | bc -l)")
      printf '%-9s %-4s %-6s | %9s %7s %8s | %9s %7s %8s | %9s %7s %8s | %.2fx; %.2fx\n' "$size" "$conns" "$round" \
        "$n_rps" "$n_mib" "$n_p99" "$h_rps" "$h_mib" "$h_p99" "$s_rps" "$s_mib" "$s_p99" "${ratios[-1]}" "${ratios256[-1]}"
    done
    printf '%-9s %-4s %-6s | %26s | %26s | %26s | %sx; %sx\n' "$size" "$conns" median "" "" "" \
      "$(median "${ratios[@]}")" "$(median "${ratios256[@]}")"
  done
done
