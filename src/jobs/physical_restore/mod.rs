//! `pgtide restore <backup> --pgdata DIR`: rebuild a data directory from a
//! base backup, write the recovery settings, and (with `--start`) start the
//! server and wait until recovery ends. PostgreSQL itself replays the WAL,
//! fetching it with `pgtide wal fetch`.

mod dirs;
mod files;
pub mod recovery;
pub mod request;
pub mod select;
pub mod sparse;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use recovery::RecoverySettings;
use select::{Candidate, Histories, Target};

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

/// A one-chunk file of at most this many stored bytes is read together with
/// its neighbours in the pack (most of a data directory is such files).
const RUN_FILE_MAX: u64 = 1 << 20;

/// What a restore worker takes from the queue.
enum Work {
    /// A file (path, index into the manifest's files).
    File(PathBuf, usize),
    /// Small one-chunk files whose chunks lie back to back in a pack.
    Run(Vec<(PathBuf, usize)>),
}

/// The order files are written in: the largest first, one by one; then the
/// small one-chunk files in runs, so that a data directory's thousands of
/// small files take one ranged read per run instead of one each.
fn plan(m: &BackupManifest, files: Vec<(PathBuf, usize)>) -> std::collections::VecDeque<Work> {
    let one_chunk = |i: usize| {
        m.files[i]
            .stream
            .as_ref()
            .filter(|s| s.chunks.len() == 1 && s.chunks[0].stored_len <= RUN_FILE_MAX)
            .map(|s| s.chunks[0])
    };
    let (mut small, mut large): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|&(_, i)| one_chunk(i).is_some());
    large.sort_by_key(|&(_, i)| std::cmp::Reverse(m.files[i].size));
    let chunks: Vec<crate::chunk::ChunkRef> =
        small.iter().filter_map(|&(_, i)| one_chunk(i)).collect();
    let mut taken: Vec<Option<(PathBuf, usize)>> = small.drain(..).map(Some).collect();
    let runs = crate::pipeline::reader::runs(&chunks, crate::pipeline::reader::RUN_SPAN)
        .into_iter()
        .map(|run| Work::Run(run.into_iter().filter_map(|k| taken[k].take()).collect()));
    large
        .into_iter()
        .map(|(p, i)| Work::File(p, i))
        .chain(runs)
        .collect()
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

/// The server log of `--start`, inside the data directory.
pub const RECOVERY_LOG: &str = "pgtide-recovery.log";

/// pg_ctl of the backup's major version.
fn find_pg_ctl(s: &PitrSettings, major: u32) -> Result<PathBuf, JobError> {
    find_server_tool(s.pg_bin.as_deref(), "pg_ctl", major)
}

/// A server program (`pg_ctl`, `initdb`) of PostgreSQL `major`: in `pg_bin`
/// first, then the usual package directories, then `PATH`.
pub(crate) fn find_server_tool(
    pg_bin: Option<&Path>,
    tool: &'static str,
    major: u32,
) -> Result<PathBuf, JobError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(b) = pg_bin {
        dirs.push(b.to_path_buf());
    }
    dirs.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    dirs.push(PathBuf::from(format!("/usr/pgsql-{major}/bin")));
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    for d in dirs {
        let p = d.join(tool);
        if !p.is_file() {
            continue;
        }
        let out = std::process::Command::new(&p).arg("--version").output();
        if let Ok(o) = out {
            let v = String::from_utf8_lossy(&o.stdout);
            if crate::pg::version::tool_major(&v) == Some(major) {
                return Ok(p);
            }
        }
    }
    Err(crate::pg::tools::ToolError::ServerToolNotFound { tool, major }.into())
}

/// Start the restored server and wait until recovery has ended (promoted,
/// paused at the target, or shut down). Returns what the server said.
/// Configuration files a server needs to start, with what pgtide writes
/// when the backup has none.
const MINIMAL_CONFIG: &[(&str, &str)] = &[
    (
        "postgresql.conf",
        "# Written by pgtide restore --start: the backed-up cluster kept its\n\
         # configuration outside its data directory (as Debian's packages do).\n\
         # Its ALTER SYSTEM settings are in postgresql.auto.conf.\n",
    ),
    (
        "pg_hba.conf",
        "# Written by pgtide restore --start: the backup had no pg_hba.conf.\n\
         # Local connections by the matching OS user, and passwords over loopback.\n\
         local all all peer\n\
         host all all 127.0.0.1/32 scram-sha-256\n\
         host all all ::1/128 scram-sha-256\n",
    ),
    ("pg_ident.conf", ""),
];

