//! Session set-up for dump and load connections: settings that make COPY's
//! text output exact and re-readable, and the snapshot handshake.

use std::time::Duration;

use tokio_postgres::Client;

use super::version::ServerVersion;

/// Settings for exact, portable text output and no surprise timeouts.
pub async fn configure(
    c: &Client,
    version: ServerVersion,
    lock_timeout: Duration,
) -> Result<(), tokio_postgres::Error> {
    let mut sql = format!(
        "SET client_encoding = 'UTF8'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'; \
         SET extra_float_digits = 3; SET TimeZone = 'UTC'; SET bytea_output = 'hex'; \
         SET standard_conforming_strings = on; SET row_security = off; \
         SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
         SET lock_timeout = {}; SET search_path = pg_catalog;",
        lock_timeout.as_millis()
    );
    if version.has_transaction_timeout() {
        sql.push_str(" SET transaction_timeout = 0;");
    }
    c.batch_execute(&sql).await
}

/// Leader: open the snapshot transaction.
pub async fn begin_snapshot(c: &Client) -> Result<(), tokio_postgres::Error> {
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
}

pub async fn export_snapshot(c: &Client) -> Result<String, tokio_postgres::Error> {
    Ok(c.query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
        .await?
        .get(0))
}

/// Worker: join the leader's snapshot.
pub async fn import_snapshot(c: &Client, snapshot: &str) -> Result<(), tokio_postgres::Error> {
    c.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
        super::quote_literal(snapshot)
    ))
    .await
}
