#!/bin/sh
# Run once by the postgres image on an empty data directory: the role pgtide
# connects as (docker/pgtide.toml [source] db), with the password from the
# pgtide_db_password secret, and a pg_hba.conf line for its replication
# connections (the image's own line, `host all all all scram-sha-256`, does
# not cover replication).
set -eu
password="$(cat /run/secrets/pgtide_db_password)"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v password="$password" <<'SQL'
-- REPLICATION: WAL stream, base backups, the slot guard's slot reset.
-- pg_read_all_data: the logical dumps read every table, sequence and large object.
CREATE ROLE pgtide WITH LOGIN REPLICATION PASSWORD :'password';
GRANT pg_read_all_data TO pgtide;
SQL
echo "host replication pgtide all scram-sha-256" >> "$PGDATA/pg_hba.conf"
