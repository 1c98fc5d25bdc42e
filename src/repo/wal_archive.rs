//! The WAL archive: one object per segment under its timeline, timeline
//! `.history` files, and pieces of the segment being written.
//!
//! Rules (STYLE.md habit 7): archiving the same bytes twice is a no-op;
//! different bytes for a segment already archived is an error and nothing is
//! overwritten; pieces never shadow a complete segment (readers take the
//! complete one when both exist, and writers delete the pieces once the
//! segment is complete). Pieces are superseded and deleted by design, so in
//! a repository with Object Lock they are written without retention
//! (`storage::unretained`); segments, history and `.backup` files carry it.
//!
//! Pieces (`wal_pieces`): `<segment key>.<START>-<END>.piece` holds bytes
//! `[START, END)` of the segment (8 hex digits each), encoded like any WAL
//! object below; an older `<segment key>.<LEN>.partial` holds `[0, LEN)`
//! and is read as that piece. One LIST of the segment's prefix finds both.
//! Readers assemble the contiguous prefix from byte 0; a hole with later
//! bytes held is a reported gap, and nothing after it is served.
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
//!
//! In an encrypted repository (magic `PGTIDEW2`) the frame is sealed under a
//! data key of its own, wrapped for the current epoch and stored in the
//! header, with the SHA-256 of the raw bytes in place of their CRC (so
//! `push` tells "the same bytes again" without a key):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..8 | magic `PGTIDEW2` |
//! | 8 | compression: 0 none, 1 zstd |
//! | 9..12 | reserved, zero |
//! | 12..20 | raw length |
//! | 20..28 | sealed length (frame + 16-byte tag) |
//! | 28..32 | epoch of the wrapped key |
//! | 32..36 | CRC32 of the sealed bytes |
//! | 36..68 | SHA-256 of the raw bytes |
//! | 68..70 | length N of the wrapped key |
//! | 70..70+N | the data key, wrapped with age for the epoch |
//! | 70+N.. | the sealed frame (AES-256-GCM, bound to the object's key) |

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use super::layout;
use super::wal_pieces::{self, Held, Piece};
use crate::chunk::codec::{self, CorruptKind};
use crate::chunk::Compression;
use crate::pg::lsn::{history_name, parse_history_name, parse_segment_name, segment_name, Lsn};
use crate::storage::{DynStorage, StorageError};

pub use super::layout::WAL as WAL_PREFIX;
const MAGIC: &[u8; 8] = b"PGTIDEW1";
const HEADER: usize = 36;
const MAGIC_SEALED: &[u8; 8] = b"PGTIDEW2";
const HEADER_SEALED: usize = 70;

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
    /// No key (or not the right one) to open an encrypted WAL object.
    #[error(transparent)]
    Key(Box<super::RepoError>),
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

/// The prefix of a segment assembled from its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// Bytes `[0, len)` of the segment.
    pub data: Bytes,
    /// The first hole after them when later bytes are held.
    pub gap: Option<(u64, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    AlreadyArchived,
}

#[derive(Debug, Clone)]
pub struct WalArchive {
    pub(super) storage: DynStorage,
    /// `storage` without Object Lock retention, for partials and the index.
    pub(super) partials: DynStorage,
    pub(super) seg_size: u64,
    compression: Compression,
    /// Encrypted repositories: seal what is pushed, open what is fetched.
    crypt: Option<std::sync::Arc<super::encryption::RepoCrypt>>,
    /// What this handle and its clones know of the archive (`wal_index`).
    pub(super) tracker: std::sync::Arc<std::sync::Mutex<super::wal_index::Tracker>>,
}

fn compression_byte(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Zstd(_) => 1,
    }
}

