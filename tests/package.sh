#!/usr/bin/env bash
# The Debian package, as an operator meets it (scripts/test.sh runs this; it needs root,
# since it installs the package on this machine and removes it again):
#   - `dpkg -i` installs it: the binary, two units, commented configs, logrotate, the
#     hashgate user and the directories the units may write to;
#   - `systemd-analyze verify` accepts both units, and they carry the hardening;
#   - the installed binary, run as the units run it (the hashgate user, no capabilities,
#     no new privileges), serves from the installed configs: the gateway refuses the
#     canary and audits it, the ICAP server answers OPTIONS and refuses the canary;
#   - logrotate rotates the audit log and SIGHUP makes the gateway write to the new one;
#   - every system call the gateway and the ICAP server make meanwhile (strace) is one
#     their unit's SystemCallFilter allows, so the filter cannot kill them in production;
#   - `dpkg -r` and `dpkg -P` leave the state and the audit behind.
# Servers are not started by systemd here (no systemd runs in this container), so the
# units' sandboxing itself is what `systemd-analyze verify` checks, not what is run.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "package test: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (it installs and removes the package)"
if dpkg-query -W -f='${Status}' hashgate 2>/dev/null | grep -q 'install ok'; then
  fail "hashgate is already installed here; this test installs and removes it"
fi
for d in /etc/hashgate /var/lib/hashgate /var/log/hashgate; do
  [ ! -e "$d" ] || fail "$d exists already; this test would mix with it"
done

deb=$(scripts/package.sh)
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  dpkg -P hashgate >/dev/null 2>&1 || true
  rm -rf "$work" /var/lib/hashgate /var/log/hashgate /var/cache/hashgate /etc/hashgate
  getent passwd hashgate >/dev/null && deluser --system hashgate >/dev/null 2>&1 || true
  getent group hashgate >/dev/null && delgroup --system hashgate >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Polls for a condition instead of sleeping a guessed time.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 300); do "$@" && return 0; sleep 0.1; done
  fail "timed out waiting for $what"
}

# A port the installed configs use must be free, or the test would talk to a stranger.
for port in 8080 9090 1344 9091; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is in use; the installed configs listen there"
  fi
done

echo "package test: dpkg -i $deb"
dpkg -i "$deb" >/dev/null
[ -x /usr/bin/hashgate ] || fail "no /usr/bin/hashgate"
getent passwd hashgate >/dev/null || fail "no hashgate user"
for d in /var/lib/hashgate/gateway /var/log/hashgate /var/cache/hashgate/gateway; do
  [ "$(stat -c %U "$d")" = hashgate ] || fail "$d is not the hashgate user's"
done
# The configs may hold secrets: the services' group reads them, no one else does.
for f in /etc/hashgate/gateway.toml /etc/hashgate/icap.toml; do
  [ "$(stat -c '%a %U %G' "$f")" = "640 root hashgate" ] || fail "$f is $(stat -c '%a %U %G' "$f")"
done

echo "package test: systemd-analyze verify"
out=$(systemd-analyze verify /lib/systemd/system/hashgate-gateway.service \
  /lib/systemd/system/hashgate-icap.service 2>&1) || fail "systemd-analyze: $out"
# Anything said about our units is a problem (unknown directives are only warnings).
if grep -q hashgate <<<"$out"; then fail "systemd-analyze: $out"; fi
for unit in hashgate-gateway hashgate-icap; do
  for line in User=hashgate NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes \
    PrivateTmp=yes 'CapabilityBoundingSet=' 'AmbientCapabilities=' \
    "StateDirectory=hashgate/${unit#hashgate-}" LogsDirectory=hashgate \
    "CacheDirectory=hashgate/${unit#hashgate-}" 'SystemCallFilter=~@privileged'; do
    grep -qx -- "$line" "/lib/systemd/system/$unit.service" || fail "$unit: no $line"
  done
done

# What an operator does next: put a filter and the authority's key where the configs say.
/usr/bin/hashgate keygen --out "$work/authority" >/dev/null 2>&1
head -c 32 /dev/urandom | sha256sum | cut -d' ' -f1 >"$work/list.txt"
/usr/bin/hashgate build --key "$work/authority.key" --series package-test --version 1 --out "$work/f.hgf" \
  "$work/list.txt" >/dev/null 2>&1
