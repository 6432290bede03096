#!/usr/bin/env bash
# ICAP benchmark (docs/PERFORMANCE.md, issue 6). In one run, on loopback, wrk PUTs objects
# through a Squid forward proxy to a sink origin (nginx WebDAV into tmpfs):
#   squid    - Squid alone (no ICAP): the baseline;
#   hashgate - Squid with `hashgate icap` as its REQMOD service, a filter of ENTRIES
#              digests as authorities ship them (a third each MD5, SHA-1, SHA-256);
#   sha256   - the same with ENTRIES SHA-256 digests only (the second figure);
#   c-icap   - Squid with c-icap's virus_scan service on libclamav, holding the same
#              ENTRIES mixed digests as ClamAV hash signatures (.hsb), if Debian's c-icap and
#              libc-icap-mod-virus-scan install (CICAP=0 skips it). clamav_mod reads its
#              database from libclamav's fixed directory, so the script puts one file,
#              hashgate-bench.hsb, into /var/lib/clamav and removes it at the end.
# Every Squid gets one worker, the same config and `cache deny all`. For 4 KiB, 64 KiB,
# 1 MiB and 16 MiB objects at concurrency 1 and 16 it prints requests/s, MiB/s and p99, and
# the ratios hashgate/squid, hashgate/c-icap and sha256/squid.
# With HASHGATE_A=/path/to/an/older/hashgate, that build runs too (system `a`, the mixed
# filter, its own Squid) and the last column is this tree's build over it: an A/B of the
# ICAP server measured point by point in the same run.
# Usage: benches/icap.sh   (env: ENTRIES=1000000 DURATION=5 SIZES="4096 65536 ..." CICAP=1
#                           HASHGATE_A=...)
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-1000000}
DURATION=${DURATION:-5}
SIZES=${SIZES:-"4096 65536 1048576 16777216"}
CICAP=${CICAP:-1}
clamdb=/var/lib/clamav
source benches/lib.sh
bench_setup icap
bench_cleanup_extra() { rm -f "$clamdb/hashgate-bench.hsb"; }
need nginx nginx-light wrk wrk /usr/sbin/squid squid
[ "$CICAP" = 1 ] && need c-icap c-icap /usr/lib/x86_64-linux-gnu/c_icap/virus_scan.so libc-icap-mod-virus-scan
build_hashgate

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${DURATION}s per point; $ENTRIES digests"
"$hg" keygen --out "$work/k" --force 2>/dev/null
python3 - "$work/list.txt" "$work/bench.hsb" "$ENTRIES" <<'PY'
import os, sys
n = int(sys.argv[3])
with open(sys.argv[1], "w") as plain, open(sys.argv[2], "w") as hsb:
    for i in range(n):
        # As authorities ship them: MD5, SHA-1 and SHA-256 in turn.
        d = os.urandom((16, 20, 32)[i % 3]).hex()
        plain.write(d + "\n")
        # ClamAV hash signature: hash:size:name[:flevel]; `*` (any size) needs flevel 73.
        hsb.write(f"{d}:*:Hashgate.Bench.{i}:73\n")
PY
random_list "$work/list256.txt" "$ENTRIES"
# One probe object is listed too, by MD5 (by SHA-256 in the second filter), to check each
# scanner really refuses before timing it.
head -c 30000 /dev/urandom > "$work/probe-listed"
head -c 30000 /dev/urandom > "$work/probe-clean"
probe=$(md5sum "$work/probe-listed" | cut -d' ' -f1)
echo "$probe" >> "$work/list.txt"
echo "$probe:*:Hashgate.Bench.Probe:73" >> "$work/bench.hsb"
sha256sum "$work/probe-listed" | cut -d' ' -f1 >> "$work/list256.txt"
"$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/f.hgf" "$work/list.txt" 2>/dev/null
"$hg" build --key "$work/k.key" --series bench --version 1 --out "$work/f256.hgf" "$work/list256.txt" 2>/dev/null

icap=$(free_port); icap256=$(free_port); cicap=$(free_port); icapa=$(free_port)
start_sink 1
mkdir -p "$shm/cicap"
chmod 777 "$shm/cicap"
"$hg" icap --filter "$work/f.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$icap" 2>"$work/icap.err" & pids+=($!)
"$hg" icap --filter "$work/f256.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$icap256" 2>"$work/icap256.err" & pids+=($!)

squid_up() { # name port [icap-service-url]
  local dir="$work/squid-$1"
  mkdir -p "$dir"; chmod 777 "$dir"
  {
    echo "http_port 127.0.0.1:$2"
    echo "pid_filename $dir/pid"; echo "cache_log $dir/cache.log"; echo "access_log none"
    echo "coredump_dir $dir"; echo "cache deny all"; echo "cache_mem 8 MB"; echo "pinger_enable off"
    echo "http_access allow all"; echo "shutdown_lifetime 1 seconds"
    if [ -n "${3:-}" ]; then
      echo "icap_enable on"
      echo "icap_service svc reqmod_precache $3 bypass=0"
      echo "adaptation_access svc allow all"
    fi
  } > "$dir/squid.conf"
  /usr/sbin/squid -N -f "$dir/squid.conf" & pids+=($!)
}

