//! Timeline `.history` files (`00000002.history`): which timeline each
//! ancestor was and where this timeline branched off it.
//!
//! Owns: PostgreSQL's parsing rules for these files (`readTimeLineHistory`
//! in timeline.c): one line per ancestor, `parentTLI<TAB>X/Y<TAB>reason`,
//! blank lines and `#` comments skipped, timeline IDs strictly increasing.
//! Must never: read the file itself (callers hand over its bytes, which come
//! from `TIMELINE_HISTORY` or the repository).

use super::ProtoError;
use crate::pg::lsn::Lsn;

/// One line of a history file: timeline `parent_tli` ended (and the next one
/// began) at `switch_lsn`.
pub type HistoryEntry = (u32, Lsn);

/// Parses a history file into `(parent_tli, switch_lsn)` pairs, oldest first.
pub fn parse(content: &[u8]) -> Result<Vec<HistoryEntry>, ProtoError> {
    let text = String::from_utf8_lossy(content);
    let mut out: Vec<HistoryEntry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let bad = |problem: &str| ProtoError::History {
            line: line_no,
            problem: format!("{problem}: {:?}", line),
        };
        let mut fields = trimmed.split_whitespace();
        let tli = fields
            .next()
            .filter(|f| f.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|f| f.parse::<u32>().ok())
            .ok_or_else(|| bad("expected a numeric timeline ID"))?;
        let lsn = fields
            .next()
            .and_then(|f| f.parse::<Lsn>().ok())
            .ok_or_else(|| bad("expected a write-ahead log switchpoint location"))?;
        if let Some(&(last, _)) = out.last() {
            if tli <= last {
                return Err(bad("timeline IDs must be in increasing sequence"));
            }
        }
        out.push((tli, lsn));
    }
    Ok(out)
}

/// [`parse`], and check that every entry is an ancestor of `tli` (the
/// timeline whose history this is), as PostgreSQL does.
pub fn parse_for_timeline(tli: u32, content: &[u8]) -> Result<Vec<HistoryEntry>, ProtoError> {
    let entries = parse(content)?;
    if let Some(&(last, _)) = entries.last() {
        if last >= tli {
            return Err(ProtoError::History {
                line: 0,
                problem: format!(
                    "timeline IDs must be less than the child timeline's ID {tli}, found {last}"
                ),
            });
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_format() {
        let text = b"1\t0/3000158\tno recovery target specified\n\n# comment\n  \n2\t0/5000000\tat restore point \"x\"\n";
        assert_eq!(
            parse_for_timeline(3, text).unwrap(),
            vec![(1, Lsn(0x3000158)), (2, Lsn(0x5000000))]
        );
        assert!(parse_for_timeline(2, text).is_err());
        assert_eq!(parse(b"").unwrap(), vec![]);
        // A line without a reason, as some tools write.
        assert_eq!(parse(b"1\t0/10").unwrap(), vec![(1, Lsn(0x10))]);
    }

    #[test]
    fn syntax_errors() {
        let e = parse(b"1\t0/10\tok\nx\t0/20\n").unwrap_err();
        assert!(matches!(e, ProtoError::History { line: 2, .. }), "{e}");
        assert!(parse(b"1\n").is_err());
        assert!(parse(b"1\t0-10\n").is_err());
        assert!(parse(b"2\t0/10\n1\t0/20\n").is_err());
        assert!(parse(b"-1\t0/10\n").is_err());
        assert!(parse(b"1\t0/10\n1\t0/20\n").is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..2000 {
            let len = rng.usize(0..60);
            let bytes: Vec<u8> = (0..len)
                .map(|_| *rng.choice(b"0123456789ABCDEF/\t\n #x\xff").unwrap())
                .collect();
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn history_fixtures() {
        use crate::pg::proto::messages::{self, BackendMessage};
        use crate::pg::proto::testutil::{feed, fixture, fixtures};
        for name in fixtures("replication") {
            if !name.contains("timeline-history") {
                continue;
            }
            let bytes = fixture(&name);
            let (msgs, rest) = feed(&bytes, &[], messages::decode);
            assert!(rest.unwrap().is_empty());
            let row = msgs
                .iter()
                .find_map(|m| match m {
                    BackendMessage::DataRow(r) => Some(r.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{name}: no row"));
            assert_eq!(row[0].as_deref(), Some(&b"00000002.history"[..]));
            let entries = parse_for_timeline(2, row[1].as_deref().unwrap()).unwrap();
            assert_eq!(entries.len(), 1, "{name}");
            assert_eq!(entries[0].0, 1, "{name}");
        }
    }
}
