#!/usr/bin/env bash
# Interleaved A/B of two gateway builds against nginx, in one run, on loopback: for each
# point (size, connections), ROUNDS rounds of nginx, A, B, each DURATION seconds, printing
# requests/s and each round's ratios to the nginx measured just before (this machine
# drifts by ±10% over minutes, so only same-round ratios compare), and the CPU time each
# proxy used per request (user + system, all its threads and worker processes): a figure
# that moves far less with the neighbours' load than throughput does. A is $HASHGATE_A
# (e.g. a build of the previous commit), B is this tree's release build.
# With TLS=1 every proxy terminates TLS 1.3 with one ECDSA P-256 certificate made here.
# Usage: HASHGATE_A=/path/to/old/hashgate benches/ab.sh
#        (env: ENTRIES=1000000 DURATION=4 ROUNDS=3 POINTS="4096:1 65536:16 ...", size:connections,
#         TLS=1, FILTERS="f.hgf f256.hgf": an MD5 + SHA-1 + SHA-256 filter, as authorities
#         ship them, then SHA-256 only; either alone with FILTERS=f.hgf or FILTERS=f256.hgf,
#         HITS="1 50": also run every point with that percentage of uploads listed, each
#         hit audited to a file on disk (fsynced before the 451), under the mixed filter;
#         B_AUDIT_ARGS="...": extra flags for B's audited (HITS) runs only, e.g.
#         "--audit-key k.key" for the signed audit chain;
#         B_ARGS="...": extra flags for B only, e.g. HASHGATE_A=target/release/hashgate
#         B_ARGS="--catalog /tmp/cat.db" for this build with and without the catalog;
#         PDQ=N: also run the mixed filter with N random PDQ hashes listed beside its
#         digests, so the gateway sniffs every body for a picture)
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-1000000}
DURATION=${DURATION:-4}
ROUNDS=${ROUNDS:-3}
FILTERS=${FILTERS:-"f.hgf f256.hgf"}
POINTS=${POINTS:-"4096:1 4096:16 65536:1 65536:16 1048576:1 1048576:16"}
: "${HASHGATE_A:?set HASHGATE_A to the build to compare against}"
source benches/lib.sh
bench_setup ab
need nginx nginx-light wrk wrk openssl openssl
build_hashgate
cores=$(nproc)
build_filters "$ENTRIES"
HITS=${HITS:-}
if [ -n "$HITS" ]; then
  # One listed body per size, in a copy of the mixed filter that also lists them.
  for point in $POINTS; do
    size=${point%:*}
    [ -s "$work/listed-$size" ] || head -c "$size" /dev/urandom > "$work/listed-$size"
  done
  cp "$work/mixed-$ENTRIES.txt" "$work/hits.txt"
  for f in "$work"/listed-*; do echo "sha256:$(sha256sum "$f" | cut -d' ' -f1)" >> "$work/hits.txt"; done
  "$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/fhits.hgf" "$work/hits.txt" 2>/dev/null
  for h in $HITS; do FILTERS="$FILTERS fhits.hgf:$h"; done
fi
PDQ=${PDQ:-}
if [ -n "$PDQ" ]; then
  cp "$work/mixed-$ENTRIES.txt" "$work/pdq.txt"
  od -An -v -tx1 -N $(( PDQ * 32 )) /dev/urandom | tr -d ' \n' | fold -w 64 | sed 's/^/pdq:/' >> "$work/pdq.txt"
  "$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/fpdq.hgf" "$work/pdq.txt" 2>/dev/null
  FILTERS="$FILTERS fpdq.hgf"
