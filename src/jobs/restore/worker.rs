//! One load worker: takes (table, part) items off the shared queue and
//! streams each part's chunks, checked and decompressed, into
//! `COPY … FROM STDIN`. A table loaded whole, into a table this restore
//! created or is replacing, is truncated and loaded with FREEZE in one
//! transaction; parts of a split table load concurrently with plain COPY.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};

use crate::jobs::{JobError, Progress};
use crate::pg::connect::connect;
use crate::pg::conninfo::ConnInfo;
use crate::pg::version::ServerVersion;
use crate::pg::{quote_ident, quote_qualified, session};
use crate::pipeline::ChunkReader;
use crate::repo::manifest::TableEntry;

/// One unit of loading.
#[derive(Debug, Clone)]
pub struct LoadItem {
    pub table: usize,
    pub part: usize,
    /// Truncate and COPY FREEZE in one transaction (whole-table loads only).
    pub freeze: bool,
}

pub struct Shared {
    pub conn: ConnInfo,
    pub version: ServerVersion,
    pub tables: Vec<TableEntry>,
    /// Encoding of the dump's COPY text (`DumpManifest::data_encoding`): the
    /// target converts from it into its own (see `pg::session`).
    pub data_encoding: String,
    pub reader: ChunkReader,
    pub queue: Mutex<VecDeque<LoadItem>>,
    pub parts_left: Mutex<Vec<usize>>,
    pub progress: Arc<Progress>,
}

pub fn copy_in_statement(t: &TableEntry, freeze: bool, encoding: &str) -> String {
    let table = quote_qualified(&t.schema, &t.name);
    let cols = if t.columns.is_empty() {
        String::new()
    } else {
        format!(
            " ({})",
            t.columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let opts: Vec<String> = freeze
        .then(|| "FREEZE".to_string())
        .into_iter()
        .chain(session::copy_encoding_option(encoding))
        .collect();
    let opts = if opts.is_empty() {
        String::new()
    } else {
        format!(" WITH ({})", opts.join(", "))
    };
    format!("COPY {table}{cols} FROM STDIN{opts}")
}

pub async fn run(n: usize, shared: Arc<Shared>) -> Result<u64, JobError> {
    let client = connect(&shared.conn, "pgtide restore worker").await?;
    session::configure(&client, shared.version, Duration::ZERO)
        .await
        .map_err(JobError::sql(format!("configure worker {n}")))?;
    // Each table commits on its own; losing the last commits to a crash only
    // means the restore is run again, so do not wait for the WAL flush.
    client
        .batch_execute("SET synchronous_commit = off")
        .await
        .map_err(JobError::sql(format!("configure worker {n}")))?;
    let mut rows_total = 0;
    loop {
        let Some(item) = shared.queue.lock().expect("queue lock").pop_front() else {
            break;
        };
        let t = &shared.tables[item.table];
        let part = &t.parts[item.part];
        let span =
            tracing::info_span!("table", schema = %t.schema, table = %t.name, part = item.part);
        let _e = span.enter();
        let what = format!("restore table {}", t.qualified());
        let table = quote_qualified(&t.schema, &t.name);
        client
            .batch_execute(&if item.freeze {
                format!("BEGIN; TRUNCATE ONLY {table}")
            } else {
                "BEGIN".to_string()
            })
            .await
            .map_err(JobError::sql(what.clone()))?;
        let sink = client
            .copy_in::<_, bytes::Bytes>(&copy_in_statement(t, item.freeze, &shared.data_encoding))
            .await
            .map_err(JobError::sql(what.clone()))?;
        let mut sink = Box::pin(sink);
        let mut chunks = shared.reader.stream(part.stream.chunks.clone());
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(JobError::pipeline(what.clone()))?;
            let len = chunk.len() as u64;
            sink.send(chunk)
                .await
                .map_err(JobError::sql(what.clone()))?;
            shared.progress.add_bytes(len);
        }
        let rows = sink
            .as_mut()
            .finish()
            .await
            .map_err(JobError::sql(what.clone()))?;
        if rows != part.rows {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(JobError::RowCount {
                what,
                expected: part.rows,
                loaded: rows,
            });
        }
        client
            .batch_execute("COMMIT")
            .await
            .map_err(JobError::sql(what))?;
        rows_total += rows;
        shared.progress.rows.fetch_add(rows, Ordering::Relaxed);
        let mut left = shared.parts_left.lock().expect("parts lock");
        left[item.table] -= 1;
        if left[item.table] == 0 {
            shared.progress.units_done.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(rows_total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(columns: &[&str]) -> TableEntry {
        TableEntry {
            oid: 1,
            schema: "public".into(),
            name: "données".into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            relation_bytes: 0,
            filter: None,
            indexes: Vec::new(),
            parts: Vec::new(),
        }
    }

    #[test]
    fn statements() {
        assert_eq!(
            copy_in_statement(&table(&["a", "clé"]), false, "UTF8"),
            r#"COPY "public"."données" ("a", "clé") FROM STDIN"#
        );
        assert_eq!(
            copy_in_statement(&table(&[]), true, "UTF8"),
            r#"COPY "public"."données" FROM STDIN WITH (FREEZE)"#
        );
        assert_eq!(
            copy_in_statement(&table(&["a"]), true, "LATIN1"),
            r#"COPY "public"."données" ("a") FROM STDIN WITH (FREEZE, ENCODING 'LATIN1')"#
        );
        assert_eq!(
            copy_in_statement(&table(&["a"]), false, "SQL_ASCII"),
            r#"COPY "public"."données" ("a") FROM STDIN WITH (ENCODING 'SQL_ASCII')"#
        );
    }
}
