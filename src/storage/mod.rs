//! Object storage: the `Storage` trait, its written contract, and the drivers
//! (`LocalFs`, `S3`, `Azure`, `Gcs`). A driver moves opaque bytes under string keys; it never
//! knows what a table, a chunk or a manifest is. Keys are `/`-separated relative
//! paths (`dumps/20261123T060000Z-1a2b/packs/0-0.pack`), never starting with `/`.

pub mod azure;
mod cloud;
pub mod counted;
pub mod gcs;
pub mod local;
pub mod s3;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

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

    /// Delete objects; missing keys are not an error.
    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError>;
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
