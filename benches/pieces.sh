#!/usr/bin/env bash
# Uploads in pieces (issue 16; docs/PERFORMANCE.md). In one run, on loopback, with a
# production-like filter (ENTRIES digests, a third each MD5, SHA-1, SHA-256):
#   1. a SIZE_MIB S3 multipart upload in PARTS parts on THREADS threads (boto3, the
#      low-level calls) to s3s-fs in tmpfs, straight and through `hashgate gateway
#      --s3-spool`: throughput, the gateway's as a ratio of the straight one, and how
#      long the gateway takes to answer the completion, as a ratio of `hashgate scan`
#      hashing the same object once with the same filter;
#   2. three gateways behind HAProxy (balance url_param uploadId, consistent), against
#      HAProxy in front of the origin alone: CLIENTS uploads of FLEET_MIB at once,
#      aggregate throughput and its ratio.
# Each point is the median of ROUNDS interleaved rounds.
# Usage: benches/pieces.sh  (env: ENTRIES=1000000 SIZE_MIB=1024 PARTS=16 THREADS=8
#        ROUNDS=3 CLIENTS=3 FLEET_MIB=256)
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-1000000}
SIZE_MIB=${SIZE_MIB:-1024}
PARTS=${PARTS:-16}
THREADS=${THREADS:-8}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-3}
FLEET_MIB=${FLEET_MIB:-256}
source benches/lib.sh
bench_setup pieces
need haproxy haproxy
s3s_fs=${HASHGATE_S3S_FS:-$HOME/.cargo/bin/s3s-fs}
[ -x "$s3s_fs" ] || cargo install --locked --quiet --features binary s3s-fs@0.14.1
python3 -c 'import boto3' 2>/dev/null || pip install -q boto3==1.44.8
build_hashgate
build_filters "$ENTRIES"
export AWS_ACCESS_KEY_ID=HGBENCHKEY AWS_SECRET_ACCESS_KEY=hgbenchsecret0123456789 AWS_EC2_METADATA_DISABLED=true
echo "machine: $(nproc) cores; $ENTRIES entries (MD5 + SHA-1 + SHA-256); $ROUNDS rounds"

head -c $((SIZE_MIB << 20)) /dev/urandom > "$shm/object"
head -c $((FLEET_MIB << 20)) /dev/urandom > "$shm/fleet-object"
s3=$(free_port)
mkdir -p "$shm/s3"
"$s3s_fs" --host 127.0.0.1 --port "$s3" --access-key "$AWS_ACCESS_KEY_ID" \
  --secret-key "$AWS_SECRET_ACCESS_KEY" "$shm/s3" >/dev/null 2>&1 & pids+=($!)
wait_port "$s3"
printf '[s3]\naccess_key = "%s"\nsecret_key = "%s"\n' "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" > "$work/s3.toml"
gateway() { # PORT SPOOL
  "$hg" gateway --filter "$work/f.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$1" \
    --origin "http://127.0.0.1:$s3" --s3-spool "$2" --config "$work/s3.toml" \
    2>>"$work/gateway.err" & pids+=($!)
}
gws=()
for i in 0 1 2; do
  gws+=("$(free_port)")
  gateway "${gws[$i]}" "$shm/spool-$i"
done
for p in "${gws[@]}"; do wait_port "$p"; done
haproxy_for() { # PORT SERVER_PORT...
  local port=$1; shift
  {
    printf 'global\n  maxconn 512\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n'
    printf 'frontend f\n  bind 127.0.0.1:%s\n  default_backend b\nbackend b\n  balance url_param uploadId\n  hash-type consistent\n' "$port"
    for s in "$@"; do printf '  server s%s 127.0.0.1:%s\n' "$s" "$s"; done
  } > "$work/haproxy-$port.cfg"
  haproxy -db -f "$work/haproxy-$port.cfg" >/dev/null 2>&1 & pids+=($!)
  wait_port "$port"
}
lb_gw=$(free_port); haproxy_for "$lb_gw" "${gws[@]}"
lb_direct=$(free_port); haproxy_for "$lb_direct" "$s3"

cat > "$work/upload.py" <<'PY'
"""upload.py ENDPOINT KEY FILE PARTS THREADS: one multipart upload; prints the seconds
it took in all and the seconds its completion took."""
import os, sys, time
from concurrent.futures import ThreadPoolExecutor
import boto3
from botocore.config import Config

