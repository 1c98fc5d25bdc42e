//! Object storage: the `Storage` trait, its written contract, and the drivers
//! (`LocalFs`, `S3`, `Azure`, `Gcs`). A driver moves opaque bytes under string keys; it never
//! knows what a table, a chunk or a manifest is. Keys are `/`-separated relative
//! paths (`dumps/20261123T060000Z-1a2b/packs/0-0.pack`), never starting with `/`.

pub mod audit;
pub mod azure;
mod cloud;
pub mod counted;
pub mod gcs;
pub mod local;
pub mod requests;
pub mod s3;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use azure::{Azure, AzureOptions};
pub use gcs::{Gcs, GcsOptions};
pub use local::LocalFs;
pub use s3::{S3Options, S3};

/// What can go wrong talking to a store. Every variant names the key or bucket.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object {key} not found")]
    NotFound { key: String },
    /// `noun` is what the store calls it: `bucket` (S3, GCS) or `container` (Azure).
    #[error("{noun} {bucket} does not exist (create it, or check the {noun} name in --repo)")]
    BucketNotFound { noun: &'static str, bucket: String },
    #[error("access denied to {what}: check the credentials and the bucket policy")]
    AccessDenied { what: String },
    #[error("object {key} already exists")]
    AlreadyExists { key: String },
    #[error("{op} {key}: {source}")]
    Io {
        op: &'static str,
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {key}: {message}")]
    Service {
        op: &'static str,
        key: String,
        message: String,
        retryable: bool,
    },
    #[error("invalid repository location {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    /// The store cannot keep objects under retention (a local directory, or
    /// a bucket without Object Lock).
    #[error("Object Lock retention is not available on {location}: {reason}")]
    RetentionUnsupported { location: String, reason: String },
    /// A delete met an object version under Object Lock retention (or a
    /// legal hold): it was left in place.
    #[error("object {key} is under Object Lock retention{}: it cannot be deleted before then", until.map(|t| format!(" until {}", t.format("%Y-%m-%dT%H:%M:%SZ"))).unwrap_or_default())]
    Retained {
        key: String,
        until: Option<DateTime<Utc>>,
    },
}

impl StorageError {
    /// True when the same call may succeed if tried again later (timeouts,
    /// throttling, 5xx, connection resets). NotFound and AccessDenied never are.
    pub fn is_retryable(&self) -> bool {
        match self {
            StorageError::Service { retryable, .. } => *retryable,
            StorageError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// Object Lock mode of the retention a store puts on objects. Governance:
/// principals with `s3:BypassGovernanceRetention` may still delete early;
/// compliance: nobody can, not even the account's root, until the date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionMode {
    Governance,
    Compliance,
}

impl RetentionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RetentionMode::Governance => "governance",
            RetentionMode::Compliance => "compliance",
        }
    }
}

/// The retention every object written through a handle made by
/// [`Storage::with_retention`] carries: `mode`, until at least `period`
/// after the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub mode: RetentionMode,
    pub period: std::time::Duration,
}

impl Retention {
    /// The retain-until date of an object written at `at`: `at + period`,
    /// rounded up to the whole second (stores keep seconds).
    pub fn until(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let period = chrono::TimeDelta::from_std(self.period).unwrap_or(chrono::TimeDelta::MAX);
        let t = at
            .checked_add_signed(period)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let whole = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
        DateTime::from_timestamp(whole, 0).unwrap_or(t)
    }
}

