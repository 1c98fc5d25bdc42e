//! The long page header at the start of every WAL segment file
//! (`XLogLongPageHeaderData`): magic, timeline, page address, and the system
//! identifier, segment size and block size of the cluster that wrote it.
//! Pure code; lets `wal push` check a segment with no server connection.

/// What a segment's first page says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub magic: u16,
    pub timeline: u32,
    pub page_addr: u64,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

/// `XLP_LONG_HEADER` flag of `xlp_info`.
const XLP_LONG_HEADER: u16 = 0x0002;

/// Parse the long header (little-endian, as written on x86-64 and arm64).
pub fn parse_segment_header(b: &[u8]) -> Result<SegmentHeader, String> {
    if b.len() < 40 {
        return Err(format!(
            "{} bytes is too short for a WAL segment header",
            b.len()
        ));
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let info = u16_at(2);
    if info & XLP_LONG_HEADER == 0 {
        return Err("the first page has no long header: not the start of a WAL segment".into());
    }
    Ok(SegmentHeader {
        magic: u16_at(0),
        timeline: u32_at(4),
        page_addr: u64_at(8),
        // xlp_rem_len at 16, padding to 24 (MAXALIGN).
        system_identifier: u64_at(24),
        segment_size: u32_at(32),
        block_size: u32_at(36),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_long_header() {
        let mut b = vec![0u8; 64];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&0x0006u16.to_le_bytes());
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        b[8..16].copy_from_slice(&0x0300_0000u64.to_le_bytes());
        b[24..32].copy_from_slice(&7_300_000_000_000_000_001u64.to_le_bytes());
        b[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        let h = parse_segment_header(&b).unwrap();
        assert_eq!(h.timeline, 1);
        assert_eq!(h.system_identifier, 7_300_000_000_000_000_001);
        assert_eq!(h.segment_size, 16 << 20);
        assert_eq!(h.block_size, 8192);
        assert!(parse_segment_header(&b[..10]).is_err());
        b[2] = 0;
        assert!(parse_segment_header(&b).is_err());
    }
}
