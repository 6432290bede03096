#!/usr/bin/env bash
# hashgate against the peers a datacenter would pick instead (docs/PERFORMANCE.md, issue 7).
# One command; installs what it needs from Debian; everything on loopback, in one run:
#   uploads  direct   - wrk PUTs straight to the sink origin (nginx WebDAV into tmpfs)
#            nginx    - nginx pass-through (proxy_request_buffering off), one worker per core
#            hashgate - `hashgate gateway` with a filter of ENTRIES digests as authorities
#                       ship them (MD5, SHA-1 and SHA-256 in turn; the SHA-256-only
#                       figure is gateway.sh's second row)
#            clamd    - clamd (clamav-daemon) holding the same digests as .hsb hash
#                       signatures, every other engine off, fed with INSTREAM
#   at rest  hashgate scan vs clamdscan (--multiscan) over a tree of fresh files, and
#            hashgate scan vs `openssl dgst` -md5, -sha1 and -sha256 in parallel over one
#            large file
#   start    seconds to ready and resident memory, hashgate and clamd, with ENTRIES loaded
# Object sizes SIZES, concurrency 1 and 16, REPS repetitions, medians; ratios against
# nginx and clamd; a plot (SVG) of throughput by object size for each system.
# Usage: benches/peers.sh  (env: ENTRIES=10000000 DURATION=5 REPS=3 SIZES="4096 65536 1048576 16777216"
#                          TREE_FILES=1000 BIG_MIB=1024 PLOT=docs/peers.svg)
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-10000000}
DURATION=${DURATION:-5}
REPS=${REPS:-3}
SIZES=${SIZES:-"4096 65536 1048576 16777216"}
TREE_FILES=${TREE_FILES:-1000}
BIG_MIB=${BIG_MIB:-1024}
PLOT=${PLOT:-docs/peers.svg}
source benches/lib.sh
bench_setup peers
need nginx nginx-light wrk wrk clamd clamav-daemon clamdscan clamdscan openssl openssl curl curl
build_hashgate
cores=$(nproc)
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s.%N; }
rss_mib() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
echo "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $ENTRIES digests; ${DURATION}s per point, $REPS repetitions"

# The same digests for both: hashgate's list and ClamAV hash signatures (`*`: any size).
"$hg" keygen --out "$work/k" --force 2>/dev/null
head -c 30000 /dev/urandom > "$work/probe"
probe=$(sha256sum "$work/probe" | cut -d' ' -f1)
# libclamav refuses more than 2^22 - 1 size-less hash signatures in all (it fails at line
# 4194304 with "Can't allocate memory", however they are split into files), so clamd gets
# the first CLAMD_ENTRIES of the same digests; its lookups are hash tables, so its speed
# does not depend on the count.
CLAMD_ENTRIES=${CLAMD_ENTRIES:-$(( ENTRIES < 4000000 ? ENTRIES : 4000000 ))}
python3 - "$work/list.txt" "$work/clamdb/bench.hsb" "$ENTRIES" "$probe" "$CLAMD_ENTRIES" <<'PY'
import os, sys
os.makedirs(os.path.dirname(sys.argv[2]), exist_ok=True)
n, clamd_n = int(sys.argv[3]), int(sys.argv[5])
with open(sys.argv[1], "w") as plain, open(sys.argv[2], "w") as hsb:
    for i in range(n):
        # MD5, SHA-1 and SHA-256 in turn; the first is the probe's SHA-256.
        d = os.urandom((16, 20, 32)[i % 3]).hex() if i else sys.argv[4]
        plain.write(d + "\n")
        if i < clamd_n:
            hsb.write(f"{d}:*:Hashgate.Bench.{i}:73\n")
PY
"$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/f.hgf" "$work/list.txt" 2>/dev/null
filter_mib=$(( $(stat -c %s "$work/f.hgf") / 1048576 ))

start_sink "$cores"
start_proxy "$cores"
wait_port "$sink"; wait_port "$proxy"

