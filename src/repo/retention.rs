//! Retention rules: which backups and dumps to keep, and which archived WAL
//! the kept backups no longer need. Pure functions of a list of facts, a
//! policy and a clock that the caller passes in.
//!
//! Owns: the meaning of every retention rule and the reason reported for
//! each decision. Must never: read the clock, the store or a file (the
//! tripwire test below fails if this file mentions `tokio`, `std::fs`,
//! `std::net`, `Utc::now` or `storage`). `jobs::expire` gathers the facts
//! and carries the decisions out.
//!
//! The rules (`Policy`, the `[retention.backups]` and `[retention.dumps]`
//! tables of the configuration file):
//!
//! - A set is kept if **any** rule keeps it; it goes only when no rule does.
//! - The time of a set is when it finished (for a backup, the earliest moment
//!   it can restore to); periods are UTC calendar periods.
//! - `keep_last = N`: the newest N sets.
//! - `daily`, `weekly`, `monthly`, `yearly = N`: the newest set of each of
//!   the last N calendar days, ISO 8601 weeks (Monday to Sunday, numbered as
//!   ISO does, so 2027-01-01 is in week 2026-W53), months or years, counted
//!   back from the clock with the current period included. A period without
//!   a set keeps nothing, and no older set stands in for it: `daily = 7`
//!   looks at the 7 days ending today, whatever happened in them.
//! - `max_age = "30d"`: every set at most that old (a set exactly `max_age`
//!   old is kept). A set that finished after the clock (clock skew) is young.
//! - `min_keep = N`: the newest N sets, whatever the other rules say. It is a
//!   safeguard, not a rule of its own: a policy with only `min_keep` keeps
//!   everything.
//! - A policy with no rule at all (no `keep_last`, `daily`, `weekly`,
//!   `monthly`, `yearly` or `max_age`) keeps everything: a missing or empty
//!   table never wipes a repository. A rule of 0 is a rule that keeps nothing.
//! - The newest set the caller marks as protected is always kept: for
//!   backups the newest restorable one, for dumps the newest of each
//!   database (`jobs::expire` applies the dump policy per database).
//! - Ties (two sets finished in the same instant) are ordered by id.
//!
//! Object Lock ([`hold_retained`], [`split_retained`]): in a repository
//! with Object Lock, a set the rules let go while any of its objects is
//! still retained is kept, complete and listed, with the reason
//! `object lock until T`, and goes at the first run after T. Its WAL stays
//! too (it is a kept backup). A WAL object no kept backup needs but still
//! retained stays until its date. So retention plans ahead: nothing is
//! deleted in part, and nothing is tried before the store would allow it.
//!
//! WAL ([`wal_to_remove`]): an archived WAL object goes only when no kept
//! backup needs it: it is a segment, `.partial` or `.backup` file of the
//! timeline of every kept backup or an earlier one, before that backup's
//! first segment. Timeline history files are always kept. With no backup
//! kept, no WAL goes. So the point-in-time window from the oldest kept backup
//! to the end of the archive stays whole.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::pg::lsn::parse_segment_name;

/// One retention policy: for backups, or for dumps. Field names are the
/// configuration file's keys.
#[derive(Deserialize, Serialize, Default, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The newest N sets.
    pub keep_last: Option<u32>,
    /// The newest set of each of the last N days (UTC), today included.
    pub daily: Option<u32>,
    /// The newest set of each of the last N ISO weeks, this week included.
    pub weekly: Option<u32>,
    /// The newest set of each of the last N months, this month included.
    pub monthly: Option<u32>,
    /// The newest set of each of the last N years, this year included.
    pub yearly: Option<u32>,
    /// Every set at most this old (`"30d"`, `"12h"`, `"2w"`).
    #[serde(with = "crate::units::opt_duration")]
    pub max_age: Option<Duration>,
    /// The newest N sets, always.
    pub min_keep: Option<u32>,
}

impl Policy {
    /// True when at least one rule that can let a set go is set.
    pub fn has_rules(&self) -> bool {
        self.keep_last.is_some()
            || self.daily.is_some()
            || self.weekly.is_some()
            || self.monthly.is_some()
            || self.yearly.is_some()
            || self.max_age.is_some()
    }
}

/// What retention needs to know of a backup or dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetFacts {
    pub id: String,
    pub finished_at: DateTime<Utc>,
}

