//! A `Storage` wrapper that records every object written and every write
//! that replaced an object already there, for the test that proves no job
//! rewrites an object once written (`tests/it/object_lock.rs`). It adds
//! nothing else: every call goes to the wrapped driver, after a `size` of
//! the key for writes (so it doubles their requests: a test tool, not for
//! production paths).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{DynStorage, ObjectMeta, ObjectWriter, Retention, Storage, StorageError};

/// What an [`Audited`] store saw, shared by every handle made from it.
#[derive(Debug, Default)]
pub struct WriteLog {
    inner: Mutex<Log>,
}

#[derive(Debug, Default)]
struct Log {
    writes: Vec<String>,
    overwrites: Vec<String>,
}

impl WriteLog {
    /// Keys written, in order (a key twice when written twice).
    pub fn writes(&self) -> Vec<String> {
        self.inner.lock().expect("log lock").writes.clone()
    }

    /// Keys written while an object was already there under that key.
    pub fn overwrites(&self) -> Vec<String> {
        self.inner.lock().expect("log lock").overwrites.clone()
    }

    fn record(&self, key: &str, existed: bool) {
        let mut l = self.inner.lock().expect("log lock");
        l.writes.push(key.to_string());
        if existed {
            l.overwrites.push(key.to_string());
        }
    }
}

#[derive(Debug)]
pub struct Audited {
    inner: DynStorage,
    log: Arc<WriteLog>,
}

impl Audited {
    pub fn wrap(inner: DynStorage, log: Arc<WriteLog>) -> DynStorage {
        Arc::new(Audited { inner, log })
    }
}

async fn exists(s: &DynStorage, key: &str) -> Result<bool, StorageError> {
    match s.size(key).await {
        Ok(_) => Ok(true),
        Err(StorageError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

struct AuditedWriter {
    inner: Box<dyn ObjectWriter>,
    storage: DynStorage,
    key: String,
    log: Arc<WriteLog>,
}

#[async_trait]
impl ObjectWriter for AuditedWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.inner.write(data).await
    }

    async fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        let existed = exists(&self.storage, &self.key).await?;
        let n = self.inner.finish().await?;
        self.log.record(&self.key, existed);
        Ok(n)
    }

    async fn abort(self: Box<Self>) -> Result<(), StorageError> {
        self.inner.abort().await
    }
}

#[async_trait]
impl Storage for Audited {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let existed = exists(&self.inner, key).await?;
        self.inner.put(key, data).await?;
        self.log.record(key, existed);
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let existed = exists(&self.inner, key).await?;
        // A refusal (`AlreadyExists`) wrote nothing.
        self.inner.put_if_absent(key, data).await?;
        self.log.record(key, existed);
        Ok(())
    }

    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        Ok(Box::new(AuditedWriter {
            inner: self.inner.writer(key).await?,
            storage: self.inner.clone(),
            key: key.to_string(),
            log: self.log.clone(),
        }))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        self.inner.get(key).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        self.inner.get_range(key, offset, len).await
    }

    async fn size(&self, key: &str) -> Result<u64, StorageError> {
        self.inner.size(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.inner.list(prefix).await
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        self.inner.list_after(prefix, start_after).await
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        self.inner.delete_many(keys).await
    }

    async fn check_retention(&self) -> Result<(), StorageError> {
        self.inner.check_retention().await
    }

    fn with_retention(&self, retention: Retention) -> Result<DynStorage, StorageError> {
        Ok(Audited::wrap(
            self.inner.with_retention(retention)?,
            self.log.clone(),
        ))
    }

    fn without_retention(&self) -> Option<DynStorage> {
        Some(Audited::wrap(
            self.inner.without_retention()?,
            self.log.clone(),
        ))
    }

    async fn retained_until(&self, key: &str) -> Result<Option<DateTime<Utc>>, StorageError> {
        self.inner.retained_until(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_writes_over_existing_objects_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(WriteLog::default());
        let s = Audited::wrap(
            Arc::new(super::super::LocalFs::new(dir.path())),
            log.clone(),
        );
        s.put_if_absent("a", Bytes::from_static(b"1"))
            .await
            .unwrap();
        assert!(matches!(
            s.put_if_absent("a", Bytes::from_static(b"2")).await,
            Err(StorageError::AlreadyExists { .. })
        ));
        s.put("b", Bytes::from_static(b"1")).await.unwrap();
        s.put("b", Bytes::from_static(b"2")).await.unwrap();
        let mut w = s.writer("c").await.unwrap();
        w.write(Bytes::from_static(b"x")).await.unwrap();
        w.finish().await.unwrap();
        let mut w = s.writer("a").await.unwrap();
        w.write(Bytes::from_static(b"y")).await.unwrap();
        w.finish().await.unwrap();
        // Deleted, then written again: a new object, not an overwrite.
        s.delete_many(&["c".to_string()]).await.unwrap();
        s.put_if_absent("c", Bytes::from_static(b"z"))
            .await
            .unwrap();
        assert_eq!(log.writes(), ["a", "b", "b", "c", "a", "c"]);
        assert_eq!(log.overwrites(), ["b", "a"]);
    }
}
