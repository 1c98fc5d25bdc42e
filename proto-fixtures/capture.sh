#!/usr/bin/env bash
# Re-captures the fixtures in this directory from a live PostgreSQL server.
#
#   usage: proto-fixtures/capture.sh BINDIR
#     e.g. proto-fixtures/capture.sh /usr/lib/postgresql/15/bin
#          proto-fixtures/capture.sh "$(scripts/install-pg.sh 16)"
#
# Sets up a throw-away cluster (initdb into a temp dir, own port, run as the
# postgres OS user when root), with wal_level=replica, a short
# wal_sender_timeout (so a keepalive arrives within seconds), one role per
# password method, and a promotion to timeline 2 (stop, standby.signal,
# start, promote) so the end of timeline 1 can be streamed. Then runs the
# ignored test pg::replication::capture::recapture_fixtures against it, which
# writes <kind>/<major>-<stream>-<case>.bin files here, and stops the server.
set -euo pipefail

bin="${1:?usage: $0 BINDIR}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${PGTIDE_CAPTURE_PORT:-55431}"
psql="${PSQL:-psql}"
work="$(mktemp -d /tmp/pgtide-capture.XXXXXX)"
chmod 755 "$work"

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
[ "$(id -u)" = 0 ] && chown postgres "$work"

cleanup() {
    as_pg "$bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

as_pg "$bin/initdb" -D "$work/data" -U postgres --auth=trust --no-locale -E UTF8 >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
wal_level = replica
max_wal_senders = 10
wal_sender_timeout = '4s'
password_encryption = 'scram-sha-256'
fsync = off
CONF
cat >"$work/data/pg_hba.conf" <<HBA
local all all trust
host replication scram_user 127.0.0.1/32 scram-sha-256
host replication md5_user 127.0.0.1/32 md5
host replication pw_user 127.0.0.1/32 password
host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust
HBA

start() { as_pg "$bin/pg_ctl" -D "$work/data" -l "$work/log" -w start >/dev/null; }
sql() { "$psql" -X -q -At -h "$work" -p "$port" -U postgres -d postgres -c "$1"; }

start
sql "CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'scram-pw'"
sql "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5-pw'" 2>/dev/null
sql "CREATE ROLE pw_user LOGIN REPLICATION PASSWORD 'pw-pw'"
sql "CREATE TABLE before_promotion AS SELECT 1 AS x"
tli1_lsn="$(sql "SELECT pg_current_wal_lsn()")"

# Timeline 2: restart as a standby with nothing to follow, then promote.
as_pg "$bin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null
as_pg touch "$work/data/standby.signal"
start
as_pg "$bin/pg_ctl" -D "$work/data" -w promote >/dev/null
for _ in $(seq 50); do
    [ "$(sql "SELECT pg_is_in_recovery()")" = f ] && break
    sleep 0.2
done

export PGTIDE_CAPTURE_CONNINFO="host=127.0.0.1 port=$port user=postgres sslmode=disable"
export PGTIDE_CAPTURE_SCRAM_CONNINFO="host=127.0.0.1 port=$port user=scram_user password=scram-pw sslmode=disable"
export PGTIDE_CAPTURE_MD5_CONNINFO="host=127.0.0.1 port=$port user=md5_user password=md5-pw sslmode=disable"
export PGTIDE_CAPTURE_TLI1_LSN="$tli1_lsn"
cd "$repo"
cargo test --lib pg::replication::capture -- --ignored --nocapture
