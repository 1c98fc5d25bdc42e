//! Restore direction: manifest chunk references → ranged reads → checks of the
//! stored CRC → decompression on the blocking pool → checks of length and raw
//! CRC. Yields the original bytes in order, with at most `prefetch` chunks
//! being decoded and `prefetch` / 2 runs of fetched chunks (up to
//! [`STREAM_RUN_SPAN`] each) in memory. Every mismatch is an error naming the pack and offset.

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
        self.decode(c, stored).await
    }

    /// Check and decode the stored bytes of one chunk (on the blocking pool).
    pub async fn decode(&self, c: &ChunkRef, stored: Bytes) -> Result<Bytes, PipelineError> {
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

    /// The stored bytes of chunks that lie back to back in one pack (a run
    /// from [`runs`]), read with one ranged request, one slice per chunk.
    pub async fn fetch_run(&self, run: &[ChunkRef]) -> Result<Vec<Bytes>, PipelineError> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(Vec::new());
        };
        if run.len() == 1 {
            return Ok(vec![self.fetch(first).await?]);
        }
        let pack = self.pack(first)?;
        let start = first.offset;
        let mut end = start;
        for c in run {
            if c.pack != first.pack || c.offset != end {
                return Err(PipelineError::Corrupt {
                    pack: pack.key.clone(),
                    offset: c.offset,
                    kind: codec::CorruptKind::StoredLen {
                        expected: c.stored_len,
                        found: 0,
                    },
                });
            }
            end = c.offset.saturating_add(c.stored_len);
        }
        if end > pack.size {
            return Err(PipelineError::Corrupt {
                pack: pack.key.clone(),
                offset: last.offset,
                kind: codec::CorruptKind::StoredLen {
                    expected: last.stored_len,
                    found: pack.size.saturating_sub(last.offset),
                },
            });
        }
        let bytes = self
            .storage
            .get_range(&pack.key, start, end - start)
            .await?;
        Ok(run
            .iter()
            .map(|c| {
                let at = (c.offset - start) as usize;
                bytes.slice(at..at + c.stored_len as usize)
            })
            .collect())
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

    /// The original byte stream of a chunk list, in order. Chunks that lie
    /// back to back in a pack, in the list's order, are fetched together
    /// (runs of up to [`STREAM_RUN_SPAN`] stored bytes, `prefetch` / 2 runs
    /// in flight, at least one); `prefetch` chunks are decoded at once.
    pub fn stream(
        &self,
        chunks: Vec<ChunkRef>,
    ) -> impl Stream<Item = Result<Bytes, PipelineError>> + Send + 'static {
        let (fetcher, decoder) = (self.clone(), self.clone());
        let prefetch = self.prefetch;
        futures::stream::iter(in_order_runs(chunks, STREAM_RUN_SPAN))
            .map(move |run| {
                let me = fetcher.clone();
                async move {
                    let fetched: Vec<Result<(ChunkRef, Bytes), PipelineError>> =
                        match me.fetch_run(&run).await {
                            Ok(stored) => run.into_iter().zip(stored).map(Ok).collect(),
                            Err(e) => vec![Err(e)],
                        };
                    futures::stream::iter(fetched)
                }
            })
            .buffered((prefetch / 2).max(1))
            .flatten()
            .map(move |fetched| {
                let me = decoder.clone();
                async move {
                    let (c, stored) = fetched?;
                    me.decode(&c, stored).await
                }
            })
            .buffered(prefetch)
    }
}

/// The stored bytes a run of [`ChunkReader::stream`] takes at most.
pub const STREAM_RUN_SPAN: u64 = 2 << 20;

/// `chunks` in their order, cut into runs of chunks that lie back to back in
/// one pack, at most `max_span` stored bytes a run (a larger chunk is a run
/// of its own).
fn in_order_runs(chunks: Vec<ChunkRef>, max_span: u64) -> Vec<Vec<ChunkRef>> {
    back_to_back(chunks, |c| *c, max_span)
}

/// `items` in their order, cut where the chunk of an item does not start
/// where the one before ended in the same pack, or where the run would
/// pass `max_span` stored bytes.
fn back_to_back<T>(
    items: impl IntoIterator<Item = T>,
    chunk: impl Fn(&T) -> ChunkRef,
    max_span: u64,
) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut span = 0u64;
    for item in items {
        let c = chunk(&item);
        let joins = out.last().and_then(|r| r.last()).is_some_and(|p| {
            let p = chunk(p);
            p.pack == c.pack
                && p.offset.checked_add(p.stored_len) == Some(c.offset)
                && span.saturating_add(c.stored_len) <= max_span
        });
        if joins {
            span += c.stored_len;
            out.last_mut().expect("a run to join").push(item);
        } else {
            span = c.stored_len;
            out.push(vec![item]);
        }
    }
    out
}

/// The stored bytes one run of chunks takes at most: one ranged request, and
/// the memory a reader of runs holds per run in flight.
pub const RUN_SPAN: u64 = 4 << 20;

/// Group chunks into runs that one ranged request can read: chunks of one
/// pack lying back to back (each starts where the one before ends), in pack
/// order, at most `max_span` stored bytes a run (a chunk larger than that is
/// a run of its own). Returns the runs as indexes into `chunks`.
pub fn runs(chunks: &[ChunkRef], max_span: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..chunks.len()).collect();
    order.sort_by_key(|&i| (chunks[i].pack, chunks[i].offset));
    back_to_back(order, |&i| chunks[i], max_span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(pack: u32, offset: u64, stored_len: u64) -> ChunkRef {
        ChunkRef {
            pack,
            offset,
            stored_len,
            raw_len: stored_len,
            crc_raw: 0,
            crc_stored: 0,
            seq: 0,
        }
    }

    #[test]
    fn runs_join_back_to_back_chunks_of_a_pack_up_to_the_span() {
        let chunks = [
            c(0, 100, 50), // 0
            c(0, 0, 100),  // 1
            c(1, 0, 10),   // 2
            c(0, 150, 60), // 3
            c(0, 300, 10), // 4: a gap before it
            c(1, 10, 500), // 5: larger than the span, alone
            c(1, 510, 5),  // 6: its run would pass the span
        ];
        assert_eq!(
            runs(&chunks, 256),
            vec![vec![1, 0, 3], vec![4], vec![2], vec![5], vec![6]]
        );
        assert_eq!(runs(&chunks, 10_000).len(), 3);
        assert!(runs(&[], 1).is_empty());
    }

    #[test]
    fn in_order_runs_keep_the_order() {
        let chunks = vec![
            c(0, 0, 100),
            c(0, 100, 50),
            c(1, 0, 10),
            c(0, 150, 60),
            c(0, 210, 1),
        ];
        let got: Vec<Vec<u64>> = in_order_runs(chunks.clone(), 150)
            .into_iter()
            .map(|r| r.into_iter().map(|c| c.offset).collect())
            .collect();
        assert_eq!(got, vec![vec![0, 100], vec![0], vec![150, 210]]);
        assert_eq!(in_order_runs(chunks, 1).len(), 5);
    }
}
