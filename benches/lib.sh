# Shared by the end-to-end benchmark scripts (sourced, not run).
#
# bench_setup NAME   sets $work (a scratch directory, kept when HASHGATE_BENCH_DIR names
#                    it), $shm (a tmpfs directory) and a trap that stops every pid in
#                    $pids, runs bench_cleanup_extra if defined, and removes both.
# need CMD PKG ...   installs the Debian packages whose command is missing.
# build_hashgate     builds the release binary (or takes $HASHGATE_BIN); sets $hg.
# free_port, wait_port PORT, random_list FILE N (N random SHA-256 digests, one per line),
# mixed_list FILE N (N random digests as authorities ship them: a third each MD5, SHA-1
# and SHA-256), build_filters N (the two filters every hashing benchmark runs with),
# median V... (the middle value; the mean of the two middle ones for an even count).

pids=()

bench_setup() {
  work=${HASHGATE_BENCH_DIR:-$(mktemp -d)}
  mkdir -p "$work"
  chmod 755 "$work"
  shm=$(mktemp -d -p /dev/shm "hashgate-$1.XXXXXX")
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if declare -F bench_cleanup_extra >/dev/null; then bench_cleanup_extra; fi
  rm -rf "$shm"
  [ -n "${HASHGATE_BENCH_DIR:-}" ] || rm -rf "$work"
}

need() { # pairs of (command or absolute path, Debian package)
  local missing=()
  while [ $# -gt 1 ]; do
    command -v "$1" >/dev/null 2>&1 || [ -e "$1" ] || missing+=("$2")
    shift 2
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

build_hashgate() {
  if [ -n "${HASHGATE_BIN:-}" ]; then
    hg=$HASHGATE_BIN  # another build to compare against (A/B runs)
  else
    cargo build --release --locked --quiet
    hg=$PWD/target/release/hashgate
  fi
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 1 600); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  exit 1
}

random_list() {
  python3 - "$1" "$2" <<'PY'
import os, sys
n = int(sys.argv[2])
with open(sys.argv[1], "wb") as f:
    for start in range(0, n, 100000):
        f.write(b"".join(os.urandom(32).hex().encode() + b"\n" for _ in range(min(100000, n - start))))
PY
}

mixed_list() {
  python3 - "$1" "$2" <<'PY'
import os, sys
n = int(sys.argv[2]) // 3
with open(sys.argv[1], "w") as f:
    for size, name in ((16, "md5"), (20, "sha1"), (32, "sha256")):
        for start in range(0, n, 100000):
            f.write("".join(f"{name}:{os.urandom(size).hex()}\n" for _ in range(min(100000, n - start))))
PY
}

# build_filters N: $work/f.hgf, N entries as authorities ship them (mixed_list: MD5 +
# SHA-1 + SHA-256, the production-like default of every figure), and $work/f256.hgf, N
# SHA-256 entries only (the second row). Keys $work/k.key and k.pub; needs $hg.
build_filters() {
  [ -s "$work/k.key" ] || "$hg" keygen --out "$work/k" --force 2>/dev/null
  [ -s "$work/mixed-$1.txt" ] || mixed_list "$work/mixed-$1.txt" "$1"
  [ -s "$work/sha256-$1.txt" ] || random_list "$work/sha256-$1.txt" "$1"
  "$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/f.hgf" "$work/mixed-$1.txt" 2>/dev/null
  "$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/f256.hgf" "$work/sha256-$1.txt" 2>/dev/null
}

# start_sink WORKERS: the sink origin, nginx WebDAV storing every PUT into tmpfs (unlike
# `return 204`, which answers before reading the body); sets $sink to its port.
start_sink() {
  sink=$(free_port)
  mkdir -p "$shm/root" "$shm/tmp"
  # Started as root, nginx workers run as nobody: let them write the tmpfs directories.
  chmod -R 777 "$shm"
  cat > "$work/sink.conf" <<CONF
worker_processes $1; daemon off; pid $work/sink.pid; error_log $work/sink.err;
events { worker_connections 1024; }
http {
  access_log off; client_max_body_size 0; client_body_temp_path $shm/tmp;
  server { listen 127.0.0.1:$sink; root $shm/root;
           location / { dav_methods PUT; create_full_put_path on; } }
}
CONF
  nginx -p "$work" -c "$work/sink.conf" & pids+=($!)
}

# start_proxy WORKERS [CERT KEY]: nginx as a plain streaming pass-through to the sink
# (proxy_request_buffering off, keep-alive upstream), over TLS 1.3 when given a
# certificate; sets $proxy to its port. Call after start_sink.
start_proxy() {
  proxy=$(free_port)
  mkdir -p "$shm/ptmp"
  chmod 777 "$shm/ptmp"
  local listen="listen 127.0.0.1:$proxy;"
  if [ -n "${2:-}" ]; then
    listen="listen 127.0.0.1:$proxy ssl; ssl_certificate $2; ssl_certificate_key $3; ssl_protocols TLSv1.3;"
  fi
  cat > "$work/proxy.conf" <<CONF
worker_processes $1; daemon off; pid $work/proxy.pid; error_log $work/proxy.err;
events { worker_connections 1024; }
http {
  access_log off; client_max_body_size 0; client_body_temp_path $shm/ptmp;
  upstream sink { server 127.0.0.1:$sink; keepalive 64; }
  server { $listen
           location / { proxy_pass http://sink; proxy_http_version 1.1;
                        proxy_set_header Connection ""; proxy_request_buffering off; } }
}
CONF
  nginx -p "$work" -c "$work/proxy.conf" & pids+=($!)
}

# write_put_lua: $work/put.lua, the wrk script every benchmark uses: the body from
# $BODY_FILE, the method from $METHOD (PUT), the request target from $TARGET (wrk's own
# path if unset; an absolute URL through a forward proxy), extra headers from $HEADERS
# ("Name: value|Name: value").
write_put_lua() {
  cat > "$work/put.lua" <<'LUA'
wrk.method = os.getenv("METHOD") or "PUT"
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
local target = os.getenv("TARGET")
if target and target ~= "" then wrk.path = target end
wrk.headers["Content-Type"] = "application/octet-stream"
for h in string.gmatch(os.getenv("HEADERS") or "", "[^|]+") do
  local name, value = h:match("^([^:]+):%s*(.*)$")
  wrk.headers[name] = value
end
-- HIT_PERCENT=P: P of every 100 requests carry $HIT_BODY_FILE (a listed body) instead,
-- spread evenly.
local percent = tonumber(os.getenv("HIT_PERCENT") or "0")
if percent > 0 then
  local h = assert(io.open(os.getenv("HIT_BODY_FILE"), "rb"))
  local listed = h:read("*a")
  h:close()
  local clean_request = wrk.format(nil, nil, nil, wrk.body)
  local listed_request = wrk.format(nil, nil, nil, listed)
  local n = 0
  function request()
    n = n + 1
    if (n * percent) % 100 < percent then return listed_request end
    return clean_request
  end
end
LUA
}

# wrk's latency units (us, ms, s) to milliseconds.
ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }

