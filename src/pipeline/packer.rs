//! Chunks → pack objects. A `PackWriter` cuts a byte stream into chunks,
//! compresses up to `in_flight` of them at once on the blocking pool, and
//! appends the stored frames, in order, to its current pack object. Packs are
//! closed at `pack_size`; every chunk yields a `ChunkRef` for the manifest.
//! Several writers (one per worker) share one `PackSet`, which numbers packs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::{PipelineConfig, PipelineError};
use crate::chunk::codec::{self, CompressError, Encoded};
use crate::chunk::{ChunkRef, Compression, PackInfo, StreamInfo};
use crate::crypt::ChunkCipher;
use crate::storage::{DynStorage, ObjectWriter};

/// The key of each pack of a set, by its number: given by the repository
/// (`repo::layout`), which alone spells keys.
pub type PackKeys = Arc<dyn Fn(u32) -> String + Send + Sync>;

/// The packs of one dump or backup: their keys, numbered in creation order.
#[derive(Clone)]
pub struct PackSet {
    storage: DynStorage,
    keys: PackKeys,
    packs: Arc<Mutex<Vec<PackInfo>>>,
    gate: Arc<Gate>,
    /// Encrypted sets: seals each frame as its number in the set.
    cipher: Option<ChunkCipher>,
    /// The last chunk number given (encrypted sets).
    seq: Arc<std::sync::atomic::AtomicU64>,
}

/// The background work of a pack set (packs being closed, and the cleanup
/// of packs whose writer was dropped), tracked so that [`PackSet::settle`]
/// can wait for all of it.
#[derive(Default)]
struct Gate {
    /// Set by `settle`: no pack may start closing after it.
    settled: Mutex<bool>,
    tasks: tokio_util::task::TaskTracker,
}

impl std::fmt::Debug for PackSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackSet")
            .field("first_key", &(self.keys)(0))
            .field("packs", &self.packs)
            .finish()
    }
}

impl PackSet {
    /// `keys` names pack N (`dumps/<id>/packs/00000N.pack`).
    pub fn new(storage: DynStorage, keys: PackKeys) -> Self {
        PackSet {
            storage,
            keys,
            packs: Arc::default(),
            gate: Arc::default(),
            cipher: None,
            seq: Arc::default(),
        }
    }

    /// Seal every frame with `cipher` (`None`: a plain set).
    pub fn with_cipher(mut self, cipher: Option<ChunkCipher>) -> Self {
        self.cipher = cipher;
        self
    }

    /// Stops the set: no pack starts closing after this, and every pack that
    /// was closing (or being cleaned up) is done when it returns. A job that
    /// failed or was interrupted settles its packs before it removes what
    /// it wrote, so that nothing appears after the removal.
    pub async fn settle(&self) {
        *self.gate.settled.lock().expect("pack gate lock") = true;
        self.gate.tasks.close();
        self.gate.tasks.wait().await;
    }

    /// Runs `f` in the background, tracked, unless the set is settled.
    fn spawn_tracked<F>(&self, f: F) -> Option<tokio::task::JoinHandle<F::Output>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let settled = self.gate.settled.lock().expect("pack gate lock");
        (!*settled).then(|| self.gate.tasks.spawn(f))
    }

    fn allocate(&self) -> (u32, String) {
        let mut packs = self.packs.lock().expect("pack list lock");
        let index = packs.len() as u32;
        let key = (self.keys)(index);
        packs.push(PackInfo {
            key: key.clone(),
            size: 0,
        });
        (index, key)
    }

    fn set_size(&self, index: u32, size: u64) {
        self.packs.lock().expect("pack list lock")[index as usize].size = size;
    }

    /// The packs created so far (the manifest's `packs`).
    pub fn packs(&self) -> Vec<PackInfo> {
        self.packs.lock().expect("pack list lock").clone()
    }

    pub fn storage(&self) -> &DynStorage {
        &self.storage
    }
}