# --- start-up and memory -----------------------------------------------------------------
cat "$work/f.hgf" > /dev/null  # the filter on local disk, in the page cache
# Seconds to ready and resident memory: the median of REPS starts; the last one serves.
readies=(); rsses=()
for rep in $(seq 1 "$REPS"); do
  gw=$(free_port); admin=$(free_port)
  t0=$(now)
  "$hg" gateway --filter "$work/f.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$gw" --admin "127.0.0.1:$admin" \
    --origin "http://127.0.0.1:$sink" 2>"$work/gateway.err" & gw_pid=$!; pids+=($gw_pid)
  until curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1; do sleep 0.01; done
  readies+=("$(echo "$(now) - $t0" | bc -l)")
  wait_port "$gw"
  curl -s -o /dev/null -T "$work/probe" "http://127.0.0.1:$gw/probe" -w '%{http_code}' | grep -q 451 \
    || { echo "hashgate did not refuse the probe" >&2; exit 1; }
  rsses+=("$(rss_mib "$gw_pid")")
  if [ "$rep" -lt "$REPS" ]; then kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; fi
done
hg_ready=$(printf '%s\n' "${readies[@]}" | median)
hg_rss=$(printf '%s\n' "${rsses[@]}" | median)

clamd_port=$(free_port)
cat > "$work/clamd.conf" <<CONF
Foreground yes
LogFile $work/clamd.log
DatabaseDirectory $work/clamdb
LocalSocket $work/clamd.sock
TCPSocket $clamd_port
TCPAddr 127.0.0.1
MaxThreads 16
MaxQueue 200
StreamMaxLength 64M
MaxScanSize 64M
MaxFileSize 64M
ScanPE no
ScanELF no
ScanOLE2 no
ScanPDF no
ScanSWF no
ScanXMLDOCS no
ScanHWP3 no
ScanMail no
ScanHTML no
ScanArchive no
Bytecode no
PhishingSignatures no
PhishingScanURLs no
HeuristicAlerts no
SelfCheck 0
CONF
t0=$(now)
clamd --config-file="$work/clamd.conf" >/dev/null 2>&1 & clamd_pid=$!; pids+=($clamd_pid)
until python3 - "$clamd_port" 2>/dev/null <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"zPING\0"); assert s.recv(16).startswith(b"PONG")
PY
do
  kill -0 "$clamd_pid" 2>/dev/null || { echo "clamd exited:" >&2; tail "$work/clamd.log" >&2; exit 1; }
  sleep 0.1
done
clamd_ready=$(echo "$(now) - $t0" | bc -l)
clamd_rss=$(rss_mib "$clamd_pid")

# INSTREAM load generator: CONNS threads, each streams the object, reads the verdict, repeats.
cat > "$work/instream.py" <<'PY'
import socket, struct, sys, threading, time
port, body_path, conns, duration = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
body = open(body_path, "rb").read()
frames = b"".join(struct.pack(">I", len(body[i:i + 65536])) + body[i:i + 65536]
                  for i in range(0, len(body), 65536)) + struct.pack(">I", 0)
def scan():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"zINSTREAM\0" + frames)
    answer = b""
    while not answer.endswith(b"\0"):
        chunk = s.recv(4096)
        if not chunk: break
        answer += chunk
    s.close()
    return answer
if len(sys.argv) > 5:  # probe mode: print the verdict
    print(scan().decode().strip("\0")); sys.exit()
done = [0] * conns
stop = time.monotonic() + duration
def worker(i):
    while time.monotonic() < stop:
        if not scan().endswith(b"OK\0"): raise SystemExit("unexpected verdict")
        done[i] += 1
threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
start = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
rps = sum(done) / (time.monotonic() - start)
print(f"{rps:.1f} {rps * len(body) / 1048576:.1f}")
PY
python3 "$work/instream.py" "$clamd_port" "$work/probe" 1 0 probe | grep -q FOUND \
  || { echo "clamd did not find the probe" >&2; exit 1; }

