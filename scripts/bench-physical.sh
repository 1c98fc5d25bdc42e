#!/usr/bin/env bash
# Physical side, same data and machine in one run: `pgtide backup` against
# `pg_basebackup -Ft -X none -Z client-zstd:N`, `pgtide restore --pgdata`
# against extracting pg_basebackup's tar with tar + zstd, and how fast
# `pgtide wal stream` archives a burst of WAL. Prints Markdown.
#
#   scripts/bench-physical.sh                 # pgbench scale 100
#   SCALE=10 scripts/bench-physical.sh        # a quick run
#
# Needs Debian's postgresql-15 (server, pg_basebackup, pgbench), zstd, tar,
# /usr/bin/time. Runs as root (the server runs as the postgres OS user).
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-100}
RUNS=${RUNS:-6}
BURST_MB=${BURST_MB:-1024}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PORT:-55433}
WORK=$(mktemp -d /tmp/pgtide-bench-phys.XXXXXX)
chmod 755 "$WORK"
command -v zstd >/dev/null || apt-get install -y -qq zstd >/dev/null

# CARGO_PROFILE=profiling keeps line tables for perf (Cargo.toml).
CARGO_PROFILE=${CARGO_PROFILE:-release}
[ -n "${PGTIDE_BIN:-}" ] || cargo build --profile "$CARGO_PROFILE" --quiet
PGTIDE=${PGTIDE_BIN:-$PWD/target/$CARGO_PROFILE/pgtide}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"
cleanup() {
  [ -n "${STREAM_PID:-}" ] && kill "$STREAM_PID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
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
wal_level = replica
max_wal_senders = 10
autovacuum = off
CONF
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
CONN="host=127.0.0.1 port=$PORT user=postgres"
"$PGBIN/pgbench" -i -q -s "$SCALE" postgres >/dev/null 2>&1
"$PGBIN/psql" -qX -c CHECKPOINT postgres
SIZE=$("$PGBIN/psql" -XAtc "SELECT pg_size_pretty(sum(pg_database_size(oid))) FROM pg_database" postgres)

# Wait (at most 120 s) until the machine has been nearly idle (< 10% of its
# CPUs busy) for 2 s: the cores are shared, and a job running next to a
# timed step skews it.
machine_busy() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
wait_quiet() {
  local waited=0 a b tck
  tck=$(getconf CLK_TCK)
  while [ "$waited" -lt 120 ]; do
    a=$(machine_busy); sleep 2; b=$(machine_busy)
    [ $(( (b - a) * 100 )) -lt $(( 10 * 2 * tck * $(nproc) )) ] && return 0
    waited=$(( waited + 2 ))
  done
}
timed() { # label cmd... -> "seconds rss_kb"
  local out="$WORK/time.$1"; shift
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  wait_quiet
  "$PGBIN/psql" -qX -c CHECKPOINT postgres
  /usr/bin/time -f "%e %M" -o "$out" "$@" >/dev/null 2>"$WORK/stderr.last" || { cat "$WORK/stderr.last" >&2; exit 1; }
  cat "$out"
}
mib() { du -sb "$1" | awk '{ printf "%.1f", $1 / 1048576 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
declare -A T R
step() { # key cmd...: one timed step, recorded under key
  local key=$1; shift
  read -r t r < <(timed "$key" "$@")
  T[$key]+="$t "; R[$key]=$r
}
# Before each backup step the cluster is read once, untimed (then the page
# cache is dropped as before every step): on this VM a backup right after
# another backup took up to 1.4x as long as one after such a read, whichever
# tool it was, so every backup starts from the same state.
prime() { tar -cf - -C "$WORK" data 2>/dev/null | cat >/dev/null; }
bb() { prime; rm -rf "$WORK/bb$1"; step "bb$1" "$PGBIN/pg_basebackup" -d "$CONN" -D "$WORK/bb$1" -Ft -X none -Z "client-zstd:$1" --no-sync; }
pt() { prime; rm -rf "$WORK/repo$1"; step "pt$1" "$PGTIDE" backup --db "$CONN" --repo "$WORK/repo$1" --compress "zstd:$1"; }
xtar() {
  rm -rf "$WORK/x-tar"; mkdir -p "$WORK/x-tar"
  step xtar tar -C "$WORK/x-tar" -I zstd -xf "$WORK/bb1/base.tar.zst"
  rm -rf "$WORK/x-tar"; mkdir -p "$WORK/x-tar"
  step xtarsync sh -c "tar -C '$WORK/x-tar' -I zstd -xf '$WORK/bb1/base.tar.zst' && sync"
}
xpt() { rm -rf "$WORK/x-pgtide"; step xpt "$PGTIDE" restore latest --repo "$WORK/repo1" --pgdata "$WORK/x-pgtide"; }
for run in $(seq 1 "$RUNS"); do
  echo "# run $run of $RUNS" >&2
  # The tools take turns going first.
  for level in 1 3; do
    if [ $(( (run + level) % 2 )) = 0 ]; then bb "$level"; pt "$level"; else pt "$level"; bb "$level"; fi
  done
  if [ $(( run % 2 )) = 1 ]; then xtar; xpt; else xpt; xtar; fi
  rm -rf "$WORK/x-tar" "$WORK/x-pgtide"; sync
done
med() { printf '%s\n' ${T[$1]} | median; }
rows=()
for level in 1 3; do
  rows+=("| backup zstd:$level | pg_basebackup -Ft -X none -Z client-zstd:$level | $(med bb$level) | $(mib "$WORK/bb$level") | $((R[bb$level] / 1024)) | 1.00 |")
  rows+=("| backup zstd:$level | pgtide backup --compress zstd:$level (+ its WAL range, streamed) | $(med pt$level) | $(mib "$WORK/repo$level/backups") | $((R[pt$level] / 1024)) | $(ratio "$(med pt$level)" "$(med bb$level)") |")
done
rows+=("| restore | tar -I zstd -xf base.tar.zst (no sync) | $(med xtar) | | $((R[xtar] / 1024)) | 1.00 |")
rows+=("| restore | tar -I zstd -xf base.tar.zst && sync | $(med xtarsync) | | $((R[xtarsync] / 1024)) | $(ratio "$(med xtarsync)" "$(med xtar)") |")
rows+=("| restore | pgtide restore --pgdata (checks every CRC, syncs to disk) | $(med xpt) | | $((R[xpt] / 1024)) | $(ratio "$(med xpt)" "$(med xtar)") |")
runs_line="Timed steps: median of $RUNS runs (times per run: $(for k in bb1 pt1 bb3 pt3 xtar xtarsync xpt; do printf '%s=[%s] ' "$k" "${T[$k]% }"; done))."

# WAL burst: how long after the last byte of a burst is the archive complete?
"$PGTIDE" wal stream --db "$CONN" --repo "$WORK/repo1" --slot bench --create-slot --partial-interval 0 \
  2>"$WORK/stream.log" & STREAM_PID=$!
sleep 2
rows_burst=$(( BURST_MB * 1024 * 1024 / 140 ))
start_lsn=$("$PGBIN/psql" -XAtc "SELECT pg_current_wal_lsn()" postgres)
start=$(date +%s.%N)
"$PGBIN/psql" -qX -c "CREATE TABLE burst (id bigint, pad text)" postgres
"$PGBIN/psql" -qX -c "INSERT INTO burst SELECT g, repeat('x', 100) FROM generate_series(1, $rows_burst) g" postgres
end_lsn=$("$PGBIN/psql" -XAtc "SELECT pg_current_wal_lsn()" postgres)
wal_mb=$("$PGBIN/psql" -XAtc "SELECT round(pg_wal_lsn_diff('$end_lsn', '$start_lsn') / 1048576)" postgres)
gen_done=$(date +%s.%N)
"$PGBIN/psql" -qX -c "SELECT pg_switch_wal()" postgres >/dev/null
last_seg=$("$PGBIN/psql" -XAtc "SELECT pg_walfile_name('$end_lsn')" postgres)
while ! ls "$WORK/repo1/wal/00000001/$last_seg" >/dev/null 2>&1; do
  sleep 0.05
  if [ "$(awk -v a="$(date +%s.%N)" -v b="$gen_done" 'BEGIN { print (a - b > 600) }')" = 1 ]; then echo "stream fell behind" >&2; exit 1; fi
done
caught=$(date +%s.%N)
kill -TERM "$STREAM_PID"; wait "$STREAM_PID" || true; STREAM_PID=
gen_s=$(awk -v a="$gen_done" -v b="$start" 'BEGIN { printf "%.1f", a - b }')
lag_s=$(awk -v a="$caught" -v b="$gen_done" 'BEGIN { printf "%.2f", a - b }')

cat <<MD
Cluster: pgbench scale $SCALE ($SIZE); $(nproc) cores; PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'); server and tool on the same machine.

| operation | tool | seconds | stored MiB | peak RSS MiB | ratio |
| --- | --- | ---: | ---: | ---: | ---: |
$(printf '%s\n' "${rows[@]}")

$runs_line

WAL burst: an INSERT generating WAL for ${gen_s} s (${wal_mb} MB of WAL, $(awk -v m="$wal_mb" -v s="$gen_s" 'BEGIN { printf "%.0f", m / s }') MB/s); \`pgtide wal stream\` had the last segment archived ${lag_s} s after the INSERT returned.
MD
