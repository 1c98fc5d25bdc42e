//! The repository's writer lock: one object (`locks/writer.json`) created
//! only if absent, kept alive by a heartbeat, taken over when its holder
//! stops heart-beating. `backup`, `dump`, `expire` and the daemon hold it;
//! readers never need it. It works the same on every store that has a
//! create-if-absent write (local files: `O_EXCL`-style rename; S3:
//! `If-None-Match: *`), so two hosts sharing a bucket exclude each other.
//!
//! Rules:
//! - A lock whose heartbeat is older than `stale_after` (by the reader's
//!   clock: keep `stale_after` well above any clock skew) may be taken over.
//! - A lock held by a process of this host that no longer exists (a
//!   SIGKILLed daemon started again) is taken over at once: the pid is
//!   recorded with the process's start time, so a reused pid is not
//!   mistaken for the holder.
//! - Taking over is delete + create-if-absent, then a read-back after a
//!   short pause: of two processes racing for a stale lock, at most one
//!   finds its own token and proceeds.
//! - The lock object is the one object pgtide rewrites (each heartbeat puts
//!   it again); it never carries Object Lock retention.
//! - The holder checks its token at every heartbeat; when another process
//!   holds the object (the holder stalled for longer than `stale_after`), it
//!   reports the lock as lost and must stop writing.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{layout, RepoError, Repository};
use crate::storage::{DynStorage, StorageError};

/// What the lock object says about its holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockInfo {
    pub host: String,
    pub pid: u32,
    /// Start time of the process (clock ticks since boot, from /proc), to
    /// tell a reused pid from the holder. 0 when unknown.
    #[serde(default)]
    pub process_start: u64,
    /// What holds it: `daemon`, `backup`, `dump`, `expire`.
    pub purpose: String,
    pub since: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Random; tells this holder's object from a successor's.
    pub token: String,
}

