#!/usr/bin/env bash
# Upload-shape benchmark (docs/PERFORMANCE.md, issue 5). In one run, on loopback, wrk
# uploads the same object bytes through `hashgate gateway` (SHA-256 filter of ENTRIES
# entries) to the sink origin (nginx WebDAV into tmpfs) in three shapes:
#   plain      - PUT of the object;
#   multipart  - a multipart/form-data body (a text field and the object as a file; sent
#                as a PUT so that the sink stores every shape's body the same way);
#   aws-chunked - PUT in S3 aws-chunked framing (64 KiB signed chunks, as SDKs send).
# For 64 KiB, 1 MiB and 16 MiB objects at concurrency 1 and 16 it prints object MiB/s
# and each shape's throughput relative to the plain PUT.
# Usage: benches/shapes.sh   (env: ENTRIES=1000000 DURATION=5 SIZES="65536 ...")
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-1000000}
DURATION=${DURATION:-5}
SIZES=${SIZES:-"65536 1048576 16777216"}
source benches/lib.sh
bench_setup shapes
need nginx nginx-light wrk wrk
build_hashgate

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${DURATION}s per point; $ENTRIES digests"
"$hg" keygen --out "$work/k" --force 2>/dev/null
random_list "$work/list.txt" "$ENTRIES"
"$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/f.hgf" "$work/list.txt" 2>/dev/null

gw=$(free_port)
start_sink 1
"$hg" gateway --filter "$work/f.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$gw" \
  --origin "http://127.0.0.1:$sink" 2>"$work/gateway.err" & pids+=($!)
wait_port "$sink"; wait_port "$gw"

write_put_lua

python3 - "$work" $SIZES <<'PY'
import os, sys
work, sizes = sys.argv[1], sys.argv[2:]
for size in map(int, sizes):
    obj = os.urandom(size)
    open(f"{work}/plain-{size}", "wb").write(obj)
    b = "----hashgatebench"
    form = (f"--{b}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nbench\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"obj.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + obj + f"\r\n--{b}--\r\n".encode()
    open(f"{work}/multipart-{size}", "wb").write(form)
    sig = ";chunk-signature=" + "0" * 64
    out = bytearray()
    for i in range(0, size, 65536):
        piece = obj[i:i + 65536]
        out += f"{len(piece):x}{sig}\r\n".encode() + piece + b"\r\n"
    out += f"0{sig}\r\n\r\n".encode()
    open(f"{work}/aws-{size}", "wb").write(out)
PY

run() { # shape size conns -> object MiB/s
  local body="$work/plain-$2" headers="" rps
  case $1 in
    multipart) body="$work/multipart-$2"
               headers="Content-Type: multipart/form-data; boundary=----hashgatebench" ;;
    aws-chunked) body="$work/aws-$2"
               headers="Content-Encoding: aws-chunked|x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD|x-amz-decoded-content-length: $2" ;;
  esac
  read -r rps _ <<<"$(HEADERS=$headers wrk_put "http://127.0.0.1:$gw/bench/$1-$2-$3" "$body" "$3")"
  echo "$rps * $2 / 1048576" | bc -l | xargs printf '%.1f'
}

printf '\n%-9s %-4s | %10s | %10s %7s | %11s %7s\n' size conc "plain MiB/s" "multipart" ratio "aws-chunked" ratio
for size in $SIZES; do
  for conns in 1 16; do
    p=$(run plain "$size" "$conns"); m=$(run multipart "$size" "$conns"); a=$(run aws-chunked "$size" "$conns")
    printf '%-9s %-4s | %10s | %10s %6.2fx | %11s %6.2fx\n' "$size" "$conns" "$p" "$m" \
      "$(echo "$m / $p" | bc -l)" "$a" "$(echo "$a / $p" | bc -l)"
  done
done