# wrk_put URL BODY_FILE CONNS: DURATION seconds of uploads; prints "req/s MiB/s p50ms p99ms"
# (MiB/s of the body file's size) and stops the script on any non-2xx answer.
wrk_put() {
  local out rps p50 p99 threads
  threads=$(( $3 < 2 ? 1 : 2 ))
  out=$(BODY_FILE="$2" wrk -t"$threads" -c"$3" -d"${DURATION}s" --timeout 60s --latency \
        -s "$work/put.lua" "$1")
  # With HIT_PERCENT, the listed bodies' 451s are the point; without, any is a failure.
  if [ "${HIT_PERCENT:-0}" = 0 ] && echo "$out" | grep -q "Non-2xx"; then
    echo "non-2xx answers from $1" >&2; echo "$out" >&2; exit 1
  fi
  if [ "${HIT_PERCENT:-0}" != 0 ] && ! echo "$out" | grep -q "Non-2xx"; then
    echo "no listed body was refused by $1" >&2; echo "$out" >&2; exit 1
  fi
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(ms "$(echo "$out" | awk '$1 == "50%" {print $2}')")
  p99=$(ms "$(echo "$out" | awk '$1 == "99%" {print $2}')")
  echo "$rps $(echo "$rps * $(stat -c %s "$2") / 1048576" | bc -l | xargs printf '%.1f') $p50 $p99"
}
