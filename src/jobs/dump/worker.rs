//! One dump worker: a connection in the leader's snapshot that takes work
//! items (a table or a ctid range of one) off the shared queue and streams
//! each `COPY … TO STDOUT` through its own pack writer.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;

use super::plan::{ctid_predicate, WorkItem};
use crate::jobs::{JobError, Progress};
use crate::pg::conninfo::ConnInfo;
use crate::pg::copy_binary::{self, OutputFraming};
use crate::pg::version::ServerVersion;
use crate::pg::wire::{WireClient, WireError};
use crate::pg::{quote_ident, quote_qualified, session};
use crate::pipeline::PackWriter;
use crate::repo::manifest::{StreamRef, TablePart};

pub struct TableSpec {
    pub schema: String,
    pub name: String,
    pub columns: Vec<String>,
    pub filter: Option<String>,
    /// COPY in binary (`pg::copy_binary`) instead of text.
    pub binary: bool,
}

pub struct Shared {
    pub conn: ConnInfo,
    pub version: ServerVersion,
    pub lock_timeout: Duration,
    pub snapshot: String,
    /// Encoding of the COPY text: the source database's (see `pg::session`).
    pub data_encoding: String,
    pub tables: Vec<TableSpec>,
    pub queue: Mutex<VecDeque<WorkItem>>,
    /// Work items not yet finished, per table (progress counts whole tables).
    pub items_left: Mutex<Vec<usize>>,
    pub progress: Arc<Progress>,
}

/// The COPY statement for one work item, its rows in `encoding` (text) or
/// in binary (then in the session's UTF8).
pub fn copy_statement(t: &TableSpec, item: &WorkItem, encoding: &str) -> String {
    let table = quote_qualified(&t.schema, &t.name);
    let opts = if t.binary {
        " (FORMAT binary)".to_string()
    } else {
        session::copy_encoding_option(encoding)
            .map(|o| format!(" ({o})"))
            .unwrap_or_default()
    };
    let cols = t
        .columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ");
    let mut preds = Vec::new();
    if let Some(r) = &item.ctid {
        preds.push(ctid_predicate(r));
    }
    match (&t.filter, preds.is_empty()) {
        (None, true) if !cols.is_empty() => format!("COPY {table} ({cols}) TO STDOUT{opts}"),
        (None, true) => format!("COPY {table} TO STDOUT{opts}"),
        (filter, _) => {
            let mut sql = format!("SELECT {cols} FROM ONLY {table}");
            if let Some(f) = filter {
                // pg_extension_config_dump conditions carry their own WHERE.
                sql.push(' ');
                sql.push_str(f);
                if !preds.is_empty() {
                    sql.push_str(" AND ");
                }
            } else {
                sql.push_str(" WHERE ");
            }
            sql.push_str(&preds.join(" AND "));
            format!("COPY ({sql}) TO STDOUT{opts}")
        }
    }
}

/// A finished part: `rows` counted by the caller for binary COPY, or
/// `None` for text, where every row ends with the only unescaped newline.
fn finished_part(
    shared: &Shared,
    item: &WorkItem,
    part: usize,
    info: crate::pipeline::StreamInfo,
    rows: Option<u64>,
) -> (usize, usize, TablePart) {
    let rows = rows.unwrap_or(info.newlines);
    shared.progress.rows.fetch_add(rows, Ordering::Relaxed);
    (
        item.table,
        part,
        TablePart {
            ctid: item.ctid,
            rows,
            stream: StreamRef::from(info),
        },
    )
}

