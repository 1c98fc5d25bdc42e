//! `pgtide restore <backup> --pgdata DIR`: rebuild a data directory from a
//! base backup, write the recovery settings, and (with `--start`) start the
//! server and wait until recovery ends. PostgreSQL itself replays the WAL,
//! fetching it with `pgtide wal fetch`.

mod dirs;
mod files;
pub mod recovery;
pub mod request;
pub mod select;
mod server;
pub mod sparse;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::{cancellable, stop_if_cancelled, JobError, Progress};
use crate::pipeline::ChunkReader;
use crate::pipeline::Compression;
use crate::repo::manifest::{BackupFile, BackupManifest};
use crate::repo::wal_archive::{WalArchive, WalError};
use crate::repo::{Repository, SetKind};
pub use dirs::running_as_root;
use dirs::{chown_if_root, prepare_dir, safe_join, sync_filesystems, unprepare};
use files::{plan, Work};
use recovery::RecoverySettings;
use select::{Candidate, Histories, Target};
use server::write_missing_config;
pub use server::RECOVERY_LOG;
pub(crate) use server::{find_server_tool, start_and_wait};

#[derive(Debug, Clone)]
pub struct PitrSettings {
    pub pgdata: PathBuf,
    pub target: Target,
    pub action: String,
    pub timeline: String,
    pub inclusive: bool,
    pub force: bool,
    pub jobs: usize,
    /// Tablespace oid (or original location) → new location.
    pub tablespace_map: Vec<(String, PathBuf)>,
    pub start: bool,
    /// Directory of pg_ctl for `--start` (default: found by major version).
    pub pg_bin: Option<PathBuf>,
    /// When running as root: the OS user to own the files and run the server.
    pub os_user: Option<String>,
    pub repo_url: String,
    /// Key flags of an encrypted repository for `restore_command`
    /// (`--identity FILE`, `--passphrase-file FILE`).
    pub secret_args: Vec<String>,
    /// Extra settings appended to postgresql.auto.conf (e.g. port).
    pub settings: Vec<(String, String)>,
    /// Databases (oids) whose relation files are written as empty sparse
    /// files instead of downloaded (`sparse`): a scratch restore that
    /// reads one database only.
    pub zero_databases: BTreeSet<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PitrReport {
    pub backup: String,
    pub pgdata: String,
    pub files: u64,
    pub bytes: u64,
    /// Relation files of other databases written as empty sparse files, and
    /// their size (not downloaded); 0 for a whole restore.
    pub sparse_files: u64,
    pub sparse_bytes: u64,
    pub seconds: f64,
    pub started: bool,
    /// With --start: what the server said when recovery ended.
    pub recovery: Option<String>,
    pub timeline: Option<u32>,
}

/// The backups of a repository as candidates for a target.
pub async fn candidates(repo: &Repository) -> Result<Vec<Candidate>, JobError> {
    let mut out = Vec::new();
    for id in repo.ids(SetKind::Backup).await? {
        let m: BackupManifest = repo.load(SetKind::Backup, &id).await?;
        out.push(Candidate {
            id,
            finished_at: m.finished_at,
            end_lsn: m.end_lsn,
            timeline: m.timeline,
        });
    }
    Ok(out)
}

/// The timeline history files the repository's WAL archive holds, parsed.
pub async fn histories(repo: &Repository) -> Result<Histories, JobError> {
    let mut out = Histories::new();
    let Some(cluster) = repo.cluster().await? else {
        return Ok(out);
    };
    let archive = repo.wal_archive(cluster.wal_segment_size, Compression::None);
    let wal = |e: crate::repo::wal_archive::WalError| {
        JobError::archive("read the WAL archive's timeline history")(e)
    };
    for tli in archive.histories().await.map_err(wal)? {
        let name = WalArchive::history_name(tli);
        let Some(bytes) = archive.fetch(&name).await.map_err(wal)? else {
            continue;
        };
        let entries = crate::pg::proto::history::parse_for_timeline(tli, &bytes).map_err(|e| {
            JobError::archive("read the WAL archive's timeline history")(WalError::Damaged {
                key: name.clone(),
                reason: e.to_string(),
            })
        })?;
        out.insert(tli, entries);
    }
    Ok(out)
}

/// The backup `restore latest` should use for `target` along `timeline`
/// (`--target-timeline`): the newest one that ends before the target and
/// whose timeline recovery can follow to the one asked for. The outer error
/// is a repository that cannot be read; the inner one means no backup fits.
pub async fn choose(
    repo: &Repository,
    target: &Target,
    timeline: &str,
) -> Result<Result<String, select::SelectError>, JobError> {
    let spec = select::parse_timeline(timeline).map_err(JobError::Invalid)?;
    let backups = candidates(repo).await?;
    let h = histories(repo).await?;
    Ok(select::select_on_timeline(&backups, target, spec, &h).map(|c| c.id.clone()))
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> JobError {
    let context = context.into();
    move |source| JobError::Io { context, source }
}

/// Restore backup `id` as `s` asks. When `cancel` fires while files are
/// being written, the workers are stopped and awaited, every write they
/// started has ended, and the directories are put back as they were found
/// (see [`unprepare`]) before `Interrupted` is returned; once the files
/// and recovery settings are written (waiting for recovery under
/// `--start`), an interruption leaves them, and the server, as they are.
pub async fn run(
    repo: &Repository,
    id: &str,
    s: &PitrSettings,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<PitrReport, JobError> {
    restore(repo, id, s, progress, &cancel)
        .await
        .map_err(|e| super::stopped(&cancel, e))
}

async fn restore(
    repo: &Repository,
    id: &str,
    s: &PitrSettings,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<PitrReport, JobError> {
    let started = Instant::now();
    let m: BackupManifest = cancellable(cancel, repo.load(SetKind::Backup, id)).await?;
    // Refuse before writing anything a backup PostgreSQL would refuse after
    // the whole restore: one of a branch the recovery timeline abandoned.
    let spec = select::parse_timeline(&s.timeline).map_err(JobError::Invalid)?;
    let me = Candidate {
        id: m.id.clone(),
        finished_at: m.finished_at,
        end_lsn: m.end_lsn,
        timeline: m.timeline,
    };
    if let Some(why) = select::off_history(&me, spec, &cancellable(cancel, histories(repo)).await?)
    {
        return Err(JobError::Invalid(format!(
            "backup {} (timeline {}) cannot recover along --target-timeline {}: {why} (restore \
             an older backup, or choose the timeline with --target-timeline)",
            m.id, m.timeline, s.timeline
        )));
    }
    progress.set_phase(format!(
        "restoring backup {} into {}",
        m.id,
        s.pgdata.display()
    ));

    // Where every tablespace goes.
    let mut ts_dirs: HashMap<u32, PathBuf> = HashMap::new();
    for t in &m.tablespaces {
        let dest = s
            .tablespace_map
            .iter()
            .find(|(k, _)| *k == t.oid.to_string() || *k == t.location)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| PathBuf::from(&t.location));
        ts_dirs.insert(t.oid, dest);
    }
    // A missing or truncated pack stops the restore before it writes.
    if let Err(what) =
        cancellable(cancel, repo.check_packs(SetKind::Backup, &m.id, &m.packs)).await?
    {
        return Err(JobError::Damaged {
            id: m.id.clone(),
            what,
        });
    }
    let base_of = |f: &BackupFile| -> Result<PathBuf, JobError> {
        match f.tablespace {
            None => Ok(s.pgdata.clone()),
            Some(oid) => ts_dirs.get(&oid).cloned().ok_or_else(|| JobError::Damaged {
                id: id.to_string(),
                what: format!("its file {} names unknown tablespace {oid}", f.path),
            }),
        }
    };

    // Directories first, then symlinks (tablespace links remapped), then
    // files. Every path is checked before anything is touched.
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    for f in m.files.iter().filter(|f| f.kind == "dir") {
        dirs.push((safe_join(id, &base_of(f)?, &f.path)?, f.mode));
    }
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    for f in m.files.iter().filter(|f| f.kind == "symlink") {
        let p = safe_join(id, &base_of(f)?, &f.path)?;
        let mut target = PathBuf::from(f.target.clone().unwrap_or_default());
        if let (None, Some(oid)) = (
            f.tablespace,
            f.path
                .strip_prefix("pg_tblspc/")
                .and_then(|o| o.parse::<u32>().ok()),
        ) {
            if let Some(d) = ts_dirs.get(&oid) {
                target = d.clone();
            }
        }
        links.push((p, target));
    }
    let mut files: Vec<(PathBuf, usize)> = Vec::new();
    let mut sparse: Vec<(PathBuf, u64, u32)> = Vec::new();
    for (i, f) in m.files.iter().enumerate().filter(|(_, f)| f.kind == "file") {
        let path = safe_join(id, &base_of(f)?, &f.path)?;
        if sparse::is_zeroed(f, &s.zero_databases) {
            sparse.push((path, f.size, f.mode));
        } else {
            files.push((path, i));
        }
    }
    stop_if_cancelled(cancel)?;

    // Preparing the directories (and emptying them under --force) is
    // blocking file system work: off the runtime's threads. It runs to its
    // end once started; what it prepared is known from then on.
    let mut prepare: Vec<(PathBuf, &'static str)> = vec![(s.pgdata.clone(), "data directory")];
    prepare.extend(
        ts_dirs
            .values()
            .map(|d| (d.clone(), "tablespace directory")),
    );
    let (force, pgdata) = (s.force, s.pgdata.clone());
    let prepared = tokio::task::spawn_blocking(move || -> Result<_, JobError> {
        let mut prepared = Vec::new();
        for (dir, what) in &prepare {
            prepared.push((dir.clone(), prepare_dir(dir, force, what)?));
        }
        for (p, _mode) in &dirs {
            std::fs::create_dir_all(p).map_err(io(format!("create {}", p.display())))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::Permissions::from_mode(_mode & 0o7777);
                let _ = std::fs::set_permissions(p, mode);
            }
        }
        for (p, _target) in &links {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("create {}", parent.display())))?;
            }
            #[cfg(unix)]
            std::os::unix::fs::symlink(_target, p).map_err(io(format!("link {}", p.display())))?;
        }
        std::fs::create_dir_all(pgdata.join("pg_wal/archive_status"))
            .map_err(io("create pg_wal/archive_status"))?;
        Ok(prepared)
    })
    .await
    .map_err(|e| super::task_failed("prepare the directories", e))??;

