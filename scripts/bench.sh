#!/usr/bin/env bash
# Reproducible comparison of pgtide against pg_dump / pg_restore on the same
# data, machine and run. Prints a Markdown table for docs/BENCHMARKS.md.
#
#   scripts/bench.sh                        # pgbench scale 100 + ~400 MB of mixed tables
#   SCALE=5 EXTRA_MB=30 scripts/bench.sh    # a quick run
#   RUNS=3 scripts/bench.sh                 # repeat, report the median time
#   KEEP=1 scripts/bench.sh                 # keep the work directory (logs, dumps, cluster)
#   ENCRYPT=1 scripts/bench.sh              # pgtide into an encrypted repository (public-key mode)
#
# Other knobs: JOBS (2), PGBIN, PORT (55432), WORK (an empty directory to use
# and keep instead of a temporary one), QUIET_MAX and TRIES (see wait_quiet
# and measure below), PGTIDE_BIN, DUMP_FLAGS, RESTORE_FLAGS, SERVER_CPUS,
# CLIENT_CPUS (below).
#
# Needs: PostgreSQL 15 server and client tools (Debian's postgresql-15),
# /usr/bin/time, a release build (done here). Runs as root (the server runs
# as the postgres OS user) or as a user who can run initdb. As root, the page
# cache is dropped before every timed step (so each tool reads its input from
# disk); otherwise it is not, and the figures favour whatever ran last.
#
# Every timed step starts after a CHECKPOINT, with autovacuum off (so one
# tool's restore does not pay for vacuuming the other's). For each step the
# table shows wall time, the client's CPU (user+sys of the tool and its
# children) and the server's CPU (all postgres processes, including the
# backends serving the tool), and the client's peak RSS: GNU time's %M, the
# largest single process of the tree (pg_dump -j and pgtide's pg_dump /
# pg_restore children included), not a sum.
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-100}
EXTRA_MB=${EXTRA_MB:-400}
JOBS=${JOBS:-2}
RUNS=${RUNS:-1}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PORT:-55432}
if [ -n "${WORK:-}" ]; then
  mkdir -p "$WORK"
  OWN_WORK=0
else
  WORK=$(mktemp -d /tmp/pgtide-bench.XXXXXX)
  OWN_WORK=1
fi
chmod 755 "$WORK"

# PGTIDE_BIN: measure that binary instead of building this tree (to compare
# a change); DUMP_FLAGS / RESTORE_FLAGS: extra pgtide options, e.g.
# DUMP_FLAGS="--split-size 0". Both are printed with the results.
# SERVER_CPUS / CLIENT_CPUS: taskset CPU lists for the server and for the
# timed tools (e.g. SERVER_CPUS=0-3 CLIENT_CPUS=4-7), to measure the usual
# deployment where the tool does not compete with the server for cores.
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}
DUMP_FLAGS=${DUMP_FLAGS:-}
RESTORE_FLAGS=${RESTORE_FLAGS:-}
if [ -n "${PGTIDE_BIN:-}" ]; then
  PGTIDE=$PGTIDE_BIN
else
  # CARGO_PROFILE=profiling keeps line tables for perf (Cargo.toml).
  CARGO_PROFILE=${CARGO_PROFILE:-release}
  cargo build --profile "$CARGO_PROFILE" --quiet
  PGTIDE=$PWD/target/$CARGO_PROFILE/pgtide
fi
# pgtide uses the pg_dump / pg_restore of the server being measured, like the baseline.
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
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
DB="host=127.0.0.1 port=$PORT user=postgres dbname=bench"
psql_() { "$PGBIN/psql" -X -v ON_ERROR_STOP=1 "$@"; }

echo "# loading: pgbench scale $SCALE + ${EXTRA_MB} MB of text, bytea and wide tables" >&2
"$PGBIN/createdb" bench
"$PGBIN/pgbench" -i -q -s "$SCALE" bench >"$WORK/pgbench.log" 2>&1 || { cat "$WORK/pgbench.log" >&2; exit 1; }
# One row of each of the three tables takes about 3650 bytes on disk (docs ~1950,
# blobs ~1120, wide ~580 with the tuple headers), so EXTRA_MB MiB of tables:
ROWS=$(( EXTRA_MB * 1024 * 1024 / 3650 ))
psql_ -q bench <<SQL
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
SIZE=$(psql_ -Atc "SELECT pg_size_pretty(pg_database_size('bench'))" bench)
TABLES=$(psql_ -Atc "SELECT string_agg(format('%s %s', relname, pg_size_pretty(pg_table_size(oid))), ', ' ORDER BY pg_table_size(oid) DESC) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace" bench)
echo "# database size: $SIZE (tables: $TABLES)" >&2

CLK_TCK=$(getconf CLK_TCK)
# CPU seconds used so far by the server: the postmaster's live children plus
# everything it has reaped (cutime/cstime), so finished backends count.
server_cpu() {
  local pm ticks=0 p f
  pm=$(head -1 "$WORK/data/postmaster.pid")
  read -r -a f < <(sed 's/^.*) //' "/proc/$pm/stat")
  ticks=$(( f[11] + f[12] + f[13] + f[14] ))
  for p in $(pgrep -P "$pm"); do
    if read -r -a f < <(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null); then
      ticks=$(( ticks + f[11] + f[12] ))
    fi
  done
  echo "$ticks"
}

