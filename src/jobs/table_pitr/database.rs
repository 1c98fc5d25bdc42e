//! `restore <backup> --database NAME --db CONN`: one whole database of the
//! backed-up cluster, as it was at the target, into the server of `--db`
//! as the database `--db` names.
//!
//! Through the jobs that already do each half, rather than a second copy
//! of them: `dump` reads the scratch server's database (snapshot, pg_dump
//! of the schema, parallel COPY, sequence values, large objects,
//! materialized views, the database's properties) into a repository inside
//! the scratch directory, uncompressed, and the logical `restore` loads it
//! (`--create`, or `--clean` into an existing database). The rows cross
//! the scratch disk once; the repository goes with the scratch directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Settings, Source};
use crate::jobs::dump::{self, plan::SplitBy, CopyFormat, DumpSettings};
use crate::jobs::logical_restore::{self, RestoreSettings};
use crate::jobs::{JobError, Progress};
use crate::pg::pattern::NamePattern;
use crate::pipeline::{Compression, PipelineConfig};
use crate::repo::Repository;

pub(super) struct Outcome {
    pub tables: u64,
    pub rows: u64,
    pub sequences: u64,
}

pub(super) async fn restore(
    s: &Settings,
    source: &Source,
    scratch_dir: &Path,
    exclude: &[NamePattern],
    target_exists: bool,
    progress: &Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<Outcome, JobError> {
    let dir = scratch_dir.join("dump-repository");
    let repo = Repository::open(&dir.display().to_string(), true).await?;
    let ds = DumpSettings {
        conn: source.conninfo.clone(),
        jobs: s.jobs,
        pipeline: PipelineConfig {
            compression: Compression::None,
            ..PipelineConfig::default()
        },
        schema_only: false,
        data_only: false,
        tables: Vec::new(),
        exclude_tables: exclude.to_vec(),
        name: None,
        description: Some("pgtide restore --database (scratch)".into()),
        split_size: 256 << 20,
        split_by: SplitBy::Output,
        pg_dump: s.pg_dump.clone(),
        lock_timeout: Duration::from_secs(30),
        copy_format: CopyFormat::Auto,
    };
    progress.set_phase("dumping the database from the scratch server");
    let d = dump::run(&repo, &ds, progress.clone(), cancel.child_token()).await?;
    let rs = RestoreSettings {
        conn: s.conn.clone(),
        jobs: s.jobs,
        create: !target_exists,
        clean: target_exists && s.clean,
        schema_only: false,
        data_only: false,
        tables: Vec::new(),
        exclude_tables: Vec::new(),
        dry_run: false,
        no_owner: s.no_owner,
        no_privileges: s.no_privileges,
        no_tablespaces: false,
        early_index_size: s.early_index_size,
        pg_dump: s.pg_dump.clone(),
        prefetch: 4,
    };
    progress.set_phase("loading the database into the target");
    let r = logical_restore::run(&repo, &d.id, &rs, progress.clone(), cancel.clone()).await?;
    Ok(Outcome {
        tables: r.tables,
        rows: r.rows,
        sequences: r.sequences,
    })
}
