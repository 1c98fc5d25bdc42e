//! Pure choice of the base backup to restore for a recovery target, and the
//! checks that the target is reachable at all: before the target, and on
//! the history of the timeline recovery will follow (a backup of a branch
//! that timeline abandoned makes PostgreSQL refuse to start:
//! "requested timeline N is not a child of this server's history").

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};

use crate::pg::lsn::Lsn;
use crate::pg::proto::history::HistoryEntry;

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
    /// The timeline the backup was taken on.
    pub timeline: u32,
}

/// `recovery_target_timeline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineTarget {
    /// The newest timeline whose history the archive holds.
    Latest,
    /// The backup's own timeline.
    Current,
    Id(u32),
}

/// Parse `--target-timeline`: `latest`, `current` or a timeline number.
pub fn parse_timeline(s: &str) -> Result<TimelineTarget, String> {
    match s.trim() {
        "latest" => Ok(TimelineTarget::Latest),
        "current" => Ok(TimelineTarget::Current),
        n => n
            .parse::<u32>()
            .ok()
            .filter(|&t| t >= 1)
            .map(TimelineTarget::Id)
            .ok_or_else(|| {
                format!("invalid --target-timeline {s:?}: use latest, current or a timeline number")
            }),
    }
}

/// Parsed `.history` files of the archive, by the timeline they describe.
pub type Histories = BTreeMap<u32, Vec<HistoryEntry>>;

/// The timeline recovery follows from a backup on `tli`. For `latest` this
/// is PostgreSQL's `findNewestTimeLine`: probe `tli+1`, `tli+2`, … while
/// their history files exist.
pub fn recovery_timeline(tli: u32, spec: TimelineTarget, h: &Histories) -> u32 {
    match spec {
        TimelineTarget::Current => tli,
        TimelineTarget::Id(n) => n,
        TimelineTarget::Latest => {
            let mut n = tli;
            while h.contains_key(&(n + 1)) {
                n += 1;
            }
            n
        }
    }
}