/// The contract every driver keeps (proven by `tests/it/storage_conformance.rs`):
///
/// - Objects appear whole or not at all: a reader never sees a partially written
///   object, including after a crash or a cancelled writer.
/// - `put` replaces an existing object atomically; the repository layer never
///   relies on that except for its own immutable-once-written rules.
/// - `get`/`get_range`/`size` of a missing key return `StorageError::NotFound`.
/// - `delete` of a missing key succeeds.
/// - `list` is recursive, returns every key under the prefix sorted by key,
///   and never returns objects still being written.
///
/// Object Lock (S3 Object Lock, Azure version-level immutability, GCS
/// object retention; the methods below have defaults for stores without
/// it): a handle made by `with_retention` writes every object (`put`,
/// `put_if_absent`, `writer`) with the retention asked, and its
/// `delete_many` removes every *version* (generation) of each key, so that
/// no data stays behind in a versioned bucket; a version still under
/// retention is left and reported as `Retained`, never bypassed.
/// `without_retention` gives the same store without retention on writes
/// (for objects that are rewritten or removed by design), deleting the same
/// way.
#[async_trait]
pub trait Storage: Send + Sync + fmt::Debug {
    /// Where this store points, for messages (`/var/backups`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// Store a whole object.
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError>;

    /// Store a whole object only if no object exists under `key`.
    /// Returns `AlreadyExists` otherwise. Used for locks and the repository marker.
    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError>;

    /// Open a streaming writer. Nothing is visible under `key` until
    /// `ObjectWriter::finish` returns Ok; `abort` (or dropping the writer)
    /// leaves no object and cleans up what it can.
    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;

    /// Read a whole object.
    async fn get(&self, key: &str) -> Result<Bytes, StorageError>;

    /// Read `len` bytes at `offset`. A range past the end of the object is an
    /// error (`Service`/`Io` with the key), never a short read.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StorageError>;

    /// Size of an object.
    async fn size(&self, key: &str) -> Result<u64, StorageError>;

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Every object whose key starts with `prefix` and sorts after
    /// `start_after` (strictly), sorted by key. S3 asks the store for only
    /// those (`StartAfter`: requests in proportion to what is returned);
    /// the default lists the prefix and filters.
    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut v = self.list(prefix).await?;
        v.retain(|o| o.key.as_str() > start_after);
        Ok(v)
    }

    /// Delete objects; missing keys are not an error.
    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError>;

    /// Check that this store can keep objects under retention: for S3, that
    /// the bucket has Object Lock enabled and no default retention rule (a
    /// default rule would lock the objects pgtide must be able to remove);
    /// for Azure and GCS, the same in their terms.
    async fn check_retention(&self) -> Result<(), StorageError> {
        Err(StorageError::RetentionUnsupported {
            location: self.location(),
            reason: "this store keeps no retention; use an S3 bucket with Object Lock, an Azure container with version-level immutability or a GCS bucket with object retention".into(),
        })
    }

    /// A handle on the same store whose writes carry `retention` (see the
    /// trait's documentation). Does not talk to the store.
    fn with_retention(&self, retention: Retention) -> Result<DynStorage, StorageError> {
        let _ = retention;
        Err(StorageError::RetentionUnsupported {
            location: self.location(),
            reason: "this store keeps no retention; use an S3 bucket with Object Lock, an Azure container with version-level immutability or a GCS bucket with object retention".into(),
        })
    }

    /// The same store without retention on writes; `None` when this handle
    /// writes none already (use [`unretained`]).
    fn without_retention(&self) -> Option<DynStorage> {
        None
    }

    /// When the retention of the object at `key` ends; `None` when it has
    /// none (or the store keeps none). `NotFound` when it does not exist.
    async fn retained_until(&self, key: &str) -> Result<Option<DateTime<Utc>>, StorageError> {
        self.size(key).await.map(|_| None)
    }
}

/// The longest common prefix of `keys` (at a char boundary).
pub(crate) fn common_prefix<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let mut it = keys.into_iter();
    let Some(first) = it.next() else {
        return String::new();
    };
    let mut len = first.len();
    for k in it {
        len = first
            .bytes()
            .zip(k.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
    }
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    first[..len].to_string()
}

/// The listing prefixes that cover `keys` with few extra objects: one per
/// parent "folder", the common prefix of that folder's keys. For stores that
/// find an object's versions by listing.
pub(crate) fn group_prefixes<'a>(keys: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut groups: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for k in keys {
        let parent = k.rsplit_once('/').map_or("", |(p, _)| p);
        groups.entry(parent).or_default().push(k);
    }
    groups
        .into_values()
        .map(|g| common_prefix(g.iter().copied()))
        .collect()
}

