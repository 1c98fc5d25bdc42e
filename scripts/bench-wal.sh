#!/usr/bin/env bash
# The WAL archive under pgbench load: how far the archive trails the server
# (the recovery point) at `--partial-interval 1s` and at the default 30s, the
# bytes and PUTs it takes, and what a synchronous archive (RPO 0) costs the
# commits: pgbench TPS and latency without pgtide, with `wal stream`, and with
# `wal stream --synchronous` + synchronous_standby_names. On a local
# repository and on S3 (moto). Prints Markdown for docs/BENCHMARKS.md.
#
#   scripts/bench-wal.sh                    # 60 s per run, local and S3
#   DURATION=20 scripts/bench-wal.sh        # a quick run
#   STORES=local scripts/bench-wal.sh       # without S3
#
# Each store gets six runs: pgbench at full speed without pgtide, with
# `wal stream` at 1s and at 30s, and with `--synchronous`; then pgbench held
# to RATE transactions a second (100), where a segment takes minutes to fill,
# with `wal stream` at 1s and at 30s (there the interval is the lag).
#
# Knobs: DURATION (60), CLIENTS (4), SCALE (10), RATE (100), PGBIN, PORT (55452),
# PGTIDE_BIN (else a release build of this tree), MOTO_SERVER (moto_server,
# default $PGTIDE_TEST_MOTO_SERVER), MOTO_PORT (55453), WORK, KEEP=1.
#
# The lag is sampled every 200 ms from the server: its flush position
# (pg_current_wal_flush_lsn()) and the flush position pgtide reported
# (pg_stat_replication.flush_lsn; pgtide reports only what the repository
# holds, right after each upload). The lag in bytes is their difference; the
# lag in seconds is the age of the oldest byte the archive lacks: the time
# since the server flushed past the archive's position, taken between the
# two samples where it did (so within ±0.1 s). WAL bytes are those pgtide streamed
# (from the segment start where it began to where it stopped); "sent" is
# the bytes of the WAL objects uploaded (compressed), "raw" the WAL bytes
# they hold (segments whole, plus pieces).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-60}
CLIENTS=${CLIENTS:-4}
SCALE=${SCALE:-10}
RATE=${RATE:-100}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PORT=${PORT:-55452}
MOTO_SERVER=${MOTO_SERVER:-${PGTIDE_TEST_MOTO_SERVER:-moto_server}}
MOTO_PORT=${MOTO_PORT:-55453}
STORES=${STORES:-local s3}
if [ -n "${WORK:-}" ]; then
  mkdir -p "$WORK"
  OWN_WORK=0
else
  WORK=$(mktemp -d /tmp/pgtide-bench-wal.XXXXXX)
  OWN_WORK=1
fi
chmod 755 "$WORK"
if [ -n "${PGTIDE_BIN:-}" ]; then
  PGTIDE=$PGTIDE_BIN
else
  cargo build --release --quiet
  PGTIDE=$PWD/target/release/pgtide
fi

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; fi
MOTO_PID=
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  if [ -n "$MOTO_PID" ]; then kill "$MOTO_PID" 2>/dev/null || true; fi
  if [ "$OWN_WORK" = 1 ] && [ -z "${KEEP:-}" ]; then rm -rf "$WORK"; else echo "# work directory kept: $WORK" >&2; fi
}
trap cleanup EXIT

as_pg "$PGBIN/initdb" -D "$WORK/data" -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
shared_buffers = 256MB
max_wal_size = 4GB
wal_level = replica
max_wal_senders = 10
CONF
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
DB="host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
q() { "$PGBIN/psql" -X -Atq -v ON_ERROR_STOP=1 -d bench -c "$1"; }
"$PGBIN/createdb" bench
"$PGBIN/pgbench" -i -q -s "$SCALE" bench >"$WORK/pgbench-init.log" 2>&1
SEG=$(q "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")

if [[ " $STORES " == *" s3 "* ]]; then
  "$MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$MOTO_PORT/" >/dev/null && break; sleep 0.2; done
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
fi

