//! Schedules: when the next run of a job is due. Pure math over a given
//! clock; the supervisor owns the clock and the sleeping.
//!
//! Accepted forms: 5-field cron (`0 3 * * *`), 6-field cron with seconds
//! first (`*/20 * * * * *`), the `@hourly`/`@daily`/`@weekly`/`@monthly`/
//! `@yearly` shorthands, and `@every DURATION` (`@every 15m`, `@every 15s`).
//! Cron fields are read in the configured time zone (UTC by default), so
//! `0 3 * * *` in Europe/Berlin runs at 03:00 Berlin time on both sides of a
//! daylight-saving change. `@every` runs are aligned to multiples of the
//! interval since the Unix epoch, so a restart does not shift them.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Cron(Box<croner::Cron>),
    Every(Duration),
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix("@every") {
            let d = crate::units::parse_duration(rest.trim()).map_err(|e| format!("{t:?}: {e}"))?;
            if d < Duration::from_secs(1) {
                return Err(format!("{t:?}: the interval must be at least 1s"));
            }
            return Ok(Schedule {
                text: t.to_string(),
                kind: Kind::Every(d),
            });
        }
        let fields = t.split_whitespace().count();
        if !t.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "{t:?} has {fields} fields: use 5 (minute hour day month weekday), 6 (seconds first) or @every DURATION"
            ));
        }
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(t)
            .map_err(|e| format!("invalid cron expression {t:?}: {e}"))?;
        Ok(Schedule {
            text: t.to_string(),
            kind: Kind::Cron(Box::new(cron)),
        })
    }

    /// The first run strictly after `after`, with cron fields read in `tz`.
    /// `None` when the expression never matches again (e.g. 30 February).
    pub fn next_after<Tz: TimeZone>(&self, after: DateTime<Utc>, tz: &Tz) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(d) => {
                let step = d.as_millis() as i64;
                let now = after.timestamp_millis();
                let next = (now.div_euclid(step) + 1) * step;
                DateTime::from_timestamp_millis(next)
            }
            Kind::Cron(c) => c
                .find_next_occurrence(&after.with_timezone(tz), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_field_cron_in_utc() {
        let s = Schedule::parse("0 3 * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-12-06T02:59:59Z"), &Utc),
            Some(at("2026-12-06T03:00:00Z"))
        );
        // Strictly after: a run at 03:00 is followed by the next day's.
        assert_eq!(
            s.next_after(at("2026-12-06T03:00:00Z"), &Utc),
            Some(at("2026-12-07T03:00:00Z"))
        );
        // Across a year boundary.
        assert_eq!(
            s.next_after(at("2026-12-31T04:00:00Z"), &Utc),
            Some(at("2027-01-01T03:00:00Z"))
        );
    }

    #[test]
    fn six_fields_have_seconds_first() {
        let s = Schedule::parse("*/20 * * * * *").unwrap();
        assert_eq!(
            s.next_after(at("2026-12-06T10:00:05Z"), &Utc),
            Some(at("2026-12-06T10:00:20Z"))
        );
    }

    #[test]
    fn every_is_aligned_to_the_epoch() {
        let s = Schedule::parse("@every 15m").unwrap();
        assert_eq!(
            s.next_after(at("2026-12-06T10:07:00Z"), &Utc),
            Some(at("2026-12-06T10:15:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-12-06T10:15:00Z"), &Utc),
            Some(at("2026-12-06T10:30:00Z"))
        );
        let s = Schedule::parse("@every 15s").unwrap();
        assert_eq!(
            s.next_after(at("2026-12-06T10:00:01Z"), &Utc),
            Some(at("2026-12-06T10:00:15Z"))
        );
        assert_eq!(s.to_string(), "@every 15s");
    }

    #[test]
    fn time_zones_and_daylight_saving() {
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let s = Schedule::parse("0 3 * * *").unwrap();
        // Winter: 03:00 CET is 02:00 UTC.
        assert_eq!(
            s.next_after(at("2026-12-06T00:00:00Z"), &berlin),
            Some(at("2026-12-06T02:00:00Z"))
        );
        // Summer: 03:00 CEST is 01:00 UTC.
        assert_eq!(
            s.next_after(at("2026-07-01T00:00:00Z"), &berlin),
            Some(at("2026-07-01T01:00:00Z"))
        );
    }

    #[test]
    fn shorthands() {
        let s = Schedule::parse("@daily").unwrap();
        assert_eq!(
            s.next_after(at("2026-12-06T10:00:00Z"), &Utc),
            Some(at("2026-12-07T00:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_are_refused() {
        for bad in [
            "61 * * * *",
            "* * *",
            "0 0 0 * * * * *",
            "@every",
            "@every 0s",
            "@every soon",
            "@sometimes",
            "",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
