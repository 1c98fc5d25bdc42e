//! Sans-I/O decoders for what a PostgreSQL server sends on a replication
//! connection: the backend message framing, the walsender's CopyData payloads
//! (XLogData, keepalives), the `BASE_BACKUP` stream of both shapes
//! (PostgreSQL 13–14 and 15+), tar archives, and timeline `.history` files.
//!
//! Owns: turning bytes into typed messages and events, and the few encoders
//! the client needs for its own CopyData payloads. Every decoder takes the
//! bytes it has been given so far and answers `Ok(None)` when it needs more;
//! it checks every length before reading and never panics, whatever the bytes.
//!
//! Must never: touch a socket, a file or the tokio runtime (the tripwire test
//! below fails if these modules import `tokio`, `std::net` or `std::fs`).
//! The I/O shell is `pg::wire`; the captured byte streams these
//! decoders are tested against are in `proto-fixtures/`.

pub mod base_backup;
pub mod copy;
pub mod history;
pub mod messages;
pub mod replication;
pub mod shared_catalog;
pub mod tar;

/// Why bytes from the server could not be decoded. Each variant names the
/// message or stream that was wrong; none of them is retryable, because the
/// same server would send the same bytes again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// A backend message header with a length below 4.
    #[error("invalid length {len} in a backend message of type {tag:?}")]
    InvalidLength { tag: char, len: u32 },
    /// A backend message longer than pgtide is willing to buffer.
    #[error("backend message of type {tag:?} is {len} bytes, more than the {max}-byte limit")]
    MessageTooLarge { tag: char, len: u32, max: u32 },
    /// A message whose body is shorter than its fields, or with a field
    /// that cannot be what the protocol says.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// A message that has no place at this point of the conversation.
    #[error("unexpected {got} while {during}")]
    Unexpected { got: String, during: &'static str },
    /// The stream stopped in the middle of something.
    #[error("stream ended in the middle of {what}")]
    Truncated { what: &'static str },
    /// A tar header whose checksum does not match its bytes.
    #[error("tar header at byte {offset} has a bad checksum (the archive is corrupt)")]
    TarChecksum { offset: u64 },
    /// A tar header field that cannot be read.
    #[error("tar header at byte {offset}: invalid {field}")]
    TarField { offset: u64, field: &'static str },
    /// A line of a timeline history file that PostgreSQL would refuse too.
    #[error("timeline history file line {line}: {problem}")]
    History { line: usize, problem: String },
}

impl ProtoError {
    pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> ProtoError {
        ProtoError::Malformed {
            what,
            detail: detail.into(),
        }
    }
}

/// A checked cursor over one message body: every read checks the length
/// first and reports a [`ProtoError::Malformed`] naming `what`.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, pos: 0, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    fn short(&self, need: usize) -> ProtoError {
        ProtoError::malformed(
            self.what,
            format!(
                "needs {need} more bytes at offset {}, has {}",
                self.pos,
                self.remaining()
            ),
        )
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.remaining() < n {
            return Err(self.short(n));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn i16(&mut self) -> Result<i16, ProtoError> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, ProtoError> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(self.i32()? as u32)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, ProtoError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ProtoError> {
        Ok(self.i64()? as u64)
    }

    /// A NUL-terminated string, without the NUL.
    pub(crate) fn cstr(&mut self) -> Result<&'a [u8], ProtoError> {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(n) => {
                self.pos += n + 1;
                Ok(&rest[..n])
            }
            None => Err(ProtoError::malformed(
                self.what,
                format!("string at offset {} has no terminating NUL", self.pos),
            )),
        }
    }

    /// A NUL-terminated UTF-8 string.
    pub(crate) fn string(&mut self) -> Result<String, ProtoError> {
        let what = self.what;
        let bytes = self.cstr()?;
        utf8(bytes, what)
    }
}

