//! The WAL archive: one object per segment under its timeline, timeline
//! `.history` files, and `.partial` tails of the segment being written.
//!
//! Rules (STYLE.md habit 7): archiving the same bytes twice is a no-op;
//! different bytes for a segment already archived is an error and nothing is
//! overwritten; a `.partial` never shadows a complete segment (readers take
//! the complete one when both exist, and writers delete partials once the
//! segment is complete). Partials are superseded and deleted by design, so
//! in a repository with Object Lock they are written without retention
//! (`storage::unretained`); segments, history and `.backup` files carry it.
//!
//! Object format (every WAL object, little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | magic `PGTIDEW1` |
//! | 8 | compression: 0 none, 1 zstd |
//! | 9..12 | reserved, zero |
//! | 12..20 | raw length |
//! | 20..28 | stored length |
//! | 28..32 | CRC32 of the raw bytes |
//! | 32..36 | CRC32 of the stored bytes |
//! | 36.. | the stored frame |

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use super::layout;
use crate::chunk::codec::{self, CorruptKind};
use crate::chunk::Compression;
use crate::pg::lsn::{history_name, parse_history_name, parse_segment_name, segment_name, Lsn};
use crate::storage::{DynStorage, StorageError};

pub use super::layout::WAL as WAL_PREFIX;
const MAGIC: &[u8; 8] = b"PGTIDEW1";
const HEADER: usize = 36;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{name} is already archived with different contents: refusing to overwrite it (is another cluster archiving into this repository?)")]
    Conflict { name: String },
    #[error("WAL object {key} is damaged: {reason}")]
    Damaged { key: String, reason: String },
    #[error("{name} is not a WAL segment, .partial, .backup or .history file name")]
    BadName { name: String },
    #[error("compression failed: {0}")]
    Codec(String),
}

impl WalError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, WalError::Storage(e) if e.is_retryable())
    }
}

/// What kind of WAL file a name is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalName {
    Segment {
        tli: u32,
        segno: u64,
    },
    History {
        tli: u32,
    },
    /// `000000010000000000000003.00000028.backup` and other per-timeline files.
    Other {
        tli: u32,
    },
}