    let written = write_contents(
        repo,
        s,
        Arc::new(m),
        files,
        sparse,
        &ts_dirs,
        &progress,
        cancel,
    )
    .await;
    let (m, total, sparse_files, sparse_bytes) = match written {
        Ok(w) => w,
        Err(e) if matches!(e, JobError::Interrupted) || cancel.is_cancelled() => {
            progress.set_phase("interrupted: removing what the restore wrote");
            let r = tokio::task::spawn_blocking(move || unprepare(&prepared))
                .await
                .map_err(|e| super::task_failed("remove the restored files", e))
                .and_then(|r| r);
            if let Err(e) = r {
                // Handled here: the interruption is what the user sees.
                tracing::warn!("cleaning up the interrupted restore: {e}");
            }
            return Err(JobError::Interrupted);
        }
        Err(e) => return Err(e),
    };

    let mut report = PitrReport {
        backup: m.id.clone(),
        pgdata: s.pgdata.display().to_string(),
        files: m.files.iter().filter(|f| f.kind == "file").count() as u64,
        bytes: total,
        sparse_files,
        sparse_bytes,
        seconds: 0.0,
        started: false,
        recovery: None,
        timeline: None,
    };
    if s.start {
        progress.set_phase("starting the server and waiting for recovery to end");
        let (summary, tli) =
            cancellable(cancel, start_and_wait(s, m.server_version_num / 10000)).await?;
        report.started = true;
        report.recovery = Some(summary);
        report.timeline = tli;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Write the files of `m` (`files`: path and index into `m.files`; `sparse`:
/// path, size and mode of each file written as holes), PostgreSQL's
/// `backup_manifest` and the recovery settings into the prepared
/// directories. Returns the manifest, the bytes written and the sparse
/// files' count and bytes. `Interrupted` once every write it started has
/// ended.
#[allow(clippy::too_many_arguments)]
async fn write_contents(
    repo: &Repository,
    s: &PitrSettings,
    m: Arc<BackupManifest>,
    files: Vec<(PathBuf, usize)>,
    sparse: Vec<(PathBuf, u64, u32)>,
    ts_dirs: &HashMap<u32, PathBuf>,
    progress: &Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<(Arc<BackupManifest>, u64, u64, u64), JobError> {
    stop_if_cancelled(cancel)?;
    let reader = ChunkReader::new(
        repo.storage().clone(),
        Arc::new(m.packs.clone()),
        m.compression,
        4,
    )
    .with_cipher(repo.set_cipher(SetKind::Backup, &m.id)?);
    let sparse_files = sparse.len() as u64;
    let sparse_bytes: u64 = sparse.iter().map(|s| s.1).sum();
    if !sparse.is_empty() {
        stop_if_cancelled(cancel)?;
        progress.set_phase(format!(
            "writing {sparse_files} relation files of other databases as empty sparse files"
        ));
        tokio::task::spawn_blocking(move || write_sparse(&sparse))
            .await
            .map_err(|e| super::task_failed("write the sparse files", e))??;
    }
    let total: u64 = files.iter().map(|&(_, i)| m.files[i].size).sum();
    progress.total_bytes.store(total, Ordering::Relaxed);
    progress
        .units_total
        .store(files.len() as u64, Ordering::Relaxed);
    // Largest files first; more files than jobs in flight, since most of a
    // data directory is small files whose cost is opening and closing, and
    // a bounded number of chunks in flight across all of them.
    let jobs = s.jobs.max(1);
    let writer = Arc::new(files::FileWriter::new(
        m.id.clone(),
        reader.clone(),
        (jobs * 2 + 2).max(4),
    ));
    let queue = Arc::new(Mutex::new(plan(&m, files)));
    // The first failure, or `cancel`, stops the other workers; the writes
    // they left on the blocking pool are awaited too (`settle`), so that
    // nothing lands in the directory after this returns.
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..(jobs * 2).max(4) {
        let (queue, writer, m, progress) =
            (queue.clone(), writer.clone(), m.clone(), progress.clone());
        workers.spawn(async move {
            loop {
                let Some(work) = queue.lock().expect("queue lock").pop_front() else {
                    return Ok::<(), JobError>(());
                };
                match work {
                    Work::File(path, i) => {
                        writer.restore(path, &m.files[i], None, &progress).await?;
                        progress.units_done.fetch_add(1, Ordering::Relaxed);
                    }
                    Work::Run(run) => {
                        let run = run.into_iter().map(|(p, i)| (p, &m.files[i])).collect();
                        writer.restore_run(run, &progress).await?;
                    }
                }
                crate::jobs::pause_point("physical-restore-file").await;
            }
        });
    }
    let joined = super::join_all(&mut workers, "restore worker", cancel).await;
    writer.settle().await;
    joined?;
    stop_if_cancelled(cancel)?;
    progress.set_phase("syncing the restored files to disk");
    let dirs: Vec<PathBuf> = std::iter::once(s.pgdata.clone())
        .chain(ts_dirs.values().cloned())
        .collect();
    tokio::task::spawn_blocking(move || sync_filesystems(&dirs))
        .await
        .map_err(|e| super::task_failed("sync the restored files", e))??;

    // PostgreSQL's manifest beside the files, for pg_verifybackup.
    if let Some(st) = &m.pg_backup_manifest {
        let out = cancellable(cancel, async {
            let mut out = Vec::new();
            let mut chunks = reader.stream(st.chunks.clone());
            while let Some(c) = chunks.next().await {
                out.extend_from_slice(&c.map_err(JobError::pipeline("read backup_manifest"))?);
            }
            Ok::<_, JobError>(out)
        })
        .await?;
        std::fs::write(s.pgdata.join("backup_manifest"), out)
            .map_err(io("write backup_manifest"))?;
    }

    // Recovery settings.
    stop_if_cancelled(cancel)?;
    let exe = crate::jobs::pgtide_executable()
        .map_err(io("find the pgtide executable for restore_command"))?;
    let rs = RecoverySettings {
        pgtide_exe: exe,
        repo_url: absolute_local(&s.repo_url),
        secret_args: s.secret_args.clone(),
        target: s.target.clone(),
        action: s.action.clone(),
        timeline: s.timeline.clone(),
        inclusive: s.inclusive,
    };
    let auto = s.pgdata.join("postgresql.auto.conf");
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)
        .await
        .map_err(io(format!("open {}", auto.display())))?;
    let mut conf = rs.conf();
    for (k, v) in &s.settings {
        conf.push_str(&format!("{k} = {}\n", recovery::conf_quote(v)));
    }
    f.write_all(format!("\n{conf}").as_bytes())
        .await
        .map_err(io(format!("write {}", auto.display())))?;
    f.sync_all()
        .await
        .map_err(io(format!("sync {}", auto.display())))?;
    std::fs::write(s.pgdata.join("recovery.signal"), b"").map_err(io("write recovery.signal"))?;
    // A backup of a standby carries standby.signal, which would keep the
    // server replaying forever instead of stopping at the target.
    match std::fs::remove_file(s.pgdata.join("standby.signal")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("remove standby.signal")(e))
        }
        _ => {}
    }
    if s.start {
        write_missing_config(&s.pgdata)?;
    }
    // `chown -R` of the whole restored tree: blocking, off the runtime.
    let (pgdata, ts, user) = (s.pgdata.clone(), ts_dirs.clone(), s.os_user.clone());
    tokio::task::spawn_blocking(move || chown_if_root(&pgdata, &ts, user.as_deref()))
        .await
        .map_err(|e| super::task_failed("give the files to the server's user", e))??;
    Ok((m, total, sparse_files, sparse_bytes))
}

/// Empty files of the recorded sizes and modes: holes, no blocks written.
fn write_sparse(files: &[(PathBuf, u64, u32)]) -> Result<(), JobError> {
    use std::os::unix::fs::PermissionsExt;
    for (path, size, mode) in files {
        let f = std::fs::File::create(path).map_err(io(format!("create {}", path.display())))?;
        f.set_len(*size)
            .map_err(io(format!("extend {}", path.display())))?;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777));
    }
    Ok(())
}

