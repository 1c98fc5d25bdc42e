//! The table-load step: every part of the chosen tables loaded by
//! `--jobs` workers (biggest tables first), and the early index builds of
//! big tables run beside it as each table completes.

use super::*;
/// Load `tables` with `jobs` workers; a big table's own indexes and keys
/// (the pg_restore list of `early` for it) are built while the other
/// tables load, up to `jobs` tables at a time. `cancel`, or the first
/// failure, stops both: the builds' pg_restore runs are killed, the
/// workers aborted and awaited.
pub(super) async fn load_with_early_builds(
    cx: &Load<'_>,
    tables: &[usize],
    jobs: usize,
    early: &HashMap<usize, Option<TempFile>>,
    pg_restore: Option<&PgRestore<'_>>,
    cancel: &CancellationToken,
) -> Result<u64, JobError> {
    let m = cx.m;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let build = |i: usize| {
        let list = early[&i].as_ref().map(|l| l.path());
        async move {
            let r = pg_restore.expect("early builds come from the schema archive");
            tracing::info!(table = %m.tables[i].qualified(), "building its indexes and keys");
            r.section("post-data", list, 1).await
        }
    };
    let early_builds = async {
        let mut running = futures::stream::FuturesUnordered::new();
        let mut open = true;
        while open || !running.is_empty() {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(JobError::Interrupted),
                i = rx.recv(), if open && running.len() < jobs => match i {
                    Some(i) if early.contains_key(&i) => running.push(build(i)),
                    Some(_) => {}
                    None => open = false,
                },
                Some(r) = futures::StreamExt::next(&mut running), if !running.is_empty() => r?,
            }
        }
        Ok::<(), JobError>(())
    };
    let tx = (!early.is_empty()).then_some(tx);
    // The workers are owned here: when the builds fail first, the load is
    // dropped half-way, and the workers are stopped and awaited below.
    let mut workers = tokio::task::JoinSet::new();
    let r = tokio::try_join!(
        load_tables(cx, tables, jobs, tx, &mut workers, cancel),
        early_builds
    );
    workers.shutdown().await;
    Ok(r?.0)
}

/// The encoding to load the dump's rows in: the dump's data encoding,
/// which the target converts into its own, except for SQL_ASCII.
/// SQL_ASCII means "bytes, no conversion", and `COPY … (ENCODING
/// 'SQL_ASCII')` into a database with a real encoding stores the bytes
/// without checking them: a UTF8 database would silently hold text that is
/// not UTF-8 and fails later, in every query that converts it. Loading the
/// bytes as the target's own encoding still converts nothing, but the server
/// checks them, and a byte sequence the target cannot hold stops the load
/// with the server's own error.
pub fn load_encoding(data_encoding: &str, target_encoding: &str) -> String {
    if data_encoding.eq_ignore_ascii_case("SQL_ASCII") {
        target_encoding.to_string()
    } else {
        data_encoding.to_string()
    }
}

/// What loading tables works with.
pub(super) struct Load<'a> {
    pub repo: &'a Repository,
    pub m: &'a DumpManifest,
    pub s: &'a RestoreSettings,
    /// The target's session (checks before the load; workers open their own).
    pub target: &'a Client,
    pub progress: &'a Arc<Progress>,
}

