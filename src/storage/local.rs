//! Local directory driver. Every object is written to a temporary file in the
//! target directory, fsync'd, renamed into place, and the directory fsync'd, so
//! an object is either whole and durable or absent. Temporary files carry the
//! suffix `.pgtide-tmp` and are never listed. Finished objects are read-only
//! (mode 0444, set before the rename): nothing is ever rewritten in place, and
//! a stray write by another tool fails. A `put` over an existing object (the
//! writer lock's heartbeat) renames a new file over it, and deleting unlinks,
//! neither of which needs write permission on the file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::requests::{count, count_n, Kind};
use super::{ObjectMeta, ObjectWriter, Storage, StorageError};

const TMP_SUFFIX: &str = ".pgtide-tmp";

#[derive(Debug, Clone)]
pub struct LocalFs {
    root: PathBuf,
}

impl LocalFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalFs { root: root.into() }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }
}

fn io_err(op: &'static str, key: &str, source: std::io::Error) -> StorageError {
    if source.kind() == std::io::ErrorKind::NotFound {
        StorageError::NotFound {
            key: key.to_string(),
        }
    } else {
        StorageError::Io {
            op,
            key: key.to_string(),
            source,
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{:016x}{}", fastrand::u64(..), TMP_SUFFIX));
    path.with_file_name(name)
}

/// Make a finished file read-only (0444) before it is renamed into place.
fn make_read_only(f: &std::fs::File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o444))
    }
    // Elsewhere a read-only file cannot be deleted or replaced: leave it.
    #[cfg(not(unix))]
    {
        let _ = f;
        Ok(())
    }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    // Remember the first ancestor that exists, create the rest, then make every
    // new directory entry durable by fsyncing its parent.
    let mut existing = parent;
    while !existing.is_dir() {
        match existing.parent() {
            Some(up) => existing = up,
            None => break,
        }
    }
    std::fs::create_dir_all(parent)?;
    let mut dir = parent;
    while let Some(up) = dir.parent() {
        fsync_dir(if up.as_os_str().is_empty() {
            Path::new(".")
        } else {
            up
        })?;
        if up == existing {
            break;
        }
        dir = up;
    }
    Ok(())
}

/// Write `data` to `path` crash-safely; with `exclusive`, fail if it exists.
fn write_atomic(path: &Path, data: &[u8], exclusive: bool) -> std::io::Result<()> {
    create_parent(path)?;
    let tmp = tmp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        make_read_only(&f)?;
        f.sync_all()?;
        drop(f);
        if exclusive {
            // link(2) fails with EEXIST instead of replacing: atomic create-if-absent.
            std::fs::hard_link(&tmp, path)?;
            std::fs::remove_file(&tmp)?;
        } else {
            std::fs::rename(&tmp, path)?;
        }
        fsync_dir(path.parent().unwrap_or(Path::new(".")))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Io {
            op: "run",
            key: String::new(),
            source: std::io::Error::other(e),
        })
}