/// A backup of a cluster whose configuration lives outside its data
/// directory (Debian's layout: /etc/postgresql/MAJOR/NAME) has no
/// postgresql.conf, pg_hba.conf or pg_ident.conf, and a server cannot start
/// without them: write minimal ones, and say so.
fn write_missing_config(pgdata: &Path) -> Result<(), JobError> {
    let mut written = Vec::new();
    for (name, text) in MINIMAL_CONFIG {
        let path = pgdata.join(name);
        if path.exists() {
            continue;
        }
        std::fs::write(&path, text).map_err(io(format!("write {}", path.display())))?;
        written.push(*name);
    }
    if !written.is_empty() {
        // Handled here: the restore goes on with these.
        tracing::warn!(
            "the backup has no {} (the cluster kept its configuration outside its data directory): \
             wrote minimal ones into {} so that the server can start; replace them with the \
             cluster's own before using it",
            written.join(", "),
            pgdata.display()
        );
    }
    Ok(())
}

pub(crate) async fn start_and_wait(
    s: &PitrSettings,
    major: u32,
) -> Result<(String, Option<u32>), JobError> {
    let pg_ctl = find_pg_ctl(s, major)?;
    let log = s.pgdata.join(RECOVERY_LOG);
    // The backup may carry the log of the server it was taken from (restored
    // by pgtide too): its "ready to accept connections" and FATAL lines are
    // not this server's. Start from an empty log.
    match std::fs::remove_file(&log) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(format!("remove {}", log.display()))(e))
        }
        _ => {}
    }
    let mut cmd = if running_as_root() {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", s.os_user.as_deref().unwrap_or("postgres"), "--"])
            .arg(&pg_ctl);
        c
    } else {
        tokio::process::Command::new(&pg_ctl)
    };
    cmd.arg("-D")
        .arg(&s.pgdata)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "86400", "start"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // Stopped while it waits (the restore interrupted), pg_ctl goes;
        // the server it started runs on its own, as pg_ctl leaves it.
        .kill_on_drop(true);
    let out = cmd.output().await.map_err(io("run pg_ctl start"))?;
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    if !out.status.success() && !read_log().contains("shutting down") {
        return Err(server_failed(
            "the restored server did not start",
            last_fatal(&read_log()).unwrap_or_else(|| crate::pg::tools::tail_lines(&out.stderr, 2)),
        ));
    }
    // Wait for the end of recovery as the log tells it.
    let deadline = Instant::now() + Duration::from_secs(86400);
    loop {
        let text = read_log();
        if let Some(f) = last_fatal(&text) {
            return Err(server_failed("recovery failed", f));
        }
        let done = text.contains("database system is ready to accept connections")
            || text.contains("recovery has paused")
            || text.contains("pausing at the end of recovery")
            || text.contains("database system is shut down");
        if done {
            let tli = text
                .lines()
                .rev()
                .find_map(|l| l.split("selected new timeline ID: ").nth(1))
                .and_then(|v| v.trim().parse().ok());
            let summary = text
                .lines()
                .filter(|l| {
                    l.contains("recovery stopping")
                        || l.contains("redo done at")
                        || l.contains("last completed transaction")
                        || l.contains("recovery has paused")
                })
                .map(|l| {
                    l.split_once(": ")
                        .map(|x| x.1)
                        .unwrap_or(l)
                        .trim()
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Ok((summary, tli));
        }
        if Instant::now() > deadline {
            return Err(server_failed(
                "wait for recovery",
                "recovery did not end within a day".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The restored server failed (exit 1, "other failure"): not a bad command
/// line, which `JobError::Invalid` (exit 2) would claim.
fn server_failed(context: &str, what: String) -> JobError {
    JobError::Io {
        context: context.to_string(),
        source: std::io::Error::other(what),
    }
}

fn last_fatal(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        .map(|l| {
            l.split_once(": ")
                .map(|x| x.1)
                .unwrap_or(l)
                .trim()
                .to_string()
        })
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
