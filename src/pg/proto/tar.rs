//! A streaming tar reader for the archives `BASE_BACKUP` sends: ustar
//! headers (with the `prefix` field for long names), pax extended headers
//! (`path`, `linkpath`, `size`, `mtime`), GNU long names, base-256 numbers,
//! 512-byte padding and the two zero blocks that end an archive.
//!
//! Owns: turning archive bytes into [`TarEvent`]s with memory bounded by
//! what the caller feeds (file contents are handed on as they arrive, never
//! collected). Must never: touch the file system (restore writes entries;
//! this only reads them), or panic on a corrupt archive.

use bytes::{Buf, Bytes, BytesMut};

use super::ProtoError;

const BLOCK: usize = 512;

/// The largest pax / GNU long-name header accepted. Real ones hold a few
/// paths; this bounds memory against a corrupt size field.
const MAX_EXTENDED_HEADER: u64 = 1 << 20;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    /// A symbolic link; in a base backup, `pg_tblspc/<oid>` → the
    /// tablespace's location.
    Symlink {
        target: String,
    },
    /// A hard link to an earlier entry (PostgreSQL never writes these).
    HardLink {
        target: String,
    },
    /// Devices, FIFOs and other types, by their type flag.
    Other(u8),
}

/// An entry's header, with pax and GNU extensions applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// Relative path as stored, without the trailing `/` PostgreSQL puts on
    /// directories and symlinks.
    pub path: String,
    /// Bytes of data that follow (the [`TarEvent::EntryData`] total).
    pub size: u64,
    /// Permission bits (`0o700`, …) as stored.
    pub mode: u32,
    /// Seconds since the Unix epoch.
    pub mtime: i64,
    pub kind: EntryKind,
}

/// What the parser found. For each entry: `EntryStart`, zero or more
/// `EntryData` (together exactly `size` bytes), `EntryEnd`. `End` after the
/// end-of-archive blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEvent {
    EntryStart(TarEntry),
    EntryData(Bytes),
    EntryEnd,
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Skipping `skip` padding bytes, then a header (or a zero block).
    Header { skip: u64 },
    /// Inside an entry's data.
    Data { remaining: u64, padding: u64 },
    /// Collecting a pax or GNU extended header's data.
    Extended {
        flag: u8,
        remaining: u64,
        padding: u64,
        data: Vec<u8>,
    },
    /// One zero block seen; the next must be the second one.
    OneZeroBlock,
    /// Both zero blocks seen; anything after is ignored.
    End,
}

/// Header fields that an extended header overrides for the next entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Overrides {
    path: Option<String>,
    linkpath: Option<String>,
    size: Option<u64>,
    mtime: Option<i64>,
}

/// A streaming tar parser; see [`TarParser::decode`].
#[derive(Debug, Clone)]
pub struct TarParser {
    state: State,
    /// Bytes of the archive consumed so far, for error messages.
    offset: u64,
    next: Overrides,
}

impl Default for TarParser {
    fn default() -> Self {
        TarParser::new()
    }
}

impl TarParser {
    pub fn new() -> TarParser {
        TarParser {
            state: State::Header { skip: 0 },
            offset: 0,
            next: Overrides::default(),
        }
    }

