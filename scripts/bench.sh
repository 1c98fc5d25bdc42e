#!/usr/bin/env bash
# The benchmark of docs/BENCHMARKS.md: a PostgreSQL 15 cluster of its own,
# then `pgtide bench` (release build) on a generated data set, which runs
# pgtide's dump, restore, backup, physical restore and WAL streaming and
# their peers (pg_dump -Fd, pg_restore, pg_basebackup -Ft, pgBackRest,
# pg_receivewal) on the same data in the same run. Prints the Markdown
# section of docs/BENCHMARKS.md on stdout; the JSON report is kept beside it.
#
#   scripts/bench.sh                        # --generate 100 (≈ 1.9 GB), 3 runs
#   SCALE=5 RUNS=1 scripts/bench.sh         # a quick run
#   ONLY=dump,restore scripts/bench.sh      # some steps (pgtide bench --only)
#   KEEP=1 scripts/bench.sh                 # keep the work directory (cluster, logs, outputs)
#
#   SCALE_JOBS=1,4 scripts/bench.sh        # dump and backup also with 1 and 4 workers
#
# Knobs: SCALE (100), RUNS (3), JOBS (2), SCALE_JOBS (none), ONLY (all), WAL_BURST (1GiB), PGBIN,
# PORT (55432), WORK (a directory to use and keep), PGTIDE_BIN (measure that
# binary instead of building this tree), CARGO_PROFILE (release; `profiling`
# keeps line tables for perf), SERVER_CPUS / CLIENT_CPUS (taskset CPU lists
# for the server and for the bench and its tools), OUT (the JSON report,
# default ./bench.json, or $WORK/bench.json when WORK is given).
#
# Needs: PostgreSQL 15 server and client tools (Debian's postgresql-15) and,
# for the pgBackRest rows, Debian's pgbackrest. As root the server runs as
# the postgres OS user and every step starts with an empty page cache.
# Everything else (data set, warm-up, repetitions, CPU, RSS, ratios) is
# `pgtide bench`'s: see its --help and README's "pgtide bench".
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-100}
RUNS=${RUNS:-3}
JOBS=${JOBS:-2}
SCALE_JOBS=${SCALE_JOBS:-}
ONLY=${ONLY:-dump,restore,backup,physical-restore,wal}
WAL_BURST=${WAL_BURST:-1GiB}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PORT:-55432}
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}
if [ -n "${WORK:-}" ]; then
  mkdir -p "$WORK"
  OWN_WORK=0
else
  WORK=$(mktemp -d /tmp/pgtide-bench.XXXXXX)
  OWN_WORK=1
fi
chmod 755 "$WORK"
if [ -n "${PGTIDE_BIN:-}" ]; then
  PGTIDE=$PGTIDE_BIN
else
  CARGO_PROFILE=${CARGO_PROFILE:-release}
  cargo build --profile "$CARGO_PROFILE" --quiet
  PGTIDE=$PWD/target/$CARGO_PROFILE/pgtide
fi
# pgtide's dump and restore use the pg_dump / pg_restore of the server measured.
export PGTIDE_PG_DUMP="$PGBIN/pg_dump"

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; fi
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true
  if [ "$OWN_WORK" = 1 ] && [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "# work directory kept: $WORK" >&2; fi
}
trap cleanup EXIT

as_pg "$PGBIN/initdb" -D "$WORK/data" -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
shared_buffers = 1GB
max_wal_size = 16GB
checkpoint_timeout = 30min
maintenance_work_mem = 256MB
wal_level = replica
max_wal_senders = 10
autovacuum = off
CONF
as_pg ${SERVER_CPUS:+taskset -c "$SERVER_CPUS"} "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null

if [ "$OWN_WORK" = 1 ]; then OUT=${OUT:-$PWD/bench.json}; else OUT=${OUT:-$WORK/bench.json}; fi
mkdir -p "$WORK/bench"
${CLIENT_CPUS:+taskset -c "$CLIENT_CPUS"} "$PGTIDE" bench \
  --db "host=127.0.0.1 port=$PORT user=postgres dbname=postgres" \
  --generate "$SCALE" --runs "$RUNS" --jobs "$JOBS" --only "$ONLY" --wal-burst "$WAL_BURST" \
  ${SCALE_JOBS:+--scale-jobs "$SCALE_JOBS"} --pg-bin "$PGBIN" --work "$WORK/bench" --repo "$WORK/bench/repo" \
  --save "$OUT" --markdown
echo "# JSON report: $OUT" >&2
