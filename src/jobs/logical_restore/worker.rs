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
use tokio_postgres::error::SqlState;
use tracing::Instrument;

use crate::jobs::{JobError, Progress};
use crate::pg::connect::connect;
use crate::pg::conninfo::ConnInfo;
use crate::pg::version::ServerVersion;
use crate::pg::{catalog, copy_binary};
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
    /// Told the index of each table once all its parts are loaded.
    pub table_done: Option<tokio::sync::mpsc::UnboundedSender<usize>>,
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
    // Binary tuples carry their text in UTF8, the session's encoding.
    let opts: Vec<String> = t
        .binary
        .then(|| "FORMAT binary".to_string())
        .into_iter()
        .chain(freeze.then(|| "FREEZE".to_string()))
        .chain(session::copy_encoding_option(encoding).filter(|_| !t.binary))
        .collect();
    let opts = if opts.is_empty() {
        String::new()
    } else {
        format!(" WITH ({})", opts.join(", "))
    };
    format!("COPY {table}{cols} FROM STDIN{opts}")
}

/// Binary tuples load only into the column types they were dumped from (a
/// text column would even take an integer's bytes as characters): check the
/// target's tables before loading any of them.
pub async fn check_binary_columns(
    target: &tokio_postgres::Client,
    id: &str,
    tables: &[&TableEntry],
) -> Result<(), JobError> {
    let binary: Vec<&TableEntry> = tables.iter().copied().filter(|t| t.binary).collect();
    if binary.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = binary
        .iter()
        .map(|t| quote_qualified(&t.schema, &t.name))
        .collect();
    let found = catalog::column_base_types_by_name(target, &names)
        .await
        .map_err(JobError::sql("read the target's column types"))?;
    for (t, target_cols) in binary.iter().zip(found) {
        if t.column_types.len() != t.columns.len() {
            return Err(JobError::Damaged {
                id: id.to_string(),
                what: format!(
                    "its manifest lists {} column types for the {} columns of table {}, stored as binary COPY",
                    t.column_types.len(),
                    t.columns.len(),
                    t.qualified()
                ),
            });
        }
        for (col, &dumped) in t.columns.iter().zip(&t.column_types) {
            match target_cols.get(col) {
                Some((oid, _)) if *oid == dumped => {}
                Some((_, name)) => {
                    return Err(JobError::TargetIncompatible {
                        table: t.qualified(),
                        column: col.clone(),
                        target_type: name.clone(),
                        dumped_oid: dumped,
                    })
                }
                // A missing column or table: COPY's own error says it.
                None => {}
            }
        }
    }
    Ok(())
}

/// A failed COPY of table `t`. Binary tuples only load into the column
/// types they were dumped from: say so when the server rejects their format
/// (a `--data-only` restore into a table whose types were changed).
fn copy_error(t: &TableEntry, what: &str, e: tokio_postgres::Error) -> JobError {
    let context = if t.binary && e.code() == Some(&SqlState::INVALID_BINARY_REPRESENTATION) {
        format!(
            "{what} (hint: this table is stored as binary COPY, which loads only into the \
             column types it was dumped from; dump it again with --copy-format text to load \
             it into other types)"
        )
    } else {
        what.to_string()
    };
    JobError::Sql { context, source: e }
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
        async {
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
                .copy_in::<_, bytes::Bytes>(&copy_in_statement(
                    t,
                    item.freeze,
                    &shared.data_encoding,
                ))
                .await
                .map_err(JobError::sql(what.clone()))?;
            let mut sink = Box::pin(sink);
            let copy_err = |e: tokio_postgres::Error| copy_error(t, &what, e);
            // A binary part is tuples only: the file header goes first, the
            // trailer last.
            if t.binary {
                sink.send(bytes::Bytes::from_static(&copy_binary::HEADER))
                    .await
                    .map_err(copy_err)?;
            }
            let mut chunks = shared.reader.stream(part.stream.chunks.clone());
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(JobError::pipeline(what.clone()))?;
                let len = chunk.len() as u64;
                sink.send(chunk).await.map_err(copy_err)?;
                shared.progress.add_bytes(len);
                crate::jobs::pause_point("restore-copy").await;
            }
            if t.binary {
                sink.send(bytes::Bytes::from_static(&copy_binary::TRAILER))
                    .await
                    .map_err(copy_err)?;
            }
            let rows = sink.as_mut().finish().await.map_err(copy_err)?;
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
                if let Some(tx) = &shared.table_done {
                    // Nobody listening any more means the restore is ending.
                    let _ = tx.send(item.table);
                }
            }
            Ok::<(), JobError>(())
        }
        .instrument(span)
        .await?;
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
            binary: false,
            column_types: Vec::new(),
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
        let binary = TableEntry {
            binary: true,
            ..table(&["a"])
        };
        assert_eq!(
            copy_in_statement(&binary, true, "UTF8"),
            r#"COPY "public"."données" ("a") FROM STDIN WITH (FORMAT binary, FREEZE)"#
        );
    }
}