echo
echo "== start-up: hashgate with $ENTRIES digests (filter $filter_mib MiB), clamd with $CLAMD_ENTRIES"
printf '%-9s %9s %9s\n' system "ready s" "RSS MiB"
printf '%-9s %9.2f %9s   (target: ready <= 1 s, RSS <= 1.3 x %s + 50 = %.0f MiB)\n' hashgate "$hg_ready" "$hg_rss" "$filter_mib" "$(echo "1.3 * $filter_mib + 50" | bc -l)"
printf '%-9s %9.2f %9s   (%s digests: its maximum)\n' clamd "$clamd_ready" "$clamd_rss" "$CLAMD_ENTRIES"

# --- uploads -----------------------------------------------------------------------------
write_put_lua
results="$work/results.txt"; : > "$results"
echo
echo "== uploads: requests/s (MiB/s), medians of $REPS"
printf '%-9s %-4s | %-16s | %-16s | %-16s | %-16s | %s\n' size conc direct nginx hashgate clamd "hashgate/nginx, hashgate/clamd"
for size in $SIZES; do
  head -c "$size" /dev/urandom > "$work/body-$size"
  for conns in 1 16; do
    declare -A rps=() mib=() runs=()
    # Repetitions outside, systems inside: the systems take turns, so a noisy minute on
    # this shared machine hits each of them instead of all the repetitions of one.
    for _ in $(seq 1 "$REPS"); do
      for sys in direct nginx hashgate clamd; do
        case $sys in
          direct) r=$(wrk_put "http://127.0.0.1:$sink/b/o-$size-$conns" "$work/body-$size" "$conns" | cut -d' ' -f1-2) ;;
          nginx) r=$(wrk_put "http://127.0.0.1:$proxy/b/o-$size-$conns" "$work/body-$size" "$conns" | cut -d' ' -f1-2) ;;
          hashgate) r=$(wrk_put "http://127.0.0.1:$gw/b/o-$size-$conns" "$work/body-$size" "$conns" | cut -d' ' -f1-2) ;;
          clamd) r=$(python3 "$work/instream.py" "$clamd_port" "$work/body-$size" "$conns" "$DURATION") ;;
        esac
        runs[$sys]+="$r"$'\n'
      done
    done
    for sys in direct nginx hashgate clamd; do
      rps[$sys]=$(printf '%s' "${runs[$sys]}" | cut -d' ' -f1 | median)
      mib[$sys]=$(printf '%s' "${runs[$sys]}" | cut -d' ' -f2 | median)
      echo "$size $conns $sys ${rps[$sys]} ${mib[$sys]}" >> "$results"
    done
    printf '%-9s %-4s | %8s (%5s) | %8s (%5s) | %8s (%5s) | %8s (%5s) | %.2fx, %.1fx\n' "$size" "$conns" \
      "${rps[direct]}" "${mib[direct]}" "${rps[nginx]}" "${mib[nginx]}" "${rps[hashgate]}" "${mib[hashgate]}" \
      "${rps[clamd]}" "${mib[clamd]}" "$(echo "${rps[hashgate]} / ${rps[nginx]}" | bc -l)" "$(echo "${rps[hashgate]} / ${rps[clamd]}" | bc -l)"
  done
done

# --- data at rest ------------------------------------------------------------------------
echo
echo "== at rest: $TREE_FILES files of 1 MiB (fresh contents each run: clamd caches verdicts by hash)"
tree=$shm/tree
timed() { local s; s=$(now); "$@" >/dev/null 2>&1 || [ $? -eq 1 ]; echo "$(now) - $s" | bc -l; }
hs=(); cs=()
for _ in $(seq 1 "$REPS"); do
  rm -rf "$tree"; mkdir -p "$tree"
  for i in $(seq 1 "$TREE_FILES"); do head -c 1048576 /dev/urandom > "$tree/f$i"; done
  hs+=("$(timed "$hg" scan --filter "$work/f.hgf" --pub "$work/k.pub" "$tree")")
  rm -rf "$tree"; mkdir -p "$tree"
  for i in $(seq 1 "$TREE_FILES"); do head -c 1048576 /dev/urandom > "$tree/f$i"; done
  cs+=("$(timed clamdscan --config-file="$work/clamd.conf" --multiscan --fdpass --no-summary "$tree")")