install -m 0644 "$work/f.hgf" /var/lib/hashgate/filter.hgf
install -m 0644 "$work/authority.pub" /etc/hashgate/authority.pub

# Whether every system call in the strace log $1, from the traced binary's execve on, is
# one unit $2's SystemCallFilter lines allow.
check_syscalls() {
  python3 - "$1" "/lib/systemd/system/$2.service" <<'PY' || fail "$2: system calls outside its SystemCallFilter"
import re, subprocess, sys
# Every group systemd knows, expanded (groups name groups).
groups, current = {}, None
for line in subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                           text=True, check=True).stdout.splitlines():
    word = line.strip()
    if not word or word.startswith("#"):
        continue
    if not line.startswith(" "):
        current = groups.setdefault(word, [])
    else:
        current.append(word)
def expand(name, seen=()):
    if not name.startswith("@"):
        return {name}
    out = set()
    for member in groups[name]:
        if member not in seen:
            out |= expand(member, seen + (name,))
    return out
allowed = set()
for line in open(sys.argv[2]):
    if line.startswith("SystemCallFilter="):
        spec = line.split("=", 1)[1].strip()
        deny = spec.startswith("~")
        names = set().union(*(expand(n) for n in spec.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
# What strace shows before setpriv's exec of the binary is setpriv's own (it drops the
# privileges the unit never has); the gateway's calls start at that execve.
made, started = set(), False
for line in open(sys.argv[1]):
    started = started or 'execve("/usr/bin/hashgate"' in line
    m = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
    if started and m:
        made.add(m.group(1))
outside = sorted(made - allowed)
print(f"{len(made)} distinct system calls made, {len(allowed)} allowed")
if outside:
    print("not allowed:", " ".join(outside))
    sys.exit(1)
PY
}

# As the units run it: the hashgate user, no capabilities at all, no new privileges.
# (An array, not a function: a function run with & would be a subshell, and signals
# meant for the server would go to it.)
as_unit=(setpriv --reuid=hashgate --regid=hashgate --init-groups --inh-caps=-all
  --bounding-set=-all --no-new-privs --)

echo "package test: --check-config of the installed configs"
"${as_unit[@]}" /usr/bin/hashgate gateway --config /etc/hashgate/gateway.toml --check-config \
  >"$work/check.out" 2>&1 || fail "gateway --check-config: $(cat "$work/check.out")"
grep -q "configuration ok" "$work/check.out" || fail "gateway: $(cat "$work/check.out")"
"${as_unit[@]}" /usr/bin/hashgate icap --config /etc/hashgate/icap.toml --check-config \
  >"$work/check.out" 2>&1 || fail "icap --check-config: $(cat "$work/check.out")"

echo "package test: the gateway from /etc/hashgate/gateway.toml (under strace)"
strace -f -qq -o "$work/syscalls" "${as_unit[@]}" /usr/bin/hashgate gateway \
  --config /etc/hashgate/gateway.toml 2>"$work/gateway.log" &
pids+=($!)
# The gateway itself (strace's child) gets the signals.
gateway_pid() { pgrep -u hashgate -f 'hashgate gateway --config /etc/hashgate/gateway.toml'; }
wait_for "the gateway's process" eval 'gateway_pid >/dev/null'
gateway=$(gateway_pid)
wait_for "the gateway's ready line" grep -q "^hashgate gateway on http://0.0.0.0:8080" "$work/gateway.log"
audit=/var/log/hashgate/gateway-audit.jsonl
/usr/bin/hashgate selftest http://127.0.0.1:8080/selftest >"$work/selftest.out" 2>&1 ||
  fail "selftest through the installed gateway: $(cat "$work/selftest.out") $(cat "$work/gateway.log")"
[ "$(grep -c '"canary":true' "$audit")" = 1 ] || fail "no audit record of the canary in $audit"
[ "$(stat -c %U "$audit")" = hashgate ] || fail "$audit is not the hashgate user's"

echo "package test: logrotate, then SIGHUP"
logrotate --state "$work/logrotate.state" --force /etc/logrotate.d/hashgate
[ -s "$audit.1" ] || fail "logrotate did not rotate $audit"
[ "$(stat -c %U "$audit")" = hashgate ] || fail "the new $audit is not the hashgate user's"
kill -HUP "$gateway"
# The reopen happens on the log's writer thread; a record after it must land in the new
# file. Repeat the canary until one does (an upload before the reopen goes to .1).
reopened() {
  /usr/bin/hashgate selftest http://127.0.0.1:8080/selftest >/dev/null 2>&1 || return 1
  grep -q '"canary":true' "$audit"
}
wait_for "an audit record in the new $audit" reopened
# The rotated file and the new one are one hash chain.
/usr/bin/hashgate audit verify "$audit.1" "$audit" >"$work/verify.out" 2>&1 ||
  fail "the audit chain across the rotation: $(cat "$work/verify.out")"
grep -q '^intact' "$work/verify.out" || fail "audit verify said: $(cat "$work/verify.out")"
kill -0 "$gateway" || fail "the gateway died on SIGHUP"
# A clean upload too (the configured origin is not there: a 502, after inspection).
head -c 300000 /dev/urandom >"$work/clean.bin"
code=$(curl -s -o /dev/null -w '%{http_code}' -T "$work/clean.bin" http://127.0.0.1:8080/clean.bin)
[ "$code" = 502 ] || fail "a clean upload to the absent origin got $code"

echo "package test: every system call made is allowed by the units' SystemCallFilter"
kill "$gateway"
wait_for "the gateway to exit" bash -c "! kill -0 $gateway 2>/dev/null"
check_syscalls "$work/syscalls" hashgate-gateway

echo "package test: the ICAP server from /etc/hashgate/icap.toml (under strace)"
strace -f -qq -o "$work/icap-syscalls" "${as_unit[@]}" /usr/bin/hashgate icap \
  --config /etc/hashgate/icap.toml 2>"$work/icap.log" &
pids+=($!)
wait_for "the ICAP server's ready line" grep -q "^hashgate icap on icap://127.0.0.1:1344" "$work/icap.log"
exec 3<>/dev/tcp/127.0.0.1/1344
printf 'OPTIONS icap://127.0.0.1:1344/reqmod ICAP/1.0\r\nHost: 127.0.0.1\r\nEncapsulated: null-body=0\r\n\r\n' >&3
IFS= read -r -t 10 status <&3 || fail "no answer to OPTIONS"
exec 3>&-
[[ "$status" == "ICAP/1.0 200"* ]] || fail "OPTIONS answered: $status"
# A REQMOD of the canary: refused, in an encapsulated 451.
/usr/bin/hashgate canary --out "$work/canary.txt" >/dev/null 2>&1
len=$(stat -c %s "$work/canary.txt")
http=$(printf 'PUT http://origin.example/c.txt HTTP/1.1\r\nHost: origin.example\r\nContent-Length: %d\r\n\r\n' "$len")
exec 3<>/dev/tcp/127.0.0.1/1344
{
  printf 'REQMOD icap://127.0.0.1:1344/reqmod ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\n'
  printf 'Encapsulated: req-hdr=0, req-body=%d\r\n\r\n%s' "${#http}" "$http"
  printf '%x\r\n' "$len"; cat "$work/canary.txt"; printf '\r\n0\r\n\r\n'
} >&3
answer=$(timeout 10 head -c 300 <&3 || true)
exec 3>&-
grep -q "HTTP/1.1 451" <<<"$answer" || fail "REQMOD of the canary answered: $answer"
icap_pid=$(pgrep -u hashgate -f 'hashgate icap --config /etc/hashgate/icap.toml')
kill "$icap_pid"
wait_for "the ICAP server to exit" bash -c "! kill -0 $icap_pid 2>/dev/null"
check_syscalls "$work/icap-syscalls" hashgate-icap

for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
pids=()

echo "package test: dpkg -r, dpkg -P"
dpkg -r hashgate >/dev/null
[ ! -e /usr/bin/hashgate ] || fail "dpkg -r left /usr/bin/hashgate"
[ ! -e /lib/systemd/system/hashgate-gateway.service ] || fail "dpkg -r left the unit"
[ -f /etc/hashgate/gateway.toml ] || fail "dpkg -r removed the config (only a purge should)"
dpkg -P hashgate >/dev/null
[ ! -e /etc/hashgate/gateway.toml ] || fail "dpkg -P left the config"
[ -s "$audit" ] && [ -s "$audit.1" ] || fail "removing the package lost the audit log"
[ -d /var/lib/hashgate/gateway ] || fail "removing the package lost the state directory"
[ -f /var/lib/hashgate/filter.hgf ] || fail "removing the package lost the filter"
echo "package test: ok"