/// Encode a WAL object of an encrypted repository (see the module table).
pub fn encode_sealed(
    object_key: &str,
    raw: &[u8],
    compression: Compression,
    epoch: u32,
    recipient: &age::x25519::Recipient,
) -> Result<Bytes, WalError> {
    use crate::crypt;
    let e = codec::encode(raw, compression).map_err(|e| WalError::Codec(e.to_string()))?;
    let dk = crypt::DataKey::generate().map_err(|e| WalError::Codec(e.to_string()))?;
    let sealed = crypt::seal_object(&dk, object_key, &e.data);
    let wrapped = dk
        .wrap(recipient)
        .map_err(|e| WalError::Codec(e.to_string()))?;
    let wlen =
        u16::try_from(wrapped.len()).map_err(|_| WalError::Codec("wrapped key too long".into()))?;
    let mut out = BytesMut::with_capacity(HEADER_SEALED + wrapped.len() + sealed.len());
    out.put_slice(MAGIC_SEALED);
    out.put_u8(compression_byte(compression));
    out.put_slice(&[0, 0, 0]);
    out.put_u64_le(e.raw_len);
    out.put_u64_le(sealed.len() as u64);
    out.put_u32_le(epoch);
    out.put_u32_le(crc32fast::hash(&sealed));
    out.put_slice(&crypt::sha256(raw));
    out.put_u16_le(wlen);
    out.put_slice(&wrapped);
    out.put_slice(&sealed);
    Ok(out.freeze())
}

/// What the header of a stored WAL object says, checked against its bytes
/// (stored length and CRC) without opening it.
struct Header<'a> {
    compression: Compression,
    raw_len: u64,
    /// Sealed objects: epoch, SHA-256 of the raw bytes, wrapped key.
    sealed: Option<(u32, &'a [u8], &'a [u8])>,
    crc_raw: u32,
    frame: &'a [u8],
}

fn parse_header<'a>(key: &str, obj: &'a [u8]) -> Result<Header<'a>, WalError> {
    let damaged = |reason: String| WalError::Damaged {
        key: key.to_string(),
        reason,
    };
    let sealed = obj.len() >= 8 && &obj[..8] == MAGIC_SEALED;
    let min = if sealed { HEADER_SEALED } else { HEADER };
    if obj.len() < min || !(sealed || &obj[..8] == MAGIC) {
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
    if raw_len > (1 << 30) {
        return Err(damaged(format!(
            "raw length {raw_len} is larger than any segment"
        )));
    }
    let (start, sealed_parts) = if sealed {
        let wlen = u16::from_le_bytes([obj[68], obj[69]]) as usize;
        let start = HEADER_SEALED + wlen;
        if obj.len() < start {
            return Err(damaged("truncated header".into()));
        }
        (
            start,
            Some((u32_at(28), &obj[36..68], &obj[HEADER_SEALED..start])),
        )
    } else {
        (HEADER, None)
    };
    let frame = &obj[start..];
    codec::check_stored(frame, stored_len, u32_at(32)).map_err(|k| damaged(k.to_string()))?;
    Ok(Header {
        compression,
        raw_len,
        sealed: sealed_parts,
        crc_raw: if sealed { 0 } else { u32_at(28) },
        frame,
    })
}

/// Encode a WAL object (header + frame).
pub fn encode_object(raw: &[u8], compression: Compression) -> Result<Bytes, WalError> {
    let e = codec::encode(raw, compression).map_err(|e| WalError::Codec(e.to_string()))?;
    let mut out = BytesMut::with_capacity(HEADER + e.data.len());
    out.put_slice(MAGIC);
    out.put_u8(compression_byte(compression));
    out.put_slice(&[0, 0, 0]);
    out.put_u64_le(e.raw_len);
    out.put_u64_le(e.data.len() as u64);
    out.put_u32_le(e.crc_raw);
    out.put_u32_le(e.crc_stored);
    out.put_slice(&e.data);
    Ok(out.freeze())
}

/// Check and decode a WAL object of a plain repository.
pub fn decode_object(key: &str, obj: &[u8]) -> Result<Bytes, WalError> {
    decode_any(key, obj, None)
}