/// Why recovery from backup `c` cannot follow the timeline `spec` names
/// (None: it can): the timeline must be the backup's own, or descend from
/// it after the backup ended.
pub fn off_history(c: &Candidate, spec: TimelineTarget, h: &Histories) -> Option<String> {
    let n = recovery_timeline(c.timeline, spec, h);
    if n == c.timeline {
        return None;
    }
    // Timeline 1 has no history file: it descends from nothing.
    let history = if n == 1 {
        Some(&[][..])
    } else {
        h.get(&n).map(Vec::as_slice)
    };
    let Some(history) = history else {
        return Some(format!(
            "timeline {n} has no history file in the repository, so it cannot be reached from \
             timeline {}",
            c.timeline
        ));
    };
    match history.iter().find(|(t, _)| *t == c.timeline) {
        Some((_, switch)) if c.end_lsn <= *switch => None,
        Some((_, switch)) => Some(format!(
            "timeline {n} left timeline {} at {switch}, before the backup ended at {}: the \
             backup holds changes of the branch timeline {n} abandoned",
            c.timeline, c.end_lsn
        )),
        None => Some(format!(
            "timeline {n} does not descend from timeline {}",
            c.timeline
        )),
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SelectError {
    #[error("no complete base backup in the repository (take one with pgtide backup)")]
    NoBackups,
    #[error("the recovery target is before the oldest base backup ({oldest}, which ended at {ended}): no backup can reach it")]
    BeforeOldest { oldest: String, ended: String },
    #[error("no base backup before the target can recover along the requested timeline: backup {newest}: {reason} (restore an older backup, or choose the timeline with --target-timeline)")]
    OffTimeline { newest: String, reason: String },
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

/// [`select`] restricted to backups that can recover along the timeline
/// `spec` names ([`off_history`]).
pub fn select_on_timeline<'a>(
    backups: &'a [Candidate],
    target: &Target,
    spec: TimelineTarget,
    h: &Histories,
) -> Result<&'a Candidate, SelectError> {
    let newest = select(backups, target)?;
    let on: Vec<Candidate> = backups
        .iter()
        .filter(|c| off_history(c, spec, h).is_none())
        .cloned()
        .collect();
    match select(&on, target) {
        Ok(c) => Ok(backups
            .iter()
            .find(|b| b.id == c.id)
            .expect("selected from a subset")),
        Err(_) => Err(SelectError::OffTimeline {
            newest: newest.id.clone(),
            reason: off_history(newest, spec, h).unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, t: &str, lsn: u64) -> Candidate {
        Candidate {
            id: id.into(),
            finished_at: parse_time(t).unwrap(),
            end_lsn: Lsn(lsn),
            timeline: 1,
        }
    }

    #[test]
    fn timelines() {
        assert_eq!(parse_timeline("latest"), Ok(TimelineTarget::Latest));
        assert_eq!(parse_timeline("current"), Ok(TimelineTarget::Current));
        assert_eq!(parse_timeline("3"), Ok(TimelineTarget::Id(3)));
        assert!(parse_timeline("0").is_err());
        assert!(parse_timeline("newest").is_err());

        // Timeline 2 left 1 at 300; timeline 3 left 2 at 500.
        let mut h = Histories::new();
        h.insert(2, vec![(1, Lsn(300))]);
        h.insert(3, vec![(1, Lsn(300)), (2, Lsn(500))]);
        let on = |id: &str, tli: u32, end: u64| Candidate {
            timeline: tli,
            ..c(id, "2026-11-20 10:00:00+00", end)
        };
        assert_eq!(recovery_timeline(1, TimelineTarget::Latest, &h), 3);
        assert_eq!(recovery_timeline(3, TimelineTarget::Latest, &h), 3);
        assert_eq!(recovery_timeline(4, TimelineTarget::Latest, &h), 4);
        let before_fork = on("20261120-100000F", 1, 200);
        let abandoned = on("20261120-110000F", 1, 400);
        let tl2 = on("20261120-120000F", 2, 450);
        let tl2_late = on("20261120-130000F", 2, 600);
        for spec in [TimelineTarget::Latest, TimelineTarget::Id(3)] {
            assert_eq!(off_history(&before_fork, spec, &h), None);
            assert_eq!(off_history(&tl2, spec, &h), None);
            assert!(off_history(&abandoned, spec, &h)
                .unwrap()
                .contains("left timeline 1 at 0/12C"));
            assert!(off_history(&tl2_late, spec, &h).is_some());
        }
        assert_eq!(off_history(&abandoned, TimelineTarget::Current, &h), None);
        assert_eq!(off_history(&abandoned, TimelineTarget::Id(1), &h), None);
        assert!(off_history(&tl2, TimelineTarget::Id(1), &h)
            .unwrap()
            .contains("does not descend"));
        assert!(off_history(&tl2, TimelineTarget::Id(7), &h)
            .unwrap()
            .contains("no history file"));

        let all = vec![
            before_fork.clone(),
            abandoned.clone(),
            tl2.clone(),
            tl2_late.clone(),
        ];
        let pick = |spec| {
            select_on_timeline(&all, &Target::End, spec, &h)
                .map(|c| c.id.clone())
                .unwrap()
        };
        assert_eq!(pick(TimelineTarget::Latest), tl2.id);
        assert_eq!(pick(TimelineTarget::Current), tl2_late.id);
        assert_eq!(pick(TimelineTarget::Id(1)), abandoned.id);
        assert_eq!(pick(TimelineTarget::Id(2)), tl2_late.id);
        // Nothing older than the fork on the requested line: say why.
        let only_abandoned = vec![abandoned.clone()];
        let e = select_on_timeline(&only_abandoned, &Target::End, TimelineTarget::Latest, &h)
            .unwrap_err();
        assert!(
            matches!(&e, SelectError::OffTimeline { newest, .. } if *newest == abandoned.id),
            "{e}"
        );
        assert!(matches!(
            select_on_timeline(&all, &Target::Lsn(Lsn(100)), TimelineTarget::Latest, &h),
            Err(SelectError::BeforeOldest { .. })
        ));
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
