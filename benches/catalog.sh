#!/usr/bin/env bash
# The digest catalog (issue 17; docs/PERFORMANCE.md). In one run:
#   1. `hashgate recheck` of ROWS catalog rows (random MD5 + SHA-1 + SHA-256 digests, as
#      the gateway records them) against an ENTRIES-entry production-like filter, and
#      the same rows only read (Python's sqlite3, every digest touched) as the baseline;
#      the catalog's size per object without its key (which a row and its index hold);
#   2. the same against a PostgreSQL catalog (a server of its own, started here as
#      Debian's binaries, loopback), with reading the rows alone (COPY, binary, to
#      /dev/null) as the baseline;
#   3. an unchanged tree of FILES files of FILE_BYTES each: a full `hashgate scan`, then
#      `scan --catalog` twice (the first records, the second takes the records), each
#      the median of ROUNDS rounds, and the ratio full / incremental.
# Gateway throughput with the catalog on and off: benches/ab.sh with HASHGATE_A set to
# this build and B_ARGS="--catalog DIR/catalog.db".
# Usage: benches/catalog.sh  (env: ROWS=10000000 ENTRIES=10000000 FILES=100000
#        FILE_BYTES=16384 TREE_ENTRIES=1000000 ROUNDS=3 PARTS=sqlite,postgres,tree COLD=0)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-10000000}
ENTRIES=${ENTRIES:-10000000}
FILES=${FILES:-100000}
FILE_BYTES=${FILE_BYTES:-16384}
TREE_ENTRIES=${TREE_ENTRIES:-1000000}
ROUNDS=${ROUNDS:-3}
PARTS=${PARTS:-sqlite,postgres,tree}
part() { [[ ",$PARTS," == *",$1,"* ]]; }
source benches/lib.sh
bench_setup catalog
build_hashgate
build_filters "$ENTRIES"
echo "machine: $(nproc) cores; $ROWS rows; $ENTRIES entries (MD5 + SHA-1 + SHA-256)"

mkdir -p "$work/one"; echo one > "$work/one/file"
if part sqlite; then
# 1. The schema from hashgate itself (one scan), then ROWS rows as the gateway writes
#    them: an object key, its size, time, passing filter, ETag-less, three digests.
"$hg" scan --catalog "$work/catalog.db" --filter "$work/f.hgf" --pub "$work/k.pub" "$work/one" >/dev/null
python3 - "$work/catalog.db" "$ROWS" <<'PY'
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
n = int(sys.argv[2])
db.execute("INSERT OR IGNORE INTO filters (series, version) VALUES ('bench', 1)")
fid = db.execute("SELECT id FROM filters WHERE series = 'bench'").fetchone()[0]
for start in range(0, n, 100000):
    rows = [(1, f"/bucket/objects/{i:08d}".encode(), 100000 + i, 1764547200, fid,
             os.urandom(16), os.urandom(20), os.urandom(32))
            for i in range(start, min(n, start + 100000))]
    db.executemany("INSERT INTO objects (kind, key, size, stored, passed_by, md5, sha1, sha256)"
                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
db.commit()
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
keys = db.execute("SELECT sum(length(key)) FROM objects").fetchone()[0]
pages = db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]
print(f"catalog: {n} rows, {pages / 2**20:.0f} MiB, {(pages - 2 * keys) / n:.0f} bytes per object without its key (held twice: row and index)")
PY
cat "$work/catalog.db" > /dev/null  # in the page cache, as a served catalog is
read_rows() {
  python3 - "$work/catalog.db" <<'PY'
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1])
t = time.monotonic(); total = 0
for md5, sha1, sha256 in db.execute("SELECT md5, sha1, sha256 FROM objects ORDER BY id"):
    total += len(md5) + len(sha1) + len(sha256)
print(f"{time.monotonic() - t:.2f}")
PY
}
recheck_s=(); read_s=()
for round in $(seq 1 "$ROUNDS"); do
  read_s+=("$(read_rows)")
  start=$(date +%s.%N)
  "$hg" recheck --json --catalog "$work/catalog.db" --filter "$work/f.hgf" --pub "$work/k.pub" > "$work/recheck.out" || [ $? = 1 ]
  recheck_s+=("$(echo "$(date +%s.%N) - $start" | bc -l)")
  printf 'round %s: recheck %.2f s, rows read alone %.2f s\n' "$round" "${recheck_s[-1]}" "${read_s[-1]}"
done
tail -n 1 "$work/recheck.out"
printf 'recheck of %s rows: median %.2f s (%.2f M rows/s); reading them alone %.2f s; recheck / read %.2f\n' \
  "$ROWS" "$(median "${recheck_s[@]}")" "$(echo "$ROWS / $(median "${recheck_s[@]}") / 1000000" | bc -l)" \
  "$(median "${read_s[@]}")" "$(echo "$(median "${recheck_s[@]}") / $(median "${read_s[@]}")" | bc -l)"
fi

