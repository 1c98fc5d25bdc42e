//! Records of what the daemon ran: one small immutable object per finished
//! run (`runs/<kind>/<UTC time>-<random>.json`), so that `status` on any
//! host, and a daemon started on a new host, know the last success and
//! failure of each kind without the old process. Only the newest
//! `KEEP_PER_KIND` records of a kind are kept. Records are informative,
//! never needed to restore, and pruned: they carry no Object Lock retention.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{layout, RepoError, Repository};

/// How many records of each kind stay in the repository.
pub const KEEP_PER_KIND: usize = 50;

/// The kinds of runs, as in the metrics' `kind` label.
pub const KINDS: &[&str] = &["full", "dump", "expire", "wal", "slot", "drill", "copy"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// `full` (physical backup), `dump`, `expire`, `wal` (the stream
    /// stopped or failed), `slot` (the slot guard acted), `drill` (a
    /// restore drill; `id` is the backup or dump it proved, or failed to),
    /// `copy` (sets and WAL copied into a copy repository; `message` names it).
    pub kind: String,
    pub ok: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
    /// Bytes stored (backups and dumps), bytes freed (expire).
    #[serde(default)]
    pub bytes: u64,
    /// The backup or dump id the run made, if any.
    #[serde(default)]
    pub id: Option<String>,
    /// What started it: `schedule`, `http`, `startup`, `cli`.
    #[serde(default)]
    pub trigger: String,
    /// One line; never holds a secret (the daemon redacts before writing).
    #[serde(default)]
    pub message: Option<String>,
    /// The database, for dumps.
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub host: String,
}

impl Repository {
    /// Store a finished run and drop the oldest records of its kind beyond
    /// `KEEP_PER_KIND`.
    pub async fn record_run(&self, r: &RunRecord) -> Result<(), RepoError> {
        let key = format!(
            "{}{}/{}-{:08x}.json",
            layout::RUNS,
            r.kind,
            r.finished_at.format("%Y%m%dT%H%M%S%.3fZ"),
            fastrand::u32(..)
        );
        let body = Bytes::from(serde_json::to_vec_pretty(r).expect("run record serializes"));
        self.unretained_storage().put_if_absent(&key, body).await?;
        let keys = self.run_keys(&r.kind).await?;
        if keys.len() > KEEP_PER_KIND {
            let old: Vec<String> = keys[..keys.len() - KEEP_PER_KIND].to_vec();
            self.unretained_storage().delete_many(&old).await?;
        }
        Ok(())
    }

    async fn run_keys(&self, kind: &str) -> Result<Vec<String>, RepoError> {
        let mut keys: Vec<String> = self
            .storage()
            .list(&format!("{}{kind}/", layout::RUNS))
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with(".json"))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// The newest runs of `kind`, newest first, at most `n`. Damaged records
    /// are skipped with a warning.
    pub async fn recent_runs(&self, kind: &str, n: usize) -> Result<Vec<RunRecord>, RepoError> {
        let keys = self.run_keys(kind).await?;
        let mut out = Vec::new();
        for key in keys.iter().rev().take(n) {
            match self.storage().get(key).await {
                Ok(b) => match serde_json::from_slice(&b) {
                    Ok(r) => out.push(r),
                    // Handled here: a record is informative, never needed.
                    Err(e) => tracing::warn!("skipping the damaged run record {key}: {e}"),
                },
                Err(crate::storage::StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// The newest success and the newest failure of `kind`.
    pub async fn last_runs(
        &self,
        kind: &str,
    ) -> Result<(Option<RunRecord>, Option<RunRecord>), RepoError> {
        let runs = self.recent_runs(kind, KEEP_PER_KIND).await?;
        let ok = runs.iter().find(|r| r.ok).cloned();
        let failed = runs.iter().find(|r| !r.ok).cloned();
        Ok((ok, failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: &str, ok: bool, secs: i64) -> RunRecord {
        let t = DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap();
        RunRecord {
            kind: kind.into(),
            ok,
            started_at: t,
            finished_at: t,
            seconds: 1.0,
            bytes: 10,
            id: None,
            trigger: "schedule".into(),
            message: None,
            database: None,
            host: "h".into(),
        }
    }

    #[tokio::test]
    async fn newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::open(dir.path().to_str().unwrap(), true)
            .await
            .unwrap();
        for i in 0..(KEEP_PER_KIND as i64 + 5) {
            repo.record_run(&run("full", i % 7 != 3, i)).await.unwrap();
        }
        repo.record_run(&run("dump", true, 0)).await.unwrap();
        let recent = repo.recent_runs("full", 1000).await.unwrap();
        assert_eq!(recent.len(), KEEP_PER_KIND);
        assert!(recent[0].finished_at > recent[1].finished_at);
        let (ok, failed) = repo.last_runs("full").await.unwrap();
        assert_eq!(
            ok.unwrap().finished_at.timestamp(),
            1_790_000_000 + KEEP_PER_KIND as i64 + 4
        );
        assert!(!failed.unwrap().ok);
        assert_eq!(repo.recent_runs("dump", 10).await.unwrap().len(), 1);
        assert!(repo.last_runs("expire").await.unwrap().0.is_none());
    }
}