/// Check and decode a WAL object; sealed ones need `crypt` unlocked.
fn decode_any(
    key: &str,
    obj: &[u8],
    crypt: Option<&super::encryption::RepoCrypt>,
) -> Result<Bytes, WalError> {
    let damaged = |reason: String| WalError::Damaged {
        key: key.to_string(),
        reason,
    };
    let h = parse_header(key, obj)?;
    let cap = usize::try_from(h.raw_len).map_err(|_| damaged("raw length".into()))?;
    let mut out = vec![0u8; cap];
    let n = match h.sealed {
        None => {
            codec::decode_frame_into(h.frame, h.raw_len, Some(h.crc_raw), h.compression, &mut out)
        }
        Some((epoch, digest, wrapped)) => {
            let Some(c) = crypt else {
                return Err(WalError::Key(Box::new(super::RepoError::Key(
                    crate::crypt::keys::KeyError::Missing,
                ))));
            };
            let identity = c
                .identity(epoch, &format!("WAL object {key}"))
                .map_err(|e| WalError::Key(Box::new(e)))?;
            let dk = crate::crypt::DataKey::unwrap(wrapped, &identity)
                .map_err(|_| damaged("authentication failed: its data key does not open".into()))?;
            let frame = crate::crypt::open_object(&dk, key, h.frame)
                .map_err(|_| damaged("authentication failed: damaged, edited or moved".into()))?;
            let n = codec::decode_frame_into(&frame, h.raw_len, None, h.compression, &mut out);
            if let Ok(n) = n {
                if crate::crypt::sha256(&out[..n]) != digest {
                    return Err(damaged("content digest mismatch".into()));
                }
            }
            n
        }
    }
    .map_err(|k: CorruptKind| damaged(k.to_string()))?;
    out.truncate(n);
    Ok(Bytes::from(out))
}

/// Checks a WAL object fed in pieces, without decompressing or opening it
/// (for `copy`): the header, the stored (or sealed) length and the CRC32 of
/// the stored (or sealed) bytes. Both object versions (`PGTIDEW1`, sealed
/// `PGTIDEW2`).
#[derive(Debug, Default)]
pub struct ObjectCheck {
    header: Vec<u8>,
    crc: crc32fast::Hasher,
    stored: u64,
}

