#!/usr/bin/env bash
# Feed benchmark (docs/PERFORMANCE.md, issue 4). In one run, on loopback:
#   - publishes version 1 of a series of ENTRIES random SHA-256 digests, then version 2
#     with 0.1% churn (ENTRIES/1000 digests removed, as many added), and reports the
#     delta's size against the snapshot's;
#   - serves the feed with nginx; a gateway (origin: the nginx sink) follows it, under
#     wrk load (64 KiB PUTs, 16 connections) while version 2 is swapped in; reports how
#     long the gateway took from the manifest in hand to the swap
#     (hashgate_feed_apply_seconds), and every failed request during the load.
# Usage: benches/feed.sh   (env: ENTRIES=10000000 DURATION=20)
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-10000000}
DURATION=${DURATION:-20}
source benches/lib.sh
bench_setup feed
need nginx nginx-light wrk wrk curl curl
build_hashgate
churn=$((ENTRIES / 1000))
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $ENTRIES entries, churn $churn out + $churn in"

for k in root manifest; do "$hg" keygen --out "$work/$k" --force 2>/dev/null; done
rm -f "$work/root.json"
"$hg" root init --root-key "$work/root.pub" --manifest-key "$work/manifest.pub" --out "$work/root.json" 2>/dev/null
"$hg" root sign --key "$work/root.key" "$work/root.json" 2>/dev/null
[ -s "$work/list-$ENTRIES.txt" ] || random_list "$work/list-$ENTRIES.txt" "$ENTRIES"
random_list "$work/added.txt" "$churn"
{ tail -n +$((churn + 1)) "$work/list-$ENTRIES.txt"; cat "$work/added.txt"; } > "$work/list-v2.txt"

publish() { # list
  "$hg" publish --key "$work/manifest.key" --root "$work/root.json" --feed "$shm/feed" \
    --series bench --min-poll 1s --expires 1h "$1"
}
start=$(date +%s.%N)
publish "$work/list-$ENTRIES.txt" 2>/dev/null
echo "publish v1: $(echo "$(date +%s.%N) - $start" | bc -l | xargs printf '%.1f') s"

start_sink "$(nproc)"
feed=$(free_port)
cat > "$work/feed.conf" <<CONF
worker_processes 1; daemon off; pid $work/feed.pid; error_log $work/feed.err;
events { worker_connections 256; }
http { access_log off; server { listen 127.0.0.1:$feed; root $shm/feed; } }
CONF
nginx -p "$work" -c "$work/feed.conf" & pids+=($!)
wait_port "$sink"; wait_port "$feed"
gw=$(free_port); admin=$(free_port)
"$hg" gateway --feed "http://127.0.0.1:$feed/manifest.json" --root "$work/root.json" \
  --state-dir "$work/state" --feed-poll 1s --listen "127.0.0.1:$gw" --admin "127.0.0.1:$admin" \
  --origin "http://127.0.0.1:$sink" 2>"$work/gateway.err" & pids+=($!)
wait_port "$gw"
metric() { curl -s "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

write_put_lua
head -c 65536 /dev/urandom > "$work/body"
BODY_FILE="$work/body" wrk -t2 -c16 -d"${DURATION}s" --timeout 30s -s "$work/put.lua" \
  "http://127.0.0.1:$gw/bench/obj" > "$work/wrk.out" & wrk_pid=$!
sleep 3
start=$(date +%s.%N)
publish "$work/list-v2.txt" 2>"$work/publish.err"
echo "publish v2: $(echo "$(date +%s.%N) - $start" | bc -l | xargs printf '%.1f') s"
for _ in $(seq 1 600); do [ "$(metric hashgate_filter_version)" = 2 ] && break; sleep 0.1; done
[ "$(metric hashgate_filter_version)" = 2 ] || { echo "the gateway never reached version 2" >&2; cat "$work/gateway.err" >&2; exit 1; }
wait "$wrk_pid"

snapshot=$(stat -c %s "$shm"/feed/snapshots/bench-2.hgf)
delta=$(stat -c %s "$shm"/feed/deltas/bench-1-2.hgd)
printf 'snapshot %d bytes, delta %d bytes: %.3f%% of the snapshot\n' "$snapshot" "$delta" "$(echo "100 * $delta / $snapshot" | bc -l)"
echo "gateway: manifest to swap $(metric hashgate_feed_apply_seconds) s (via $(grep -o 'from the [a-z]*' "$work/gateway.err" | tail -1))"
requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.out"); non2xx=${non2xx:-0}
errors=$(awk '/Socket errors/ {print}' "$work/wrk.out")
echo "load during the swap: $requests requests of 64 KiB, $non2xx non-2xx answers, socket errors: ${errors:-none}"
[ "$non2xx" = 0 ] && [ -z "$errors" ] || exit 1