#[async_trait]
impl Storage for LocalFs {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        count(Kind::Put);
        let path = self.path(key);
        let k = key.to_string();
        blocking(move || write_atomic(&path, &data, false))
            .await?
            .map_err(|e| io_err("write", &k, e))
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        count(Kind::Put);
        let path = self.path(key);
        let k = key.to_string();
        blocking(move || write_atomic(&path, &data, true))
            .await?
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    StorageError::AlreadyExists { key: k }
                } else {
                    io_err("write", &k, e)
                }
            })
    }

    async fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let path = self.path(key);
        let k = key.to_string();
        let (file, tmp) = blocking(move || -> std::io::Result<_> {
            create_parent(&path)?;
            let tmp = tmp_path(&path);
            let f = std::fs::File::create(&tmp)?;
            Ok((f, tmp))
        })
        .await?
        .map_err(|e| io_err("create", &k, e))?;
        Ok(Box::new(LocalWriter {
            key: k,
            path: self.path(key),
            tmp,
            file: Some(file),
            size: 0,
            batch: Vec::new(),
        }))
    }

    async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        count(Kind::Get);
        let path = self.path(key);
        let k = key.to_string();
        blocking(move || std::fs::read(path))
            .await?
            .map(Bytes::from)
            .map_err(|e| io_err("read", &k, e))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, StorageError> {
        count(Kind::Get);
        let path = self.path(key);
        let k = key.to_string();
        blocking(move || -> std::io::Result<Bytes> {
            let mut f = std::fs::File::open(path)?;
            let size = f.metadata()?.len();
            if offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("range {offset}+{len} is past the end of the object ({size} bytes)"),
                ));
            }
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf)?;
            Ok(Bytes::from(buf))
        })
        .await?
        .map_err(|e| io_err("read", &k, e))
    }

    async fn size(&self, key: &str) -> Result<u64, StorageError> {
        count(Kind::Head);
        let path = self.path(key);
        let k = key.to_string();
        blocking(move || std::fs::metadata(path).map(|m| m.len()))
            .await?
            .map_err(|e| io_err("stat", &k, e))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let p = prefix.clone();
        blocking(move || -> std::io::Result<Vec<ObjectMeta>> {
            // Walk only the directory that can hold the prefix.
            let dir_part = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let mut out = Vec::new();
            let start = root.join(dir_part);
            if !start.is_dir() {
                // An empty listing is still a listing.
                count(Kind::List);
                return Ok(out);
            }
            let mut stack = vec![start];
            while let Some(dir) = stack.pop() {
                // One directory read: the local form of a listing page.
                count(Kind::List);
                for entry in std::fs::read_dir(&dir)? {
                    let entry = entry?;
                    let ft = entry.file_type()?;
                    let path = entry.path();
                    let rel = match path.strip_prefix(&root) {
                        Ok(r) => r.to_string_lossy().replace('\\', "/"),
                        Err(_) => continue,
                    };
                    if ft.is_dir() {
                        if prefix.starts_with(&rel) || rel.starts_with(&prefix) || prefix.is_empty()
                        {
                            stack.push(path);
                        }
                    } else if ft.is_file() && rel.starts_with(&prefix) && !rel.ends_with(TMP_SUFFIX)
                    {
                        out.push(ObjectMeta {
                            key: rel,
                            size: entry.metadata()?.len(),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await?
        .map_err(|e| io_err("list", &p, e))
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        // One removal per key: the local form of a delete request.
        count_n(Kind::Delete, keys.len() as u64);
        let paths: Vec<(String, PathBuf)> =
            keys.iter().map(|k| (k.clone(), self.path(k))).collect();
        blocking(move || -> Result<(), StorageError> {
            let mut dirs = std::collections::BTreeSet::new();
            for (k, p) in paths {
                match std::fs::remove_file(&p) {
                    Ok(()) => {
                        if let Some(d) = p.parent() {
                            dirs.insert(d.to_path_buf());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("delete", &k, e)),
                }
            }
            for d in dirs {
                let _ = fsync_dir(&d);
            }
            Ok(())
        })
        .await?
    }
}

struct LocalWriter {
    key: String,
    path: PathBuf,
    tmp: PathBuf,
    file: Option<std::fs::File>,
    size: u64,
    /// Small writes copied together, so that a pack of many small chunks
    /// costs few trips to the blocking pool (copied, not kept as `Bytes`: a
    /// small compressed chunk can pin a much larger allocation).
    batch: Vec<u8>,
}

/// Batched bytes that trigger a write; larger writes go straight through.
const WRITE_BATCH: usize = 1 << 20;

impl LocalWriter {
    /// Write the batch, then `extra`. A failure poisons the writer: it can
    /// no longer finish, so a pack with a hole is never made visible.
    async fn flush(&mut self, extra: Option<Bytes>) -> Result<(), StorageError> {
        if self.batch.is_empty() && extra.is_none() {
            return Ok(());
        }
        let mut file = self.file.take().ok_or_else(|| StorageError::Io {
            op: "write",
            key: self.key.clone(),
            source: std::io::Error::other("writer already failed"),
        })?;
        let batch = std::mem::take(&mut self.batch);
        let (file, batch, res) = blocking(move || {
            let r = file
                .write_all(&batch)
                .and_then(|()| extra.map_or(Ok(()), |b| file.write_all(&b)));
            (file, batch, r)
        })
        .await?;
        res.map_err(|e| io_err("write", &self.key, e))?;
        self.file = Some(file);
        self.batch = batch;
        self.batch.clear();
        Ok(())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[async_trait]
impl ObjectWriter for LocalWriter {
    async fn write(&mut self, data: Bytes) -> Result<(), StorageError> {
        if self.file.is_none() {
            return Err(StorageError::Io {
                op: "write",
                key: self.key.clone(),
                source: std::io::Error::other("writer already failed"),
            });
        }
        let len = data.len() as u64;
        if data.len() >= WRITE_BATCH {
            self.flush(Some(data)).await?;
        } else {
            self.batch.extend_from_slice(&data);
            if self.batch.len() >= WRITE_BATCH {
                self.flush(None).await?;
            }
        }
        self.size += len;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        self.flush(None).await?;
        let file = self.file.take().ok_or_else(|| StorageError::Io {
            op: "finish",
            key: self.key.clone(),
            source: std::io::Error::other("writer already failed"),
        })?;
        let (tmp, path) = (self.tmp.clone(), self.path.clone());
        let res = blocking(move || -> std::io::Result<()> {
            make_read_only(&file)?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, &path)?;
            fsync_dir(path.parent().unwrap_or(Path::new(".")))
        })
        .await?;
        // The file made visible: one put, however many writes filled it.
        count(Kind::Put);
        if let Err(e) = res {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(io_err("finish", &self.key, e));
        }
        Ok(self.size)
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.file.take();
        let _ = std::fs::remove_file(&self.tmp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn finished_objects_are_read_only_and_still_replaced_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalFs::new(dir.path());
        s.put_if_absent("a/one", Bytes::from_static(b"1"))
            .await
            .unwrap();
        s.put("a/two", Bytes::from_static(b"2")).await.unwrap();
        let mut w = s.writer("a/three").await.unwrap();
        w.write(Bytes::from_static(b"3")).await.unwrap();
        w.finish().await.unwrap();
        #[cfg(unix)]
        for k in ["a/one", "a/two", "a/three"] {
            assert_eq!(mode(&dir.path().join(k)), 0o444, "{k}");
        }
        // `put` replaces by rename (the writer lock's heartbeat), and
        // deleting unlinks: neither needs write permission on the file.
        s.put("a/two", Bytes::from_static(b"22")).await.unwrap();
        assert_eq!(s.get("a/two").await.unwrap(), Bytes::from_static(b"22"));
        s.delete_many(&["a/one".into(), "a/two".into(), "a/three".into()])
            .await
            .unwrap();
        assert!(s.list("").await.unwrap().is_empty());
    }
}
