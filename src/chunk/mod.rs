//! What a stored chunk is, shared by `pipeline` (which writes and reads
//! chunks) and `repo` (which records them in manifests and WAL objects):
//! compression settings, where a chunk lies (`ChunkRef`, `PackInfo`), what a
//! stream became (`StreamInfo`), and the pure codec of one chunk frame
//! (`codec`). A leaf: it imports no other module of pgtide, so that neither
//! `pipeline` nor `repo` needs the other's internals.

pub mod codec;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

/// Where one chunk is stored. Serialized with one-letter keys: a large dump
/// has hundreds of thousands of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Index into the manifest's `packs`.
    #[serde(rename = "p")]
    pub pack: u32,
    /// Byte offset of the stored frame in the pack.
    #[serde(rename = "o")]
    pub offset: u64,
    /// Stored (compressed) length.
    #[serde(rename = "l")]
    pub stored_len: u64,
    /// Raw (uncompressed) length.
    #[serde(rename = "r")]
    pub raw_len: u64,
    /// CRC32 (IEEE) of the raw bytes.
    #[serde(rename = "c")]
    pub crc_raw: u32,
    /// CRC32 (IEEE) of the stored bytes.
    #[serde(rename = "s")]
    pub crc_stored: u32,
    /// Encrypted sets only: the chunk's number in its set (from 1), its
    /// AES-GCM nonce; 0 (absent) in plain sets.
    #[serde(rename = "n", default, skip_serializing_if = "is_zero")]
    pub seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One pack object: a concatenation of stored chunk frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackInfo {
    /// Key relative to the repository root.
    pub key: String,
    pub size: u64,
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
