//! The rows of a `COPY … TO STDOUT`, read in place: the run of complete
//! CopyData messages at the start of a read buffer, each payload a slice of
//! that buffer (no allocation per row).
//!
//! Owns: the framing of CopyData messages (`d`, int32 length, payload).
//! Must never: touch a socket; other messages are left to
//! [`super::messages::decode`].

use super::ProtoError;

/// The largest CopyData message accepted: PostgreSQL sends one row per
/// message, and a row (one datum of up to 1 GB, escaped in text) stays
/// below this.
pub const MAX_COPY_DATA_LEN: u32 = (1 << 31) - 1;

/// Where the leading run of complete CopyData messages in `buf` ends (0:
/// `buf` does not start with a complete one: it is empty, holds only part
/// of a message, or starts with another message type).
pub fn complete_frames_end(buf: &[u8]) -> Result<usize, ProtoError> {
    let mut pos = 0;
    while buf.len() - pos >= 5 && buf[pos] == b'd' {
        let len = u32::from_be_bytes(buf[pos + 1..pos + 5].try_into().expect("4 bytes"));
        if len < 4 {
            return Err(ProtoError::InvalidLength { tag: 'd', len });
        }
        if len > MAX_COPY_DATA_LEN {
            return Err(ProtoError::MessageTooLarge {
                tag: 'd',
                len,
                max: MAX_COPY_DATA_LEN,
            });
        }
        let total = 1 + len as usize;
        if buf.len() - pos < total {
            break;
        }
        pos += total;
    }
    Ok(pos)
}

/// The payloads of the CopyData messages that fill `buf` (a prefix that
/// [`complete_frames_end`] vouched for).
#[derive(Debug, Clone)]
pub struct CopyFrames<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> CopyFrames<'a> {
    pub fn new(buf: &'a [u8]) -> CopyFrames<'a> {
        CopyFrames { buf, pos: 0 }
    }
}

impl<'a> Iterator for CopyFrames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        if rest.len() < 5 || rest[0] != b'd' {
            return None;
        }
        let len = u32::from_be_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        if len < 4 || rest.len() < 1 + len {
            return None;
        }
        self.pos += 1 + len;
        Some(&rest[5..1 + len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(payload.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn stream() -> (Vec<u8>, Vec<Vec<u8>>) {
        let rows: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("{i}\trow {i}\n").repeat(i % 7).into_bytes())
            .collect();
        let mut bytes = Vec::new();
        for r in &rows {
            bytes.extend(frame(b'd', r));
        }
        bytes.extend(frame(b'c', b""));
        bytes.extend(frame(b'C', b"COPY 50\0"));
        (bytes, rows)
    }

    /// Reads `bytes` fed `step` bytes at a time, as the client does: the
    /// complete frames at the front, then (here) the rest is not CopyData.
    fn rows_fed_by(bytes: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            let end = complete_frames_end(&buf).unwrap();
            out.extend(CopyFrames::new(&buf[..end]).map(<[u8]>::to_vec));
            buf.drain(..end);
            if buf.first().is_some_and(|&t| t != b'd') || fed == bytes.len() {
                return out;
            }
            let n = step.min(bytes.len() - fed);
            buf.extend_from_slice(&bytes[fed..fed + n]);
            fed += n;
        }
    }

    #[test]
    fn rows_whole_and_byte_by_byte() {
        let (bytes, rows) = stream();
        assert_eq!(rows_fed_by(&bytes, bytes.len()), rows);
        assert_eq!(rows_fed_by(&bytes, 1), rows);
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..50 {
            assert_eq!(rows_fed_by(&bytes, rng.usize(1..200)), rows);
        }
    }

    #[test]
    fn stops_at_other_messages_and_partial_frames() {
        let (bytes, rows) = stream();
        let copy_done = bytes.len() - frame(b'c', b"").len() - frame(b'C', b"COPY 50\0").len();
        assert_eq!(complete_frames_end(&bytes).unwrap(), copy_done);
        assert_eq!(CopyFrames::new(&bytes[..copy_done]).count(), rows.len());
        assert_eq!(complete_frames_end(&bytes[..4]).unwrap(), 0);
        assert_eq!(complete_frames_end(b"").unwrap(), 0);
        assert_eq!(complete_frames_end(&frame(b'E', b"x")).unwrap(), 0);
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert!(matches!(
            complete_frames_end(b"d\0\0\0\x02"),
            Err(ProtoError::InvalidLength { .. })
        ));
        assert!(matches!(
            complete_frames_end(b"d\xff\xff\xff\xff"),
            Err(ProtoError::MessageTooLarge { .. })
        ));
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..2000 {
            let len = rng.usize(0..40);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if let Ok(end) = complete_frames_end(&bytes) {
                let _ = CopyFrames::new(&bytes[..end]).count();
            }
        }
    }
}