/// Returns (table index, part index, part) for every part this worker wrote.
pub async fn run(
    n: usize,
    shared: Arc<Shared>,
    mut writer: PackWriter,
) -> Result<Vec<(usize, usize, TablePart)>, JobError> {
    crate::jobs::panic_point("dump-worker");
    let session_err =
        |context: String| move |source: WireError| JobError::Session { context, source };
    // pgtide's own client: rows come as slices of its read buffer, a whole
    // read at a time, instead of one allocation and one channel hop per row
    // through tokio-postgres (docs/BENCHMARKS.md, D4).
    let mut client = WireClient::connect_sql(&shared.conn, "pgtide dump worker")
        .await
        .map_err(session_err(format!("worker {n}: connect")))?;
    client
        .execute(&session::configure_sql(shared.version, shared.lock_timeout))
        .await
        .map_err(session_err(format!("configure worker {n}")))?;
    client
        .execute(&session::import_snapshot_sql(&shared.snapshot))
        .await
        .map_err(session_err(format!("worker {n}: import the snapshot")))?;
    let mut done = Vec::new();
    loop {
        let Some(item) = shared.queue.lock().expect("queue lock").pop_front() else {
            break;
        };
        let t = &shared.tables[item.table];
        let span =
            tracing::info_span!("table", schema = %t.schema, table = %t.name, ctid = ?item.ctid);
        async {
            let what = format!("dump table {}.{}", t.schema, t.name);
            let sql = copy_statement(t, &item, &shared.data_encoding);
            tracing::debug!(%sql, "copy out");
            client
                .copy_out(&sql)
                .await
                .map_err(session_err(what.clone()))?;
            // Each CopyData message is one row: cutting between messages cuts at
            // row boundaries, so every part is a valid COPY stream of its own.
            let split = item.split_output.unwrap_or(u64::MAX);
            let mut part = item.part;
            let mut st = writer.begin_stream();
            let mut part_bytes = 0u64;
            let mut pending_progress = 0u64;
            // Binary COPY: the header and trailer are cut off (restore adds
            // them to every part), tuples are counted.
            let mut framing = t.binary.then(|| OutputFraming::new(t.columns.len()));
            let mut part_start_tuples = 0u64;
            let rows_of =
                |f: &Option<OutputFraming>, since: u64| f.as_ref().map(|f| f.tuples() - since);
            while let Some(batch) = client
                .copy_out_rows()
                .await
                .map_err(|e| session_err(what.clone())(e))?
            {
                for msg in batch {
                    // Errors are built only when they happen: this runs per row.
                    let row = match framing.as_mut() {
                        None => msg,
                        Some(f) => match f
                            .next(msg)
                            .map_err(|e| JobError::BadStream(format!("{what}: {e}")))?
                        {
                            copy_binary::Message::Tuple(t) => t,
                            copy_binary::Message::Trailer | copy_binary::Message::Empty => continue,
                        },
                    };
                    writer
                        .push(&mut st, row)
                        .await
                        .map_err(|e| JobError::pipeline(what.clone())(e))?;
                    part_bytes += row.len() as u64;
                    pending_progress += row.len() as u64;
                    if pending_progress >= 1 << 20 {
                        shared
                            .progress
                            .add_bytes(std::mem::take(&mut pending_progress));
                    }
                    if part_bytes >= split {
                        let info = writer
                            .end_stream(std::mem::replace(&mut st, writer.begin_stream()))
                            .await
                            .map_err(JobError::pipeline(what.clone()))?;
                        let rows = rows_of(&framing, part_start_tuples);
                        part_start_tuples += rows.unwrap_or(0);
                        done.push(finished_part(&shared, &item, part, info, rows));
                        part += 1;
                        part_bytes = 0;
                    }
                }
            }
            if framing.as_ref().is_some_and(|f| !f.ended()) {
                return Err(JobError::BadStream(format!(
                    "{what}: binary COPY output ended without its trailer"
                )));
            }
            shared.progress.add_bytes(pending_progress);
            let info = writer
                .end_stream(st)
                .await
                .map_err(JobError::pipeline(what))?;
            // A table split exactly at its end has no rows left for a last part.
            if part == item.part || info.raw_bytes > 0 {
                let rows = rows_of(&framing, part_start_tuples);
                done.push(finished_part(&shared, &item, part, info, rows));
            }
            let mut left = shared.items_left.lock().expect("items lock");
            left[item.table] -= 1;
            if left[item.table] == 0 {
                shared.progress.units_done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), JobError>(())
        }
        .instrument(span)
        .await?;
    }
    writer
        .finish()
        .await
        .map_err(JobError::pipeline("close a pack"))?;
    let _ = client.execute("COMMIT").await;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::manifest::CtidRange;

    fn spec(filter: Option<&str>, cols: &[&str]) -> TableSpec {
        TableSpec {
            schema: "public".into(),
            name: "T x".into(),
            columns: cols.iter().map(|s| s.to_string()).collect(),
            filter: filter.map(String::from),
            binary: false,
        }
    }

    fn item(ctid: Option<CtidRange>) -> WorkItem {
        WorkItem {
            table: 0,
            part: 0,
            ctid,
            split_output: None,
            est_bytes: 0,
        }
    }

    #[test]
    fn statements() {
        assert_eq!(
            copy_statement(&spec(None, &["a", "B\"c"]), &item(None), "UTF8"),
            r#"COPY "public"."T x" ("a", "B""c") TO STDOUT"#
        );
        assert_eq!(
            copy_statement(&spec(None, &[]), &item(None), "UTF8"),
            r#"COPY "public"."T x" TO STDOUT"#
        );
        assert_eq!(
            copy_statement(&spec(None, &["clé"]), &item(None), "LATIN1"),
            r#"COPY "public"."T x" ("clé") TO STDOUT (ENCODING 'LATIN1')"#
        );
        assert_eq!(
            copy_statement(&spec(None, &[]), &item(None), "SQL_ASCII"),
            r#"COPY "public"."T x" TO STDOUT (ENCODING 'SQL_ASCII')"#
        );
        assert_eq!(
            copy_statement(
                &spec(None, &["a"]),
                &item(Some(CtidRange {
                    start: 1,
                    end: Some(2)
                })),
                "UTF8"
            ),
            r#"COPY (SELECT "a" FROM ONLY "public"."T x" WHERE ctid >= '(1,0)'::tid AND ctid < '(2,0)'::tid) TO STDOUT"#
        );
        assert_eq!(
            copy_statement(&spec(Some("WHERE id > 5"), &["a"]), &item(None), "EUC_JP"),
            r#"COPY (SELECT "a" FROM ONLY "public"."T x" WHERE id > 5) TO STDOUT (ENCODING 'EUC_JP')"#
        );
        let binary = TableSpec {
            binary: true,
            ..spec(None, &["a"])
        };
        assert_eq!(
            copy_statement(&binary, &item(None), "UTF8"),
            r#"COPY "public"."T x" ("a") TO STDOUT (FORMAT binary)"#
        );
    }
}