    /// True once the end-of-archive blocks have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::End
    }

    /// The next event from the bytes in `buf`, consuming them; `Ok(None)`
    /// when `buf` holds too little to say more. Entry data is handed on in
    /// pieces of whatever `buf` holds, without copying.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<TarEvent>, ProtoError> {
        loop {
            match &mut self.state {
                State::End => {
                    // Trailing bytes (tar's record padding) are ignored.
                    self.offset += buf.len() as u64;
                    buf.clear();
                    return Ok(None);
                }
                State::Header { skip } => {
                    if *skip > 0 {
                        let n = (*skip).min(buf.len() as u64);
                        buf.advance(n as usize);
                        *skip -= n;
                        self.offset += n;
                        if *skip > 0 {
                            return Ok(None);
                        }
                    }
                    if buf.len() < BLOCK {
                        return Ok(None);
                    }
                    let block = buf.split_to(BLOCK);
                    let at = self.offset;
                    self.offset += BLOCK as u64;
                    if block.iter().all(|&b| b == 0) {
                        self.state = State::OneZeroBlock;
                        continue;
                    }
                    if let Some(event) = self.header(&block, at)? {
                        return Ok(Some(event));
                    }
                }
                State::OneZeroBlock => {
                    if buf.len() < BLOCK {
                        return Ok(None);
                    }
                    let at = self.offset;
                    let block = buf.split_to(BLOCK);
                    self.offset += BLOCK as u64;
                    if !block.iter().all(|&b| b == 0) {
                        return Err(ProtoError::TarField {
                            offset: at,
                            field: "header (a single zero block is followed by data)",
                        });
                    }
                    self.state = State::End;
                    return Ok(Some(TarEvent::End));
                }
                State::Data { remaining, padding } => {
                    if *remaining == 0 {
                        self.state = State::Header { skip: *padding };
                        return Ok(Some(TarEvent::EntryEnd));
                    }
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (*remaining).min(buf.len() as u64);
                    *remaining -= n;
                    self.offset += n;
                    return Ok(Some(TarEvent::EntryData(buf.split_to(n as usize).freeze())));
                }
                State::Extended {
                    flag,
                    remaining,
                    padding,
                    data,
                } => {
                    let n = (*remaining).min(buf.len() as u64);
                    data.extend_from_slice(&buf.split_to(n as usize));
                    *remaining -= n;
                    self.offset += n;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    let (flag, padding, data) = (*flag, *padding, std::mem::take(data));
                    let at = self.offset - data.len() as u64;
                    self.extended(flag, &data, at)?;
                    self.state = State::Header { skip: padding };
                }
            }
        }
    }

    /// At the end of the stream: an error unless the archive was complete
    /// (both end-of-archive blocks seen).
    pub fn finish(&self) -> Result<(), ProtoError> {
        match &self.state {
            State::End => Ok(()),
            State::Data { .. } => Err(ProtoError::Truncated {
                what: "a tar entry's data",
            }),
            State::Extended { .. } => Err(ProtoError::Truncated {
                what: "a tar extended header",
            }),
            State::Header { .. } | State::OneZeroBlock => Err(ProtoError::Truncated {
                what: "a tar archive (no end-of-archive blocks)",
            }),
        }
    }

    /// Interprets a non-zero header block at archive offset `at`.
    fn header(&mut self, h: &[u8], at: u64) -> Result<Option<TarEvent>, ProtoError> {
        let bad = |field: &'static str| ProtoError::TarField { offset: at, field };
        let stored = octal(&h[148..156]).ok_or_else(|| bad("checksum"))?;
        let unsigned: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as u64
                }
            })
            .sum();
        let signed: i64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    b as i8 as i64
                }
            })
            .sum();
        if stored != unsigned && stored as i64 != signed {
            return Err(ProtoError::TarChecksum { offset: at });
        }

        let flag = h[156];
        let size = number(&h[124..136]).ok_or_else(|| bad("size"))?;
        let size = u64::try_from(size).map_err(|_| bad("size"))?;
        let padding = pad(size);

        if matches!(flag, b'x' | b'g' | b'L' | b'K') {
            if size > MAX_EXTENDED_HEADER {
                return Err(bad("extended header size"));
            }
            self.state = State::Extended {
                flag,
                remaining: size,
                padding,
                data: Vec::new(),
            };
            return Ok(None);
        }

        let ustar = &h[257..263] == b"ustar\0";
        let name = cstring(&h[0..100]);
        let mut path = if ustar && h[345] != 0 {
            let prefix = cstring(&h[345..500]);
            let mut p = prefix.to_vec();
            p.push(b'/');
            p.extend_from_slice(name);
            p
        } else {
            name.to_vec()
        };
        let next = std::mem::take(&mut self.next);
        if let Some(p) = next.path {
            path = p.into_bytes();
        }
        let path = String::from_utf8(path).map_err(|_| bad("path (not UTF-8)"))?;
        let link = match next.linkpath {
            Some(l) => l,
            None => String::from_utf8(cstring(&h[157..257]).to_vec())
                .map_err(|_| bad("link target (not UTF-8)"))?,
        };
        let size = next.size.unwrap_or(size);
        let padding = pad(size);
        let mode = number(&h[100..108]).ok_or_else(|| bad("mode"))?;
        let mode = u32::try_from(mode & 0o7777777).map_err(|_| bad("mode"))?;
        let mtime = match next.mtime {
            Some(t) => t,
            None => number(&h[136..148]).ok_or_else(|| bad("mtime"))?,
        };
        let kind = match flag {
            b'0' | 0 | b'7' => EntryKind::File,
            b'5' => EntryKind::Directory,
            b'2' => EntryKind::Symlink { target: link },
            b'1' => EntryKind::HardLink { target: link },
            other => EntryKind::Other(other),
        };
        let trimmed = path.trim_end_matches('/');
        let path = if trimmed.is_empty() {
            path.clone()
        } else {
            trimmed.to_owned()
        };
        if path.is_empty() {
            return Err(bad("path (empty)"));
        }
        self.state = State::Data {
            remaining: size,
            padding,
        };
        Ok(Some(TarEvent::EntryStart(TarEntry {
            path,
            size,
            mode,
            mtime,
            kind,
        })))
    }

    /// Applies a pax (`x`; `g` is read and ignored) or GNU long-name (`L`,
    /// `K`) header to the next entry.
    fn extended(&mut self, flag: u8, data: &[u8], at: u64) -> Result<(), ProtoError> {
        let bad = |field: &'static str| ProtoError::TarField { offset: at, field };
        match flag {
            b'L' => {
                let name =
                    String::from_utf8(cstring(data).to_vec()).map_err(|_| bad("GNU long name"))?;
                self.next.path = Some(name);
            }
            b'K' => {
                let name = String::from_utf8(cstring(data).to_vec())
                    .map_err(|_| bad("GNU long link name"))?;
                self.next.linkpath = Some(name);
            }
            _ => {
                let mut rest = data;
                while !rest.is_empty() {
                    // "<len> <key>=<value>\n", len counting the whole record.
                    let space = rest
                        .iter()
                        .position(|&b| b == b' ')
                        .ok_or_else(|| bad("pax record length"))?;
                    let len: usize = std::str::from_utf8(&rest[..space])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| bad("pax record length"))?;
                    if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
                        return Err(bad("pax record length"));
                    }
                    let record = &rest[space + 1..len - 1];
                    rest = &rest[len..];
                    let eq = record
                        .iter()
                        .position(|&b| b == b'=')
                        .ok_or_else(|| bad("pax record"))?;
                    let (key, value) = (&record[..eq], &record[eq + 1..]);
                    if flag != b'x' {
                        continue;
                    }
                    let text = || String::from_utf8(value.to_vec()).map_err(|_| bad("pax value"));
                    match key {
                        b"path" => self.next.path = Some(text()?),
                        b"linkpath" => self.next.linkpath = Some(text()?),
                        b"size" => {
                            self.next.size = Some(text()?.parse().map_err(|_| bad("pax size"))?);
                        }
                        b"mtime" => {
                            let t = text()?;
                            let whole = t.split('.').next().unwrap_or("");
                            self.next.mtime = Some(whole.parse().map_err(|_| bad("pax mtime"))?);
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// Padding after `size` bytes of data, up to the next 512-byte block.
fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The bytes before the first NUL.
fn cstring(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// An octal field: optional leading spaces, digits, then NULs or spaces.
fn octal(field: &[u8]) -> Option<u64> {
    let s = field
        .iter()
        .skip_while(|&&b| b == b' ')
        .take_while(|&&b| b != 0 && b != b' ');
    // An all-blank field reads as 0, as GNU tar does.
    let mut v: u64 = 0;
    for &b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

/// A numeric field: octal, or GNU/star base-256 when the high bit of the
/// first byte is set (PostgreSQL writes sizes over 8 GiB that way).
fn number(field: &[u8]) -> Option<i64> {
    match field.first() {
        Some(&first) if first & 0x80 != 0 => {
            // Big-endian two's complement over the field's bytes, with the
            // marker bit cleared for positive numbers (0x80…) and kept as
            // sign for negative ones (0xff…). At most 12 bytes: fits i128.
            let negative = first & 0x40 != 0;
            let mut v: i128 = if negative { -1 } else { 0 };
            for (i, &b) in field.iter().enumerate() {
                let b = if i == 0 && !negative { b & 0x7f } else { b };
                v = (v << 8) | b as i128;
            }
            i64::try_from(v).ok()
        }
        _ => octal(field).and_then(|v| i64::try_from(v).ok()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::pg::proto::testutil::{every_byte, feed, random_splits};

    /// A ustar header block for tests.
    pub(crate) fn header(name: &str, flag: u8, size: u64, link: &str, prefix: &str) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000700\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"14536771000\0");
        h[156] = flag;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| b as u64).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    pub(crate) fn archive() -> Vec<u8> {
        let mut a = Vec::new();
        a.extend(header("base/", b'5', 0, "", ""));
        a.extend(header("PG_VERSION", b'0', 3, "", ""));
        a.extend(b"15\n");
        a.extend(vec![0u8; 509]);
        a.extend(header("pg_tblspc/16384/", b'2', 0, "/srv/ts1", ""));
        let long_dir = "d".repeat(120);
        a.extend(header("file", b'0', 600, "", &long_dir));
        a.extend(vec![7u8; 600]);
        a.extend(vec![0u8; 424]);
        // A pax header giving the next entry a long path.
        let path = format!("{}/{}", "p".repeat(150), "q".repeat(100));
        let rec = format!("path={path}\n");
        let len = rec.len() + 4;
        let rec = format!("{len} {rec}");
        assert_eq!(rec.len(), len);
        a.extend(header("PaxHeader", b'x', rec.len() as u64, "", ""));
        a.extend(rec.as_bytes());
        a.extend(vec![0u8; pad(rec.len() as u64) as usize]);
        a.extend(header("short", b'0', 0, "", ""));
        a.extend(vec![0u8; 1024]);
        a
    }

    fn events(bytes: &[u8], splits: &[usize]) -> (Vec<TarEvent>, Result<(), ProtoError>) {
        let mut p = TarParser::new();
        let (ev, rest) = feed(bytes, splits, |b| p.decode(b));
        let end = rest.and_then(|_| p.finish());
        (ev, end)
    }

    /// Joins each entry's data so differently split runs compare equal.
    pub(crate) fn normalize(ev: Vec<TarEvent>) -> Vec<TarEvent> {
        let mut out: Vec<TarEvent> = Vec::new();
        for e in ev {
            match (out.last_mut(), e) {
                (Some(TarEvent::EntryData(prev)), TarEvent::EntryData(d)) => {
                    let mut joined = BytesMut::from(&prev[..]);
                    joined.extend_from_slice(&d);
                    *prev = joined.freeze();
                }
                (_, e) => out.push(e),
            }
        }
        out
    }

    #[test]
    fn ustar_prefix_pax_symlinks_directories() {
        let a = archive();
        let (ev, end) = events(&a, &[]);
        end.unwrap();
        let starts: Vec<&TarEntry> = ev
            .iter()
            .filter_map(|e| match e {
                TarEvent::EntryStart(h) => Some(h),
                _ => None,
            })
            .collect();
        assert_eq!(starts.len(), 5);
        assert_eq!(starts[0].path, "base");
        assert_eq!(starts[0].kind, EntryKind::Directory);
        assert_eq!(starts[0].mode, 0o700);
        assert_eq!(starts[0].mtime, 0o14536771000);
        assert_eq!(starts[1].path, "PG_VERSION");
        assert_eq!(starts[1].size, 3);
        assert_eq!(
            starts[2].kind,
            EntryKind::Symlink {
                target: "/srv/ts1".into()
            }
        );
        assert_eq!(starts[2].path, "pg_tblspc/16384");
        assert_eq!(starts[3].path, format!("{}/file", "d".repeat(120)));
        assert_eq!(starts[4].path.len(), 251);
        assert_eq!(ev.last(), Some(&TarEvent::End));
        let ev = normalize(ev);
        assert!(ev.contains(&TarEvent::EntryData(Bytes::from_static(b"15\n"))));
        assert!(ev.contains(&TarEvent::EntryData(Bytes::from(vec![7u8; 600]))));

        let (bytewise, end) = events(&a, &every_byte(a.len()));
        end.unwrap();
        assert_eq!(normalize(bytewise), ev);
    }

    #[test]
    fn truncation_is_an_error_at_end() {
        let a = archive();
        for cut in [0, 100, 512, 515, 1024, 1500, a.len() - 512, a.len() - 1] {
            let (_, end) = events(&a[..cut], &[]);
            assert!(end.is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn corruption_is_an_error() {
        let mut a = archive();
        a[10] ^= 1;
        let (_, end) = events(&a, &[]);
        assert!(matches!(end, Err(ProtoError::TarChecksum { offset: 0 })));
    }

    #[test]
    fn base256_numbers() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 0x01;
        f[10] = 0x02;
        assert_eq!(number(&f), Some(0x201));
        let f = [0xffu8; 12];
        assert_eq!(number(&f), Some(-1));
        assert_eq!(number(b"00000000012\0"), Some(10));
        assert_eq!(number(b"  12 \0\0\0\0\0\0\0"), Some(10));
        assert_eq!(number(b"0000000009\0\0"), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(9);
        let a = archive();
        for _ in 0..300 {
            // Random corruption of a valid archive, fed at random splits.
            let mut b = a.clone();
            for _ in 0..rng.usize(1..6) {
                let i = rng.usize(0..b.len());
                b[i] = rng.u8(..);
            }
            let splits = random_splits(&mut rng, b.len(), 5);
            let _ = events(&b, &splits);
            let noise: Vec<u8> = (0..rng.usize(0..2000)).map(|_| rng.u8(..)).collect();
            let _ = events(&noise, &[]);
        }
    }
}