systems=(squid hashgate sha256)
declare -A port
if [ -n "${HASHGATE_A:-}" ]; then
  "$HASHGATE_A" icap --filter "$work/f.hgf" --pub "$work/k.pub" --listen "127.0.0.1:$icapa" 2>"$work/icap-a.err" & pids+=($!)
  systems+=(a)
  port[a]=$(free_port); squid_up a "${port[a]}" "icap://127.0.0.1:$icapa/reqmod"
fi
port[squid]=$(free_port); squid_up squid "${port[squid]}"
port[hashgate]=$(free_port); squid_up hashgate "${port[hashgate]}" "icap://127.0.0.1:$icap/reqmod"
port[sha256]=$(free_port); squid_up sha256 "${port[sha256]}" "icap://127.0.0.1:$icap256/reqmod"
if [ "$CICAP" = 1 ]; then
  mkdir -p "$clamdb"
  cp "$work/bench.hsb" "$clamdb/hashgate-bench.hsb"
  cat > "$work/c-icap.conf" <<CONF
PidFile $work/c-icap.pid
CommandsSocket $work/c-icap.ctl
Port 127.0.0.1:$cicap
User root
Group root
StartServers 1
MaxServers 1
ThreadsPerChild 32
MinSpareThreads 4
MaxSpareThreads 32
MaxRequestsPerChild 0
TmpDir $shm/cicap
MaxMemObject 131072
ModulesDir /usr/lib/x86_64-linux-gnu/c_icap
ServicesDir /usr/lib/x86_64-linux-gnu/c_icap
TemplateDir /usr/share/c_icap/templates/
LoadMagicFile /etc/c-icap/c-icap.magic
ServerLog $work/c-icap-server.log
AccessLog $work/c-icap-access.log
Module common clamav_mod.so
clamav_mod.MaxScanSize 100M
Service antivirus_module virus_scan.so
ServiceAlias avscan virus_scan?allow204=on&sizelimit=off&mode=simple
virus_scan.ScanFileTypes TEXT DATA EXECUTABLE ARCHIVE GIF JPEG MSOFFICE
virus_scan.MaxObjectSize 100M
virus_scan.DefaultEngine clamav
CONF
  c-icap -N -f "$work/c-icap.conf" & pids+=($!)
  systems+=(c-icap)
  port[c-icap]=$(free_port); squid_up c-icap "${port[c-icap]}" "icap://127.0.0.1:$cicap/avscan"
fi
wait_port "$sink"; wait_port "$icap"; wait_port "$icap256"
[ -n "${HASHGATE_A:-}" ] && wait_port "$icapa"
for s in "${systems[@]}"; do wait_port "${port[$s]}"; done
[ "$CICAP" = 1 ] && wait_port "$cicap"

# Correctness first: a listed object is refused through each scanner, a clean one passes.
check() { # system file -> status
  curl -s -o /dev/null -w '%{http_code}' -H 'Expect:' -x "http://127.0.0.1:${port[$1]}" \
    -T "$2" "http://127.0.0.1:$sink/probe/$1-$(basename "$2")" || true
}
for s in "${systems[@]}"; do
  [ "$s" = squid ] && continue
  c=$(check "$s" "$work/probe-clean")
  [ "$c" = 201 ] || { echo "$s: a clean upload got $c" >&2; exit 1; }
  c=$(check "$s" "$work/probe-listed")
  [ "$c" != 201 ] || { echo "$s: the listed probe got through" >&2; exit 1; }
  echo "$s: listed probe refused with $c, clean probe stored"
done

write_put_lua
run() { # system size conns: through that system's Squid, to the sink
  TARGET="http://127.0.0.1:$sink/bench/$1-$2-$3" wrk_put "http://127.0.0.1:${port[$1]}/" "$work/body-$2" "$3"
}

printf '\n%-9s %-4s' size conc
for s in "${systems[@]}"; do printf ' | %-26s' "$s: req/s MiB/s p99(ms)"; done
printf ' | hashgate/squid'
[ "$CICAP" = 1 ] && printf ' | hashgate/c-icap'
printf ' | sha256/squid'
[ -n "${HASHGATE_A:-}" ] && printf ' | hashgate/a'
echo
for size in $SIZES; do
  head -c "$size" /dev/urandom > "$work/body-$size"
  for conns in 1 16; do
    printf '%-9s %-4s' "$size" "$conns"
    declare -A rps=()
    for s in "${systems[@]}"; do
      read -r r m _ p <<<"$(run "$s" "$size" "$conns")"
      rps[$s]=$r
      printf ' | %9s %7s %8s' "$r" "$m" "$p"
    done
    printf ' | %13.2fx' "$(echo "${rps[hashgate]} / ${rps[squid]}" | bc -l)"
    [ "$CICAP" = 1 ] && printf ' | %14.2fx' "$(echo "${rps[hashgate]} / ${rps[c-icap]}" | bc -l)"
    printf ' | %11.2fx' "$(echo "${rps[sha256]} / ${rps[squid]}" | bc -l)"
    [ -n "${HASHGATE_A:-}" ] && printf ' | %9.2fx' "$(echo "${rps[hashgate]} / ${rps[a]}" | bc -l)"
    echo
  done
done
