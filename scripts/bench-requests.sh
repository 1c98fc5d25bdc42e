#!/usr/bin/env bash
# Storage requests and peak RSS of `pgtide dump` and `pgtide backup` into an
# S3 repository (moto on 127.0.0.1), at the default part size and at
# part_size=32MiB, on pgbench scale 20 plus a text and a bytea table.
#
#   scripts/bench-requests.sh
#
# Needs: PostgreSQL 15 (PGBIN), moto_server and boto3 on PATH (scripts/test.sh
# installs them into .deps/venv), /usr/bin/time, a pgtide build (PGTIDE_BIN,
# default target/debug/pgtide: the counts do not depend on the build). Runs
# as root (the server runs as the postgres OS user).
set -euo pipefail
cd "$(dirname "$0")/.."
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGTIDE_BIN=${PGTIDE_BIN:-$PWD/target/debug/pgtide}
PORT=${PORT:-55499}
MOTO_PORT=${MOTO_PORT:-55500}
PATH=$PWD/.deps/venv/bin:$PATH
W=$(mktemp -d)
chown postgres "$W"
cleanup() {
  [ -n "${MOTO:-}" ] && kill "$MOTO" 2>/dev/null || true
  su postgres -c "$PGBIN/pg_ctl -D $W/pg stop -m immediate" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
su postgres -c "$PGBIN/initdb -D $W/pg -U postgres >/dev/null 2>&1 && $PGBIN/pg_ctl -D $W/pg -o '-p $PORT -k /tmp -c wal_level=replica -c max_wal_senders=5' -l $W/pg.log start >/dev/null"
export PGHOST=/tmp PGPORT=$PORT PGUSER=postgres
"$PGBIN/pgbench" -i -s 20 -q postgres >/dev/null 2>&1
"$PGBIN/psql" -q -d postgres -c "create table t as select g, md5(g::text)||repeat('x',200) as s from generate_series(1,300000) g; create table b as select g, decode(md5(g::text)||md5((g*7)::text),'hex') as b from generate_series(1,300000) g;"
moto_server -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 & MOTO=$!
sleep 3
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
echo "| part size | job | bytes stored | put | get | list | head | delete | stored per put | peak RSS MiB |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
n=0
for ps in "" "&part_size=32MiB"; do
  n=$((n + 1))
  bucket=bench$n
  python3 -c "import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:$MOTO_PORT').create_bucket(Bucket='$bucket')"
  repo="s3://$bucket/r?endpoint=http://127.0.0.1:$MOTO_PORT&path_style=true$ps"
  "$PGTIDE_BIN" init --repo "$repo" >/dev/null
  for job in dump backup; do
    /usr/bin/time -f "%M" -o "$W/rss" "$PGTIDE_BIN" "$job" --repo "$repo" \
      --db "host=/tmp port=$PORT user=postgres dbname=postgres" --json >"$W/out.json"
    python3 - "${ps#&part_size=}" "$job" "$W/out.json" "$(cat "$W/rss")" <<'PY'
import json, sys
ps, job, f, rss = sys.argv[1:]
j = json.load(open(f))
r = j["requests"]
stored = j["bytes_stored"]
print(f"| {ps or '8MiB (default)'} | {job} | {stored/1e6:.1f} MB | {r['put']} | {r['get']} | {r['list']} | {r['head']} | {r['delete']} | {stored/1e6/max(r['put'],1):.1f} MB | {int(rss)/1024:.0f} |")
PY
  done
done