impl ObjectCheck {
    /// Bytes of the header: `None` until enough of it is in to tell.
    fn header_len(&self) -> Option<usize> {
        let h = &self.header;
        if h.len() >= 8 && &h[..8] == MAGIC_SEALED {
            if h.len() < HEADER_SEALED {
                return None;
            }
            let n = u16::from_le_bytes([h[68], h[69]]) as usize;
            return Some(HEADER_SEALED + n);
        }
        if h.len() < 8 {
            return None;
        }
        Some(HEADER)
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        loop {
            // The magic first, then as much header as it says.
            let want = if self.header.len() < 8 {
                8
            } else {
                self.header_len().unwrap_or(HEADER_SEALED)
            };
            if self.header.len() >= want || data.is_empty() {
                break;
            }
            let take = (want - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        self.crc.update(data);
        self.stored += data.len() as u64;
    }

    /// `Err` says what is wrong.
    pub fn finish(self) -> Result<(), String> {
        let h = &self.header;
        let complete = self.header_len().is_some_and(|n| h.len() >= n);
        if !complete || !(&h[..8] == MAGIC || &h[..8] == MAGIC_SEALED) {
            return Err("not a pgtide WAL object (bad header)".into());
        }
        let stored_len = u64::from_le_bytes(h[20..28].try_into().expect("8 bytes"));
        let crc_stored = u32::from_le_bytes(h[32..36].try_into().expect("4 bytes"));
        if stored_len != self.stored {
            return Err(format!(
                "the header records {stored_len} stored bytes, the object holds {}",
                self.stored
            ));
        }
        let crc = self.crc.finalize();
        if crc != crc_stored {
            return Err(format!(
                "CRC32 of the stored bytes is {crc:08x}, the header records {crc_stored:08x}"
            ));
        }
        Ok(())
    }
}

impl WalArchive {
    pub fn new(storage: DynStorage, seg_size: u64, compression: Compression) -> Self {
        WalArchive {
            partials: crate::storage::unretained(&storage),
            storage,
            seg_size,
            compression,
            crypt: None,
            tracker: Default::default(),
        }
    }

    /// Seal and open objects with an encrypted repository's keys.
    pub fn with_crypt(
        mut self,
        crypt: Option<std::sync::Arc<super::encryption::RepoCrypt>>,
    ) -> Self {
        self.crypt = crypt;
        self
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

    async fn encode(&self, key: &str, data: Bytes) -> Result<Bytes, WalError> {
        let c = self.compression;
        let seal = self
            .crypt
            .as_ref()
            .map(|k| (k.current_epoch(), k.recipient().clone()));
        let key = key.to_string();
        tokio::task::spawn_blocking(move || match seal {
            None => encode_object(&data, c),
            Some((epoch, r)) => encode_sealed(&key, &data, c, epoch, &r),
        })
        .await
        .map_err(|e| WalError::Codec(e.to_string()))?
    }

    async fn decode(&self, key: String, obj: Bytes) -> Result<Bytes, WalError> {
        let crypt = self.crypt.clone();
        tokio::task::spawn_blocking(move || decode_any(&key, &obj, crypt.as_deref()))
            .await
            .map_err(|e| WalError::Codec(e.to_string()))?
    }

    /// Whether stored object `existing` holds exactly `data`. Sealed
    /// objects are compared by the SHA-256 their header records, so a
    /// writer needs no key.
    async fn holds(&self, key: &str, existing: Bytes, data: &Bytes) -> Result<bool, WalError> {
        let sealed_digest = {
            let h = parse_header(key, &existing)?;
            h.sealed.map(|(_, digest, _)| (h.raw_len, digest.to_vec()))
        };
        match sealed_digest {
            Some((raw_len, digest)) => {
                Ok(raw_len == data.len() as u64 && digest == crate::crypt::sha256(data))
            }
            None => Ok(self.decode(key.to_string(), existing).await? == *data),
        }
    }

    /// Archive a complete segment, a history file or a `.backup` file,
    /// and remove the segment's pieces (one LIST, one batch delete).
    /// Same bytes already there: `AlreadyArchived`. Different: `Conflict`.
    pub async fn push(&self, name: &str, data: Bytes) -> Result<Pushed, WalError> {
        let (pushed, _) = self.push_object(name, data).await?;
        if pushed == Pushed::Stored {
            if let Some(WalName::Segment { .. }) = classify(name, self.seg_size) {
                let keys: Vec<String> = self
                    .pieces(name)
                    .await?
                    .all
                    .into_iter()
                    .map(|p| p.key)
                    .collect();
                self.delete_pieces(&keys).await?;
            }
        }
        Ok(pushed)
    }

    /// Archive complete segment `name` and remove the pieces of it the
    /// caller knows of (`pieces`, one batch delete; no LIST): the streamer
    /// knows what it wrote. A piece left behind (written by another
    /// process) never shadows the segment, and `expire` removes it. Also
    /// returns the bytes of the object sent.
    pub async fn push_segment(
        &self,
        name: &str,
        data: Bytes,
        pieces: &[String],
    ) -> Result<(Pushed, u64), WalError> {
        let pushed = self.push_object(name, data).await?;
        self.delete_pieces(pieces).await?;
        Ok(pushed)
    }

    /// Store a segment (or other file) under its name; with the bytes sent.
    async fn push_object(&self, name: &str, data: Bytes) -> Result<(Pushed, u64), WalError> {
        let key = self.key(name)?;
        let obj = self.encode(&key, data.clone()).await?;
        let sent = obj.len() as u64;
        match self.storage.put_if_absent(&key, obj).await {
            Ok(()) => {
                self.note_stored(&key).await;
                Ok((Pushed::Stored, sent))
            }
            Err(StorageError::AlreadyExists { .. }) => {
                let existing = self.storage.get(&key).await?;
                // A damaged copy is never "the same": its error says so.
                match self.holds(&key, existing, &data).await? {
                    true => {
                        self.note_stored(&key).await;
                        Ok((Pushed::AlreadyArchived, sent))
                    }
                    false => Err(WalError::Conflict { name: name.into() }),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Store bytes `[start, start + data.len())` of segment `name` as a
    /// piece: one request. A piece already stored under the same key holds
    /// the same bytes by construction (the same range of the same segment
    /// of the same timeline) and is kept. Returns the piece's key and the
    /// bytes of the object sent.
    pub async fn put_piece(
        &self,
        name: &str,
        start: u64,
        data: Bytes,
    ) -> Result<(String, u64), WalError> {
        let end = start + data.len() as u64;
        let pkey = layout::wal_piece(&self.key(name)?, start, end);
        let obj = self.encode(&pkey, data).await?;
        let sent = obj.len() as u64;
        match self.partials.put_if_absent(&pkey, obj).await {
            Ok(()) | Err(StorageError::AlreadyExists { .. }) => Ok((pkey, sent)),
            Err(e) => Err(e.into()),
        }
    }

    /// Remove pieces (one batch delete; none: no request).
    pub async fn delete_pieces(&self, keys: &[String]) -> Result<(), WalError> {
        if !keys.is_empty() {
            self.storage.delete_many(keys).await?;
        }
        Ok(())
    }

    /// Store the first `data.len()` bytes of segment `name` as the piece
    /// `[0, len)` (`wal push NAME.partial`, a backup's last segment). No-op
    /// when the complete segment or a prefix at least as long is archived;
    /// the pieces it covers are removed afterwards. What the archive holds
    /// only grows, whoever pushes.
    pub async fn push_partial(&self, name: &str, data: Bytes) -> Result<(), WalError> {
        let key = self.key(name)?;
        if self.exists(&key).await? {
            return Ok(());
        }
        let len = data.len() as u64;
        let held = self.pieces(name).await?;
        if held.end >= len {
            return Ok(());
        }
        let (pkey, _) = self.put_piece(name, 0, data).await?;
        let covered: Vec<String> = held
            .all
            .into_iter()
            .filter(|p| p.end <= len && p.key != pkey)
            .map(|p| p.key)
            .collect();
        self.delete_pieces(&covered).await
    }

    pub(super) async fn exists(&self, key: &str) -> Result<bool, WalError> {
        match self.storage.size(key).await {
            Ok(_) => Ok(true),
            Err(StorageError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The pieces (and older `.partial` objects) of segment `name`: one
    /// LIST of the segment's prefix; their ranges come from their names.
    pub async fn pieces(&self, name: &str) -> Result<Held, WalError> {
        let key = self.key(name)?;
        let found = self
            .storage
            .list(&layout::wal_partials_prefix(&key))
            .await?
            .into_iter()
            .filter_map(|o| Piece::from_key(&o.key))
            .collect();
        Ok(wal_pieces::held(found))
    }

    /// A complete segment, history or `.backup` file, checked; `None` when absent.
    pub async fn fetch(&self, name: &str) -> Result<Option<Bytes>, WalError> {
        let key = self.key(name)?;
        match self.storage.get(&key).await {
            Ok(obj) => Ok(Some(self.decode(key, obj).await?)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The length of the prefix of segment `name` its pieces hold (from
    /// their names: one LIST, nothing opened, so a writer needs no key);
    /// `None` when no piece starts at byte 0.
    pub async fn partial_len(&self, name: &str) -> Result<Option<u64>, WalError> {
        let end = self.pieces(name).await?.end;
        Ok((end > 0).then_some(end))
    }

    /// The prefix of segment `name` its pieces hold, assembled and checked,
    /// with the first gap after it; `None` when it has no pieces. One LIST
    /// and one GET per piece chosen.
    pub async fn fetch_pieces(&self, name: &str) -> Result<Option<Assembled>, WalError> {
        let held = self.pieces(name).await?;
        if held.all.is_empty() {
            return Ok(None);
        }
        let gets = held.chosen.iter().map(|p| async move {
            let obj = self.storage.get(&p.key).await?;
            Ok::<_, WalError>((p.clone(), self.decode(p.key.clone(), obj).await?))
        });
        let parts = futures::future::try_join_all(gets).await?;
        let data = wal_pieces::assemble(&parts).map_err(|e| WalError::Damaged {
            key: self.key(name).unwrap_or_default(),
            reason: e.to_string(),
        })?;
        Ok(Some(Assembled {
            data: Bytes::from(data),
            gap: held.gap,
        }))
    }

    /// The prefix of segment `name` its pieces hold, checked; `None` when
    /// absent. A gap after it is logged as a warning (the bytes after it
    /// are never served as if they followed the prefix).
    pub async fn fetch_partial(&self, name: &str) -> Result<Option<Bytes>, WalError> {
        let Some(a) = self.fetch_pieces(name).await? else {
            return Ok(None);
        };
        if let Some((from, to)) = a.gap {
            // Reported where it is found: the caller serves the prefix only.
            tracing::warn!(
                "WAL segment {name} has a gap: bytes {from}..{to} are missing from the archive \
                 while later bytes are held; only the first {from} bytes are usable"
            );
        }
        Ok((!a.data.is_empty()).then_some(a.data))
    }

    /// Complete segments held, by timeline, as the index and the keys
    /// after it say (`WalArchive::view`).
    pub async fn segments(&self) -> Result<BTreeMap<u32, BTreeSet<u64>>, WalError> {
        Ok(self
            .view()
            .await?
            .segments
            .iter()
            .map(|(tli, r)| (*tli, r.to_set()))
            .collect())
    }

    /// The first WAL file missing for replay from `start` to `end` on
    /// timeline `tli`: every segment whole, except that the one holding the
    /// last byte before `end` may be held by pieces whose prefix reaches
    /// `end` (a backup taken on a standby ends inside a segment the primary
    /// has not finished), and any segment may be held whole by pieces (a
    /// streamer stopped before pushing it). `None` when the archive covers
    /// the range.
    pub async fn missing_in_range(
        &self,
        tli: u32,
        start: Lsn,
        end: Lsn,
    ) -> Result<Option<String>, WalError> {
        let view = self.view().await?;
        let Some(name) = self.first_missing(&view, tli, start, end).await? else {
            return Ok(None);
        };
        // The index is not trusted with "missing": a segment written behind
        // its last key (a `wal push` catching up) is looked up, and when it
        // is there the index is rebuilt from a full listing.
        if !self.exists(&self.key(&name)?).await? {
            return Ok(Some(name));
        }
        let view = self.rebuild_index().await?;
        self.first_missing(&view, tli, start, end).await
    }

    async fn first_missing(
        &self,
        view: &super::wal_index::WalView,
        tli: u32,
        start: Lsn,
        end: Lsn,
    ) -> Result<Option<String>, WalError> {
        let seg = self.seg_size;
        let first = start.segno(seg);
        let last = Lsn(end.0.saturating_sub(1).max(start.0)).segno(seg);
        let held = view.segments.get(&tli);
        for segno in first..=last {
            if held.is_some_and(|h| h.contains(segno)) {
                continue;
            }
            let name = segment_name(tli, segno, seg);
            let needed = if end.segno(seg) == segno {
                end.segment_offset(seg)
            } else {
                seg
            };
            // The segment's pieces will do if their prefix reaches what is
            // needed: the end of the range, or the whole segment (a
            // streamer stopped between its last piece and the segment).
            if self.pieces(&name).await?.end >= needed {
                continue;
            }
            return Ok(Some(name));
        }
        Ok(None)
    }

    /// Timelines with a history file.
    pub async fn histories(&self) -> Result<Vec<u32>, WalError> {
        Ok(self.view().await?.histories.into_iter().collect())
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
    fn streamed_objects_are_checked_without_decompressing() {
        let raw: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let obj = encode_object(&raw, Compression::Zstd(1)).unwrap();
        for split in [1, 7, 36, 37, obj.len() - 1] {
            let mut c = ObjectCheck::default();
            c.feed(&obj[..split]);
            c.feed(&obj[split..]);
            assert_eq!(c.finish(), Ok(()), "split at {split}");
        }
        let mut bad = obj.to_vec();
        bad[40] ^= 1;
        let mut c = ObjectCheck::default();
        c.feed(&bad);
        assert!(c.finish().unwrap_err().contains("CRC32"));
        let mut c = ObjectCheck::default();
        c.feed(&obj[..obj.len() - 1]);
        assert!(c.finish().unwrap_err().contains("stored bytes"));
        let mut c = ObjectCheck::default();
        c.feed(b"short");
        assert!(c.finish().is_err());
        // A sealed object (header of 70 bytes plus the wrapped key).
        let frame = b"sealed frame bytes".to_vec();
        let wrapped = vec![9u8; 200];
        let mut o = Vec::new();
        o.extend_from_slice(MAGIC_SEALED);
        o.extend_from_slice(&[1, 0, 0, 0]);
        o.extend_from_slice(&100u64.to_le_bytes());
        o.extend_from_slice(&(frame.len() as u64).to_le_bytes());
        o.extend_from_slice(&3u32.to_le_bytes());
        o.extend_from_slice(&crc32fast::hash(&frame).to_le_bytes());
        o.extend_from_slice(&[7u8; 32]);
        o.extend_from_slice(&(wrapped.len() as u16).to_le_bytes());
        o.extend_from_slice(&wrapped);
        o.extend_from_slice(&frame);
        for split in [1, 8, 69, 70, 100, 270, o.len() - 1] {
            let mut c = ObjectCheck::default();
            c.feed(&o[..split]);
            c.feed(&o[split..]);
            assert_eq!(c.finish(), Ok(()), "split at {split}");
        }
        let mut bad = o.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut c = ObjectCheck::default();
        c.feed(&bad);
        assert!(c.finish().is_err());
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

    #[tokio::test]
    async fn pieces_assemble_with_old_partials_and_gaps_are_reported() {
        const SEG: u64 = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = std::sync::Arc::new(crate::storage::LocalFs::new(dir.path()));
        let a = WalArchive::new(storage.clone(), SEG, Compression::Zstd(1));
        let name = segment_name(1, 4, SEG);
        let seg: Vec<u8> = (0..SEG as u32).map(|i| (i % 251) as u8).collect();
        let part = |a: u64, b: u64| Bytes::copy_from_slice(&seg[a as usize..b as usize]);
        // An older `.partial` [0, 1000), written as earlier versions did.
        let old = layout::wal_partial(&a.key(&name).unwrap(), 1000);
        storage
            .put(
                &old,
                encode_object(&seg[..1000], Compression::Zstd(1)).unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(a.partial_len(&name).await.unwrap(), Some(1000));
        // A restarted streamer's pieces overlapping it, then a hole.
        a.put_piece(&name, 0, part(0, 600)).await.unwrap();
        let (k2, _) = a.put_piece(&name, 1000, part(1000, 5000)).await.unwrap();
        a.put_piece(&name, 5000, part(5000, 9000)).await.unwrap();
        a.put_piece(&name, 12000, part(12000, 20000)).await.unwrap();
        let got = a.fetch_pieces(&name).await.unwrap().unwrap();
        assert_eq!(&got.data[..], &seg[..9000]);
        assert_eq!(got.gap, Some((9000, 12000)));
        assert_eq!(a.partial_len(&name).await.unwrap(), Some(9000));
        let range = |end: u64| a.missing_in_range(1, Lsn(4 * SEG), Lsn(4 * SEG + end));
        assert_eq!(range(9000).await.unwrap(), None);
        // Bytes after the gap are held but do not count.
        assert_eq!(range(15000).await.unwrap(), Some(name.clone()));
        // Filling the hole joins them up.
        a.put_piece(&name, 9000, part(9000, 12000)).await.unwrap();
        assert_eq!(range(20000).await.unwrap(), None);
        assert_eq!(
            &a.fetch_partial(&name).await.unwrap().unwrap()[..],
            &seg[..20000]
        );
        // Pieces holding the whole segment stand in for it.
        a.put_piece(&name, 20000, part(20000, SEG)).await.unwrap();
        assert_eq!(
            a.missing_in_range(1, Lsn(4 * SEG), Lsn(5 * SEG))
                .await
                .unwrap(),
            None
        );
        // Overlapping bytes that differ are damage, named.
        let mut bad = seg[500..1500].to_vec();
        bad[300] ^= 0xff;
        storage.delete_many(&[k2]).await.unwrap();
        a.put_piece(&name, 500, Bytes::from(bad)).await.unwrap();
        let e = a.fetch_pieces(&name).await.unwrap_err();
        assert!(
            matches!(&e, WalError::Damaged { reason, .. } if reason.contains("offset 800")),
            "{e}"
        );
        // The complete segment replaces its pieces.
        a.push(&name, Bytes::from(seg.clone())).await.unwrap();
        assert!(a.pieces(&name).await.unwrap().all.is_empty());
        assert_eq!(a.fetch_pieces(&name).await.unwrap(), None);
    }
}
