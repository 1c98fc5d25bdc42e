//! One chunk in, one independent stored frame out (and back): zstd (or no
//! compression) plus the CRC32 of the raw and of the stored bytes. Pure
//! functions; callers run them on the blocking pool, never on the reactor.

use bytes::Bytes;

use super::Compression;

/// zstd failed to compress a chunk.
#[derive(Debug, thiserror::Error)]
#[error("compression failed: {0}")]
pub struct CompressError(pub String);

/// A chunk ready to be appended to a pack.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub data: Bytes,
    pub raw_len: u64,
    pub crc_raw: u32,
    pub crc_stored: u32,
    /// Number of `\n` bytes in the raw chunk (rows, for COPY text streams).
    pub newlines: u64,
    /// Encrypted sets: the chunk's number (its nonce); 0 in plain sets.
    pub seq: u64,
}

pub fn encode(raw: &[u8], compression: Compression) -> Result<Encoded, CompressError> {
    let crc_raw = crc32fast::hash(raw);
    let newlines = count_newlines(raw);
    let data = match compression {
        Compression::None => Bytes::copy_from_slice(raw),
        Compression::Zstd(level) => {
            Bytes::from(compress(raw, level).map_err(|e| CompressError(e.to_string()))?)
        }
    };
    Ok(Encoded {
        crc_stored: crc32fast::hash(&data),
        data,
        raw_len: raw.len() as u64,
        crc_raw,
        newlines,
        seq: 0,
    })
}

thread_local! {
    /// One zstd context per thread, reused: a fresh context per chunk costs
    /// its allocation and table set-up every time.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(raw: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        match c.as_mut() {
            Some((l, _)) if *l == level => {}
            Some((l, z)) => {
                z.set_compression_level(level)?;
                *l = level;
            }
            None => *c = Some((level, zstd::bulk::Compressor::new(level)?)),
        }
        c.as_mut().expect("compressor set").1.compress(raw)
    })
}

fn decompress(stored: &[u8], out: &mut [u8]) -> std::io::Result<usize> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut()
            .expect("decompressor set")
            .decompress_to_buffer(stored, out)
    })
}

/// Number of `\n` bytes: 64 u8 lanes over blocks of 255 × 64 bytes (at
/// most 255 per lane, so no overflow); fixed-size arrays let the compiler
/// vectorise it (about 20× the naive filter-count).
pub fn count_newlines(data: &[u8]) -> u64 {
    let mut n = 0u64;
    let mut blocks = data.chunks_exact(255 * 64);
    for block in &mut blocks {
        let mut acc = [0u8; 64];
        for lane in block.chunks_exact(64) {
            let lane: &[u8; 64] = lane.try_into().expect("64 bytes");
            for (a, &b) in acc.iter_mut().zip(lane) {
                *a = a.wrapping_add((b == b'\n') as u8);
            }
        }
        n += acc.iter().map(|&x| x as u64).sum::<u64>();
    }
    n + blocks.remainder().iter().filter(|&&b| b == b'\n').count() as u64
}

/// Why a stored chunk was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptKind {
    #[error("stored checksum mismatch (expected {expected:08x}, found {found:08x})")]
    StoredCrc { expected: u32, found: u32 },
    #[error("stored length mismatch (expected {expected}, found {found})")]
    StoredLen { expected: u64, found: u64 },
    #[error("cannot decompress: {0}")]
    Decompress(String),
    #[error("decompressed length mismatch (expected {expected}, found {found})")]
    RawLen { expected: u64, found: u64 },
    #[error("content checksum mismatch (expected {expected:08x}, found {found:08x})")]
    RawCrc { expected: u32, found: u32 },
    /// An encrypted frame failed to open: damaged, edited, moved, or from
    /// another set.
    #[error("authentication failed: the chunk was damaged, edited or moved")]
    Auth,
}

/// Check and decode a stored frame against what the manifest recorded.
pub fn decode(
    stored: &[u8],
    stored_len: u64,
    crc_stored: u32,
    raw_len: u64,
    crc_raw: u32,
    compression: Compression,
) -> Result<Bytes, CorruptKind> {
    // Nothing is allocated for a frame whose stored bytes are already wrong.
    check_stored(stored, stored_len, crc_stored)?;
    // The manifest bounds the output; a frame claiming more is corrupt.
    let cap = usize::try_from(raw_len).map_err(|_| CorruptKind::RawLen {
        expected: raw_len,
        found: 0,
    })?;
    let mut out = vec![0u8; cap];
    let n = decode_into(
        stored,
        stored_len,
        crc_stored,
        raw_len,
        crc_raw,
        compression,
        &mut out,
    )?;
    out.truncate(n);
    Ok(Bytes::from(out))
}

pub fn check_stored(stored: &[u8], stored_len: u64, crc_stored: u32) -> Result<(), CorruptKind> {
    if stored.len() as u64 != stored_len {
        return Err(CorruptKind::StoredLen {
            expected: stored_len,
            found: stored.len() as u64,
        });
    }
    let found = crc32fast::hash(stored);
    if found != crc_stored {
        return Err(CorruptKind::StoredCrc {
            expected: crc_stored,
            found,
        });
    }
    Ok(())
}

/// [`decode`] into a caller's buffer (at least `raw_len` long), so a reader
/// can reuse its buffers; returns `raw_len`.
pub fn decode_into(
    stored: &[u8],
    stored_len: u64,
    crc_stored: u32,
    raw_len: u64,
    crc_raw: u32,
    compression: Compression,
    out: &mut [u8],
) -> Result<usize, CorruptKind> {
    check_stored(stored, stored_len, crc_stored)?;
    decode_frame_into(stored, raw_len, Some(crc_raw), compression, out)
}