impl LockInfo {
    /// `pgtide daemon (pid 4242 on db1, since 2026-12-06T10:00:00Z, last heartbeat 3 s ago)`
    pub fn describe(&self, now: DateTime<Utc>) -> String {
        let age = (now - self.heartbeat_at).num_seconds().max(0);
        format!(
            "pgtide {} (pid {} on {}, since {}, last heartbeat {age} s ago)",
            self.purpose,
            self.pid,
            self.host,
            self.since.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }
}

/// How long to wait between taking a stale lock and reading it back.
const SETTLE: Duration = Duration::from_millis(500);

/// Timings of the lock.
#[derive(Debug, Clone, Copy)]
pub struct LockTimings {
    pub heartbeat: Duration,
    pub stale_after: Duration,
}

impl Default for LockTimings {
    fn default() -> Self {
        LockTimings {
            heartbeat: Duration::from_secs(10),
            stale_after: Duration::from_secs(120),
        }
    }
}

/// A held lock. Dropping it stops the heartbeat; `release` also removes
/// the object (a dropped lock goes stale and is taken over later, or at
/// once by a process of the same host).
#[derive(Debug)]
pub struct RepoLock {
    storage: DynStorage,
    info: LockInfo,
    stop: CancellationToken,
    lost: CancellationToken,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl RepoLock {
    /// Take the writer lock of `repo` for `purpose`, or fail with
    /// `RepoError::Locked` naming the holder.
    pub async fn acquire(
        repo: &Repository,
        purpose: &str,
        timings: LockTimings,
    ) -> Result<RepoLock, RepoError> {
        // The lock is rewritten by every heartbeat and removed on release:
        // never under Object Lock retention.
        let storage = repo.unretained_storage().clone();
        let me = this_process();
        let now = Utc::now();
        let info = LockInfo {
            host: me.host.clone(),
            pid: me.pid,
            process_start: me.start,
            purpose: purpose.to_string(),
            since: now,
            heartbeat_at: now,
            token: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        };
        let body = Bytes::from(serde_json::to_vec_pretty(&info).expect("lock serializes"));
        for _ in 0..5 {
            match storage.put_if_absent(layout::LOCK, body.clone()).await {
                Ok(()) => return Ok(RepoLock::held(storage, info, timings)),
                Err(StorageError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let holder = match read(&storage).await? {
                // Removed in between: try again.
                None => continue,
                Some(Err(reason)) => {
                    // Unreadable: nothing in it can be trusted, and nothing
                    // else would ever remove it.
                    tracing::warn!(
                        "taking over the damaged lock object {}: {reason}",
                        layout::LOCK
                    );
                    None
                }
                Some(Ok(h)) => Some(h),
            };
            if let Some(h) = &holder {
                match staleness(h, &me, Utc::now(), timings.stale_after) {
                    Staleness::Live => {
                        return Err(RepoError::Locked {
                            location: repo.location(),
                            holder: h.describe(Utc::now()),
                        })
                    }
                    // Expected after a kill: not worth a warning.
                    Staleness::Dead => tracing::info!(
                        "taking over the lock of {}: that process no longer runs",
                        h.describe(Utc::now())
                    ),
                    Staleness::Stale => {
                        tracing::warn!("taking over the stale lock of {}", h.describe(Utc::now()))
                    }
                }
            }
            storage.delete_many(&[layout::LOCK.to_string()]).await?;
            match storage.put_if_absent(layout::LOCK, body.clone()).await {
                Ok(()) => {}
                Err(StorageError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            // Another taker may have deleted the stale object after we read
            // it and before we wrote ours: whoever's token is there after
            // the pause holds the lock.
            tokio::time::sleep(SETTLE).await;
            match read(&storage).await? {
                Some(Ok(h)) if h.token == info.token => {
                    return Ok(RepoLock::held(storage, info, timings))
                }
                Some(Ok(h)) => {
                    return Err(RepoError::Locked {
                        location: repo.location(),
                        holder: h.describe(Utc::now()),
                    })
                }
                _ => continue,
            }
        }
        Err(RepoError::Locked {
            location: repo.location(),
            holder: "another process (the lock changed hands five times while being taken)".into(),
        })
    }

    /// The lock just taken, its heartbeat running.
    fn held(storage: DynStorage, info: LockInfo, timings: LockTimings) -> RepoLock {
        let mut lock = RepoLock {
            storage,
            info,
            stop: CancellationToken::new(),
            lost: CancellationToken::new(),
            heartbeat: None,
        };
        lock.start_heartbeat(timings.heartbeat);
        lock
    }

    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Cancelled when another process took the lock over: stop writing.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    fn start_heartbeat(&mut self, every: Duration) {
        let storage = self.storage.clone();
        let mut info = self.info.clone();
        let stop = self.stop.clone();
        let lost = self.lost.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                match read(&storage).await {
                    Ok(Some(Ok(h))) if h.token == info.token => {}
                    Ok(Some(Ok(h))) => {
                        // Handled here: the owner of `lost` stops its writers.
                        tracing::error!(
                            "lost the repository lock to {}: stopping",
                            h.describe(Utc::now())
                        );
                        lost.cancel();
                        return;
                    }
                    Ok(_) => {
                        tracing::error!("the repository lock object disappeared: stopping");
                        lost.cancel();
                        return;
                    }
                    Err(e) => {
                        // A store outage: keep trying; the lock goes stale
                        // for others only after `stale_after`.
                        tracing::warn!("could not check the repository lock: {e}");
                        continue;
                    }
                }
                info.heartbeat_at = Utc::now();
                let body = Bytes::from(serde_json::to_vec_pretty(&info).expect("lock serializes"));
                if let Err(e) = storage.put(layout::LOCK, body).await {
                    tracing::warn!("could not renew the repository lock: {e}");
                }
            }
        }));
    }

    /// Stop the heartbeat and remove the lock object if it is still ours.
    pub async fn release(mut self) -> Result<(), RepoError> {
        self.stop.cancel();
        if let Some(h) = self.heartbeat.take() {
            let _ = h.await;
        }
        if let Some(Ok(h)) = read(&self.storage).await? {
            if h.token == self.info.token {
                self.storage
                    .delete_many(&[layout::LOCK.to_string()])
                    .await?;
            }
        }
        Ok(())
    }
}

impl Drop for RepoLock {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The lock object: `None` when absent, `Some(Err)` when unreadable.
async fn read(storage: &DynStorage) -> Result<Option<Result<LockInfo, String>>, RepoError> {
    match storage.get(layout::LOCK).await {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| e.to_string()))),
        Err(StorageError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Who holds the lock now, if anyone (for `status`).
pub async fn holder(repo: &Repository) -> Result<Option<LockInfo>, RepoError> {
    Ok(read(repo.storage()).await?.and_then(Result::ok))
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Process {
    host: String,
    pid: u32,
    start: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Staleness {
    Live,
    /// Its heartbeat is older than `stale_after`.
    Stale,
    /// Its process is gone (same host).
    Dead,
}

/// Whether `h` may be taken over by `me` at `now`. Pure but for the
/// process check of a holder on this host.
fn staleness(h: &LockInfo, me: &Process, now: DateTime<Utc>, stale_after: Duration) -> Staleness {
    if h.host == me.host && h.pid != me.pid && !process_alive(h.pid, h.process_start) {
        return Staleness::Dead;
    }
    let age = (now - h.heartbeat_at).to_std().unwrap_or(Duration::ZERO);
    if age > stale_after {
        Staleness::Stale
    } else {
        Staleness::Live
    }
}

fn this_process() -> Process {
    let pid = std::process::id();
    Process {
        host: hostname(),
        pid,
        start: process_start(pid).unwrap_or(0),
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time since boot.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn process_alive(pid: u32, start: u64) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(p, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    match (start, process_start(pid)) {
        (0, _) | (_, None) => true,
        (recorded, Some(now)) => recorded == now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(host: &str, pid: u32, beat: DateTime<Utc>) -> LockInfo {
        LockInfo {
            host: host.into(),
            pid,
            process_start: 0,
            purpose: "daemon".into(),
            since: beat,
            heartbeat_at: beat,
            token: "t".into(),
        }
    }

    #[test]
    fn stale_by_heartbeat_or_by_a_dead_local_process() {
        let now = Utc::now();
        let me = this_process();
        let minute = Duration::from_secs(60);
        let other_host = info("elsewhere", 1, now - chrono::Duration::seconds(30));
        assert_eq!(staleness(&other_host, &me, now, minute), Staleness::Live);
        let old = info("elsewhere", 1, now - chrono::Duration::seconds(61));
        assert_eq!(staleness(&old, &me, now, minute), Staleness::Stale);
        // A pid of this host that does not exist (pid_max is below 2^22).
        let dead = info(&me.host, 4_194_304 + 17, now);
        assert_eq!(staleness(&dead, &me, now, minute), Staleness::Dead);
        // Our own parent is alive.
        let parent = info(&me.host, std::os::unix::process::parent_id(), now);
        assert_eq!(staleness(&parent, &me, now, minute), Staleness::Live);
        // A live pid whose start time differs is a reused pid.
        let mut reused = parent.clone();
        reused.process_start = process_start(reused.pid).unwrap() + 1;
        assert_eq!(staleness(&reused, &me, now, minute), Staleness::Dead);
    }

    #[test]
    fn describe_names_the_holder() {
        let t = DateTime::parse_from_rfc3339("2026-12-06T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = info("db1", 4242, t).describe(t + chrono::Duration::seconds(3));
        assert_eq!(
            s,
            "pgtide daemon (pid 4242 on db1, since 2026-12-06T10:00:00Z, last heartbeat 3 s ago)"
        );
    }

    #[tokio::test]
    async fn second_writer_is_refused_and_a_dead_holder_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open(dir.path().to_str().unwrap(), true)
            .await
            .unwrap();
        let t = LockTimings::default();
        let first = RepoLock::acquire(&repo, "daemon", t).await.unwrap();
        let e = RepoLock::acquire(&repo, "backup", t).await.unwrap_err();
        let m = e.to_string();
        assert!(m.contains("is locked by pgtide daemon (pid"), "{m}");
        first.release().await.unwrap();
        let second = RepoLock::acquire(&repo, "backup", t).await.unwrap();
        drop(second);
        // A lock left by a process of this host that is gone.
        let me = this_process();
        let dead = LockInfo {
            pid: 4_194_304 + 17,
            ..info(&me.host, 0, Utc::now())
        };
        repo.storage()
            .put(layout::LOCK, serde_json::to_vec(&dead).unwrap().into())
            .await
            .unwrap();
        let third = RepoLock::acquire(&repo, "daemon", t).await.unwrap();
        assert_eq!(
            holder(&repo).await.unwrap().unwrap().token,
            third.info().token
        );
        third.release().await.unwrap();
        assert!(holder(&repo).await.unwrap().is_none());
    }
}