/// Why a set is kept, or why a rule did not keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The policy has no rule: everything is kept.
    NoRule,
    /// Among the newest `keep_last`.
    KeepLast,
    /// The newest set of this period.
    Daily(NaiveDate),
    Weekly {
        year: i32,
        week: u32,
    },
    Monthly {
        year: i32,
        month: u32,
    },
    Yearly(i32),
    /// At most `max_age` old.
    MaxAge(Duration),
    /// Among the newest `min_keep`.
    MinKeep,
    /// The newest restorable backup, or the newest dump of its database.
    Newest,
    /// Expired: not among the newest N (`keep_last`).
    NotLast(u32),
    /// Expired: a newer set is kept for its period by this rule.
    NewerInPeriod(Box<Reason>),
    /// Expired: its period is before the last N periods of this rule
    /// (`daily`, `weekly`, `monthly`, `yearly`).
    BeforePeriods {
        rule: &'static str,
        count: u32,
    },
    /// Expired: older than `max_age`.
    TooOld(Duration),
    /// Kept although the rules let it go: an object of it is under Object
    /// Lock retention until then.
    ObjectLock(DateTime<Utc>),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::units::format_duration as dur;
        match self {
            Reason::NoRule => write!(f, "no retention rule"),
            Reason::KeepLast => write!(f, "keep_last"),
            Reason::Daily(d) => write!(f, "daily {d}"),
            Reason::Weekly { year, week } => write!(f, "weekly {year}-W{week:02}"),
            Reason::Monthly { year, month } => write!(f, "monthly {year}-{month:02}"),
            Reason::Yearly(y) => write!(f, "yearly {y}"),
            Reason::MaxAge(d) => write!(f, "max_age {}", dur(*d)),
            Reason::MinKeep => write!(f, "min_keep"),
            Reason::Newest => write!(f, "newest"),
            Reason::NotLast(n) => write!(f, "not among the newest {n} (keep_last)"),
            Reason::NewerInPeriod(p) => write!(f, "{p}: a newer one is kept"),
            Reason::BeforePeriods { rule, count } => {
                let unit = match *rule {
                    "daily" => "days",
                    "weekly" => "weeks",
                    "monthly" => "months",
                    _ => "years",
                };
                write!(f, "{rule}: before the last {count} {unit}")
            }
            Reason::TooOld(d) => write!(f, "older than max_age {}", dur(*d)),
            Reason::ObjectLock(t) => {
                write!(f, "object lock until {}", t.format("%Y-%m-%dT%H:%M:%SZ"))
            }
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The fate of one set: kept (with every rule that keeps it) or expired
/// (with, for each rule of the policy, why it does not keep it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: String,
    pub finished_at: DateTime<Utc>,
    pub keep: bool,
    pub reasons: Vec<Reason>,
    /// Object Lock: the rules let it go, but it is retained until then
    /// (`keep` is true, the first reason says so, the others say why the
    /// rules let it go).
    pub locked_until: Option<DateTime<Utc>>,
}

/// A GFS tier: which calendar period a date falls in, and the first date of
/// the window of the last `n` periods ending with the one holding `today`.
#[derive(Debug, Clone, Copy)]
enum Tier {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Daily => "daily",
            Tier::Weekly => "weekly",
            Tier::Monthly => "monthly",
            Tier::Yearly => "yearly",
        }
    }

    fn period(self, d: NaiveDate) -> Reason {
        match self {
            Tier::Daily => Reason::Daily(d),
            Tier::Weekly => {
                let w = d.iso_week();
                Reason::Weekly {
                    year: w.year(),
                    week: w.week(),
                }
            }
            Tier::Monthly => Reason::Monthly {
                year: d.year(),
                month: d.month(),
            },
            Tier::Yearly => Reason::Yearly(d.year()),
        }
    }

    /// Whether `d` falls in one of the last `n` periods up to `today`
    /// (later dates, from a clock behind the set's, count as current).
    fn in_window(self, d: NaiveDate, today: NaiveDate, n: u32) -> bool {
        if n == 0 {
            return false;
        }
        let back = i64::from(n) - 1;
        match self {
            // A window reaching before the calendar's start holds every date.
            Tier::Daily => TimeDelta::try_days(back)
                .and_then(|b| today.checked_sub_signed(b))
                .is_none_or(|start| d >= start),
            Tier::Weekly => {
                let monday = i64::from(today.weekday().num_days_from_monday());
                TimeDelta::try_days(monday + 7 * back)
                    .and_then(|b| today.checked_sub_signed(b))
                    .is_none_or(|start| d >= start)
            }
            Tier::Monthly => {
                let idx = |x: NaiveDate| i64::from(x.year()) * 12 + i64::from(x.month0());
                idx(d) >= idx(today) - back
            }
            Tier::Yearly => i64::from(d.year()) >= i64::from(today.year()) - back,
        }
    }
}