done
h=$(printf '%s\n' "${hs[@]}" | median); c=$(printf '%s\n' "${cs[@]}" | median)
printf 'hashgate scan %.2f s, clamdscan %.2f s: hashgate %.1fx clamdscan (target >= 10x)\n' "$h" "$c" "$(echo "$c / $h" | bc -l)"
rm -rf "$tree"

echo "== at rest: one $BIG_MIB MiB file, against openssl dgst of each algorithm in parallel"
head -c $((BIG_MIB << 20)) /dev/urandom > "$shm/big"
os=(); hs=(); ps=()
for _ in $(seq 1 "$REPS"); do
  # The filter holds MD5, SHA-1 and SHA-256: openssl computes each in its own process.
  os+=("$(timed bash -c "openssl dgst -md5 '$shm/big' & openssl dgst -sha1 '$shm/big' & openssl dgst -sha256 '$shm/big' & wait")")
  hs+=("$(timed "$hg" scan --filter "$work/f.hgf" --pub "$work/k.pub" "$shm/big")")
  ps+=("$("$hg" scan --json --filter "$work/f.hgf" --pub "$work/k.pub" "$shm/big" 2>/dev/null | tail -1 \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["seconds"])')")
done
o=$(printf '%s\n' "${os[@]}" | median); h=$(printf '%s\n' "${hs[@]}" | median); p=$(printf '%s\n' "${ps[@]}" | median)
printf 'openssl dgst x3 %.2f s; hashgate scan %.2f s whole command (%.2fx), %.2f s scanning phase (%.2fx) (target >= 0.9x)\n' \
  "$o" "$h" "$(echo "$o / $h" | bc -l)" "$p" "$(echo "$o / $p" | bc -l)"
rm -f "$shm/big"

# --- the plot ----------------------------------------------------------------------------
python3 - "$results" "$PLOT" "$ENTRIES" <<'PY'
import math, sys
rows = [l.split() for l in open(sys.argv[1])]
colors = {"direct": "#888888", "nginx": "#1f77b4", "hashgate": "#d62728", "clamd": "#2ca02c"}
sizes = sorted({int(r[0]) for r in rows})
data = {(r[2], int(r[1]), int(r[0])): float(r[4]) for r in rows}
top = max(data.values()) * 1.1
W, H, L, B, T, R = 720, 420, 70, 60, 40, 150
x = lambda s: L + (W - L - R) * (math.log2(s) - math.log2(sizes[0])) / max(1, math.log2(sizes[-1]) - math.log2(sizes[0]))
y = lambda v: H - B - (H - B - T) * v / top
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="22" text-anchor="middle" font-size="14">Upload throughput by object size ({int(sys.argv[3]):,} digests; solid: 16 connections, dashed: 1)</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>']
for s in sizes:
    label = f"{s >> 20} MiB" if s >= 1 << 20 else f"{s >> 10} KiB"
    out.append(f'<text x="{x(s)}" y="{H-B+18}" text-anchor="middle">{label}</text>')
for i in range(6):
    v = top * i / 5
    out.append(f'<text x="{L-6}" y="{y(v)+4}" text-anchor="end">{v:.0f}</text><line x1="{L}" y1="{y(v)}" x2="{W-R}" y2="{y(v)}" stroke="#eee"/>')
out.append(f'<text x="18" y="{(H-B+T)/2}" transform="rotate(-90 18 {(H-B+T)/2})" text-anchor="middle">MiB/s</text>')
for n, (system, color) in enumerate(colors.items()):
    for conns, dash in ((16, ""), (1, ' stroke-dasharray="5,4"')):
        pts = " ".join(f"{x(s):.1f},{y(data[(system, conns, s)]):.1f}" for s in sizes if (system, conns, s) in data)
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
    out.append(f'<line x1="{W-R+15}" y1="{T+20+n*20}" x2="{W-R+40}" y2="{T+20+n*20}" stroke="{color}" stroke-width="2"/><text x="{W-R+46}" y="{T+24+n*20}">{system}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print(f"plot: {sys.argv[2]}")
PY