/// The bytes of the backed-up file at `path` of the data directory (a small
/// one: it is read whole into memory), or `None` when the backup has none.
pub async fn file_bytes(
    repo: &Repository,
    m: &BackupManifest,
    path: &str,
) -> Result<Option<Vec<u8>>, JobError> {
    let Some(f) = m
        .files
        .iter()
        .find(|f| f.tablespace.is_none() && f.kind == "file" && f.path == path)
    else {
        return Ok(None);
    };
    let chunks = f
        .stream
        .as_ref()
        .map(|s| s.chunks.clone())
        .unwrap_or_default();
    let reader = ChunkReader::new(
        repo.storage().clone(),
        Arc::new(m.packs.clone()),
        m.compression,
        2,
    );
    let mut out = Vec::with_capacity(f.size as usize);
    let mut stream = reader.stream(chunks);
    while let Some(c) = stream.next().await {
        out.extend_from_slice(&c.map_err(JobError::pipeline(format!("read {path}")))?);
    }
    Ok(Some(out))
}

/// The row versions of the backup's `pg_database` (every database's oid
/// and name, as the file was copied; see `pg::proto::shared_catalog`).
pub async fn database_rows(
    repo: &Repository,
    m: &BackupManifest,
) -> Result<Vec<crate::pg::proto::shared_catalog::NamedRow>, JobError> {
    use crate::pg::proto::shared_catalog::{mapped_file, named_rows, PG_DATABASE};
    let file = file_bytes(repo, m, "global/pg_filenode.map")
        .await?
        .and_then(|map| mapped_file(&map, PG_DATABASE))
        .unwrap_or(PG_DATABASE);
    Ok(file_bytes(repo, m, &format!("global/{file}"))
        .await?
        .map(|f| named_rows(&f))
        .unwrap_or_default())
}

/// The oids of the database directories in the backup (`base/<oid>`).
pub fn database_dirs(m: &BackupManifest) -> BTreeSet<u32> {
    m.files
        .iter()
        .filter(|f| f.tablespace.is_none() && f.kind == "dir")
        .filter_map(|f| {
            f.path
                .trim_end_matches('/')
                .strip_prefix("base/")?
                .parse()
                .ok()
        })
        .collect()
}

/// A local repository path made absolute: the server runs
/// `restore_command` in its data directory, where a relative path would
/// name another place.
fn absolute_local(url: &str) -> String {
    if url.contains("://") || std::path::Path::new(url).is_absolute() {
        return url.to_string();
    }
    std::path::absolute(url)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| url.to_string())
}