fi
scheme=http; tls_cert=(); tls_args=()
if [ "${TLS:-0}" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -keyout "$work/key.pem" -out "$work/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=IP:127.0.0.1 2>/dev/null
  scheme=https; tls_cert=("$work/cert.pem" "$work/key.pem")
  tls_args=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
fi
start_sink "$cores"
start_proxy "$cores" "${tls_cert[@]}"
nginx_pid=${pids[-1]}
wait_port "$sink"; wait_port "$proxy"
write_put_lua
echo "machine: $cores cores; $ENTRIES entries; ${DURATION}s per measurement; A=$HASHGATE_A B=$hg"
hz=$(getconf CLK_TCK)
# CPU ticks (user + system) of a process and its children (nginx's workers).
ticks() { local t=0 p; for p in $1 $(pgrep -P "$1" || true); do t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat") )); done; echo "$t"; }
# measure PORT PID [HIT_PERCENT]: "req/s cpu-us-per-request" for one DURATION-second wrk
# run (with that percentage of listed bodies).
measure() {
  local t0 rps t1
  t0=$(ticks "$2")
  rps=$(HIT_PERCENT=${3:-0} HIT_BODY_FILE="$work/listed-$size" \
        wrk_put "$scheme://127.0.0.1:$1/ab/obj-$size-$conns" "$work/body-$size" "$conns" | cut -d' ' -f1)
  t1=$(ticks "$2")
  echo "$rps $(echo "($t1 - $t0) * 1000000 / $hz / ($rps * $DURATION)" | bc -l | xargs printf '%.0f')"
}
for run in $FILTERS; do
  filter=${run%:*}; hits=0; audit_a=(); audit_b=()
  [ "$run" = "$filter" ] || hits=${run#*:}
  case $filter in
    f.hgf) label="MD5 + SHA-1 + SHA-256";; f256.hgf) label="SHA-256 only";;
    fhits.hgf) label="MD5 + SHA-1 + SHA-256, $hits% of uploads listed and audited"
      audit_a=(--audit-log "$work/audit-a.log"); audit_b=(--audit-log "$work/audit-b.log" ${B_AUDIT_ARGS:-});;
    fpdq.hgf) label="MD5 + SHA-1 + SHA-256 and $PDQ PDQ hashes";;
    *) label=$filter;;
  esac
  a=$(free_port); b=$(free_port)
  "$HASHGATE_A" gateway --filter "$work/$filter" --pub "$work/k.pub" --listen "127.0.0.1:$a" \
    "${tls_args[@]}" "${audit_a[@]}" --origin "http://127.0.0.1:$sink" 2>>"$work/gateways.err" & a_pid=$!; pids+=($a_pid)
  "$hg" gateway --filter "$work/$filter" --pub "$work/k.pub" --listen "127.0.0.1:$b" \
    "${tls_args[@]}" "${audit_b[@]}" ${B_ARGS:-} --origin "http://127.0.0.1:$sink" 2>>"$work/gateways.err" & b_pid=$!; pids+=($b_pid)
  wait_port "$a"; wait_port "$b"
  echo "== filter: $label"
  printf '%-8s %-4s %-6s | %9s %9s %9s | %6s %6s | %s\n' size conc round nginx A B A/nginx B/nginx "CPU us/request: nginx A B"
  for point in $POINTS; do
    size=${point%:*}; conns=${point#*:}
    head -c "$size" /dev/urandom > "$work/body-$size"
    a_ratios=(); b_ratios=(); n_cpus=(); a_cpus=(); b_cpus=()
    for round in $(seq 1 "$ROUNDS"); do
      read -r n n_cpu <<<"$(measure "$proxy" "$nginx_pid")"
      read -r ra a_cpu <<<"$(measure "$a" "$a_pid" "$hits")"
      read -r rb b_cpu <<<"$(measure "$b" "$b_pid" "$hits")"
      a_ratios+=("$(echo "$ra / $n" | bc -l)"); b_ratios+=("$(echo "$rb / $n" | bc -l)")
      n_cpus+=("$n_cpu"); a_cpus+=("$a_cpu"); b_cpus+=("$b_cpu")
      printf '%-8s %-4s %-6s | %9s %9s %9s | %6.2f %6.2f | %5s %5s %5s\n' "$size" "$conns" "$round" "$n" "$ra" "$rb" \
        "${a_ratios[-1]}" "${b_ratios[-1]}" "$n_cpu" "$a_cpu" "$b_cpu"
    done
    printf '%-8s %-4s %-6s | %9s %9s %9s | %6s %6s | %5.0f %5.0f %5.0f\n' "$size" "$conns" median "" "" "" \
      "$(median "${a_ratios[@]}")" "$(median "${b_ratios[@]}")" \
      "$(median "${n_cpus[@]}")" "$(median "${a_cpus[@]}")" "$(median "${b_cpus[@]}")"
  done
  kill "$a_pid" "$b_pid"; wait "$a_pid" "$b_pid" 2>/dev/null || true
done
