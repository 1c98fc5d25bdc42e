//! Session set-up for dump and load connections: settings that make COPY's
//! text output exact and re-readable, and the snapshot handshake.
//!
//! Encodings. Every session runs with `client_encoding = UTF8`, whatever the
//! database's encoding: tokio-postgres decodes every text value, name and
//! server message as UTF-8 (`Row::get::<String>` panics, an unparsable
//! `ErrorResponse` kills the connection), and sends SQL text as `&str`. With
//! UTF8 on the wire the server converts names, comments and messages for us.
//! The table data alone travels in the source database's own encoding, as
//! pg_dump's does: `COPY … (ENCODING 'X')` sets the encoding of the COPY
//! stream without touching the session's ([`copy_encoding_option`]). So a
//! SQL_ASCII database holding bytes that are not UTF-8, which the server
//! cannot convert, dumps verbatim, and a LATIN1 or EUC_JP database is not
//! converted on the way out; on load the target converts from the dump's
//! encoding into its own, or refuses with its own error.

use std::time::Duration;

use tokio_postgres::Client;

use super::version::ServerVersion;

/// The session's client encoding (see the module documentation).
pub const CLIENT_ENCODING: &str = "UTF8";

/// The option that makes a COPY stream's text be in `encoding` (a name as
/// `pg_encoding_to_char` spells it), for a COPY option list; `None` when that
/// is the session's own encoding and COPY needs no option.
pub fn copy_encoding_option(encoding: &str) -> Option<String> {
    if encoding.eq_ignore_ascii_case(CLIENT_ENCODING) {
        None
    } else {
        Some(format!("ENCODING {}", super::quote_literal(encoding)))
    }
}

/// Settings for exact, portable text output and no surprise timeouts.
pub async fn configure(
    c: &Client,
    version: ServerVersion,
    lock_timeout: Duration,
) -> Result<(), tokio_postgres::Error> {
    c.batch_execute(&configure_sql(version, lock_timeout)).await
}

/// The statements of [`configure`], for sessions of pgtide's own client.
pub fn configure_sql(version: ServerVersion, lock_timeout: Duration) -> String {
    let mut sql = format!(
        "SET client_encoding = '{CLIENT_ENCODING}'; SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'; \
         SET extra_float_digits = 3; SET TimeZone = 'UTC'; SET bytea_output = 'hex'; \
         SET standard_conforming_strings = on; SET row_security = off; SET xmloption = content; \
         SET statement_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
         SET lock_timeout = {}; SET search_path = pg_catalog;",
        lock_timeout.as_millis()
    );
    if version.has_transaction_timeout() {
        sql.push_str(" SET transaction_timeout = 0;");
    }
    sql
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
    c.batch_execute(&import_snapshot_sql(snapshot)).await
}

/// The statements of [`import_snapshot`].
pub fn import_snapshot_sql(snapshot: &str) -> String {
    format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
        super::quote_literal(snapshot)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_encoding_only_when_not_the_session_encoding() {
        assert_eq!(copy_encoding_option("UTF8"), None);
        assert_eq!(copy_encoding_option("utf8"), None);
        assert_eq!(
            copy_encoding_option("SQL_ASCII").as_deref(),
            Some("ENCODING 'SQL_ASCII'")
        );
        assert_eq!(
            copy_encoding_option("LATIN1").as_deref(),
            Some("ENCODING 'LATIN1'")
        );
    }
}