/// Decide the fate of every set under `policy` at `now`. `protect` names a
/// set that is kept whatever the policy (the newest restorable backup).
/// Returns one decision per set, newest first.
pub fn decide(
    policy: &Policy,
    sets: &[SetFacts],
    now: DateTime<Utc>,
    protect: Option<&str>,
) -> Vec<Decision> {
    let mut order: Vec<&SetFacts> = sets.iter().collect();
    order.sort_by(|a, b| {
        b.finished_at
            .cmp(&a.finished_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    let today = now.date_naive();
    let tiers: Vec<(Tier, u32)> = [
        (Tier::Daily, policy.daily),
        (Tier::Weekly, policy.weekly),
        (Tier::Monthly, policy.monthly),
        (Tier::Yearly, policy.yearly),
    ]
    .into_iter()
    .filter_map(|(t, n)| n.map(|n| (t, n)))
    .collect();
    // The period each tier has already given to a newer set.
    let mut taken: Vec<Option<Reason>> = vec![None; tiers.len()];
    let has_rules = policy.has_rules();
    let mut out = Vec::with_capacity(order.len());
    for (rank, s) in order.into_iter().enumerate() {
        let rank = u32::try_from(rank).unwrap_or(u32::MAX);
        let mut kept = Vec::new();
        let mut missed = Vec::new();
        if !has_rules {
            kept.push(Reason::NoRule);
        }
        if let Some(n) = policy.keep_last {
            if rank < n {
                kept.push(Reason::KeepLast);
            } else {
                missed.push(Reason::NotLast(n));
            }
        }
        let day = s.finished_at.date_naive();
        for ((tier, n), taken) in tiers.iter().zip(taken.iter_mut()) {
            let period = tier.period(day);
            if !tier.in_window(day, today, *n) {
                missed.push(Reason::BeforePeriods {
                    rule: tier.name(),
                    count: *n,
                });
            } else if taken.as_ref() == Some(&period) {
                missed.push(Reason::NewerInPeriod(Box::new(period)));
            } else {
                // Newest first: the first set seen in a period is its newest,
                // and a period once left is never seen again.
                *taken = Some(period.clone());
                kept.push(period);
            }
        }
        if let Some(max) = policy.max_age {
            // An age beyond what TimeDelta holds is older than any max_age
            // there is; a max_age beyond it keeps everything.
            let young = match TimeDelta::from_std(max) {
                Ok(max) => now.signed_duration_since(s.finished_at) <= max,
                Err(_) => true,
            };
            if young {
                kept.push(Reason::MaxAge(max));
            } else {
                missed.push(Reason::TooOld(max));
            }
        }
        if policy.min_keep.is_some_and(|n| rank < n) {
            kept.push(Reason::MinKeep);
        }
        if protect == Some(s.id.as_str()) {
            kept.push(Reason::Newest);
        }
        let keep = !kept.is_empty();
        out.push(Decision {
            id: s.id.clone(),
            finished_at: s.finished_at,
            keep,
            reasons: if keep { kept } else { missed },
            locked_until: None,
        });
    }
    out
}

/// Keep `d`, which the rules let go, because it is retained until `until`.
pub fn hold(d: &mut Decision, until: DateTime<Utc>) {
    if d.keep {
        return;
    }
    d.keep = true;
    d.reasons.insert(0, Reason::ObjectLock(until));
    d.locked_until = Some(until);
}

/// Object Lock: of the sets the rules let go, keep every one whose objects
/// are retained past `now` (`retained`: the latest retain-until date of a
/// set's objects, by id; a set absent has none).
pub fn hold_retained(
    mut decisions: Vec<Decision>,
    retained: &BTreeMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    for d in &mut decisions {
        if let Some(&until) = retained.get(&d.id).filter(|t| **t > now) {
            hold(d, until);
        }
    }
    decisions
}

/// What a kept backup needs of the WAL archive: everything of its timeline
/// (and later ones) from its first segment on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalNeed {
    pub timeline: u32,
    pub first_segno: u64,
}

impl WalNeed {
    /// From a backup's first WAL segment name (`wal_start` of its manifest).
    pub fn of_segment(name: &str, seg_size: u64) -> Option<WalNeed> {
        parse_segment_name(name, seg_size).map(|(timeline, first_segno)| WalNeed {
            timeline,
            first_segno,
        })
    }
}

/// True when no backup of `needs` needs the archived WAL file `name` (the
/// last part of its key): a segment, `<segment>.<len>.partial` or
/// `<segment>.<offset>.backup` of a timeline at or before each one's, before
/// each one's first segment. History files and names pgtide does not know
/// are always needed, and so is everything when `needs` is empty.
pub fn wal_expendable(name: &str, needs: &[WalNeed], seg_size: u64) -> bool {
    if needs.is_empty() {
        return false;
    }
    let Some((tli, segno)) = name
        .get(..24)
        .filter(|_| name.len() == 24 || name.as_bytes()[24] == b'.')
        .and_then(|n| parse_segment_name(n, seg_size))
    else {
        return false;
    };
    needs
        .iter()
        .all(|n| tli <= n.timeline && segno < n.first_segno)
}

/// The WAL objects to remove: `(key, size)` of every listed object whose
/// name [`wal_expendable`] says no kept backup needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WalRemoval {
    pub keys: Vec<String>,
    pub bytes: u64,
}

/// Object Lock: split `removal` into what can go now and what is retained
/// past `now` (`retained`: retain-until dates by key; absent: none), with
/// the latest date of what stays.
pub fn split_retained(
    removal: WalRemoval,
    retained: &BTreeMap<String, DateTime<Utc>>,
    sizes: &BTreeMap<String, u64>,
    now: DateTime<Utc>,
) -> (WalRemoval, WalRemoval, Option<DateTime<Utc>>) {
    let (mut go, mut stay) = (WalRemoval::default(), WalRemoval::default());
    let mut latest = None;
    for key in removal.keys {
        let size = sizes.get(&key).copied().unwrap_or(0);
        match retained.get(&key).filter(|t| **t > now) {
            Some(&t) => {
                latest = latest.max(Some(t));
                stay.bytes += size;
                stay.keys.push(key);
            }
            None => {
                go.bytes += size;
                go.keys.push(key);
            }
        }
    }
    (go, stay, latest)
}

/// Besides what [`wal_expendable`] allows, the pieces (and older
/// partials) of a segment the listing holds complete are removed: the
/// segment holds their bytes (a writer stopped between pushing the segment
/// and removing its pieces leaves them).
pub fn wal_to_remove<'a>(
    needs: &[WalNeed],
    objects: impl IntoIterator<Item = (&'a str, u64)>,
    seg_size: u64,
) -> WalRemoval {
    let objects: Vec<(&str, u64)> = objects.into_iter().collect();
    let keys: std::collections::BTreeSet<&str> = objects.iter().map(|(k, _)| *k).collect();
    let mut r = WalRemoval::default();
    for (key, size) in objects {
        let name = key.rsplit('/').next().unwrap_or(key);
        let superseded = super::layout::wal_piece_segment(key).is_some_and(|s| keys.contains(s));
        if superseded || wal_expendable(name, needs, seg_size) {
            r.keys.push(key.to_string());
            r.bytes += size;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A set named after its finish time (`2026-12-05T03:00:00Z` → id
    /// `20261205-030000F`), like the ids pgtide makes.
    fn set(s: &str) -> SetFacts {
        let at = t(s);
        SetFacts {
            id: at.format("%Y%m%d-%H%M%SF").to_string(),
            finished_at: at,
        }
    }

    fn sets(times: &[&str]) -> Vec<SetFacts> {
        times.iter().map(|s| set(s)).collect()
    }

    /// The ids kept, newest first.
    fn kept(p: &Policy, s: &[SetFacts], now: &str) -> Vec<String> {
        decide(p, s, t(now), None)
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect()
    }

    fn reasons(d: &Decision) -> Vec<String> {
        d.reasons.iter().map(|r| r.to_string()).collect()
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// One set a day at 03:00 from `from` for `days` days.
    fn daily_sets(from: &str, days: i64) -> Vec<SetFacts> {
        let start = t(from);
        (0..days)
            .map(|i| {
                let at = start + TimeDelta::days(i);
                SetFacts {
                    id: at.format("%Y%m%d-%H%M%SF").to_string(),
                    finished_at: at,
                }
            })
            .collect()
    }

    #[test]
    fn empty_policy_keeps_everything() {
        let s = sets(&["2020-01-01T00:00:00Z", "2026-12-05T03:00:00Z"]);
        let d = decide(&Policy::default(), &s, t("2026-12-06T12:00:00Z"), None);
        assert!(d.iter().all(|d| d.keep));
        assert_eq!(reasons(&d[0]), ["no retention rule"]);
        // min_keep alone is a safeguard, not a rule: still everything.
        let p = Policy {
            min_keep: Some(1),
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s, "2026-12-06T12:00:00Z").len(), 2);
    }

    #[test]
    fn no_sets_no_decisions() {
        let p = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        assert!(decide(&p, &[], t("2026-12-06T12:00:00Z"), None).is_empty());
    }

    #[test]
    fn keep_last_keeps_the_newest_n_whatever_the_input_order() {
        let mut s = sets(&[
            "2026-12-01T03:00:00Z",
            "2026-12-04T03:00:00Z",
            "2026-12-02T03:00:00Z",
            "2026-12-03T03:00:00Z",
        ]);
        s.reverse();
        let p = Policy {
            keep_last: Some(2),
            ..Policy::default()
        };
        let d = decide(&p, &s, t("2026-12-06T00:00:00Z"), None);
        assert_eq!(
            d.iter()
                .map(|d| (d.id.as_str(), d.keep))
                .collect::<Vec<_>>(),
            [
                ("20261204-030000F", true),
                ("20261203-030000F", true),
                ("20261202-030000F", false),
                ("20261201-030000F", false),
            ]
        );
        assert_eq!(reasons(&d[0]), ["keep_last"]);
        assert_eq!(reasons(&d[2]), ["not among the newest 2 (keep_last)"]);
    }

    #[test]
    fn ties_are_ordered_by_id() {
        let at = t("2026-12-05T03:00:00Z");
        let s = vec![
            SetFacts {
                id: "20261205-020000F".into(),
                finished_at: at,
            },
            SetFacts {
                id: "20261205-020000F-2".into(),
                finished_at: at,
            },
        ];
        let p = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p, &s, "2026-12-06T00:00:00Z"),
            ids(&["20261205-020000F-2"])
        );
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_today_included() {
        let s = sets(&[
            "2026-12-06T01:00:00Z",
            "2026-12-06T09:00:00Z",
            "2026-12-05T23:59:59Z",
            "2026-12-05T00:00:00Z",
            "2026-12-04T12:00:00Z",
            "2026-12-03T12:00:00Z",
        ]);
        let p = Policy {
            daily: Some(3),
            ..Policy::default()
        };
        let d = decide(&p, &s, t("2026-12-06T10:00:00Z"), None);
        let got: Vec<(String, bool, Vec<String>)> = d
            .iter()
            .map(|d| (d.id.clone(), d.keep, reasons(d)))
            .collect();
        let want = [
            ("20261206-090000F", true, vec!["daily 2026-12-06"]),
            (
                "20261206-010000F",
                false,
                vec!["daily 2026-12-06: a newer one is kept"],
            ),
            ("20261205-235959F", true, vec!["daily 2026-12-05"]),
            (
                "20261205-000000F",
                false,
                vec!["daily 2026-12-05: a newer one is kept"],
            ),
            ("20261204-120000F", true, vec!["daily 2026-12-04"]),
            (
                "20261203-120000F",
                false,
                vec!["daily: before the last 3 days"],
            ),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1, g.2.clone()), (w.0, w.1, ids(&w.2)));
        }
    }

    #[test]
    fn day_boundaries_are_utc_midnight() {
        // One second apart, on two days: both are the newest of their day.
        let s = sets(&["2026-12-05T23:59:59Z", "2026-12-06T00:00:00Z"]);
        let p = Policy {
            daily: Some(2),
            ..Policy::default()
        };
        assert_eq!(kept(&p, &s, "2026-12-06T00:00:00Z").len(), 2);
        // At the very first instant of a day, "the last 1 day" is that day.
        let p = Policy {
            daily: Some(1),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p, &s, "2026-12-06T00:00:00Z"),
            ids(&["20261206-000000F"])
        );
        // And at its last instant still the same.
        assert_eq!(
            kept(&p, &s, "2026-12-06T23:59:59Z"),
            ids(&["20261206-000000F"])
        );
    }

    #[test]
    fn gaps_are_not_filled_by_older_sets() {
        // Backups stopped five days ago: daily = 3 looks at the last three
        // days, which hold none.
        let s = daily_sets("2026-11-20T03:00:00Z", 12); // up to 2026-12-01
        let p = Policy {
            daily: Some(3),
            ..Policy::default()
        };
        assert!(kept(&p, &s, "2026-12-06T12:00:00Z").is_empty());
        // With the newest one protected, it alone stays.
        let d = decide(&p, &s, t("2026-12-06T12:00:00Z"), Some("20261201-030000F"));
        let k: Vec<_> = d.iter().filter(|d| d.keep).collect();
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].id, "20261201-030000F");
        assert_eq!(reasons(k[0]), ["newest"]);
        assert_eq!(reasons(&d[1]), ["daily: before the last 3 days"]);
        // A gap inside the window: fewer kept, none older in its stead.
        let s = sets(&[
            "2026-12-06T03:00:00Z",
            "2026-12-03T03:00:00Z",
            "2026-12-01T03:00:00Z",
        ]);
        let p = Policy {
            daily: Some(4),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p, &s, "2026-12-06T12:00:00Z"),
            ids(&["20261206-030000F", "20261203-030000F"])
        );
    }

    #[test]
    fn weekly_uses_iso_weeks() {
        // 2026-12-07 is a Monday (week 50), 2026-12-06 a Sunday (week 49).
        let s = sets(&[
            "2026-12-07T01:00:00Z",
            "2026-12-06T22:00:00Z",
            "2026-12-06T01:00:00Z",
            "2026-11-30T01:00:00Z", // Monday of week 49
            "2026-11-29T23:00:00Z", // Sunday of week 48
        ]);
        let p = Policy {
            weekly: Some(2),
            ..Policy::default()
        };
        let d = decide(&p, &s, t("2026-12-09T12:00:00Z"), None);
        let got: Vec<(bool, Vec<String>)> = d.iter().map(|d| (d.keep, reasons(d))).collect();
        assert_eq!(got[0], (true, ids(&["weekly 2026-W50"])));
        assert_eq!(got[1], (true, ids(&["weekly 2026-W49"])));
        assert_eq!(
            got[2],
            (false, ids(&["weekly 2026-W49: a newer one is kept"]))
        );
        assert_eq!(
            got[3],
            (false, ids(&["weekly 2026-W49: a newer one is kept"]))
        );
        assert_eq!(got[4], (false, ids(&["weekly: before the last 2 weeks"])));
    }

    #[test]
    fn iso_weeks_across_a_year_boundary() {
        // 2026-12-28 (Monday) to 2027-01-03 (Sunday) is ISO week 2026-W53;
        // 2027-01-04 starts 2027-W01.
        let s = sets(&[
            "2027-01-04T03:00:00Z",
            "2027-01-02T03:00:00Z",
            "2026-12-29T03:00:00Z",
            "2026-12-27T03:00:00Z", // Sunday of 2026-W52
        ]);
        let p = Policy {
            weekly: Some(2),
            ..Policy::default()
        };
        let d = decide(&p, &s, t("2027-01-05T00:00:00Z"), None);
        assert_eq!(reasons(&d[0]), ["weekly 2027-W01"]);
        assert_eq!(reasons(&d[1]), ["weekly 2026-W53"]);
        assert_eq!(reasons(&d[2]), ["weekly 2026-W53: a newer one is kept"]);
        assert_eq!(reasons(&d[3]), ["weekly: before the last 2 weeks"]);
        // Yearly counts calendar years, not ISO years: 2027-01-02 is in 2027.
        let p = Policy {
            yearly: Some(1),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p, &s, "2027-01-05T00:00:00Z"),
            ids(&["20270104-030000F"])
        );
        let p = Policy {
            yearly: Some(2),
            ..Policy::default()
        };
        let d = decide(&p, &s, t("2027-01-05T00:00:00Z"), None);
        assert_eq!(reasons(&d[0]), ["yearly 2027"]);
        assert_eq!(reasons(&d[1]), ["yearly 2027: a newer one is kept"]);
        assert_eq!(reasons(&d[2]), ["yearly 2026"]);
        assert!(!d[3].keep);
    }

    #[test]
    fn daily_across_a_year_boundary() {
        let s = daily_sets("2026-12-25T03:00:00Z", 8); // to 2027-01-01
        let p = Policy {
            daily: Some(3),
            ..Policy::default()
        };
        assert_eq!(
            kept(&p, &s, "2027-01-01T05:00:00Z"),
            ids(&["20270101-030000F", "20261231-030000F", "20261230-030000F"])
        );
    }

    #[test]
    fn monthly_counts_calendar_months_across_years() {
        let s = sets(&[
            "2027-02-01T00:00:00Z",
            "2027-01-31T23:59:59Z",
            "2027-01-15T03:00:00Z",
            "2026-12-31T23:00:00Z",
            "2026-11-30T03:00:00Z",
            "2026-10-01T03:00:00Z",
        ]);
        let p = Policy {
            monthly: Some(4),
            ..Policy::default()
        };
        let d = decide(&p, &s, t("2027-02-10T00:00:00Z"), None);
        let r: Vec<Vec<String>> = d.iter().map(reasons).collect();
        assert_eq!(r[0], ["monthly 2027-02"]);
        assert_eq!(r[1], ["monthly 2027-01"]);
        assert_eq!(r[2], ["monthly 2027-01: a newer one is kept"]);
        assert_eq!(r[3], ["monthly 2026-12"]);
        assert_eq!(r[4], ["monthly 2026-11"]);
        assert_eq!(r[5], ["monthly: before the last 4 months"]);
    }

    #[test]
    fn gfs_tiers_combine_and_report_every_rule_that_keeps() {
        // A year of daily backups, then the classic 7 daily, 4 weekly,
        // 12 monthly, 2 yearly.
        let s = daily_sets("2026-01-01T03:00:00Z", 340); // to 2026-12-06
        let p = Policy {
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(12),
            yearly: Some(2),
            ..Policy::default()
        };
        let now = t("2026-12-06T12:00:00Z");
        let d = decide(&p, &s, now, None);
        let k: Vec<&Decision> = d.iter().filter(|d| d.keep).collect();
        // Newest (Sunday 2026-12-06) is kept by every tier.
        assert_eq!(
            reasons(k[0]),
            [
                "daily 2026-12-06",
                "weekly 2026-W49",
                "monthly 2026-12",
                "yearly 2026"
            ]
        );
        // 7 days (11-30 .. 12-06), plus the Sundays of W48, W47, W46 (W49's
        // Sunday is today), plus the last day of months Jan..Oct (November's,
        // 11-30, and December's, today, are already dailies).
        let kept_ids: Vec<&str> = k.iter().map(|d| d.id.as_str()).collect();
        assert!(kept_ids.contains(&"20261129-030000F")); // Sunday W48
        assert!(kept_ids.contains(&"20261115-030000F")); // Sunday W46
        assert!(!kept_ids.contains(&"20261108-030000F")); // W45: too old
        assert!(kept_ids.contains(&"20260131-030000F")); // January
        assert!(!kept_ids.contains(&"20260101-030000F"));
        assert_eq!(k.len(), 7 + 3 + 10);
        // An expired set says why each rule passed it over.
        let gone = d.iter().find(|d| d.id == "20261010-030000F").unwrap();
        assert!(!gone.keep);
        assert_eq!(
            reasons(gone),
            [
                "daily: before the last 7 days",
                "weekly: before the last 4 weeks",
                "monthly 2026-10: a newer one is kept",
                "yearly 2026: a newer one is kept"
            ]
        );
    }

    #[test]
    fn max_age_is_inclusive_at_the_boundary() {
        let s = sets(&[
            "2026-11-06T12:00:00Z", // exactly 30 days old
            "2026-11-06T11:59:59Z", // one second older
            "2026-12-07T00:00:00Z", // finished after the clock: young
        ]);
        let p = Policy {
            max_age: Some(Duration::from_secs(30 * 86_400)),
            ..Policy::default()
        };
        let d = decide(&p, &s, t("2026-12-06T12:00:00Z"), None);
        let got: Vec<(&str, bool, Vec<String>)> = d
            .iter()
            .map(|d| (d.id.as_str(), d.keep, reasons(d)))
            .collect();
        assert_eq!(got[0], ("20261207-000000F", true, ids(&["max_age 30d"])));
        assert_eq!(got[1], ("20261106-120000F", true, ids(&["max_age 30d"])));
        assert_eq!(
            got[2],
            ("20261106-115959F", false, ids(&["older than max_age 30d"]))
        );
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let s = sets(&["1970-01-02T00:00:00Z", "2026-12-06T00:00:00Z"]);
        let p = Policy {
            daily: Some(u32::MAX),
            weekly: Some(u32::MAX),
            monthly: Some(u32::MAX),
            yearly: Some(u32::MAX),
            max_age: Some(Duration::from_secs(u64::MAX)),
            keep_last: Some(u32::MAX),
            min_keep: Some(u32::MAX),
        };
        assert_eq!(kept(&p, &s, "2026-12-06T12:00:00Z").len(), 2);
    }

    #[test]
    fn min_keep_overrides_the_rules() {
        let s = daily_sets("2026-01-01T03:00:00Z", 5);
        let p = Policy {
            max_age: Some(Duration::from_secs(86_400)),
            min_keep: Some(2),
            ..Policy::default()
        };
        let d = decide(&p, &s, t("2026-12-06T12:00:00Z"), None);
        assert_eq!(
            d.iter().map(|d| d.keep).collect::<Vec<_>>(),
            [true, true, false, false, false]
        );
        assert_eq!(reasons(&d[0]), ["min_keep"]);
        assert_eq!(reasons(&d[2]), ["older than max_age 1d"]);
    }

    #[test]
    fn everything_old_keeps_only_the_protected_newest() {
        let s = daily_sets("2020-01-01T03:00:00Z", 10);
        let p = Policy {
            max_age: Some(Duration::from_secs(7 * 86_400)),
            daily: Some(7),
            ..Policy::default()
        };
        assert!(kept(&p, &s, "2026-12-06T12:00:00Z").is_empty());
        // The newest restorable one may be older than the newest set (its
        // WAL is incomplete, say): the one protected is the one kept.
        let d = decide(&p, &s, t("2026-12-06T12:00:00Z"), Some("20200109-030000F"));
        let k: Vec<&str> = d.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect();
        assert_eq!(k, ["20200109-030000F"]);
    }

    #[test]
    fn zero_is_a_rule_that_keeps_nothing() {
        let s = daily_sets("2026-12-01T03:00:00Z", 3);
        let p = Policy {
            keep_last: Some(0),
            ..Policy::default()
        };
        assert!(kept(&p, &s, "2026-12-06T12:00:00Z").is_empty());
        let p = Policy {
            daily: Some(0),
            ..Policy::default()
        };
        let d = decide(&p, &s, t("2026-12-03T12:00:00Z"), None);
        assert!(d.iter().all(|d| !d.keep));
        assert_eq!(reasons(&d[0]), ["daily: before the last 0 days"]);
    }

    #[test]
    fn a_set_kept_by_several_rules_lists_them_all() {
        let s = sets(&["2026-12-06T03:00:00Z"]);
        let p = Policy {
            keep_last: Some(1),
            daily: Some(1),
            max_age: Some(Duration::from_secs(86_400)),
            min_keep: Some(1),
            ..Policy::default()
        };
        let d = decide(&p, &s, t("2026-12-06T12:00:00Z"), Some("20261206-030000F"));
        assert_eq!(
            reasons(&d[0]),
            [
                "keep_last",
                "daily 2026-12-06",
                "max_age 1d",
                "min_keep",
                "newest"
            ]
        );
    }

    #[test]
    fn policy_reads_the_configuration_keys() {
        let p: Policy = serde_json::from_str(
            r#"{"keep_last": 2, "daily": 7, "weekly": 4, "monthly": 12,
                "yearly": 3, "max_age": "30d", "min_keep": 1}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            Policy {
                keep_last: Some(2),
                daily: Some(7),
                weekly: Some(4),
                monthly: Some(12),
                yearly: Some(3),
                max_age: Some(Duration::from_secs(30 * 86_400)),
                min_keep: Some(1),
            }
        );
        let back: Policy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            serde_json::from_str::<Policy>("{}").unwrap(),
            Policy::default()
        );
        let e = serde_json::from_str::<Policy>(r#"{"keep_lats": 2}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `keep_lats`"), "{e}");
        let e = serde_json::from_str::<Policy>(r#"{"max_age": "soon"}"#).unwrap_err();
        assert!(e.to_string().contains("invalid duration"), "{e}");
        let e = serde_json::from_str::<Policy>(r#"{"daily": -1}"#).unwrap_err();
        assert!(e.to_string().contains("invalid value"), "{e}");
    }

    const SEG: u64 = 16 << 20;

    fn wal_keys() -> Vec<(String, u64)> {
        [
            "wal/00000001.history",
            "wal/00000002.history",
            "wal/00000001/000000010000000000000001",
            "wal/00000001/000000010000000000000002",
            "wal/00000001/000000010000000000000002.00000028.backup",
            "wal/00000001/000000010000000000000003.00100000.partial",
            "wal/00000001/000000010000000000000004",
            "wal/00000001/000000010000000000000005",
            "wal/00000001/000000010000000000000006",
            "wal/00000002/000000020000000000000005",
            "wal/00000002/000000020000000000000006",
            "wal/00000002/000000020000000000000007",
            "wal/00000002/00000002000000000000000X",
            "wal/00000001/000000010000000000000001junk",
        ]
        .iter()
        .map(|k| (k.to_string(), 10))
        .collect()
    }

    fn removed(needs: &[WalNeed]) -> Vec<String> {
        let keys = wal_keys();
        let r = wal_to_remove(needs, keys.iter().map(|(k, s)| (k.as_str(), *s)), SEG);
        assert_eq!(r.bytes, 10 * r.keys.len() as u64);
        r.keys
            .iter()
            .map(|k| k.rsplit('/').next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn wal_before_the_oldest_kept_backup_goes() {
        let need = WalNeed::of_segment("000000010000000000000004", SEG).unwrap();
        assert_eq!(
            need,
            WalNeed {
                timeline: 1,
                first_segno: 4
            }
        );
        assert_eq!(
            removed(&[need]),
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000003.00100000.partial",
            ]
        );
    }

    #[test]
    fn pieces_of_complete_segments_go_even_without_backups() {
        let keys = [
            "wal/00000001/000000010000000000000004",
            "wal/00000001/000000010000000000000004.00000000-00100000.piece",
            "wal/00000001/000000010000000000000004.00100000.partial",
            "wal/00000001/000000010000000000000005.00000000-00100000.piece",
            "wal/00000001/000000010000000000000005.00100000.partial",
        ];
        let r = wal_to_remove(&[], keys.iter().map(|k| (*k, 1)), SEG);
        assert_eq!(r.keys, keys[1..3]);
        // Below the horizon, pieces go with their segment's other objects.
        let need = WalNeed::of_segment("000000010000000000000006", SEG).unwrap();
        let r = wal_to_remove(&[need], keys.iter().map(|k| (*k, 1)), SEG);
        assert_eq!(r.keys, keys);
    }

    #[test]
    fn wal_of_later_timelines_stays() {
        // A backup on timeline 2 from segment 6: timeline 1's older
        // segments go, timeline 2's from 6 on stay, and timeline 2's segment
        // 5 (before the backup) goes; histories stay.
        let need = WalNeed {
            timeline: 2,
            first_segno: 6,
        };
        assert_eq!(
            removed(&[need]),
            [
                "000000010000000000000001",
                "000000010000000000000002",
                "000000010000000000000002.00000028.backup",
                "000000010000000000000003.00100000.partial",
                "000000010000000000000004",
                "000000010000000000000005",
                "000000020000000000000005",
            ]
        );
        // A timeline-1 backup from segment 2 keeps all of timeline 2.
        let older = WalNeed {
            timeline: 1,
            first_segno: 2,
        };
        assert_eq!(removed(&[need, older]), ["000000010000000000000001"]);
    }

    #[test]
    fn without_a_kept_backup_no_wal_goes() {
        assert!(removed(&[]).is_empty());
        assert!(!wal_expendable("000000010000000000000001", &[], SEG));
        let need = WalNeed {
            timeline: 9,
            first_segno: 1 << 40,
        };
        assert!(!wal_expendable("00000001.history", &[need], SEG));
        assert!(!wal_expendable("RECOVERYXLOG", &[need], SEG));
        assert!(wal_expendable("000000010000000000000001", &[need], SEG));
    }

    #[test]
    fn retained_sets_are_kept_until_their_date() {
        let s = daily_sets("2026-12-01T03:00:00Z", 5); // 12-01 .. 12-05
        let p = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        let now = t("2026-12-06T12:00:00Z");
        let retained: BTreeMap<String, DateTime<Utc>> = [
            // Retained past now: held.
            ("20261204-030000F", t("2026-12-18T03:00:05Z")),
            // Retained until exactly now: deletable (the date has come).
            ("20261203-030000F", now),
            // Long past.
            ("20261202-030000F", t("2026-12-02T03:00:00Z")),
            // Kept by the rules anyway: untouched.
            ("20261205-030000F", t("2026-12-19T03:00:00Z")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let d = hold_retained(decide(&p, &s, now, None), &retained, now);
        type Fate<'a> = (&'a str, bool, Vec<String>, Option<DateTime<Utc>>);
        let got: Vec<Fate> = d
            .iter()
            .map(|d| (d.id.as_str(), d.keep, reasons(d), d.locked_until))
            .collect();
        assert_eq!(
            got,
            [
                ("20261205-030000F", true, ids(&["keep_last"]), None),
                (
                    "20261204-030000F",
                    true,
                    ids(&[
                        "object lock until 2026-12-18T03:00:05Z",
                        "not among the newest 1 (keep_last)"
                    ]),
                    Some(t("2026-12-18T03:00:05Z"))
                ),
                (
                    "20261203-030000F",
                    false,
                    ids(&["not among the newest 1 (keep_last)"]),
                    None
                ),
                (
                    "20261202-030000F",
                    false,
                    ids(&["not among the newest 1 (keep_last)"]),
                    None
                ),
                (
                    "20261201-030000F",
                    false,
                    ids(&["not among the newest 1 (keep_last)"]),
                    None
                ),
            ]
        );
        // Once the date has passed, the same set goes.
        let later = t("2026-12-18T03:00:06Z");
        let d = hold_retained(decide(&p, &s, later, None), &retained, later);
        assert_eq!(d.iter().filter(|d| d.keep).count(), 1);
        assert!(d.iter().all(|d| d.locked_until.is_none()));
    }

    #[test]
    fn retained_wal_stays_and_says_until_when() {
        let keys = wal_keys();
        let need = WalNeed::of_segment("000000010000000000000004", SEG).unwrap();
        let r = wal_to_remove(&[need], keys.iter().map(|(k, s)| (k.as_str(), *s)), SEG);
        let sizes: BTreeMap<String, u64> = keys.iter().cloned().collect();
        let now = t("2026-12-06T12:00:00Z");
        let retained: BTreeMap<String, DateTime<Utc>> = [
            (
                "wal/00000001/000000010000000000000001",
                t("2026-12-01T00:00:00Z"),
            ),
            (
                "wal/00000001/000000010000000000000002",
                t("2026-12-07T00:00:00Z"),
            ),
            (
                "wal/00000001/000000010000000000000002.00000028.backup",
                t("2026-12-08T00:00:00Z"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let (go, stay, until) = split_retained(r, &retained, &sizes, now);
        assert_eq!(
            go.keys,
            [
                "wal/00000001/000000010000000000000001",
                "wal/00000001/000000010000000000000003.00100000.partial"
            ]
        );
        assert_eq!(go.bytes, 20);
        assert_eq!(stay.keys.len(), 2);
        assert_eq!(stay.bytes, 20);
        assert_eq!(until, Some(t("2026-12-08T00:00:00Z")));
    }

    #[test]
    fn no_clock_or_io_in_the_rules() {
        let src = include_str!("retention.rs");
        let code = src.split("#[cfg(test)]").next().unwrap();
        for line in code.lines().map(str::trim_start) {
            if line.starts_with("//") {
                continue;
            }
            for f in ["tokio", "std::fs", "std::net", "Utc::now", "storage"] {
                assert!(!line.contains(f), "retention.rs must stay pure: {line}");
            }
        }
    }
}
