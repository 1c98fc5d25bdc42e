//! Pure assembly of streamed WAL into segments. XLogData messages must
//! arrive contiguously; the assembler hands back each segment once its last
//! byte has arrived, and can show the partial tail of the one being filled.
//! Memory: one segment (`wal_segment_size`).

use bytes::Bytes;

use crate::pg::lsn::{segment_name, Lsn};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error(
        "WAL stream jumped from {expected} to {got}: refusing to archive a segment with a gap"
    )]
    Gap { expected: Lsn, got: Lsn },
}

/// A segment whose every byte has arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    pub name: String,
    pub segno: u64,
    pub data: Bytes,
}

#[derive(Debug)]
pub struct SegmentAssembler {
    seg_size: u64,
    tli: u32,
    segno: u64,
    buf: Vec<u8>,
}

impl SegmentAssembler {
    /// Start assembling at `start`, which must be a segment boundary.
    pub fn new(start: Lsn, tli: u32, seg_size: u64) -> SegmentAssembler {
        SegmentAssembler {
            seg_size,
            tli,
            segno: start.segno(seg_size),
            buf: Vec::with_capacity(seg_size as usize),
        }
    }

    /// The position the next byte must have.
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.segno * self.seg_size + self.buf.len() as u64)
    }

    pub fn timeline(&self) -> u32 {
        self.tli
    }

    /// Add WAL starting at `start`. Data the assembler already has (a
    /// server resending after a reconnect) is skipped; a gap is an error.
    pub fn push(&mut self, start: Lsn, mut data: &[u8]) -> Result<Vec<Completed>, AssemblyError> {
        let expected = self.next_lsn();
        let mut pos = start.0;
        if pos > expected.0 {
            return Err(AssemblyError::Gap {
                expected,
                got: start,
            });
        }
        // Skip what we already hold.
        let overlap = (expected.0 - pos).min(data.len() as u64) as usize;
        data = &data[overlap..];
        pos += overlap as u64;
        let mut done = Vec::new();
        while !data.is_empty() {
            debug_assert_eq!(pos, self.next_lsn().0);
            let room = (self.seg_size as usize) - self.buf.len();
            let n = room.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            pos += n as u64;
            if self.buf.len() as u64 == self.seg_size {
                let full =
                    std::mem::replace(&mut self.buf, Vec::with_capacity(self.seg_size as usize));
                done.push(Completed {
                    name: segment_name(self.tli, self.segno, self.seg_size),
                    segno: self.segno,
                    data: Bytes::from(full),
                });
                self.segno += 1;
            }
        }
        Ok(done)
    }

    /// The bytes of the segment being filled that have arrived: `[0, len)`.
    pub fn filled(&self) -> &[u8] {
        &self.buf
    }

    /// Name and bytes of the segment being filled, if it has any.
    pub fn partial(&self) -> Option<(String, Bytes)> {
        (!self.buf.is_empty()).then(|| {
            (
                segment_name(self.tli, self.segno, self.seg_size),
                Bytes::copy_from_slice(&self.buf),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 1 << 20;

    #[test]
    fn assembles_segments_across_messages() {
        let mut a = SegmentAssembler::new(Lsn(3 * SEG), 1, SEG);
        let chunk = vec![7u8; 300_000];
        let mut done = Vec::new();
        let mut pos = 3 * SEG;
        for _ in 0..8 {
            done.extend(a.push(Lsn(pos), &chunk).unwrap());
            pos += chunk.len() as u64;
        }
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].name, "000000010000000000000003");
        assert_eq!(done[0].data.len() as u64, SEG);
        assert_eq!(done[1].segno, 4);
        let (name, tail) = a.partial().unwrap();
        assert_eq!(name, "000000010000000000000005");
        assert_eq!(tail.len() as u64, 8 * 300_000 - 2 * SEG);
    }

    #[test]
    fn resent_data_is_skipped_and_gaps_are_errors() {
        let mut a = SegmentAssembler::new(Lsn(0), 1, SEG);
        a.push(Lsn(0), &[1; 100]).unwrap();
        a.push(Lsn(50), &[1; 100]).unwrap();
        assert_eq!(a.next_lsn(), Lsn(150));
        assert_eq!(
            a.push(Lsn(200), &[1; 10]),
            Err(AssemblyError::Gap {
                expected: Lsn(150),
                got: Lsn(200)
            })
        );
        // Entirely old data changes nothing.
        a.push(Lsn(10), &[1; 20]).unwrap();
        assert_eq!(a.next_lsn(), Lsn(150));
    }
}
