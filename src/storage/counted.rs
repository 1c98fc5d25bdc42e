//! A `Storage` wrapper that counts calls by kind, for the daemon's
//! `pgtide_storage_requests_total{op}`. It adds nothing else: every call
//! goes straight to the wrapped driver. Counts are per call of the trait
//! (a multipart upload is one `upload`); retries inside a driver are counted
//! by the driver (`retries`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use chrono::{DateTime, Utc};

use super::{DynStorage, ObjectMeta, ObjectWriter, Retention, Storage, StorageError};

/// The operations counted, in the order of `StorageCounters::snapshot`.
pub const OPS: [&str; 8] = [
    "put",
    "put_if_absent",
    "upload",
    "get",
    "get_range",
    "size",
    "list",
    "delete",
];

#[derive(Debug, Default)]
pub struct StorageCounters {
    calls: [AtomicU64; 8],
    errors: AtomicU64,
}

impl StorageCounters {
    fn count(&self, op: usize) {
        self.calls[op].fetch_add(1, Ordering::Relaxed);
    }

    fn result<T>(&self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if r.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// (op, calls) for every op.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        OPS.iter()
            .zip(&self.calls)
            .map(|(op, n)| (*op, n.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct Counted {
    inner: DynStorage,
    counters: Arc<StorageCounters>,
}

impl Counted {
    pub fn wrap(inner: DynStorage, counters: Arc<StorageCounters>) -> DynStorage {
        Arc::new(Counted { inner, counters })
    }
}

#[async_trait]
impl Storage for Counted {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.counters.count(0);
        self.counters.result(self.inner.put(key, data).await)
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.counters.count(1);
        let r = self.inner.put_if_absent(key, data).await;
        // A refused create-if-absent is an answer, not a failure.
        if matches!(r, Err(StorageError::AlreadyExists { .. })) {
            return r;
        }
        self.counters.result(r)
    }

    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.counters.count(2);
        self.counters.result(self.inner.writer(key).await)
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.counters.count(3);
        let r = self.inner.get(key).await;
        if matches!(r, Err(StorageError::NotFound { .. })) {
            return r;
        }
        self.counters.result(r)
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        self.counters.count(4);
        self.counters
            .result(self.inner.get_range(key, offset, len).await)
    }

    async fn size(&self, key: &str) -> Result<u64, StorageError> {
        self.counters.count(5);
        self.inner.size(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.counters.count(6);
        self.counters.result(self.inner.list(prefix).await)
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        self.counters.count(6);
        self.counters
            .result(self.inner.list_after(prefix, start_after).await)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        self.counters.count(7);
        self.counters.result(self.inner.delete_many(keys).await)
    }

    async fn check_retention(&self) -> Result<(), StorageError> {
        self.inner.check_retention().await
    }

    fn with_retention(&self, retention: Retention) -> Result<DynStorage, StorageError> {
        let inner = self.inner.with_retention(retention)?;
        Ok(Counted::wrap(inner, self.counters.clone()))
    }

    fn without_retention(&self) -> Option<DynStorage> {
        let inner = self.inner.without_retention()?;
        Some(Counted::wrap(inner, self.counters.clone()))
    }

    async fn retained_until(&self, key: &str) -> Result<Option<DateTime<Utc>>, StorageError> {
        // A HEAD request, like `size`.
        self.counters.count(5);
        self.inner.retained_until(key).await
    }
}
