//! Units shared by every layer: human-readable durations (`500ms`, `30s`,
//! `5m`, `12h`, `30d`, `2w`) and sizes (`4MiB`, `16MB`): the one parser of
//! each that every flag, configuration key and repository URL parameter
//! (`part_size=16MB`) uses, and the serde adapter for configuration values
//! that hold a duration.
//!
//! A leaf: it imports nothing of pgtide, so both `cli` and `repo` (retention
//! policies) may use it. Must never: read a clock, a file or the environment.

use std::time::Duration;

const UNITS: &str = "ms, s, m, h, d or w";

/// `30s`, `5m`, `500ms`, `2h`, `30d`, `2w`, `10` (seconds) → duration.
/// `m` is minutes; a day is 24 hours and a week 7 days (UTC knows no
/// daylight-saving shifts).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 500ms, 30s, 5m, 1h, 30d"))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("duration {s:?} is too large"))
    };
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" | "min" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        "w" => secs(7 * 86_400),
        _ => Err(format!("invalid duration unit in {s:?}: use {UNITS}")),
    }
}

/// The shortest exact spelling that [`parse_duration`] reads back:
/// `2w`, `30d`, `12h`, `90s`, `1500ms`.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 || d.as_secs() == 0 {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    for (unit, len) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if s % len == 0 {
            return format!("{}{unit}", s / len);
        }
    }
    format!("{s}s")
}

/// `#[serde(with = "crate::units::opt_duration")]` for an `Option<Duration>`
/// written as a string (`"30d"`), e.g. a configuration key.
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => super::parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// `4MiB`, `512k`, `1G`, `1048576` → bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: use a number with an optional unit (k, M, G, KiB, MiB, GiB)")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("invalid size unit in {s:?}: use k, M, G or T")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Human-readable bytes: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(
            parse_duration("12h").unwrap(),
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(
            parse_duration(" 3d ").unwrap(),
            Duration::from_secs(3 * 86_400)
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3y").is_err());
        assert!(parse_duration("-1d").is_err());
        assert!(parse_duration("99999999999999999999w").is_err());
        assert!(parse_duration("9999999999999999999w").is_err());
    }

    #[test]
    fn formatting_reads_back() {
        for s in ["2w", "30d", "12h", "90s", "1500ms", "5m", "0ms", "8d"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(format_duration(d), s);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(14 * 86_400)), "2w");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("x").is_err());
        assert!(parse_size("1Q").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
    }
}