# 2. PostgreSQL: a cluster of its own (as the postgres user when root: the server
#    refuses root), the schema from hashgate itself, ROWS rows generated in SQL.
if part postgres; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  pg_run=()
  mkdir -p "$work/pg"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$work/pg"; pg_run=(setpriv --reuid=postgres --regid=postgres --init-groups --); fi
  "${pg_run[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U hashgate -A trust -E UTF8 --no-sync >/dev/null
  pg_port=$(free_port)
  "${pg_run[@]}" "$pg_bin/postgres" -D "$work/pg/data" -h 127.0.0.1 -p "$pg_port" -k "$work/pg" \
    -c shared_buffers=4GB -c fsync=off -c max_wal_size=8GB > "$work/pg/log" 2>&1 &
  pids+=($!)
  until "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$pg_port"; do sleep 0.2; done
  pg_url="postgres://hashgate@127.0.0.1:$pg_port/postgres"
  psql_do() { "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U hashgate -d postgres -XAtq -v ON_ERROR_STOP=1 "$@"; }
  "$hg" scan --catalog "$pg_url" --filter "$work/f.hgf" --pub "$work/k.pub" "$work/one" >/dev/null
  psql_do -c "INSERT INTO hashgate.filters (series, version) VALUES ('bench', 1) ON CONFLICT DO NOTHING"
  start=$(date +%s.%N)
  psql_do -c "INSERT INTO hashgate.objects (kind, key, size, stored, passed_by, md5, sha1, sha256)
    SELECT 1, convert_to('/bucket/objects/' || lpad(i::text, 8, '0'), 'UTF8'), 100000 + i, 1764547200,
           (SELECT id FROM hashgate.filters WHERE series = 'bench'),
           decode(md5(i::text), 'hex'), substring(sha256(int8send(-i)) from 1 for 20), sha256(int8send(i))
    FROM generate_series(1, $ROWS) AS i"
  psql_do -c "VACUUM ANALYZE hashgate.objects"
  printf 'postgres: %s rows loaded in %.0f s; %s per object with its key and indexes\n' "$ROWS" \
    "$(echo "$(date +%s.%N) - $start" | bc -l)" \
    "$(psql_do -c "SELECT pg_size_pretty(pg_total_relation_size('hashgate.objects') / $ROWS)")"
  pg_recheck_s=(); pg_read_s=()
  for round in $(seq 1 "$ROUNDS"); do
    start=$(date +%s.%N)
    psql_do -c "COPY (SELECT md5, sha1, sha256 FROM hashgate.objects ORDER BY id) TO STDOUT (FORMAT binary)" > /dev/null
    pg_read_s+=("$(echo "$(date +%s.%N) - $start" | bc -l)")
    start=$(date +%s.%N)
    "$hg" recheck --json --catalog "$pg_url" --filter "$work/f.hgf" --pub "$work/k.pub" > "$work/recheck.out" || [ $? = 1 ]
    pg_recheck_s+=("$(echo "$(date +%s.%N) - $start" | bc -l)")
    printf 'round %s: postgres recheck %.2f s, rows read alone %.2f s\n' "$round" "${pg_recheck_s[-1]}" "${pg_read_s[-1]}"
  done
  tail -n 1 "$work/recheck.out"
  printf 'postgres recheck of %s rows: median %.2f s (%.2f M rows/s); reading them alone %.2f s; recheck / read %.2f\n' \
    "$ROWS" "$(median "${pg_recheck_s[@]}")" "$(echo "$ROWS / $(median "${pg_recheck_s[@]}") / 1000000" | bc -l)" \
    "$(median "${pg_read_s[@]}")" "$(echo "$(median "${pg_recheck_s[@]}") / $(median "${pg_read_s[@]}")" | bc -l)"
fi

if part tree; then
# 3. An unchanged tree: full scan against incremental, with the filter size of the other
#    hashing figures (TREE_ENTRIES; loading a 10M-entry filter alone takes longer than
#    the incremental scan).
build_filters "$TREE_ENTRIES"
python3 - "$work/tree" "$FILES" "$FILE_BYTES" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, f"d{i % 100:02d}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.bin"), "wb") as f:
        f.write(os.urandom(size))
PY
scan_s() { # extra args...
  # COLD=1 (root): each scan starts with the page cache dropped, as after a reboot or
  # on a tree larger than memory.
  if [ "${COLD:-0}" = 1 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
  local start; start=$(date +%s.%N)
  "$hg" scan --filter "$work/f.hgf" --pub "$work/k.pub" "$@" "$work/tree" > "$work/scan.out"
  echo "$(date +%s.%N) - $start" | bc -l
}
rm -f "$work/tree.db"
record=$(scan_s --catalog "$work/tree.db")
full=(); incremental=()
for round in $(seq 1 "$ROUNDS"); do
  full+=("$(scan_s)")
  incremental+=("$(scan_s --catalog "$work/tree.db")")
  grep -q "($FILES from the catalog)" "$work/scan.out" || { echo "the incremental scan read files: $(cat "$work/scan.out")" >&2; exit 1; }
  printf 'round %s: full %.2f s, incremental %.2f s\n' "$round" "${full[-1]}" "${incremental[-1]}"
done
printf 'tree of %s files of %s bytes: recording scan %.2f s; full scan median %.2f s, incremental %.2f s: %.1fx faster\n' \
  "$FILES" "$FILE_BYTES" "$record" "$(median "${full[@]}")" "$(median "${incremental[@]}")" \
  "$(echo "$(median "${full[@]}") / $(median "${incremental[@]}")" | bc -l)"
fi