# Busy CPU ticks of the whole machine (to see what else was running).
machine_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# Wait (at most QUIET_MAX seconds, default 600) until the machine has been
# nearly idle (< 10% of its CPUs busy) for 5 s: the cores are shared, and a
# compiler running next to a timed step skews it. QUIET_MAX=0 disables.
wait_quiet() {
  local waited=0 a b ncpu
  ncpu=$(nproc)
  while [ "$waited" -lt "${QUIET_MAX:-600}" ]; do
    a=$(machine_busy); sleep 5; b=$(machine_busy)
    if [ $(( (b - a) * 100 )) -lt $(( 10 * 5 * CLK_TCK * ncpu )) ]; then return 0; fi
    waited=$(( waited + 5 ))
  done
  [ "${QUIET_MAX:-600}" = 0 ] || echo "# machine still busy after ${waited} s; measuring anyway (see other CPU s)" >&2
}

# measure LABEL RESET COMMAND... : runs RESET (which removes what an earlier
# attempt left), then COMMAND from a checkpointed server and (as root) a cold
# page cache, and appends "LABEL seconds maxrss_kb client_cpu_s server_cpu_s
# other_cpu_s" to $WORK/results. other_cpu_s is the machine's busy CPU during
# the step that neither the tool nor the server used: other users of the
# machine. When that exceeds 0.5 s + 5% of the step's CPU capacity the step is
# measured again (at most TRIES times, default 3; the last attempt is kept).
measure() {
  local label=$1 reset=$2 before after busy_before busy_after try line
  shift 2
  for try in $(seq 1 "${TRIES:-3}"); do
    "$reset"
    psql_ -qc CHECKPOINT postgres
    sync
    wait_quiet
    if [ "$(id -u)" = 0 ]; then { echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null || true; fi
    before=$(server_cpu)
    busy_before=$(machine_busy)
    if ! ${CLIENT_CPUS:+taskset -c "$CLIENT_CPUS"} /usr/bin/time -f "%e %M %U %S" -o "$WORK/time.$label" "$@" >"$WORK/stdout.$label" 2>"$WORK/stderr.$label"; then
      echo "# $label failed: $*" >&2
      tail -20 "$WORK/stderr.$label" >&2
      exit 1
    fi
    sleep 1 # let the postmaster reap the tool's backends
    after=$(server_cpu)
    busy_after=$(machine_busy)
    local e m u s
    read -r e m u s < <(tail -1 "$WORK/time.$label")
    line=$(awk -v l="$label" -v e="$e" -v m="$m" -v u="$u" -v s="$s" -v b="$before" -v a="$after" -v hz="$CLK_TCK" \
      -v bb="$busy_before" -v ba="$busy_after" \
      'BEGIN { c = u + s; sv = (a - b) / hz; o = (ba - bb) / hz - c - sv; if (o < 0) o = 0
               printf "%s %s %s %.1f %.1f %.1f\n", l, e, m, c, sv, o }')
    echo "# $label: $line" >&2
    if awk -v l="$line" -v n="$(nproc)" 'BEGIN { split(l, f, " "); exit !(f[6] > 0.5 + 0.05 * f[2] * n) }'; then
      echo "# $label: other processes used the CPU during the step; measuring again" >&2
    else
      break
    fi
  done
  echo "$line" >>"$WORK/results"
}
reset_pgdump() { rm -rf "$WORK/pgdump.dir"; }
# ENCRYPT=1: the repository is encrypted for a key made once per run of
# this script; restores read it with that identity.
ENCRYPT=${ENCRYPT:-0}
reset_dump() {
  rm -rf "$WORK/repo"
  if [ "$ENCRYPT" = 1 ]; then
    [ -f "$WORK/bench.key" ] || "$PGTIDE" key generate --output "$WORK/bench.key" >"$WORK/bench.recipient"
    "$PGTIDE" init --repo "$WORK/repo" --recipient "$(cat "$WORK/bench.recipient")" >/dev/null
  fi
}
restore_key_flags() { if [ "$ENCRYPT" = 1 ]; then echo "--identity $WORK/bench.key"; fi; }
reset_pgrestore() { "$PGBIN/dropdb" --if-exists r_pgrestore 2>/dev/null; "$PGBIN/createdb" r_pgrestore; }
reset_restore() { "$PGBIN/dropdb" --if-exists r_pgtide 2>/dev/null; }

# pgtide's phases (its -v log) with their durations; the last one runs until
# the process exits.
phases() {
  sed 's/\x1b\[[0-9;]*m//g' "$WORK/stderr.$1" | awk -v total="$(awk '{ print $1 }' "$WORK/time.$1" | tail -1)" '
    / INFO / && match($1, /T[0-9:.]+/) {
      split(substr($1, RSTART + 1, RLENGTH - 1), t, ":")
      s = t[1] * 3600 + t[2] * 60 + t[3]
      msg = $0; sub(/^[^ ]+ +INFO +/, "", msg); sub(/^job\{[^}]*\}: /, "", msg)
      if (msg ~ /^snapshot exported/) next
      if (n == 0) s0 = s
      n++; at[n] = s - s0; what[n] = msg
    }
    END {
      for (i = 1; i <= n; i++) {
        end = (i < n) ? at[i + 1] : total
        printf "#   %7.1f  %6.1f s  %s\n", at[i], end - at[i], what[i]
      }
    }'
}