/// Compress a chunk and, in an encrypted set, seal it as chunk `seq`
/// (CPU work, on the blocking pool for big chunks). A sealed chunk records
/// no CRC of its plaintext (it would leak it; the tag authenticates it).
fn encode(
    raw: &[u8],
    compression: Compression,
    seal: Option<(ChunkCipher, u64)>,
) -> Result<Encoded, CompressError> {
    let e = codec::encode(raw, compression)?;
    let Some((cipher, seq)) = seal else {
        return Ok(e);
    };
    let data = Bytes::from(cipher.seal(seq, e.raw_len, &e.data));
    Ok(Encoded {
        crc_stored: crc32fast::hash(&data),
        data,
        crc_raw: 0,
        seq,
        ..e
    })
}

/// A stream being written with `PackWriter::push`.
pub struct StreamState {
    buf: BytesMut,
    pending: VecDeque<Pending>,
    info: StreamInfo,
}

/// A chunk being encoded on the blocking pool, or a small one encoded in
/// place.
enum Pending {
    Spawned(tokio::task::JoinHandle<Result<Encoded, CompressError>>),
    Ready(Result<Encoded, CompressError>),
}

/// Chunks up to this size (at fast levels) are encoded on the calling thread: handing them to
/// the blocking pool costs more (two thread wake-ups) than compressing them.
/// The tail of every file of a base backup, and most files, are this small.
const INLINE_MAX: usize = 64 << 10;

struct OpenPack {
    index: u32,
    writer: Box<dyn ObjectWriter>,
    offset: u64,
}

/// Appends chunks to packs of a `PackSet`. Not shared between tasks: each
/// worker owns one, so its chunks land in order and packs fill sequentially.
pub struct PackWriter {
    set: PackSet,
    cfg: PipelineConfig,
    open: Option<OpenPack>,
    /// The previous pack, being made durable (fsync, multipart completion)
    /// while the next one fills.
    closing: Option<Closing>,
}

struct Closing {
    key: String,
    task: tokio::task::JoinHandle<Result<(), PipelineError>>,
}

impl Drop for PackWriter {
    /// Dropped on an error path without `finish` or `abort`: a pack still
    /// closing would appear after the caller cleaned up, so remove it once
    /// it has closed.
    fn drop(&mut self) {
        let Some(c) = self.closing.take() else {
            return;
        };
        let storage = self.set.storage.clone();
        if tokio::runtime::Handle::try_current().is_ok() {
            // Tracked even after `settle` began: it only deletes.
            self.set.gate.tasks.spawn(async move {
                if let Ok(Ok(())) = c.task.await {
                    let _ = storage.delete_many(&[c.key]).await;
                }
            });
        }
    }
}