ROWS=()
N=0
# run STORE INTERVAL MODE [RATE]: MODE is none (no pgtide), async or sync;
# RATE limits pgbench to that many transactions a second.
run() {
  local store=$1 interval=$2 mode=$3 rate=${4:-} url slot dir pid start_lsn tps lat
  N=$((N + 1))
  dir="$WORK/run-$N"
  mkdir -p "$dir"
  slot="bench$N"
  case $store in
    local) url="$dir/repo" ;;
    s3)
      curl -sf -X PUT "http://127.0.0.1:$MOTO_PORT/bench$N" >/dev/null
      url="s3://bench$N/wal?endpoint=http://127.0.0.1:$MOTO_PORT&region=us-east-1&path_style=true"
      ;;
  esac
  q "CHECKPOINT" >/dev/null
  start_lsn=$(q "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn")
  pid=
  local sync=()
  if [ "$mode" = sync ]; then sync=(--synchronous); fi
  if [ "$mode" != none ]; then
    "$PGTIDE" wal stream --json --db "$DB" --repo "$url" --slot "$slot" --create-slot \
      --partial-interval "$interval" "${sync[@]}" \
      >"$dir/stream.json" 2>"$dir/stream.log" &
    pid=$!
    for _ in $(seq 300); do
      [ "$(q "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgtide' AND state = 'streaming'")" = 1 ] && break
      sleep 0.2
    done
    if [ "$mode" = sync ]; then
      q "ALTER SYSTEM SET synchronous_standby_names = 'pgtide'" >/dev/null
      q "SELECT pg_reload_conf()" >/dev/null
      for _ in $(seq 300); do
        [ "$(q "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'pgtide'")" = sync ] && break
        sleep 0.2
      done
    fi
    # Sampler: seconds and bytes the archive trails the server's flush.
    (
      while :; do
        q "SELECT extract(epoch FROM clock_timestamp()), pg_current_wal_flush_lsn() - '0/0'::pg_lsn,
             flush_lsn - '0/0'::pg_lsn
           FROM pg_stat_replication WHERE application_name = 'pgtide'" 2>/dev/null | tr '|' ' ' >>"$dir/lag"
        sleep 0.2
      done
    ) &
    SAMPLER=$!
  fi
  "$PGBIN/pgbench" -T "$DURATION" -c "$CLIENTS" -j 2 ${rate:+-R "$rate"} bench >"$dir/pgbench.out" 2>&1
  tps=$(awk '/^tps = / { printf "%.0f", $3; exit }' "$dir/pgbench.out")
  lat=$(awk '/^latency average/ { print $4; exit }' "$dir/pgbench.out")
  if [ "$mode" = none ]; then
    ROWS+=("| $store | no pgtide | $tps | $lat | | | | | | |")
    return
  fi
  kill "$SAMPLER" 2>/dev/null || true
  wait "$SAMPLER" 2>/dev/null || true
  if [ "$mode" = sync ]; then
    q "ALTER SYSTEM RESET synchronous_standby_names" >/dev/null
    q "SELECT pg_reload_conf()" >/dev/null
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  q "SELECT pg_drop_replication_slot('$slot')" >/dev/null
  ROWS+=("$(python3 - "$dir/stream.json" "$start_lsn" "$SEG" "$store" "$interval${rate:+, $rate TPS}" "$mode" "$tps" "$lat" \
    "$dir/lag" <<'PY'
import json, sys
(f, start, seg, store, interval, mode, tps, lat, lagfile) = sys.argv[1:]
samples = []
for line in open(lagfile):
    p = line.split()
    if len(p) == 3 and p[2] != "":
        samples.append((float(p[0]), float(p[1]), float(p[2])))
samples.sort()
secs, lag_bytes = [], []
first_past = 0  # index of the first sample whose server position passed the archive's
for i, (t, server, archive) in enumerate(samples):
    lag_bytes.append(max(0.0, server - archive))
    if server <= archive:
        secs.append(0.0)
        continue
    # The archive only moves forward: so does the first sample past it.
    while first_past < i and samples[first_past][1] <= archive:
        first_past += 1
    j = first_past
    # The server passed the archive's position between samples j-1 and j.
    before = samples[j - 1][0] if j > 0 else samples[j][0]
    secs.append(t - (before + samples[j][0]) / 2)
def pct(v):
    if not v:
        return ("-", "-", "-")
    v = sorted(v)
    at = lambda q: v[max(0, min(len(v) - 1, int(len(v) * q + 0.5) - 1))]
    return (at(0.50), at(0.99), v[-1])
t50, t99, tmax = pct(secs)
b50, b99, bmax = pct(lag_bytes)
r = json.load(open(f))
seg = int(seg)
hi, lo = r["flushed"].split("/")
end = (int(hi, 16) << 32) | int(lo, 16)
wal = end - int(float(start)) // seg * seg
raw = r["segments"] * seg + r["piece_bytes"]
puts = r["segments"] + r["partials"]
mb = lambda b: "%.1f" % (float(b) / 1048576) if b != "-" else "-"
s = lambda t: "%.2f" % float(t) if t != "-" else "-"
name = "synchronous" if mode == "sync" else interval
print(f"| {store} | {name} | {tps} | {lat} | {s(t50)} / {s(t99)} / {s(tmax)} | "
      f"{mb(b50)} / {mb(b99)} / {mb(bmax)} | {wal / 1048576:.0f} | "
      f"{raw / wal:.2f} / {r['sent_bytes'] / wal:.2f} | {puts} ({r['segments']} segments, {r['partials']} pieces) | {r['merges']} |")
PY
)")
}

for store in $STORES; do
  run "$store" 1s none
  run "$store" 1s async
  run "$store" 30s async
  run "$store" 1s sync
  run "$store" 1s async "$RATE"
  run "$store" 30s async "$RATE"
done

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
cat <<EOF
### WAL archive: recovery point and synchronous commit

Machine: $(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, shared with other jobs;
PostgreSQL $("$PGBIN/postgres" --version | awk '{ print $3 }'), pgbench scale $SCALE, $CLIENTS clients, ${DURATION} s a run;
S3 is moto on 127.0.0.1. Command: \`DURATION=$DURATION CLIENTS=$CLIENTS SCALE=$SCALE RATE=$RATE scripts/bench-wal.sh\`.

| store | pgtide | TPS | latency ms | lag s p50 / p99 / max | lag MiB p50 / p99 / max | WAL MiB | uploaded / WAL raw / sent | PUTs | merges |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
EOF
printf '%s\n' "${ROWS[@]}"
