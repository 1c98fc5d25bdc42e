//! Rows from the scratch server straight into the target: each worker
//! holds a session on both, reads `COPY … TO STDOUT` on the scratch server
//! (pgtide's own client, a whole read of rows at a time) and writes what
//! it reads, in pieces of up to [`PIECE`] bytes, into `COPY … FROM STDIN`
//! on the target, with no repository and no file between them. A table
//! bigger than the split size is read in ctid block ranges by several
//! workers at once (PostgreSQL 14+); a table copied whole is truncated and
//! loaded with FREEZE in one transaction, as the logical restore does.
//!
//! Formats: binary COPY where every column has a portable binary form and
//! the source database is UTF8 (`pg::copy_binary`, as `dump` decides),
//! text otherwise, read in the source database's encoding and loaded as
//! that encoding (the target converts). The rows each COPY reads and
//! writes are counted and must match.
//!
//! Must never: hold more than a read chunk and one piece per worker.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::SinkExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::jobs::dump::plan::{self as dump_plan, SplitBy, WorkItem};
use crate::jobs::dump::worker::{copy_statement, TableSpec};
use crate::jobs::logical_restore::worker::copy_in_statement;
use crate::jobs::{JobError, Progress};
use crate::pg::connect::connect;
use crate::pg::conninfo::ConnInfo;
use crate::pg::copy_binary::OutputFraming;
use crate::pg::version::ServerVersion;
use crate::pg::wire::{WireClient, WireError};
use crate::pg::{quote_qualified, session};
use crate::repo::manifest::TableEntry;

/// Bytes sent to the target in one CopyData message.
const PIECE: usize = 256 << 10;

/// One table to copy (the same name on both sides).
#[derive(Debug, Clone)]
pub struct CopyTable {
    pub schema: String,
    pub name: String,
    /// COPY's column list: no dropped, no generated columns.
    pub columns: Vec<String>,
    pub binary: bool,
    /// Size of its main fork on the scratch server.
    pub bytes: u64,
    /// Truncate and load with FREEZE when copied whole (the restoring role
    /// may truncate it).
    pub freeze: bool,
}

/// Both servers and how to read and write their rows.
#[derive(Debug, Clone)]
pub struct Servers {
    pub scratch: ConnInfo,
    pub scratch_version: ServerVersion,
    /// The source database's encoding: text rows are read in it.
    pub source_encoding: String,
    pub target: ConnInfo,
    pub target_version: ServerVersion,
    /// The encoding text rows are loaded as (`load_encoding`).
    pub load_encoding: String,
}

struct Shared {
    servers: Servers,
    tables: Vec<CopyTable>,
    queue: Mutex<VecDeque<WorkItem>>,
    /// Rows loaded per table.
    rows: Mutex<Vec<u64>>,
    items_left: Mutex<Vec<usize>>,
    progress: Arc<Progress>,
}