impl PackWriter {
    pub fn new(set: PackSet, cfg: PipelineConfig) -> Self {
        PackWriter {
            set,
            cfg,
            open: None,
            closing: None,
        }
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    async fn append(&mut self, e: Encoded) -> Result<ChunkRef, PipelineError> {
        if self.open.is_none() {
            let (index, key) = self.set.allocate();
            let writer = self.set.storage.writer(&key).await?;
            self.open = Some(OpenPack {
                index,
                writer,
                offset: 0,
            });
        }
        let open = self.open.as_mut().expect("pack is open");
        let r = ChunkRef {
            pack: open.index,
            offset: open.offset,
            stored_len: e.data.len() as u64,
            raw_len: e.raw_len,
            crc_raw: e.crc_raw,
            crc_stored: e.crc_stored,
            seq: e.seq,
        };
        open.offset += r.stored_len;
        open.writer.write(e.data).await?;
        if open.offset >= self.cfg.pack_size {
            self.close_pack().await?;
        }
        Ok(r)
    }

    /// Start making the open pack durable in the background; at most one
    /// pack closes at a time, so memory stays bounded.
    async fn close_pack(&mut self) -> Result<(), PipelineError> {
        self.wait_closing().await?;
        if let Some(open) = self.open.take() {
            let set = self.set.clone();
            let key = set.packs.lock().expect("pack list lock")[open.index as usize]
                .key
                .clone();
            let closing = self.set.spawn_tracked(async move {
                let size = open.writer.finish().await?;
                set.set_size(open.index, size);
                Ok(())
            });
            // Settled: the job is stopping; the pack is dropped unwritten.
            let task = closing.ok_or(PipelineError::Stopped)?;
            self.closing = Some(Closing { key, task });
        }
        Ok(())
    }

    async fn wait_closing(&mut self) -> Result<(), PipelineError> {
        match self.closing.take() {
            Some(c) => c
                .task
                .await
                .map_err(|e| PipelineError::Codec(format!("closing a pack failed: {e}")))?,
            None => Ok(()),
        }
    }

    /// Close the current pack: every chunk appended so far is durable.
    pub async fn finish(mut self) -> Result<(), PipelineError> {
        self.close_pack().await?;
        self.wait_closing().await
    }

    /// Drop the current pack without making it visible (a pack already
    /// closing is waited for, so nothing is written after the caller
    /// cleans up).
    pub async fn abort(mut self) {
        let _ = self.wait_closing().await;
        if let Some(open) = self.open.take() {
            let _ = open.writer.abort().await;
        }
    }

    /// Start a stream fed with `push` (for callers that receive bytes, such
    /// as a tar parser); finish it with `end_stream`.
    pub fn begin_stream(&self) -> StreamState {
        StreamState {
            buf: BytesMut::new(),
            pending: VecDeque::new(),
            info: StreamInfo::default(),
        }
    }

    /// Add bytes to a stream. Waits while `in_flight` chunks are being
    /// compressed (back-pressure), so memory stays bounded.
    pub async fn push(&mut self, st: &mut StreamState, data: &[u8]) -> Result<(), PipelineError> {
        let chunk_size = self.cfg.chunk_size.max(1);
        st.buf.extend_from_slice(data);
        while st.buf.len() >= chunk_size {
            let raw = st.buf.split_to(chunk_size).freeze();
            // The next chunk of a stream this long gets its whole buffer at
            // once, not one grown by doubling (a copy at every step).
            st.buf.reserve(chunk_size - st.buf.len().min(chunk_size));
            self.submit(st, raw).await?;
        }
        Ok(())
    }

    fn spawn_encode(&self, raw: Bytes) -> Pending {
        let compression = self.cfg.compression;
        let cheap = match compression {
            Compression::None => true,
            Compression::Zstd(level) => level <= 3,
        };
        // Encrypted sets: the chunk's number, given in stream order.
        let seal = self.set.cipher.clone().map(|c| {
            let seq = self
                .set
                .seq
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            (c, seq)
        });
        if cheap && raw.len() <= INLINE_MAX {
            return Pending::Ready(encode(&raw, compression, seal));
        }
        Pending::Spawned(tokio::task::spawn_blocking(move || {
            encode(&raw, compression, seal)
        }))
    }

    async fn submit(&mut self, st: &mut StreamState, raw: Bytes) -> Result<(), PipelineError> {
        st.pending.push_back(self.spawn_encode(raw));
        while st.pending.len() > self.cfg.in_flight.max(1) {
            let h = st.pending.pop_front().expect("pending not empty");
            self.collect(h, &mut st.info).await?;
        }
        Ok(())
    }

    /// Flush the last partial chunk and wait for every chunk of the stream.
    pub async fn end_stream(&mut self, mut st: StreamState) -> Result<StreamInfo, PipelineError> {
        if !st.buf.is_empty() {
            let raw = std::mem::take(&mut st.buf).freeze();
            self.submit(&mut st, raw).await?;
        }
        while let Some(h) = st.pending.pop_front() {
            self.collect(h, &mut st.info).await?;
        }
        Ok(st.info)
    }

    /// Store a whole byte stream as a sequence of chunks. Reading the source,
    /// compressing and uploading overlap; at most `in_flight` chunks are being
    /// compressed and one is being filled.
    pub async fn write_stream<S, E>(&mut self, mut input: S) -> Result<StreamInfo, PipelineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut st = self.begin_stream();
        while let Some(item) = input.next().await {
            match item {
                Ok(bytes) => self.push(&mut st, &bytes).await?,
                Err(e) => {
                    for p in st.pending {
                        if let Pending::Spawned(h) = p {
                            h.abort();
                        }
                    }
                    return Err(PipelineError::Source(e.to_string()));
                }
            }
        }
        self.end_stream(st).await
    }

