//! Restore direction: manifest chunk references → ranged reads → checks of the
//! stored CRC → decompression on the blocking pool → checks of length and raw
//! CRC. Yields the original bytes in order, with at most `prefetch` chunks in
//! memory. Every mismatch is an error naming the pack and offset.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::codec;
use super::{cpu, Compression, PipelineError};
use crate::repo::manifest::{ChunkRef, PackInfo};
use crate::storage::DynStorage;

#[derive(Debug, Clone)]
pub struct ChunkReader {
    storage: DynStorage,
    packs: Arc<Vec<PackInfo>>,
    compression: Compression,
    prefetch: usize,
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
        }
    }

    /// Fetch, check and decode one chunk.
    pub async fn read_chunk(&self, c: &ChunkRef) -> Result<Bytes, PipelineError> {
        let pack = self
            .packs
            .get(c.pack as usize)
            .ok_or(PipelineError::UnknownPack(c.pack))?;
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
        let stored = self
            .storage
            .get_range(&pack.key, c.offset, c.stored_len)
            .await?;
        let (c2, compression) = (*c, self.compression);
        cpu(move || {
            codec::decode(
                &stored,
                c2.stored_len,
                c2.crc_stored,
                c2.raw_len,
                c2.crc_raw,
                compression,
            )
        })
        .await?
        .map_err(|kind| PipelineError::Corrupt {
            pack: pack.key.clone(),
            offset: c.offset,
            kind,
        })
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