/// Decode a frame whose stored bytes were already checked (or opened by
/// the AEAD) into `out`; `crc_raw` is checked when given (encrypted sets
/// record none: the AEAD tag authenticates the frame, and a CRC of the
/// plaintext would leak it).
pub fn decode_frame_into(
    stored: &[u8],
    raw_len: u64,
    crc_raw: Option<u32>,
    compression: Compression,
    out: &mut [u8],
) -> Result<usize, CorruptKind> {
    let cap = usize::try_from(raw_len)
        .ok()
        .filter(|&n| n <= out.len())
        .ok_or(CorruptKind::RawLen {
            expected: raw_len,
            found: out.len() as u64,
        })?;
    let out = &mut out[..cap];
    let n = match compression {
        Compression::None => {
            if stored.len() != cap {
                return Err(CorruptKind::RawLen {
                    expected: raw_len,
                    found: stored.len() as u64,
                });
            }
            out.copy_from_slice(stored);
            cap
        }
        // A frame that decodes to more than `raw_len` fails here.
        Compression::Zstd(_) => {
            decompress(stored, out).map_err(|e| CorruptKind::Decompress(e.to_string()))?
        }
    };
    if n != cap {
        return Err(CorruptKind::RawLen {
            expected: raw_len,
            found: n as u64,
        });
    }
    if let Some(crc_raw) = crc_raw {
        let found = crc32fast::hash(&out[..n]);
        if found != crc_raw {
            return Err(CorruptKind::RawCrc {
                expected: crc_raw,
                found,
            });
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(c: Compression) {
        let raw: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("{i}\trow\n").into_bytes())
            .collect();
        let e = encode(&raw, c).unwrap();
        assert_eq!(e.newlines, 100_000);
        let back = decode(
            &e.data,
            e.data.len() as u64,
            e.crc_stored,
            e.raw_len,
            e.crc_raw,
            c,
        )
        .unwrap();
        assert_eq!(&back[..], &raw[..]);
    }

    #[test]
    fn newline_count_matches_the_naive_one() {
        for len in [0usize, 1, 63, 64, 255 * 64, 255 * 64 + 7, 100_000] {
            let data: Vec<u8> = (0..len)
                .map(|i| if i % 7 == 0 { b'\n' } else { b'x' })
                .collect();
            let naive = data.iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(count_newlines(&data), naive, "len {len}");
        }
        // All newlines: no lane overflow.
        assert_eq!(count_newlines(&vec![b'\n'; 255 * 64 * 3]), 255 * 64 * 3);
    }

    #[test]
    fn zstd_and_none_round_trip() {
        roundtrip(Compression::Zstd(3));
        roundtrip(Compression::Zstd(1));
        roundtrip(Compression::None);
    }

    #[test]
    fn decode_into_refuses_a_frame_larger_than_recorded() {
        let raw = b"0123456789\n".repeat(5000);
        for c in [Compression::Zstd(1), Compression::None] {
            let e = encode(&raw, c).unwrap();
            let mut out = vec![0u8; raw.len() + 100];
            let n = decode_into(
                &e.data,
                e.data.len() as u64,
                e.crc_stored,
                e.raw_len,
                e.crc_raw,
                c,
                &mut out,
            )
            .unwrap();
            assert_eq!(&out[..n], &raw[..]);
            // The manifest claims fewer raw bytes than the frame holds.
            let err = decode_into(
                &e.data,
                e.data.len() as u64,
                e.crc_stored,
                e.raw_len - 1,
                e.crc_raw,
                c,
                &mut out,
            )
            .unwrap_err();
            assert!(
                matches!(err, CorruptKind::Decompress(_) | CorruptKind::RawLen { .. }),
                "{err:?}"
            );
            // A buffer too small for what the manifest claims.
            let err = decode_into(
                &e.data,
                e.data.len() as u64,
                e.crc_stored,
                e.raw_len,
                e.crc_raw,
                c,
                &mut out[..10],
            )
            .unwrap_err();
            assert!(matches!(err, CorruptKind::RawLen { .. }), "{err:?}");
        }
    }

    #[test]
    fn corruption_is_detected_not_panicked() {
        let raw = b"hello world\n".repeat(1000);
        let c = Compression::Zstd(3);
        let e = encode(&raw, c).unwrap();
        let mut bad = e.data.to_vec();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        let err = decode(
            &bad,
            bad.len() as u64,
            e.crc_stored,
            e.raw_len,
            e.crc_raw,
            c,
        )
        .unwrap_err();
        assert!(matches!(err, CorruptKind::StoredCrc { .. }));
        // Same bytes but a manifest that lies about the checksum: still detected.
        let crc = crc32fast::hash(&bad);
        let err = decode(&bad, bad.len() as u64, crc, e.raw_len, e.crc_raw, c).unwrap_err();
        assert!(matches!(
            err,
            CorruptKind::Decompress(_) | CorruptKind::RawCrc { .. } | CorruptKind::RawLen { .. }
        ));
        // Truncated.
        let t = &e.data[..e.data.len() - 3];
        let err = decode(
            t,
            e.data.len() as u64,
            e.crc_stored,
            e.raw_len,
            e.crc_raw,
            c,
        )
        .unwrap_err();
        assert!(matches!(err, CorruptKind::StoredLen { .. }));
    }
}