    /// Wait for one compressed chunk and append it to the pack.
    async fn collect(&mut self, p: Pending, info: &mut StreamInfo) -> Result<(), PipelineError> {
        let e = match p {
            Pending::Spawned(h) => h
                .await
                .map_err(|e| PipelineError::Codec(format!("worker thread failed: {e}")))?
                .map_err(PipelineError::from)?,
            Pending::Ready(r) => r.map_err(PipelineError::from)?,
        };
        info.raw_bytes += e.raw_len;
        info.newlines += e.newlines;
        let r = self.append(e).await?;
        info.stored_bytes += r.stored_len;
        info.chunks.push(r);
        Ok(())
    }

    /// Store one in-memory buffer as a stream (small metadata such as a
    /// large object's contents piece).
    pub async fn write_bytes(&mut self, data: Bytes) -> Result<StreamInfo, PipelineError> {
        let s = futures::stream::iter([Ok::<_, std::convert::Infallible>(data)]);
        self.write_stream(s).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;

    use super::*;
    use crate::pipeline::{ChunkReader, Compression};
    use crate::storage::local::LocalFs;

    /// Many streams, chunks of every size around the inline limit, packs
    /// closed every few KiB (in the background): every byte reads back, and
    /// every pack's recorded size is its size on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_read_back_across_many_packs() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(LocalFs::new(dir.path()));
        let key = crate::crypt::DataKey::generate().unwrap();
        for (compression, sealed) in [
            (Compression::None, false),
            (Compression::Zstd(1), false),
            (Compression::Zstd(1), true),
        ] {
            let cipher = sealed.then(|| crate::crypt::ChunkCipher::new(&key, "set"));
            let prefix = format!("{compression}-{sealed}/packs/");
            let set = PackSet::new(
                storage.clone(),
                Arc::new(move |i| format!("{prefix}{i:06}.pack")),
            )
            .with_cipher(cipher.clone());
            let cfg = PipelineConfig {
                chunk_size: INLINE_MAX + 1000,
                compression,
                in_flight: 2,
                pack_size: 100_000,
            };
            let mut w = PackWriter::new(set.clone(), cfg);
            let mut written = Vec::new();
            for n in 0..40usize {
                let len = n * 9_000 + n % 7;
                // Half random (stores as is), half repetitive (compresses).
                let mut rng = fastrand::Rng::with_seed(n as u64);
                let data: Vec<u8> = (0..len)
                    .map(|i| if i % 2 == 0 { rng.u8(..) } else { b'x' })
                    .collect();
                let mut st = w.begin_stream();
                for piece in data.chunks(5_000 + n) {
                    w.push(&mut st, piece).await.unwrap();
                }
                let info = w.end_stream(st).await.unwrap();
                assert_eq!(info.raw_bytes, len as u64);
                written.push((data, info));
            }
            w.finish().await.unwrap();
            let packs = set.packs();
            assert!(packs.len() > 3, "{} packs", packs.len());
            for p in &packs {
                let on_disk = std::fs::metadata(dir.path().join(&p.key)).unwrap().len();
                assert_eq!(p.size, on_disk, "{}", p.key);
            }
            let reader = ChunkReader::new(storage.clone(), Arc::new(packs), compression, 3)
                .with_cipher(cipher.clone());
            if sealed {
                // Without the key the frames are not zstd frames at all.
                let plain =
                    ChunkReader::new(storage.clone(), Arc::new(set.packs()), compression, 1);
                let c = written[1].1.chunks[0];
                assert!(plain.read_chunk(&c).await.is_err());
                assert_eq!(c.crc_raw, 0, "no CRC of the plaintext is recorded");
                assert!(c.seq > 0, "sealed chunks are numbered");
            }
            for (data, info) in written {
                let mut back = Vec::new();
                let mut s = reader.stream(info.chunks.clone());
                while let Some(c) = s.next().await {
                    back.extend_from_slice(&c.unwrap());
                }
                assert_eq!(back, data);
            }
        }
    }
}
