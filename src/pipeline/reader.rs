//! Restore direction: manifest chunk references → ranged reads → checks of the
//! stored CRC → decompression on the blocking pool → checks of length and raw
//! CRC. Yields the original bytes in order, with at most `prefetch` chunks in
//! memory. Every mismatch is an error naming the pack and offset.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::{cpu, PipelineError};
use crate::chunk::codec;
use crate::chunk::{ChunkRef, Compression, PackInfo};
use crate::crypt::ChunkCipher;
use crate::storage::DynStorage;

/// The largest chunk `--chunk-size` allows.
pub const MAX_CHUNK: usize = 256 << 20;

#[derive(Debug, Clone)]
pub struct ChunkReader {
    storage: DynStorage,
    packs: Arc<Vec<PackInfo>>,
    compression: Compression,
    prefetch: usize,
    /// Encrypted sets: opens each frame before it is decoded.
    cipher: Option<ChunkCipher>,
}

impl ChunkReader {
    pub fn new(
        storage: DynStorage,
        packs: Arc<Vec<PackInfo>>,
        compression: Compression,
        prefetch: usize,
    ) -> Self {
        ChunkReader {
            storage,
            packs,
            compression,
            prefetch: prefetch.max(1),
            cipher: None,
        }
    }

    /// Read an encrypted set (`None`: a plain one).
    pub fn with_cipher(mut self, cipher: Option<ChunkCipher>) -> Self {
        self.cipher = cipher;
        self
    }

    /// Fetch, check and decode one chunk.
    pub async fn read_chunk(&self, c: &ChunkRef) -> Result<Bytes, PipelineError> {
        let stored = self.fetch(c).await?;
        self.check_raw_len(c)?;
        let (me, c2) = (self.clone(), *c);
        cpu(move || {
            let mut out = vec![0u8; c2.raw_len as usize];
            let n = me.decode_into(&c2, &stored, &mut out)?;
            out.truncate(n);
            Ok(Bytes::from(out))
        })
        .await?
    }

    /// The stored bytes of one chunk, not yet checked.
    pub async fn fetch(&self, c: &ChunkRef) -> Result<Bytes, PipelineError> {
        let pack = self.pack(c)?;
        if c.offset
            .checked_add(c.stored_len)
            .is_none_or(|end| end > pack.size)
        {
            return Err(PipelineError::Corrupt {
                pack: pack.key.clone(),
                offset: c.offset,
                kind: codec::CorruptKind::StoredLen {
                    expected: c.stored_len,
                    found: pack.size.saturating_sub(c.offset),
                },
            });
        }
        Ok(self
            .storage
            .get_range(&pack.key, c.offset, c.stored_len)
            .await?)
    }

    /// Check and decode fetched bytes into `out` (CPU work: call it off the
    /// reactor). Returns the raw length.
    pub fn decode_into(
        &self,
        c: &ChunkRef,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<usize, PipelineError> {
        let decoded = match &self.cipher {
            None => codec::decode_into(
                stored,
                c.stored_len,
                c.crc_stored,
                c.raw_len,
                c.crc_raw,
                self.compression,
                out,
            ),
            Some(cipher) => {
                codec::check_stored(stored, c.stored_len, c.crc_stored).and_then(|()| {
                    let frame = cipher
                        .open(c.seq, c.raw_len, stored)
                        .map_err(|_| codec::CorruptKind::Auth)?;
                    codec::decode_frame_into(&frame, c.raw_len, None, self.compression, out)
                })
            }
        };
        decoded.map_err(|kind| PipelineError::Corrupt {
            pack: self
                .packs
                .get(c.pack as usize)
                .map(|p| p.key.clone())
                .unwrap_or_default(),
            offset: c.offset,
            kind,
        })
    }

    /// Refuse a manifest entry claiming a chunk larger than any writer makes
    /// (it would make the reader allocate that much).
    pub fn check_raw_len(&self, c: &ChunkRef) -> Result<(), PipelineError> {
        if c.raw_len > MAX_CHUNK as u64 {
            let pack = self.pack(c)?;
            return Err(PipelineError::Corrupt {
                pack: pack.key.clone(),
                offset: c.offset,
                kind: codec::CorruptKind::RawLen {
                    expected: c.raw_len,
                    found: 0,
                },
            });
        }
        Ok(())
    }

    fn pack(&self, c: &ChunkRef) -> Result<&PackInfo, PipelineError> {
        self.packs
            .get(c.pack as usize)
            .ok_or(PipelineError::UnknownPack(c.pack))
    }

    /// The original byte stream of a chunk list, in order.
    pub fn stream(
        &self,
        chunks: Vec<ChunkRef>,
    ) -> impl Stream<Item = Result<Bytes, PipelineError>> + Send + 'static {
        let me = self.clone();
        let prefetch = self.prefetch;
        futures::stream::iter(chunks)
            .map(move |c| {
                let me = me.clone();
                async move { me.read_chunk(&c).await }
            })
            .buffered(prefetch)
    }
}
