#!/usr/bin/env bash
# Reproducible comparison of pgtide against pg_dump / pg_restore on the same
# data, machine and run. Prints a Markdown table for docs/BENCHMARKS.md.
#
#   scripts/bench.sh                 # pgbench scale 100 + ~400 MB of mixed tables
#   SCALE=10 EXTRA_MB=50 scripts/bench.sh   # a quick run
#
# Needs: PostgreSQL 15 server and client tools (Debian's postgresql-15),
# /usr/bin/time, a release build (done here). Runs as root (the server runs
# as the postgres OS user) or as a user who can run initdb.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-100}
EXTRA_MB=${EXTRA_MB:-400}
JOBS=${JOBS:-2}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PORT:-55432}
WORK=${WORK:-$(mktemp -d /tmp/pgtide-bench.XXXXXX)}
chmod 755 "$WORK"

cargo build --release --quiet
PGTIDE=$PWD/target/release/pgtide

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; fi

cleanup() { as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true; }
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
CONF
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
DB="host=127.0.0.1 port=$PORT user=postgres dbname=bench"

echo "# loading: pgbench scale $SCALE + ${EXTRA_MB} MB of text, bytea and wide tables" >&2
"$PGBIN/createdb" bench
"$PGBIN/pgbench" -i -q -s "$SCALE" bench >/dev/null 2>&1
ROWS=$(( EXTRA_MB * 1024 * 1024 / 3 / 1000 ))
"$PGBIN/psql" -q -X bench <<SQL
CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text);
INSERT INTO docs SELECT g, 'title ' || g, repeat(md5(g::text) || ' lorem ipsum dolor sit amet ', 28) FROM generate_series(1, $ROWS) g;
CREATE TABLE blobs (id bigint PRIMARY KEY, data bytea);
INSERT INTO blobs SELECT g, decode(repeat(md5(g::text), 31), 'hex') || (SELECT string_agg(sha512(((g * 8 + i)::text)::bytea), ''::bytea) FROM generate_series(1, 8) i) FROM generate_series(1, $ROWS) g;
CREATE TABLE wide (id bigint PRIMARY KEY, a int, b bigint, c numeric, d double precision, e timestamptz, f date, g boolean, h uuid, i jsonb, j text[], k interval, l text);
INSERT INTO wide SELECT g, g % 1000, g * 31, g / 7.0, g * 0.001, now() - g * interval '1 second', current_date - g % 3650, g % 2 = 0, md5(g::text)::uuid,
  jsonb_build_object('k', g, 'v', md5(g::text)), ARRAY['x' || g, 'y'], g * interval '1 minute', repeat('w', 200 + g % 300) FROM generate_series(1, $ROWS) g;
CREATE INDEX ON docs (title);
VACUUM ANALYZE;
SQL
SIZE=$("$PGBIN/psql" -XAtc "SELECT pg_size_pretty(pg_database_size('bench'))" bench)
echo "# database size: $SIZE" >&2

measure() { # label, command... -> prints "seconds maxrss_kb"
  local out="$WORK/time.$1"
  shift
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  /usr/bin/time -f "%e %M" -o "$out" "$@" >/dev/null 2>"$WORK/stderr.last" || { cat "$WORK/stderr.last" >&2; exit 1; }
  cat "$out"
}

read -r t_pgdump rss_pgdump < <(measure pgdump "$PGBIN/pg_dump" -Fd -j "$JOBS" -f "$WORK/pgdump.dir" bench)
size_pgdump=$(du -sb "$WORK/pgdump.dir" | cut -f1)
read -r t_dump rss_dump < <(measure dump "$PGTIDE" dump --db "$DB" --repo "$WORK/repo" --jobs "$JOBS")
size_dump=$(du -sb "$WORK/repo" | cut -f1)

"$PGBIN/createdb" r_pgrestore
read -r t_pgrestore rss_pgrestore < <(measure pgrestore "$PGBIN/pg_restore" -j "$JOBS" -d r_pgrestore "$WORK/pgdump.dir")
read -r t_restore rss_restore < <(measure restore "$PGTIDE" restore latest --repo "$WORK/repo" --create --jobs "$JOBS" \
  --db "host=127.0.0.1 port=$PORT user=postgres dbname=r_pgtide")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1048576 }'; }
cat <<MD
Database: pgbench scale $SCALE + ${EXTRA_MB} MB mixed tables ($SIZE on disk); $(nproc) cores; server on the same machine; --jobs $JOBS.

| operation | tool | seconds | stored MiB | peak RSS MiB | ratio |
| --- | --- | ---: | ---: | ---: | ---: |
| dump | pg_dump -Fd -j$JOBS (gzip) | $t_pgdump | $(mib "$size_pgdump") | $(awk -v k="$rss_pgdump" 'BEGIN{printf "%.0f", k/1024}') | 1.00 |
| dump | pgtide dump --jobs $JOBS (zstd:3) | $t_dump | $(mib "$size_dump") | $(awk -v k="$rss_dump" 'BEGIN{printf "%.0f", k/1024}') | $(ratio "$t_dump" "$t_pgdump") |
| restore | pg_restore -j$JOBS | $t_pgrestore | | $(awk -v k="$rss_pgrestore" 'BEGIN{printf "%.0f", k/1024}') | 1.00 |
| restore | pgtide restore --jobs $JOBS | $t_restore | | $(awk -v k="$rss_restore" 'BEGIN{printf "%.0f", k/1024}') | $(ratio "$t_restore" "$t_pgrestore") |
MD
