//! `pgtide wal fetch <name> <dest>` for `restore_command`. Serves complete
//! segments, `.history` and `.backup` files; for a segment the archive holds
//! only as pieces (`repo::wal_pieces`: the streamer's, or an older
//! `.partial`), their contiguous prefix padded with zeros (replay stops at
//! its end). A gap among the pieces is a warning naming the segment and the
//! missing bytes; nothing after it is served. A name the archive does not hold is `NotFound`: the CLI
//! exits 1 quietly, because PostgreSQL asks past the end on purpose.
//!
//! After serving a segment, a detached `pgtide wal prefetch` process fetches
//! the next segments into a spool directory (`pg_wal/pgtide-prefetch` when run
//! from a data directory), so replay does not wait on one object at a time.
//!
//! Requests (the bill): a segment in the spool costs none (the CLI serves it
//! before opening the repository); a complete segment, history or `.backup`
//! file from the archive costs one GET, besides opening the repository
//! (S3: HeadBucket; the marker's GET; an encrypted one's key objects). No
//! HEAD before the GET, no listing, not even the cluster record: the
//! object's key does not depend on the segment size. The prefetcher makes
//! one GET per segment it spools, and one more for the first segment the
//! archive does not hold yet.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::WalJobError;
use crate::pg::lsn::{parse_segment_name, segment_name};
use crate::pipeline::Compression;
use crate::repo::wal_archive::{classify, WalArchive, WalName};
use crate::repo::Repository;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// Served from the spool or the repository.
    Served {
        partial: bool,
    },
    NotFound,
}

/// Any segment name valid for some segment size is valid for the smallest
/// (1 MiB), so this size classifies names and builds keys for every
/// cluster without reading its record.
const SMALLEST_SEGMENT: u64 = 1 << 20;

async fn archive(repo: &Repository) -> Result<Option<WalArchive>, WalJobError> {
    Ok(repo
        .cluster()
        .await?
        .map(|c| repo.wal_archive(c.wal_segment_size, Compression::None)))
}

/// Write `data` to `dest` through a temporary file in the same directory.
async fn write_file(dest: &Path, data: &[u8]) -> Result<(), WalJobError> {
    let tmp = dest.with_file_name(format!(
        ".{}.pgtide-tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal")
    ));
    tokio::fs::write(&tmp, data)
        .await
        .map_err(WalJobError::io(format!("write {}", tmp.display())))?;
    tokio::fs::rename(&tmp, dest)
        .await
        .map_err(WalJobError::io(format!(
            "rename {} to {}",
            tmp.display(),
            dest.display()
        )))
}

/// The default spool: `pg_wal/pgtide-prefetch` when the current directory is
/// a data directory (restore_command runs there).
pub fn default_spool() -> Option<PathBuf> {
    let pg_wal = Path::new("pg_wal");
    pg_wal.is_dir().then(|| pg_wal.join("pgtide-prefetch"))
}

/// Serve segment `name` from the prefetch spool, if it is there: no
/// request at all (called before the repository is opened).
pub async fn from_spool(name: &str, dest: &Path, spool: Option<&Path>) -> bool {
    let is_segment = matches!(
        classify(name, SMALLEST_SEGMENT),
        Some(WalName::Segment { .. })
    );
    let Some(spool) = spool.filter(|_| is_segment) else {
        return false;
    };
    if tokio::fs::rename(spool.join(name), dest).await.is_ok() {
        tracing::debug!(%name, "served from the prefetch spool");
        return true;
    }
    false
}

pub async fn fetch(
    repo: &Repository,
    name: &str,
    dest: &Path,
    spool: Option<&Path>,
) -> Result<Fetched, WalJobError> {
    crate::jobs::panic_point("wal-fetch");
    if from_spool(name, dest, spool).await {
        return Ok(Fetched::Served { partial: false });
    }
    // One GET: the key does not depend on the segment size.
    let any = repo.wal_archive(SMALLEST_SEGMENT, Compression::None);
    if let Some(data) = any.fetch(name).await? {
        write_file(dest, &data).await?;
        return Ok(Fetched::Served { partial: false });
    }
    let Some(archive) = archive(repo).await? else {
        return Ok(Fetched::NotFound);
    };
    let is_segment = matches!(
        classify(name, archive.seg_size()),
        Some(WalName::Segment { .. })
    );
    if is_segment {
        if let Some(data) = archive.fetch_partial(name).await? {
            let mut full = data.to_vec();
            full.resize(archive.seg_size() as usize, 0);
            write_file(dest, &full).await?;
            tracing::info!(%name, bytes = data.len(), "served a partial segment");
            return Ok(Fetched::Served { partial: true });
        }
    }
    Ok(Fetched::NotFound)
}

/// The `count` segment names after `name` on the same timeline.
pub fn next_segments(name: &str, seg_size: u64, count: u64) -> Vec<String> {
    match parse_segment_name(name, seg_size) {
        Some((tli, segno)) => (1..=count)
            .map(|i| segment_name(tli, segno + i, seg_size))
            .collect(),
        None => Vec::new(),
    }
}

/// Fetch the segments after `after` into `spool` (run detached). Stops at the
/// first segment the archive does not hold. One prefetcher per spool at a
/// time (a lock file younger than 10 minutes means another is running).
pub async fn prefetch(
    repo: &Repository,
    after: &str,
    spool: &Path,
    count: u64,
) -> Result<u64, WalJobError> {
    let Some(archive) = archive(repo).await? else {
        return Ok(0);
    };
    tokio::fs::create_dir_all(spool)
        .await
        .map_err(WalJobError::io(format!("create {}", spool.display())))?;
    let lock = spool.join(".lock");
    if let Ok(meta) = std::fs::metadata(&lock) {
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        if age < Duration::from_secs(600) {
            return Ok(0);
        }
        let _ = std::fs::remove_file(&lock);
    }
    if std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock)
        .is_err()
    {
        return Ok(0);
    }
    let result = async {
        // Segments replay has moved past are not needed any more.
        if let Ok(mut rd) = tokio::fs::read_dir(spool).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                let n = e.file_name().to_string_lossy().to_string();
                if n.len() == 24 && n.as_str() <= after {
                    let _ = tokio::fs::remove_file(e.path()).await;
                }
            }
        }
        let mut got = 0;
        for name in next_segments(after, archive.seg_size(), count) {
            let path = spool.join(&name);
            if path.exists() {
                continue;
            }
            match archive.fetch(&name).await? {
                Some(data) => {
                    write_file(&path, &data).await?;
                    got += 1;
                }
                None => break,
            }
        }
        Ok::<u64, WalJobError>(got)
    }
    .await;
    let _ = std::fs::remove_file(&lock);
    result
}

/// Start a detached `pgtide wal prefetch` for the segments after `name`.
/// `secret_args` are the key flags (`--identity F`, `--passphrase-file F`)
/// of an encrypted repository.
pub fn spawn_prefetcher(
    repo_url: &str,
    name: &str,
    spool: &Path,
    count: u64,
    secret_args: &[String],
) {
    let Ok(exe) = crate::jobs::pgtide_executable() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["wal", "prefetch", "--repo", repo_url, "--spool"])
        .arg(spool)
        .args(["--count", &count.to_string(), name])
        .args(secret_args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: PostgreSQL's signals to restore_command's
        // group do not reach it, and it outlives this process.
        cmd.process_group(0);
    }
    if let Err(e) = cmd.spawn() {
        tracing::warn!("could not start the WAL prefetcher: {e}");
    }
}