# Row counts and a content hash per table, to check that both restores hold
# what the source holds.
fingerprint() {
  local t out=""
  for t in $(psql_ -Atc "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 1" "$1"); do
    out+="$t $(psql_ -Atc "SELECT count(*), coalesce(sum(hashtext(x::text)::bigint), 0) FROM $t x" "$1") "
  done
  out+="indexes $(psql_ -Atc "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'" "$1") "
  out+="constraints $(psql_ -Atc "SELECT count(*) FROM pg_constraint WHERE connamespace = 'public'::regnamespace" "$1")"
  echo "$out"
}

: >"$WORK/results"
for run in $(seq 1 "$RUNS"); do
  echo "# run $run of $RUNS" >&2
  measure pgdump reset_pgdump "$PGBIN/pg_dump" -Fd -j "$JOBS" -f "$WORK/pgdump.dir" bench
  size_pgdump=$(du -sb "$WORK/pgdump.dir" | cut -f1)
  # shellcheck disable=SC2086 # the flags are meant to split into words
  measure dump reset_dump "$PGTIDE" -v dump --db "$DB" --repo "$WORK/repo" --jobs "$JOBS" $DUMP_FLAGS
  size_dump=$(du -sb "$WORK/repo" | cut -f1)

  measure pgrestore reset_pgrestore "$PGBIN/pg_restore" -j "$JOBS" -d r_pgrestore "$WORK/pgdump.dir"
  # shellcheck disable=SC2086
  measure restore reset_restore "$PGTIDE" -v restore latest --repo "$WORK/repo" --create --jobs "$JOBS" \
    --db "host=127.0.0.1 port=$PORT user=postgres dbname=r_pgtide" $RESTORE_FLAGS $(restore_key_flags)
  for l in dump restore; do
    echo "# pgtide $l phases (run $run), seconds from its first log line:" >&2
    phases "$l" >&2
  done
done

echo "# checking the restored databases against the source" >&2
fp_src=$(fingerprint bench)
for d in r_pgrestore r_pgtide; do
  if [ "$(fingerprint "$d")" != "$fp_src" ]; then
    echo "# MISMATCH: $d differs from the source" >&2
    echo "#   source: $fp_src" >&2
    echo "#   $d: $(fingerprint "$d")" >&2
    exit 1
  fi
done
echo "# both restores match the source: $fp_src" >&2

# Median of field $2 of a label's lines in results (field 1 is the label).
med() { awk -v l="$1" -v c="$2" '$1 == l { print $c }' "$WORK/results" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maxcol() { awk -v l="$1" -v c="$2" '$1 == l && $c > m { m = $c } END { print m }' "$WORK/results"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mib() { awk -v a="$1" 'BEGIN { printf "%.1f", a / 1048576 }'; }
kib2mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
row() { # label, operation, tool, stored bytes or "", baseline label
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" "$3" "$(med "$1" 2)" "$4" "$(kib2mib "$(maxcol "$1" 3)")" \
    "$(med "$1" 4)" "$(med "$1" 5)" "$(med "$1" 6)" "$(ratio "$(med "$1" 2)" "$(med "$5" 2)")"
}
cat <<MD
Database: pgbench scale $SCALE + ${EXTRA_MB} MB mixed tables ($SIZE on disk; tables: $TABLES); $(nproc) cores; server on the same machine; --jobs $JOBS;${SERVER_CPUS:+ server on CPUs $SERVER_CPUS;}${CLIENT_CPUS:+ tools on CPUs $CLIENT_CPUS;} $RUNS run(s), median time; pgtide $("$PGTIDE" --version | awk '{ print $2 }') ($PGTIDE).

| operation | tool | seconds | stored MiB | peak RSS MiB | client CPU s | server CPU s | other CPU s | ratio |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
$(row pgdump dump "pg_dump -Fd -j$JOBS (gzip)" "$(mib "$size_pgdump")" pgdump)
$(row dump dump "pgtide dump --jobs $JOBS${DUMP_FLAGS:+ $DUMP_FLAGS}$(case "$DUMP_FLAGS" in *--compress*) ;; *) echo " (zstd:1)" ;; esac)" "$(mib "$size_dump")" pgdump)
$(row pgrestore restore "pg_restore -j$JOBS" "" pgrestore)
$(row restore restore "pgtide restore --jobs $JOBS${RESTORE_FLAGS:+ $RESTORE_FLAGS}" "" pgrestore)

Every run (label, seconds, peak RSS KiB, client CPU s, server CPU s, other CPU s):

\`\`\`
$(cat "$WORK/results")
\`\`\`
MD
