//! The one path every byte takes to and from the repository:
//! chunker → zstd → CRC32 → packer (write) and ranged read → CRC check →
//! decompress (read). Memory is bounded by configuration:
//! `chunk_size × (in_flight + 1)` per stream plus the storage writer's parts in
//! flight, whatever the size of the table or file being streamed.

pub mod packer;
pub mod reader;

use crate::chunk::codec;
use crate::storage::StorageError;

pub use crate::chunk::{Compression, StreamInfo};
pub use packer::{PackKeys, PackSet, PackWriter, StreamState};
pub use reader::ChunkReader;

/// Limits of the pipeline. Memory per stream ≈ chunk_size × (in_flight + 2).
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Uncompressed bytes per chunk (one independent zstd frame).
    pub chunk_size: usize,
    pub compression: Compression,
    /// Chunks being compressed concurrently per stream.
    pub in_flight: usize,
    /// A pack object is closed once it holds at least this many stored bytes.
    pub pack_size: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            chunk_size: 4 << 20,
            compression: Compression::default(),
            in_flight: 2,
            pack_size: 256 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("corrupt chunk in {pack} at offset {offset}: {kind}")]
    Corrupt {
        pack: String,
        offset: u64,
        kind: codec::CorruptKind,
    },
    #[error("compression failed: {0}")]
    Codec(String),
    #[error("reading the source stream: {0}")]
    Source(String),
    #[error("manifest refers to pack #{0}, which it does not list")]
    UnknownPack(u32),
    /// The pack set was settled (the job is stopping): no new pack closes.
    #[error("the job is stopping")]
    Stopped,
}

impl From<codec::CompressError> for PipelineError {
    fn from(e: codec::CompressError) -> Self {
        PipelineError::Codec(e.0)
    }
}

impl PipelineError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PipelineError::Storage(e) if e.is_retryable())
    }
}

/// Run a CPU-heavy closure on the blocking pool.
pub(crate) async fn cpu<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PipelineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PipelineError::Codec(format!("worker thread failed: {e}")))
}
