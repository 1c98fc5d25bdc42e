//! WAL positions and names: `Lsn`, timelines, segment numbers and the
//! segment file names (8 hex digits each of timeline, log id and segment), timeline `.history` names.
//! Pure code, PostgreSQL's own naming (xlog_internal.h).

use std::fmt;
use std::str::FromStr;

/// A WAL position (`XLogRecPtr`), printed `X/Y` as PostgreSQL does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const INVALID: Lsn = Lsn(0);

    /// The segment this position falls in.
    pub fn segno(self, seg_size: u64) -> u64 {
        self.0 / seg_size
    }

    /// Offset within its segment.
    pub fn segment_offset(self, seg_size: u64) -> u64 {
        self.0 % seg_size
    }

    /// The start of its segment.
    pub fn segment_start(self, seg_size: u64) -> Lsn {
        Lsn(self.0 - self.0 % seg_size)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Lsn, String> {
        let bad = || format!("invalid LSN {s:?} (expected e.g. 0/16B3748)");
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn(((hi as u64) << 32) | lo as u64))
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Lsn, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Valid `wal_segment_size` values: powers of two from 1 MiB to 1 GiB.
pub fn valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&size)
}

fn segments_per_xlogid(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

/// `000000010000000000000003` for timeline 1, segment 3 (16 MiB segments).
pub fn segment_name(tli: u32, segno: u64, seg_size: u64) -> String {
    let per = segments_per_xlogid(seg_size);
    format!("{:08X}{:08X}{:08X}", tli, segno / per, segno % per)
}

/// Parse a segment file name into (timeline, segment number).
pub fn parse_segment_name(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per = segments_per_xlogid(seg_size);
    if seg >= per {
        return None;
    }
    Some((tli, log * per + seg))
}

/// `00000002.history`
pub fn history_name(tli: u32) -> String {
    format!("{tli:08X}.history")
}

pub fn parse_history_name(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".history")?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    #[test]
    fn lsn_text() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn segment_names_match_postgres() {
        assert_eq!(segment_name(1, 3, SEG), "000000010000000000000003");
        // 256 segments of 16 MiB per 4 GiB "xlogid".
        assert_eq!(segment_name(1, 256, SEG), "000000010000000100000000");
        assert_eq!(segment_name(0x1A, 0x1FF, SEG), "0000001A00000001000000FF");
        assert_eq!(
            parse_segment_name("000000010000000100000000", SEG),
            Some((1, 256))
        );
        assert_eq!(parse_segment_name("0000000100000001000001FF", SEG), None);
        // 1 GiB segments: 4 per xlogid.
        assert_eq!(segment_name(1, 5, 1 << 30), "000000010000000100000001");
        let l: Lsn = "1/40000000".parse().unwrap();
        assert_eq!(l.segno(1 << 30), 5);
        assert_eq!(history_name(2), "00000002.history");
        assert_eq!(parse_history_name("0000000A.history"), Some(10));
        assert!(valid_segment_size(16 << 20));
        assert!(!valid_segment_size(3 << 20));
    }
}