pub fn classify(name: &str, seg_size: u64) -> Option<WalName> {
    if let Some(tli) = parse_history_name(name) {
        return Some(WalName::History { tli });
    }
    if let Some((tli, segno)) = parse_segment_name(name, seg_size) {
        return Some(WalName::Segment { tli, segno });
    }
    if name.len() > 24 && name.ends_with(".backup") && !name.contains('/') {
        let (tli, _) = parse_segment_name(&name[..24], seg_size)?;
        return Some(WalName::Other { tli });
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    AlreadyArchived,
}

#[derive(Debug, Clone)]
pub struct WalArchive {
    storage: DynStorage,
    /// `storage` without Object Lock retention, for partials.
    partials: DynStorage,
    seg_size: u64,
    compression: Compression,
}

/// Encode a WAL object (header + frame).
pub fn encode_object(raw: &[u8], compression: Compression) -> Result<Bytes, WalError> {
    let e = codec::encode(raw, compression).map_err(|e| WalError::Codec(e.to_string()))?;
    let mut out = BytesMut::with_capacity(HEADER + e.data.len());
    out.put_slice(MAGIC);
    out.put_u8(match compression {
        Compression::None => 0,
        Compression::Zstd(_) => 1,
    });
    out.put_slice(&[0, 0, 0]);
    out.put_u64_le(e.raw_len);
    out.put_u64_le(e.data.len() as u64);
    out.put_u32_le(e.crc_raw);
    out.put_u32_le(e.crc_stored);
    out.put_slice(&e.data);
    Ok(out.freeze())
}

/// Check and decode a WAL object.
pub fn decode_object(key: &str, obj: &[u8]) -> Result<Bytes, WalError> {
    let damaged = |reason: String| WalError::Damaged {
        key: key.to_string(),
        reason,
    };
    if obj.len() < HEADER || &obj[..8] != MAGIC {
        return Err(damaged("not a pgtide WAL object (bad header)".into()));
    }
    let u64_at = |o: usize| u64::from_le_bytes(obj[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(obj[o..o + 4].try_into().expect("4 bytes"));
    let compression = match obj[8] {
        0 => Compression::None,
        1 => Compression::Zstd(3),
        c => return Err(damaged(format!("unknown compression {c}"))),
    };
    let (raw_len, stored_len) = (u64_at(12), u64_at(20));
    let (crc_raw, crc_stored) = (u32_at(28), u32_at(32));
    if raw_len > (1 << 30) {
        return Err(damaged(format!(
            "raw length {raw_len} is larger than any segment"
        )));
    }
    codec::decode(
        &obj[HEADER..],
        stored_len,
        crc_stored,
        raw_len,
        crc_raw,
        compression,
    )
    .map_err(|k: CorruptKind| damaged(k.to_string()))
}

impl WalArchive {
    pub fn new(storage: DynStorage, seg_size: u64, compression: Compression) -> Self {
        WalArchive {
            partials: crate::storage::unretained(&storage),
            storage,
            seg_size,
            compression,
        }
    }

    pub fn seg_size(&self) -> u64 {
        self.seg_size
    }

    /// Key of a complete segment, history or other WAL file.
    pub fn key(&self, name: &str) -> Result<String, WalError> {
        match classify(name, self.seg_size) {
            Some(WalName::History { .. }) => Ok(layout::wal_history(name)),
            Some(WalName::Segment { tli, .. }) | Some(WalName::Other { tli }) => {
                Ok(layout::wal_file(tli, name))
            }
            None => Err(WalError::BadName { name: name.into() }),
        }
    }

    async fn encode(&self, data: Bytes) -> Result<Bytes, WalError> {
        let c = self.compression;
        tokio::task::spawn_blocking(move || encode_object(&data, c))
            .await
            .map_err(|e| WalError::Codec(e.to_string()))?
    }

    async fn decode(key: String, obj: Bytes) -> Result<Bytes, WalError> {
        tokio::task::spawn_blocking(move || decode_object(&key, &obj))
            .await
            .map_err(|e| WalError::Codec(e.to_string()))?
    }

    /// Archive a complete segment, a history file or a `.backup` file.
    /// Same bytes already there: `AlreadyArchived`. Different: `Conflict`.
    pub async fn push(&self, name: &str, data: Bytes) -> Result<Pushed, WalError> {
        let key = self.key(name)?;
        let obj = self.encode(data.clone()).await?;
        match self.storage.put_if_absent(&key, obj).await {
            Ok(()) => {
                if let Some(WalName::Segment { .. }) = classify(name, self.seg_size) {
                    self.delete_partials(name).await?;
                }
                Ok(Pushed::Stored)
            }
            Err(StorageError::AlreadyExists { .. }) => {
                let existing = self.storage.get(&key).await?;
                match Self::decode(key.clone(), existing).await {
                    Ok(old) if old == data => Ok(Pushed::AlreadyArchived),
                    Ok(_) => Err(WalError::Conflict { name: name.into() }),
                    // A damaged copy is never "the same": say so.
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Store the first `data.len()` bytes of segment `name` as a partial.
    /// Partials are named by their length, so a longer one never overwrites
    /// a shorter one in place; shorter partials are removed afterwards. No-op
    /// when the complete segment or a partial at least as long is archived.
    pub async fn push_partial(&self, name: &str, data: Bytes) -> Result<(), WalError> {
        let key = self.key(name)?;
        if self.exists(&key).await? {
            return Ok(());
        }
        // Never replace a longer partial with a shorter one: the archive
        // only grows, whoever pushes (a restarted streamer, archive_command).
        let existing = self.partial_keys(name).await?;
        if existing
            .iter()
            .any(|k| layout::wal_partial_len(k) >= data.len() as u64)
        {
            return Ok(());
        }
        let pkey = layout::wal_partial(&key, data.len() as u64);
        let obj = self.encode(data).await?;
        match self.partials.put_if_absent(&pkey, obj).await {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // Shorter ones are superseded.
        self.storage.delete_many(&existing).await?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, WalError> {
        match self.storage.size(key).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Keys of the partials of segment `name`, shortest first.
    async fn partial_keys(&self, name: &str) -> Result<Vec<String>, WalError> {
        let key = self.key(name)?;
        let mut v: Vec<String> = self
            .storage
            .list(&layout::wal_partials_prefix(&key))
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with(".partial"))
            .collect();
        v.sort();
        Ok(v)
    }

    async fn delete_partials(&self, name: &str) -> Result<(), WalError> {
        let keys = self.partial_keys(name).await?;
        if !keys.is_empty() {
            self.storage.delete_many(&keys).await?;
        }
        Ok(())
    }

    /// A complete segment, history or `.backup` file, checked; `None` when absent.
    pub async fn fetch(&self, name: &str) -> Result<Option<Bytes>, WalError> {
        let key = self.key(name)?;
        match self.storage.get(&key).await {
            Ok(obj) => Ok(Some(Self::decode(key, obj).await?)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The longest partial of segment `name`, checked; `None` when absent.
    pub async fn fetch_partial(&self, name: &str) -> Result<Option<Bytes>, WalError> {
        let Some(key) = self.partial_keys(name).await?.pop() else {
            return Ok(None);
        };
        match self.storage.get(&key).await {
            Ok(obj) => Ok(Some(Self::decode(key, obj).await?)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Complete segments held, by timeline.
    pub async fn segments(&self) -> Result<BTreeMap<u32, BTreeSet<u64>>, WalError> {
        let mut out: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        for o in self.storage.list(WAL_PREFIX).await? {
            let name = o.key.rsplit('/').next().unwrap_or("");
            if let Some(WalName::Segment { tli, segno }) = classify(name, self.seg_size) {
                out.entry(tli).or_default().insert(segno);
            }
        }
        Ok(out)
    }

    /// The first WAL file missing for replay from `start` to `end` on
    /// timeline `tli`: every segment whole, except that the one holding the
    /// last byte before `end` may be a `.partial` that reaches `end` (a
    /// backup taken on a standby ends inside a segment the primary has not
    /// finished). `None` when the archive covers the range.
    pub async fn missing_in_range(
        &self,
        tli: u32,
        start: Lsn,
        end: Lsn,
    ) -> Result<Option<String>, WalError> {
        let seg = self.seg_size;
        let first = start.segno(seg);
        let last = Lsn(end.0.saturating_sub(1).max(start.0)).segno(seg);
        let held = self.segments().await?;
        let held = held.get(&tli);
        for segno in first..=last {
            if held.is_some_and(|h| h.contains(&segno)) {
                continue;
            }
            let name = segment_name(tli, segno, seg);
            let needed = if end.segno(seg) == segno {
                end.segment_offset(seg)
            } else {
                seg
            };
            if segno == last && needed < seg {
                let longest = self
                    .partial_keys(&name)
                    .await?
                    .iter()
                    .map(|k| layout::wal_partial_len(k))
                    .max()
                    .unwrap_or(0);
                if longest >= needed {
                    continue;
                }
            }
            return Ok(Some(name));
        }
        Ok(None)
    }

    /// Timelines with a history file.
    pub async fn histories(&self) -> Result<Vec<u32>, WalError> {
        Ok(self
            .storage
            .list(WAL_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| parse_history_name(o.key.rsplit('/').next().unwrap_or("")))
            .collect())
    }

    pub fn history_name(tli: u32) -> String {
        history_name(tli)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    #[test]
    fn names() {
        assert_eq!(
            classify("000000010000000000000003", SEG),
            Some(WalName::Segment { tli: 1, segno: 3 })
        );
        assert_eq!(
            classify("00000002.history", SEG),
            Some(WalName::History { tli: 2 })
        );
        assert_eq!(
            classify("000000010000000000000002.00000028.backup", SEG),
            Some(WalName::Other { tli: 1 })
        );
        assert_eq!(classify("RECOVERYXLOG", SEG), None);
        assert_eq!(classify("../000000010000000000000003", SEG), None);
    }

    #[test]
    fn objects_round_trip_and_detect_damage() {
        let raw: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for c in [Compression::None, Compression::Zstd(1)] {
            let obj = encode_object(&raw, c).unwrap();
            assert_eq!(&decode_object("k", &obj).unwrap()[..], &raw[..]);
            let mut bad = obj.to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(matches!(
                decode_object("k", &bad),
                Err(WalError::Damaged { .. })
            ));
            assert!(matches!(
                decode_object("k", &obj[..obj.len() - 1]),
                Err(WalError::Damaged { .. })
            ));
            assert!(matches!(
                decode_object("k", b"short"),
                Err(WalError::Damaged { .. })
            ));
        }
    }

    #[tokio::test]
    async fn a_range_may_end_in_a_partial_that_reaches_its_end() {
        const SEG: u64 = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = std::sync::Arc::new(crate::storage::LocalFs::new(dir.path()));
        let a = WalArchive::new(storage, SEG, Compression::Zstd(1));
        let name = |n| segment_name(1, n, SEG);
        for n in 2..=3 {
            a.push(&name(n), Bytes::from(vec![n as u8; SEG as usize]))
                .await
                .unwrap();
        }
        let (start, end) = (Lsn(2 * SEG + 40), Lsn(4 * SEG + 1000));
        assert_eq!(
            a.missing_in_range(1, start, end).await.unwrap(),
            Some(name(4))
        );
        a.push_partial(&name(4), Bytes::from(vec![4; 999]))
            .await
            .unwrap();
        assert_eq!(
            a.missing_in_range(1, start, end).await.unwrap(),
            Some(name(4))
        );
        a.push_partial(&name(4), Bytes::from(vec![4; 1000]))
            .await
            .unwrap();
        assert_eq!(a.missing_in_range(1, start, end).await.unwrap(), None);
        // A partial never stands in for a segment in the middle of a range,
        // nor for one the range needs whole.
        assert_eq!(
            a.missing_in_range(1, start, Lsn(5 * SEG)).await.unwrap(),
            Some(name(4))
        );
        assert_eq!(
            a.missing_in_range(1, Lsn(SEG), end).await.unwrap(),
            Some(name(1))
        );
        // A range ending exactly on a segment boundary needs no more.
        assert_eq!(
            a.missing_in_range(1, start, Lsn(4 * SEG)).await.unwrap(),
            None
        );
        assert_eq!(
            a.missing_in_range(2, start, end).await.unwrap(),
            Some(segment_name(2, 2, SEG))
        );
    }
}