async fn load_tables(
    cx: &Load<'_>,
    load: &[usize],
    jobs: usize,
    table_done: Option<tokio::sync::mpsc::UnboundedSender<usize>>,
    workers: &mut tokio::task::JoinSet<Result<u64, JobError>>,
    cancel: &CancellationToken,
) -> Result<u64, JobError> {
    let Load {
        repo,
        m,
        s,
        target,
        progress,
    } = *cx;
    let loading: Vec<&crate::repo::manifest::TableEntry> =
        load.iter().map(|&i| &m.tables[i]).collect();
    // Statements on the target's session, until the workers start.
    let prepared = async {
        worker::check_binary_columns(target, &m.id, &loading).await?;
        // FREEZE needs the TRUNCATE privilege (owner or granted).
        let mut can_truncate = Vec::with_capacity(load.len());
        for &i in load {
            let t = &m.tables[i];
            let ok: bool = target
                .query_one(
                    "SELECT has_table_privilege($1, 'TRUNCATE')",
                    &[&quote_qualified(&t.schema, &t.name)],
                )
                .await
                .map_err(JobError::sql(format!("inspect table {}", t.qualified())))?
                .get(0);
            can_truncate.push(ok);
        }
        // --data-only --clean on a split table: empty it once, before its parts load.
        for (k, &i) in load.iter().enumerate() {
            let t = &m.tables[i];
            if s.data_only && s.clean && (t.parts.len() > 1 || !can_truncate[k]) {
                target
                    .batch_execute(&format!(
                        "TRUNCATE ONLY {}",
                        quote_qualified(&t.schema, &t.name)
                    ))
                    .await
                    .map_err(JobError::sql(format!("empty table {}", t.qualified())))?;
            }
        }
        let info = catalog::server_info(target)
            .await
            .map_err(JobError::sql("read target server information"))?;
        Ok::<_, JobError>((can_truncate, info))
    };
    let (can_truncate, info) = cancellable(cancel, prepared).await?;
    let mut items: Vec<(u64, worker::LoadItem)> = Vec::new();
    let mut parts_left = vec![0; m.tables.len()];
    for (k, &i) in load.iter().enumerate() {
        let t = &m.tables[i];
        parts_left[i] = t.parts.len();
        let freeze = t.parts.len() == 1 && can_truncate[k] && (!s.data_only || s.clean);
        for (p, part) in t.parts.iter().enumerate() {
            items.push((
                part.stream.raw_bytes,
                worker::LoadItem {
                    table: i,
                    part: p,
                    freeze,
                },
            ));
        }
        if t.parts.is_empty() {
            progress.units_done.fetch_add(1, Ordering::Relaxed);
            if let Some(tx) = &table_done {
                let _ = tx.send(i);
            }
        }
    }
    // Biggest tables first, each table's parts together: the biggest table
    // is complete early and its indexes (the longest build) go up while
    // the smaller tables load, instead of after them. Measured on the
    // benchmark (docs/BENCHMARKS.md), three interleaved rounds: 10.3-10.8 s
    // against 10.2-11.8 s with the largest parts first.
    items.sort_by_key(|(_, it)| {
        (
            std::cmp::Reverse(m.tables[it.table].raw_bytes()),
            it.table,
            it.part,
        )
    });
    progress
        .total_bytes
        .store(items.iter().map(|i| i.0).sum(), Ordering::Relaxed);
    progress
        .units_total
        .store(load.len() as u64, Ordering::Relaxed);
    let shared = Arc::new(worker::Shared {
        conn: s.conn.clone(),
        version: info.version,
        tables: m.tables.clone(),
        data_encoding: load_encoding(&m.data_encoding, &info.encoding),
        reader: ChunkReader::new(
            repo.storage().clone(),
            Arc::new(m.packs.clone()),
            m.compression,
            s.prefetch,
        )
        .with_cipher(repo.set_cipher(crate::repo::SetKind::Dump, &m.id)?),
        queue: Mutex::new(items.into_iter().map(|(_, i)| i).collect()),
        parts_left: Mutex::new(parts_left),
        progress: progress.clone(),
        table_done,
    });
    let n = jobs.min(shared.queue.lock().expect("queue").len());
    for k in 0..n {
        workers.spawn(worker::run(k, shared.clone()));
    }
    Ok(crate::jobs::join_all(workers, "restore worker", cancel)
        .await?
        .into_iter()
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_ascii_rows_load_unconverted_but_checked() {
        assert_eq!(load_encoding("SQL_ASCII", "UTF8"), "UTF8");
        assert_eq!(load_encoding("SQL_ASCII", "SQL_ASCII"), "SQL_ASCII");
        assert_eq!(load_encoding("LATIN1", "UTF8"), "LATIN1");
        assert_eq!(load_encoding("UTF8", "SQL_ASCII"), "UTF8");
    }
}
