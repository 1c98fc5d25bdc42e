#!/usr/bin/env bash
# What encryption costs: the same pgtide dump and backup into a plain and
# into an encrypted (public-key) repository, alternated RUNS times (which
# goes first alternates too, and every step starts after a sync) on the
# same data in the same run; prints the median wall and client CPU seconds
# of each, and the ratio. For docs/BENCHMARKS.md.
#
#   scripts/bench-encryption.sh                  # pgbench scale 50 + 200 MB of random bytea
#   SCALE=10 RANDOM_MB=50 RUNS=3 scripts/bench-encryption.sh
#
# Needs PostgreSQL 15 (Debian's postgresql-15: PGBIN), pgbench, /usr/bin/time
# and a release build (PGTIDE_BIN, default target/release/pgtide). Runs as
# root (the server as the postgres OS user) or as a user who can run initdb.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE=${SCALE:-50}
RANDOM_MB=${RANDOM_MB:-200}
RUNS=${RUNS:-5}
JOBS=${JOBS:-2}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PORT:-55433}
PGTIDE=${PGTIDE_BIN:-$PWD/target/release/pgtide}
[ -x "$PGTIDE" ] || cargo build --release
WORK=$(mktemp -d /tmp/pgtide-bench-enc.XXXXXX)
chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
cleanup() { as_pg "$PGBIN/pg_ctl -D $WORK/data -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
as_pg "$PGBIN/initdb -D $WORK/data -U postgres -A trust" >/dev/null
as_pg "echo \"port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
wal_level = replica
max_wal_senders = 10
shared_buffers = 256MB
autovacuum = off\" >> $WORK/data/postgresql.conf"
as_pg "$PGBIN/pg_ctl -D $WORK/data -l $WORK/server.log -w start" >/dev/null
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
DB="host=127.0.0.1 port=$PORT user=postgres dbname=bench"
"$PGBIN/createdb" bench
"$PGBIN/pgbench" -q -i -s "$SCALE" bench >/dev/null 2>&1
# Incompressible rows (2 KiB each): the worst case for sealing, which
# works on the compressed bytes.
"$PGBIN/psql" -q -d bench -c "CREATE EXTENSION pgcrypto;
  CREATE TABLE blobs AS SELECT g AS id, gen_random_bytes(1024) || gen_random_bytes(1024) AS b
  FROM generate_series(1, $RANDOM_MB * 512) g" >/dev/null
"$PGBIN/psql" -q -d bench -c "CHECKPOINT" >/dev/null
"$PGTIDE" key generate --output "$WORK/k" >"$WORK/r"
DATA=$("$PGBIN/psql" -Atd bench -c "SELECT pg_size_pretty(pg_database_size('bench'))")
: >"$WORK/results"
measure() { # label, then the command
  local label=$1; shift
  sync # the previous step's writes are not this one's to flush
  /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  read -r wall user sys <"$WORK/time"
  echo "$label $wall $(echo "$user + $sys" | bc)" >>"$WORK/results"
}
for run in $(seq 1 "$RUNS"); do
  # Alternate which goes first, so neither always follows the other's
  # writes.
  order="plain sealed"
  [ $((run % 2)) = 0 ] && order="sealed plain"
  for mode in $order; do
    rm -rf "$WORK/repo-$mode"
    if [ "$mode" = sealed ]; then "$PGTIDE" init --repo "$WORK/repo-$mode" --recipient "$(cat "$WORK/r")" >/dev/null; fi
    measure "dump-$mode" "$PGTIDE" dump --db "$DB" --repo "$WORK/repo-$mode" --jobs "$JOBS"
    measure "backup-$mode" "$PGTIDE" backup --db "$DB" --repo "$WORK/repo-$mode" --jobs "$JOBS"
  done
  echo "# run $run of $RUNS done" >&2
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "data: pgbench scale $SCALE + $RANDOM_MB MB of random bytea ($DATA), --jobs $JOBS, $RUNS runs alternated, medians"
echo
echo "| job | plain wall s | encrypted wall s | ratio | plain client CPU s | encrypted client CPU s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for job in dump backup; do
  pw=$(grep "^$job-plain " "$WORK/results" | awk '{ print $2 }' | median)
  sw=$(grep "^$job-sealed " "$WORK/results" | awk '{ print $2 }' | median)
  pc=$(grep "^$job-plain " "$WORK/results" | awk '{ print $3 }' | median)
  sc=$(grep "^$job-sealed " "$WORK/results" | awk '{ print $3 }' | median)
  echo "| $job | $pw | $sw | $(echo "scale=3; $sw / $pw" | bc) | $pc | $sc |"
done