endpoint, key, path, parts, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, max_pool_connections=threads,
                                retries={"max_attempts": 1}))
size = os.path.getsize(path)
step = -(-size // parts)
start = time.monotonic()
upload = s3.create_multipart_upload(Bucket="bench", Key=key)["UploadId"]
def part(n):
    with open(path, "rb") as f:
        f.seek((n - 1) * step)
        body = f.read(step)
    return {"PartNumber": n, "ETag": s3.upload_part(Bucket="bench", Key=key, UploadId=upload, PartNumber=n, Body=body)["ETag"]}
with ThreadPoolExecutor(threads) as pool:
    done = list(pool.map(part, range(1, parts + 1)))
before = time.monotonic()
s3.complete_multipart_upload(Bucket="bench", Key=key, UploadId=upload, MultipartUpload={"Parts": done})
end = time.monotonic()
s3.delete_object(Bucket="bench", Key=key)
print(f"{end - start:.3f} {end - before:.3f}")
PY
python3 - "http://127.0.0.1:$s3" <<'PY'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").create_bucket(Bucket="bench")
PY

mib_s() { echo "$1 / $2" | bc -l | xargs printf '%.0f'; }
single_ratio=(); completion_ratio=(); fleet_ratio=()
for round in $(seq 1 "$ROUNDS"); do
  read -r direct direct_completion < <(python3 "$work/upload.py" "http://127.0.0.1:$s3" "r$round" "$shm/object" "$PARTS" "$THREADS")
  read -r through completion < <(python3 "$work/upload.py" "http://127.0.0.1:${gws[0]}" "r$round" "$shm/object" "$PARTS" "$THREADS")
  t0=$(date +%s.%N); "$hg" scan --filter "$work/f.hgf" --pub "$work/k.pub" "$shm/object" >/dev/null; t1=$(date +%s.%N)
  hash=$(echo "$t1 - $t0" | bc -l)
  single_ratio+=("$(echo "$direct / $through" | bc -l)")
  # What the gateway adds to the completion (the origin's own assembly is in both).
  added=$(echo "$completion - $direct_completion" | bc -l)
  completion_ratio+=("$(echo "$added / $hash" | bc -l)")
  printf 'round %s, %s MiB in %s parts on %s threads: straight %s MiB/s, gateway %s MiB/s (%.2fx); completion %.2f s (straight %.2f s: the gateway adds %.2f s), one hash %.2f s (%.2fx)\n' \
    "$round" "$SIZE_MIB" "$PARTS" "$THREADS" "$(mib_s "$SIZE_MIB" "$direct")" "$(mib_s "$SIZE_MIB" "$through")" \
    "$(echo "$direct / $through" | bc -l)" "$completion" "$direct_completion" "$added" "$hash" "$(echo "$added / $hash" | bc -l)"
  fleet() { # PORT: CLIENTS uploads at once; seconds for all
    local t0 t1
    t0=$(date +%s.%N)
    for c in $(seq 1 "$CLIENTS"); do
      python3 "$work/upload.py" "http://127.0.0.1:$1" "f$round-$c" "$shm/fleet-object" 16 4 >/dev/null &
    done
    wait_uploads
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
  }
  wait_uploads() { for j in $(jobs -p); do case " ${pids[*]} " in *" $j "*) ;; *) wait "$j";; esac; done; }
  alone=$(fleet "$lb_direct"); three=$(fleet "$lb_gw")
  fleet_ratio+=("$(echo "$alone / $three" | bc -l)")
  printf 'round %s, %s uploads of %s MiB at once: HAProxy to the origin %s MiB/s, HAProxy to three gateways %s MiB/s (%.2fx)\n' \
    "$round" "$CLIENTS" "$FLEET_MIB" "$(mib_s $((CLIENTS * FLEET_MIB)) "$alone")" "$(mib_s $((CLIENTS * FLEET_MIB)) "$three")" \
    "$(echo "$alone / $three" | bc -l)"
done
echo "median: one upload through the gateway $(median "${single_ratio[@]}")x straight; time the gateway adds to the completion $(median "${completion_ratio[@]}")x one hash; three gateways $(median "${fleet_ratio[@]}")x HAProxy alone"
