//! Chunks → pack objects. A `PackWriter` cuts a byte stream into chunks,
//! compresses up to `in_flight` of them at once on the blocking pool, and
//! appends the stored frames, in order, to its current pack object. Packs are
//! closed at `pack_size`; every chunk yields a `ChunkRef` for the manifest.
//! Several writers (one per worker) share one `PackSet`, which numbers packs.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::codec::{self, Encoded};
use super::{PipelineConfig, PipelineError};
use crate::repo::manifest::{ChunkRef, PackInfo};
use crate::storage::{DynStorage, ObjectWriter};

/// The packs of one dump or backup: their keys, numbered in creation order.
#[derive(Debug, Clone)]
pub struct PackSet {
    storage: DynStorage,
    prefix: String,
    packs: Arc<Mutex<Vec<PackInfo>>>,
}

impl PackSet {
    /// `prefix` is the key prefix packs are created under (`dumps/<id>/packs/`).
    pub fn new(storage: DynStorage, prefix: impl Into<String>) -> Self {
        PackSet {
            storage,
            prefix: prefix.into(),
            packs: Arc::default(),
        }
    }

    fn allocate(&self) -> (u32, String) {
        let mut packs = self.packs.lock().expect("pack list lock");
        let index = packs.len() as u32;
        let key = format!("{}{:06}.pack", self.prefix, index);
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

/// What one stream became.
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    pub chunks: Vec<ChunkRef>,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// `\n` bytes seen: the row count of a COPY text stream.
    pub newlines: u64,
}

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
}

impl PackWriter {
    pub fn new(set: PackSet, cfg: PipelineConfig) -> Self {
        PackWriter {
            set,
            cfg,
            open: None,
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
        };
        open.offset += r.stored_len;
        open.writer.write(e.data).await?;
        if open.offset >= self.cfg.pack_size {
            self.close_pack().await?;
        }
        Ok(r)
    }

    async fn close_pack(&mut self) -> Result<(), PipelineError> {
        if let Some(open) = self.open.take() {
            let size = open.writer.finish().await?;
            self.set.set_size(open.index, size);
        }
        Ok(())
    }

    /// Close the current pack: every chunk appended so far is durable.
    pub async fn finish(mut self) -> Result<(), PipelineError> {
        self.close_pack().await
    }

    /// Drop the current pack without making it visible.
    pub async fn abort(mut self) {
        if let Some(open) = self.open.take() {
            let _ = open.writer.abort().await;
        }
    }

    /// Store a whole byte stream as a sequence of chunks. Reading the source,
    /// compressing and uploading overlap; at most `in_flight` chunks are being
    /// compressed and one is being filled.
    pub async fn write_stream<S, E>(&mut self, mut input: S) -> Result<StreamInfo, PipelineError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let chunk_size = self.cfg.chunk_size.max(1);
        let compression = self.cfg.compression;
        let in_flight = self.cfg.in_flight.max(1);
        let mut info = StreamInfo::default();
        let mut buf = BytesMut::with_capacity(chunk_size);
        let mut pending: VecDeque<tokio::task::JoinHandle<Result<Encoded, PipelineError>>> =
            VecDeque::new();
        let mut done = false;
        while !done {
            match input.next().await {
                Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                Some(Err(e)) => {
                    for h in pending {
                        h.abort();
                    }
                    return Err(PipelineError::Source(e.to_string()));
                }
                None => done = true,
            }
            while buf.len() >= chunk_size || (done && !buf.is_empty()) {
                let n = buf.len().min(chunk_size);
                let raw = buf.split_to(n).freeze();
                if buf.capacity() < chunk_size {
                    buf.reserve(chunk_size);
                }
                pending.push_back(tokio::task::spawn_blocking(move || {
                    codec::encode(&raw, compression)
                }));
                while pending.len() > in_flight {
                    let h = pending.pop_front().expect("pending not empty");
                    self.take(h, &mut info).await?;
                }
            }
        }
        while let Some(h) = pending.pop_front() {
            self.take(h, &mut info).await?;
        }
        Ok(info)
    }

    async fn take(
        &mut self,
        h: tokio::task::JoinHandle<Result<Encoded, PipelineError>>,
        info: &mut StreamInfo,
    ) -> Result<(), PipelineError> {
        let e = h
            .await
            .map_err(|e| PipelineError::Codec(format!("worker thread failed: {e}")))??;
        info.raw_bytes += e.raw_len;
        info.stored_bytes += e.data.len() as u64;
        info.newlines += e.newlines;
        let r = self.append(e).await?;
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
