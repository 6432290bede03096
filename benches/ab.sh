#!/usr/bin/env bash
# Interleaved A/B of two gateway builds against nginx, in one run, on loopback: for each
# point (size, connections), ROUNDS rounds of nginx, A, B, each DURATION seconds, printing
# each round's ratios to the nginx measured just before (this machine drifts by ±10% over
# minutes, so only same-round ratios compare). A is $HASHGATE_A (e.g. a build of the
# previous commit), B is this tree's release build.
# Usage: HASHGATE_A=/path/to/old/hashgate benches/ab.sh
#        (env: ENTRIES=1000000 DURATION=4 ROUNDS=3 POINTS="4096:1 4096:16 65536:1 65536:16")
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-1000000}
DURATION=${DURATION:-4}
ROUNDS=${ROUNDS:-3}
POINTS=${POINTS:-"4096:1 4096:16 65536:1 65536:16 1048576:1 1048576:16"}
: "${HASHGATE_A:?set HASHGATE_A to the build to compare against}"
source benches/lib.sh
bench_setup ab
need nginx nginx-light wrk wrk
build_hashgate
cores=$(nproc)
"$hg" keygen --out "$work/k" --force 2>/dev/null
random_list "$work/list.txt" "$ENTRIES"
"$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/f.hgf" "$work/list.txt" 2>/dev/null
start_sink "$cores"
start_proxy "$cores"
a=$(free_port); b=$(free_port)
for pair in "$HASHGATE_A:$a" "$hg:$b"; do
  "${pair%:*}" gateway --filter "$work/f.hgf" --pub "$work/k.pub" --listen "127.0.0.1:${pair##*:}" \
    --origin "http://127.0.0.1:$sink" 2>>"$work/gateways.err" & pids+=($!)
done
wait_port "$sink"; wait_port "$proxy"; wait_port "$a"; wait_port "$b"
write_put_lua
echo "machine: $cores cores; $ENTRIES entries; ${DURATION}s per measurement; A=$HASHGATE_A B=$hg"
printf '%-8s %-4s %-5s | %9s %9s %9s | %6s %6s\n' size conc round nginx A B A/nginx B/nginx
for point in $POINTS; do
  size=${point%:*}; conns=${point#*:}
  head -c "$size" /dev/urandom > "$work/body-$size"
  for round in $(seq 1 "$ROUNDS"); do
    rps() { wrk_put "http://127.0.0.1:$1/ab/obj-$size-$conns" "$work/body-$size" "$conns" | cut -d' ' -f1; }
    n=$(rps "$proxy"); ra=$(rps "$a"); rb=$(rps "$b")
    printf '%-8s %-4s %-5s | %9s %9s %9s | %6.2f %6.2f\n' "$size" "$conns" "$round" "$n" "$ra" "$rb" \
      "$(echo "$ra / $n" | bc -l)" "$(echo "$rb / $n" | bc -l)"
  done
done