/// `storage` without retention on writes: for objects that are rewritten or
/// removed by design (the writer lock, deletion markers, run records, WAL
/// partials).
pub fn unretained(storage: &DynStorage) -> DynStorage {
    storage
        .without_retention()
        .unwrap_or_else(|| storage.clone())
}

/// A streaming upload. Memory held is bounded by the driver's part size ×
/// parts in flight, whatever the object size.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Append bytes. May wait for earlier parts to be stored (back-pressure).
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError>;
    /// Make the object durable and visible; returns its size.
    async fn finish(self: Box<Self>) -> Result<u64, StorageError>;
    /// Give up: nothing becomes visible.
    async fn abort(self: Box<Self>) -> Result<(), StorageError>;
}

pub type DynStorage = Arc<dyn Storage>;

/// Requests a driver sent again after a retryable failure (timeouts,
/// throttling, 5xx), process-wide; the S3 driver's SDK retries are counted
/// here. For the daemon's `pgtide_storage_retries_total`.
pub static RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Open a store from a repository location: a path, `file:///path`,
/// `s3://bucket/prefix?endpoint=…&region=…&path_style=true`,
/// `az://container/prefix?account=…` or `gs://bucket/prefix`.
pub async fn open(url: &str) -> Result<DynStorage, StorageError> {
    let bad = |reason: String| StorageError::BadUrl {
        url: url.to_string(),
        reason,
    };
    if let Some(rest) = url.strip_prefix("s3://") {
        let opts = S3Options::parse(rest).map_err(bad)?;
        return Ok(Arc::new(S3::connect(opts).await?));
    }
    if let Some(rest) = url.strip_prefix("az://") {
        let opts = AzureOptions::parse(rest).map_err(bad)?;
        return Ok(Arc::new(Azure::connect(opts).await?));
    }
    if let Some(rest) = url.strip_prefix("gs://") {
        let opts = GcsOptions::parse(rest).map_err(bad)?;
        return Ok(Arc::new(Gcs::connect(opts).await?));
    }
    let path = if let Some(p) = url.strip_prefix("file://") {
        p
    } else if url.contains("://") {
        return Err(StorageError::BadUrl {
            url: url.to_string(),
            reason: "use a path, file:///path, s3://bucket/prefix, az://container/prefix or gs://bucket/prefix"
                .into(),
        });
    } else {
        url
    };
    if path.is_empty() {
        return Err(StorageError::BadUrl {
            url: url.to_string(),
            reason: "empty path".into(),
        });
    }
    Ok(Arc::new(LocalFs::new(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_of_keys() {
        assert_eq!(common_prefix(["a/b/c1", "a/b/c2", "a/b/d"]), "a/b/");
        assert_eq!(common_prefix(["a/b/c1"]), "a/b/c1");
        assert_eq!(common_prefix(["x", "y"]), "");
        assert_eq!(common_prefix(["é1", "é2"]), "é");
        assert_eq!(common_prefix(Vec::<&str>::new()), "");
    }

    #[test]
    fn one_listing_prefix_per_folder() {
        assert_eq!(
            group_prefixes(["p/wal/a1", "p/wal/a2", "p/b/x", "top"]),
            vec!["top", "p/b/x", "p/wal/a"]
        );
        assert!(group_prefixes(Vec::<&str>::new()).is_empty());
    }

    #[test]
    fn retain_until_is_the_write_time_plus_the_period_rounded_up() {
        let r = Retention {
            mode: RetentionMode::Governance,
            period: std::time::Duration::from_secs(14 * 86_400),
        };
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            r.until(at("2026-12-06T03:00:00Z")),
            at("2026-12-20T03:00:00Z")
        );
        assert_eq!(
            r.until(at("2026-12-06T03:00:00.001Z")),
            at("2026-12-20T03:00:01Z")
        );
        let huge = Retention {
            period: std::time::Duration::from_secs(u64::MAX),
            ..r
        };
        assert_eq!(
            huge.until(at("2026-12-06T03:00:00Z")),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