/// UTF-8 text from the server; a server whose encoding is not UTF-8 may
/// send other bytes in messages, which are replaced rather than refused
/// only where the text is for humans (see `messages::ErrorFields`).
pub(crate) fn utf8(bytes: &[u8], what: &'static str) -> Result<String, ProtoError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ProtoError::malformed(what, "text is not valid UTF-8"))
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Feeding helpers shared by the decoders' fixture tests.

    use bytes::BytesMut;

    use super::ProtoError;

    /// The bytes of fixture `<kind>/<file>`; `.zst` files (the large base
    /// backups) are decompressed.
    pub(crate) fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/proto-fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        // Reading the fixture is the test's I/O, not the decoder's.
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => panic!("fixture {path}: {e}"),
        };
        if name.ends_with(".zst") {
            zstd::stream::decode_all(&bytes[..]).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
        } else {
            bytes
        }
    }

    /// Every fixture file under `proto-fixtures/<kind>/`.
    pub(crate) fn fixtures(kind: &str) -> Vec<String> {
        let dir = format!("{}/proto-fixtures/{kind}", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".bin") || n.ends_with(".bin.zst"))
                    .map(|n| format!("{kind}/{n}"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Feeds `input` to `decode` in pieces that end at `splits` (ascending
    /// offsets), draining every complete item after each piece, as a
    /// socket reader would. Returns the items and what was left unconsumed.
    pub(crate) fn feed<T>(
        input: &[u8],
        splits: &[usize],
        mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, ProtoError>,
    ) -> (Vec<T>, Result<BytesMut, ProtoError>) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        for &end in splits.iter().chain(std::iter::once(&input.len())) {
            let end = end.clamp(at, input.len());
            buf.extend_from_slice(&input[at..end]);
            at = end;
            loop {
                match decode(&mut buf) {
                    Ok(Some(item)) => out.push(item),
                    Ok(None) => break,
                    Err(e) => return (out, Err(e)),
                }
            }
        }
        (out, Ok(buf))
    }

    /// Split points: every byte.
    pub(crate) fn every_byte(len: usize) -> Vec<usize> {
        (1..len).collect()
    }

    /// Split points: `n` random offsets.
    pub(crate) fn random_splits(rng: &mut fastrand::Rng, len: usize, n: usize) -> Vec<usize> {
        let mut v: Vec<usize> = (0..n).map(|_| rng.usize(0..=len)).collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pure modules, by source (relative to src/pg/proto): the protocol
    /// decoders here, and the other parsers of PostgreSQL's formats (binary
    /// COPY, WAL page headers, pg_dump's archive, the WAL segment
    /// assembler). A decoder that starts doing I/O fails here.
    const PURE_SOURCES: &[(&str, &str)] = &[
        ("mod.rs", include_str!("mod.rs")),
        ("copy.rs", include_str!("copy.rs")),
        ("messages.rs", include_str!("messages.rs")),
        ("replication.rs", include_str!("replication.rs")),
        ("base_backup.rs", include_str!("base_backup.rs")),
        ("tar.rs", include_str!("tar.rs")),
        ("history.rs", include_str!("history.rs")),
        ("../copy_binary.rs", include_str!("../copy_binary.rs")),
        ("../walpage.rs", include_str!("../walpage.rs")),
        ("../dump_archive.rs", include_str!("../dump_archive.rs")),
        (
            "../../jobs/wal/segment.rs",
            include_str!("../../jobs/wal/segment.rs"),
        ),
        ("shared_catalog.rs", include_str!("shared_catalog.rs")),
        // Not a parser, but pure by the same rule: the logical restore's
        // planner decides from facts read beforehand.
        (
            "../../jobs/logical_restore/plan.rs",
            include_str!("../../jobs/logical_restore/plan.rs"),
        ),
        // The same for the table restore's staging and swap, and for the
        // choice of the databases a scratch restore leaves sparse.
        (
            "../../jobs/table_pitr/plan.rs",
            include_str!("../../jobs/table_pitr/plan.rs"),
        ),
        (
            "../../jobs/physical_restore/sparse.rs",
            include_str!("../../jobs/physical_restore/sparse.rs"),
        ),
    ];

    #[test]
    fn decoders_do_no_io() {
        // Test modules may read fixtures; the decoders themselves may not.
        let forbidden = ["tokio", "std::net", "std::fs"];
        for (name, source) in PURE_SOURCES {
            let code = source.split("#[cfg(test)]").next().unwrap_or(source);
            for line in code.lines() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                for f in forbidden {
                    let uses = line.starts_with("use ") && line.contains(f);
                    let path = line.contains(&format!("{f}::")) || line.contains(&format!("::{f}"));
                    assert!(
                        !(uses || path),
                        "src/pg/proto/{name} must stay sans-I/O but mentions {f}: {line}"
                    );
                }
            }
        }
    }

    #[test]
    fn reader_checks_lengths() {
        let mut r = Reader::new(&[0, 1, 2], "test");
        assert_eq!(r.i16().unwrap(), 1);
        assert!(r.i32().is_err());
        assert_eq!(r.u8().unwrap(), 2);
        assert!(r.u8().is_err());
        let mut r = Reader::new(b"abc\0def", "test");
        assert_eq!(r.string().unwrap(), "abc");
        assert!(r.cstr().is_err());
        assert_eq!(r.remaining(), 3);
    }
}
