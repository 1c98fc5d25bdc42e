//! Pure choice of the base backup to restore for a recovery target, and the
//! checks that the target is reachable at all.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};

use crate::pg::lsn::Lsn;

/// What the user asked recovery to stop at.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Replay all WAL in the archive.
    End,
    /// `recovery_target_time`; `text` is passed to PostgreSQL as given.
    Time {
        at: DateTime<Utc>,
        text: String,
    },
    Lsn(Lsn),
    Xid(String),
    Name(String),
    Immediate,
}

/// Parse a PostgreSQL-style timestamp with a UTC offset:
/// `2026-11-20 14:03:00+00`, `2026-11-20T14:03:00.5+01:00`, `…Z`.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%#z",
    ] {
        if let Ok(d) = DateTime::<FixedOffset>::parse_from_str(t, fmt) {
            return Ok(d.with_timezone(&Utc));
        }
    }
    if let Some(stripped) = t.strip_suffix(" UTC").or_else(|| t.strip_suffix('Z')) {
        for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
            if let Ok(n) = NaiveDateTime::parse_from_str(stripped, fmt) {
                return Ok(n.and_utc());
            }
        }
    }
    Err(format!(
        "invalid --target-time {s:?}: give a timestamp with a UTC offset, e.g. '2026-11-20 14:03:00+00'"
    ))
}

/// What the selector needs to know of a backup.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub finished_at: DateTime<Utc>,
    pub end_lsn: Lsn,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectError {
    #[error("no complete base backup in the repository (take one with pgtide backup)")]
    NoBackups,
    #[error("the recovery target is before the oldest base backup ({oldest}, which ended at {ended}): no backup can reach it")]
    BeforeOldest { oldest: String, ended: String },
}

/// The newest backup that ends before the target (all of them qualify for
/// targets that name no position: xid, name, immediate, end).
pub fn select<'a>(backups: &'a [Candidate], target: &Target) -> Result<&'a Candidate, SelectError> {
    let mut sorted: Vec<&Candidate> = backups.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let oldest = *sorted.first().ok_or(SelectError::NoBackups)?;
    let fits = |b: &&Candidate| match target {
        Target::Time { at, .. } => b.finished_at <= *at,
        Target::Lsn(l) => b.end_lsn <= *l,
        _ => true,
    };
    sorted
        .iter()
        .rev()
        .find(|b| fits(b))
        .copied()
        .ok_or_else(|| SelectError::BeforeOldest {
            oldest: oldest.id.clone(),
            ended: match target {
                Target::Lsn(_) => oldest.end_lsn.to_string(),
                _ => oldest.finished_at.to_rfc3339(),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, t: &str, lsn: u64) -> Candidate {
        Candidate {
            id: id.into(),
            finished_at: parse_time(t).unwrap(),
            end_lsn: Lsn(lsn),
        }
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2026-11-20 14:03:00+00").unwrap().to_rfc3339(),
            "2026-11-20T14:03:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-20 15:03:00.25+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-20T14:03:00.250+00:00"
        );
        assert!(parse_time("2026-11-20T14:03:00Z").is_ok());
        assert!(parse_time("2026-11-20 14:03:00").is_err());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn picks_the_newest_backup_ending_before_the_target() {
        let b = vec![
            c("20261120-100000F", "2026-11-20 10:05:00+00", 100),
            c("20261120-120000F", "2026-11-20 12:05:00+00", 200),
        ];
        let t = |s: &str| Target::Time {
            at: parse_time(s).unwrap(),
            text: s.into(),
        };
        assert_eq!(
            select(&b, &t("2026-11-20 11:00:00+00")).unwrap().id,
            "20261120-100000F"
        );
        assert_eq!(
            select(&b, &t("2026-11-20 13:00:00+00")).unwrap().id,
            "20261120-120000F"
        );
        assert!(matches!(
            select(&b, &t("2026-11-20 09:00:00+00")),
            Err(SelectError::BeforeOldest { .. })
        ));
        assert_eq!(
            select(&b, &Target::Lsn(Lsn(150))).unwrap().id,
            "20261120-100000F"
        );
        assert!(select(&b, &Target::Lsn(Lsn(50))).is_err());
        assert_eq!(select(&b, &Target::End).unwrap().id, "20261120-120000F");
        assert!(matches!(
            select(&[], &Target::End),
            Err(SelectError::NoBackups)
        ));
    }
}