/// Copy `tables` with `jobs` workers; the rows loaded into each. `cancel`,
/// or the first failure, stops the workers (aborted and awaited).
pub async fn copy_tables(
    servers: Servers,
    tables: Vec<CopyTable>,
    jobs: usize,
    split_size: u64,
    block_size: u64,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<Vec<u64>, JobError> {
    let sizes: Vec<dump_plan::TableSize> = tables
        .iter()
        .map(|t| dump_plan::TableSize {
            bytes: t.bytes,
            splittable: true,
        })
        .collect();
    let (items, per_table) = dump_plan::plan(
        &sizes,
        block_size,
        split_size,
        SplitBy::Ctid,
        servers.scratch_version.has_tid_range_scan(),
    );
    progress
        .total_bytes
        .store(items.iter().map(|i| i.est_bytes).sum(), Ordering::Relaxed);
    progress
        .units_total
        .store(tables.len() as u64, Ordering::Relaxed);
    let n = jobs.clamp(1, items.len().max(1));
    let shared = Arc::new(Shared {
        servers,
        rows: Mutex::new(vec![0; tables.len()]),
        tables,
        queue: Mutex::new(items.into_iter().collect()),
        items_left: Mutex::new(per_table),
        progress,
    });
    let mut workers = tokio::task::JoinSet::new();
    for k in 0..n {
        workers.spawn(worker(k, shared.clone()));
    }
    crate::jobs::join_all(&mut workers, "copy worker", cancel).await?;
    let rows = shared.rows.lock().expect("rows lock").clone();
    Ok(rows)
}

fn session_err(context: String) -> impl FnOnce(WireError) -> JobError {
    move |source| JobError::Session { context, source }
}

async fn worker(n: usize, shared: Arc<Shared>) -> Result<(), JobError> {
    let sv = &shared.servers;
    let mut src = WireClient::connect_sql(&sv.scratch, "pgtide restore worker")
        .await
        .map_err(session_err(format!(
            "copy worker {n}: connect to the scratch server"
        )))?;
    src.execute(&session::configure_sql(sv.scratch_version, Duration::ZERO))
        .await
        .map_err(session_err(format!("configure copy worker {n}")))?;
    let dst = connect(&sv.target, "pgtide restore worker").await?;
    session::configure(&dst, sv.target_version, Duration::ZERO)
        .await
        .map_err(JobError::sql(format!("configure copy worker {n}")))?;
    // Each table commits on its own; a crash means running the restore
    // again, whose staging schema starts empty.
    dst.batch_execute("SET synchronous_commit = off")
        .await
        .map_err(JobError::sql(format!("configure copy worker {n}")))?;
    loop {
        let Some(item) = shared.queue.lock().expect("queue lock").pop_front() else {
            return Ok(());
        };
        let t = &shared.tables[item.table];
        let span =
            tracing::info_span!("table", schema = %t.schema, table = %t.name, ctid = ?item.ctid);
        let rows = copy_one(&shared, &mut src, &dst, &item)
            .instrument(span)
            .await?;
        shared.rows.lock().expect("rows lock")[item.table] += rows;
        shared.progress.rows.fetch_add(rows, Ordering::Relaxed);
        let mut left = shared.items_left.lock().expect("items lock");
        left[item.table] -= 1;
        if left[item.table] == 0 {
            shared.progress.units_done.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Copy one work item; the rows loaded.
async fn copy_one(
    shared: &Shared,
    src: &mut WireClient,
    dst: &tokio_postgres::Client,
    item: &WorkItem,
) -> Result<u64, JobError> {
    let sv = &shared.servers;
    let t = &shared.tables[item.table];
    let what = format!("copy table {}.{}", t.schema, t.name);
    let table = quote_qualified(&t.schema, &t.name);
    let spec = TableSpec {
        schema: t.schema.clone(),
        name: t.name.clone(),
        columns: t.columns.clone(),
        filter: None,
        binary: t.binary,
    };
    let entry = TableEntry {
        oid: 0,
        schema: t.schema.clone(),
        name: t.name.clone(),
        columns: t.columns.clone(),
        relation_bytes: t.bytes,
        filter: None,
        indexes: Vec::new(),
        binary: t.binary,
        column_types: Vec::new(),
        parts: Vec::new(),
    };
    let freeze = t.freeze && item.ctid.is_none();
    dst.batch_execute(&if freeze {
        format!("BEGIN; TRUNCATE ONLY {table}")
    } else {
        "BEGIN".to_string()
    })
    .await
    .map_err(JobError::sql(what.clone()))?;
    let sink = dst
        .copy_in::<_, bytes::Bytes>(&copy_in_statement(&entry, freeze, &sv.load_encoding))
        .await
        .map_err(JobError::sql(what.clone()))?;
    let mut sink = Box::pin(sink);
    src.copy_out(&copy_statement(&spec, item, &sv.source_encoding))
        .await
        .map_err(session_err(what.clone()))?;
    // Text: one row per CopyData message. Binary: the header, tuples and
    // the trailer, passed on as they are, tuples counted.
    let mut framing = t.binary.then(|| OutputFraming::new(t.columns.len()));
    let mut messages = 0u64;
    let mut buf = BytesMut::with_capacity(PIECE * 2);
    while let Some(batch) = src
        .copy_out_rows()
        .await
        .map_err(|e| session_err(what.clone())(e))?
    {
        for msg in batch {
            if let Some(f) = framing.as_mut() {
                f.next(msg)
                    .map_err(|e| JobError::BadStream(format!("{what}: {e}")))?;
            }
            messages += 1;
            buf.extend_from_slice(msg);
        }
        if buf.len() >= PIECE {
            let n = buf.len() as u64;
            sink.send(buf.split().freeze())
                .await
                .map_err(JobError::sql(what.clone()))?;
            shared.progress.add_bytes(n);
        }
    }
    if !buf.is_empty() {
        let n = buf.len() as u64;
        sink.send(buf.split().freeze())
            .await
            .map_err(JobError::sql(what.clone()))?;
        shared.progress.add_bytes(n);
    }
    if framing.as_ref().is_some_and(|f| !f.ended()) {
        return Err(JobError::BadStream(format!(
            "{what}: binary COPY output ended without its trailer"
        )));
    }
    let read = framing.as_ref().map_or(messages, |f| f.tuples());
    let loaded = sink
        .as_mut()
        .finish()
        .await
        .map_err(JobError::sql(what.clone()))?;
    if loaded != read {
        let _ = dst.batch_execute("ROLLBACK").await;
        return Err(JobError::RowCount {
            what,
            expected: read,
            loaded,
        });
    }
    dst.batch_execute("COMMIT")
        .await
        .map_err(JobError::sql(what))?;
    Ok(loaded)
}
