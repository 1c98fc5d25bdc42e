//! The one path every byte takes to and from the repository:
//! chunker → zstd → CRC32 → packer (write) and ranged read → CRC check →
//! decompress (read). Memory is bounded by configuration:
//! `chunk_size × (in_flight + 1)` per stream plus the storage writer's parts in
//! flight, whatever the size of the table or file being streamed.

pub mod codec;
pub mod packer;
pub mod reader;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::storage::StorageError;

pub use packer::{PackSet, PackWriter, StreamInfo, StreamState};
pub use reader::ChunkReader;

/// How chunks are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd(i32),
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd(3)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid compression {s:?}: use none, zstd or zstd:LEVEL (1-22)");
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd(3)),
            _ => {
                let level = s.strip_prefix("zstd:").ok_or_else(bad)?;
                let level: i32 = level.parse().map_err(|_| bad())?;
                if !(1..=22).contains(&level) {
                    return Err(bad());
                }
                Ok(Compression::Zstd(level))
            }
        }
    }
}

impl Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

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
