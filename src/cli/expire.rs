//! `pgtide expire`: flags → the two retention policies, the job, and its
//! output. The rules themselves are documented in `repo::retention`.
//!
//! `--json` prints `ExpireReport` (src/jobs/expire.rs): {repository, dry_run,
//! now, policy {backups, dumps: {keep_last, daily, weekly, monthly, yearly,
//! max_age, min_keep}}, finished_deletions\[{id, objects, bytes_freed}\],
//! newest_restorable_backup, sets\[{id, kind ("backup" or "dump"), database
//! (dumps), finished_at, keep, reasons\[string\], bytes, locked_until (Object
//! Lock: only on sets the rules let go that stay retained until then)}\],
//! backups_expired, dumps_expired, bytes_freed, sets_retained, wal {kept_from,
//! objects, bytes, first, last, retained_objects, retained_bytes,
//! retained_until (the last three only when WAL stays retained)}}.

use clap::Args;

use super::exit::CliError;
use super::output::print_json;
use super::settings::{human_bytes, parse_duration};
use super::RepoArg;
use crate::jobs::expire::{self, ExpirePolicy, ExpireReport};
use crate::repo::retention::Policy;
use crate::repo::Repository;

#[derive(Debug, Args)]
pub struct ExpireArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// The daemon's configuration file: its [repository] and [retention]
    /// (flags given here override single rules of it)
    #[arg(long, short = 'c', env = "PGTIDE_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Say what would be removed and why, and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Backups: keep the newest N
    #[arg(long, value_name = "N", help_heading = "Backups")]
    pub keep_last: Option<u32>,
    /// Backups: keep the newest of each of the last N days (UTC, today included)
    #[arg(long, value_name = "N", help_heading = "Backups")]
    pub keep_daily: Option<u32>,
    /// Backups: keep the newest of each of the last N ISO weeks
    #[arg(long, value_name = "N", help_heading = "Backups")]
    pub keep_weekly: Option<u32>,
    /// Backups: keep the newest of each of the last N months
    #[arg(long, value_name = "N", help_heading = "Backups")]
    pub keep_monthly: Option<u32>,
    /// Backups: keep the newest of each of the last N years
    #[arg(long, value_name = "N", help_heading = "Backups")]
    pub keep_yearly: Option<u32>,
    /// Backups: keep every backup at most this old (e.g. 12h, 30d, 2w)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Backups")]
    pub keep_max_age: Option<std::time::Duration>,
    /// Backups: always keep the newest N, whatever the other rules say
    #[arg(long, value_name = "N", help_heading = "Backups")]
    pub keep_min: Option<u32>,
    /// Dumps (per database): keep the newest N
    #[arg(long, value_name = "N", help_heading = "Dumps")]
    pub dump_keep_last: Option<u32>,
    /// Dumps: keep the newest of each of the last N days
    #[arg(long, value_name = "N", help_heading = "Dumps")]
    pub dump_keep_daily: Option<u32>,
    /// Dumps: keep the newest of each of the last N ISO weeks
    #[arg(long, value_name = "N", help_heading = "Dumps")]
    pub dump_keep_weekly: Option<u32>,
    /// Dumps: keep the newest of each of the last N months
    #[arg(long, value_name = "N", help_heading = "Dumps")]
    pub dump_keep_monthly: Option<u32>,
    /// Dumps: keep the newest of each of the last N years
    #[arg(long, value_name = "N", help_heading = "Dumps")]
    pub dump_keep_yearly: Option<u32>,
    /// Dumps: keep every dump at most this old
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Dumps")]
    pub dump_keep_max_age: Option<std::time::Duration>,
    /// Dumps: always keep the newest N of each database
    #[arg(long, value_name = "N", help_heading = "Dumps")]
    pub dump_keep_min: Option<u32>,
}

impl ExpireArgs {
    /// The policies the flags spell.
    pub fn policy(&self) -> ExpirePolicy {
        ExpirePolicy {
            backups: Policy {
                keep_last: self.keep_last,
                daily: self.keep_daily,
                weekly: self.keep_weekly,
                monthly: self.keep_monthly,
                yearly: self.keep_yearly,
                max_age: self.keep_max_age,
                min_keep: self.keep_min,
            },
            dumps: Policy {
                keep_last: self.dump_keep_last,
                daily: self.dump_keep_daily,
                weekly: self.dump_keep_weekly,
                monthly: self.dump_keep_monthly,
                yearly: self.dump_keep_yearly,
                max_age: self.dump_keep_max_age,
                min_keep: self.dump_keep_min,
            },
        }
    }
}

/// Each rule a flag sets replaces the same rule of `base` (the config file's).
fn overlay(base: Policy, flags: Policy) -> Policy {
    Policy {
        keep_last: flags.keep_last.or(base.keep_last),
        daily: flags.daily.or(base.daily),
        weekly: flags.weekly.or(base.weekly),
        monthly: flags.monthly.or(base.monthly),
        yearly: flags.yearly.or(base.yearly),
        max_age: flags.max_age.or(base.max_age),
        min_keep: flags.min_keep.or(base.min_keep),
    }
}

pub async fn run(a: ExpireArgs, json: bool) -> Result<(), CliError> {
    let flags = a.policy();
    let (policy, url) = match &a.config {
        None => (flags, a.repo.url()),
        Some(path) => {
            let cfg = crate::daemon::config::DaemonConfig::load(
                Some(path),
                &crate::daemon::config::Overrides {
                    repo: a.repo.repo.clone(),
                    skip_secrets: true,
                    ..Default::default()
                },
            )
            .map_err(|e| CliError::new(super::exit::USAGE, e.to_string()))?;
            (
                ExpirePolicy {
                    backups: overlay(cfg.retention_backups.clone(), flags.backups),
                    dumps: overlay(cfg.retention_dumps.clone(), flags.dumps),
                },
                cfg.repo.clone(),
            )
        }
    };
    if !policy.backups.has_rules() && !policy.dumps.has_rules() && !json {
        eprintln!("note: no --keep-* or --dump-keep-* rule given: every backup and dump is kept");
    }
    let repo = Repository::open(&url, false).await?;
    // A dry run reads only; removing takes the writer lock (a running
    // daemon expires by itself: POST /run/expire asks it to now).
    let lock = if a.dry_run {
        None
    } else {
        Some(super::writer_lock(&repo, "expire").await?)
    };
    let r = expire::run(&repo, &policy, a.dry_run, chrono::Utc::now()).await;
    if let Some(lock) = lock {
        super::release(lock).await;
    }
    let r = r?;
    if json {
        print_json(&r);
    } else {
        print_report(&r);
    }
    Ok(())
}

fn print_report(r: &ExpireReport) {
    let would = if r.dry_run { "would be " } else { "" };
    for f in &r.finished_deletions {
        if r.dry_run {
            println!(
                "interrupted deletion of {} ({} objects left) would be finished",
                f.id, f.objects
            );
        } else {
            println!(
                "finished the interrupted deletion of {} ({} objects, {})",
                f.id,
                f.objects,
                human_bytes(f.bytes_freed)
            );
        }
    }
    for s in &r.sets {
        let kind = match &s.database {
            Some(db) => format!("{} {db}", s.kind),
            None => s.kind.to_string(),
        };
        let reasons: Vec<String> = s.reasons.iter().map(|r| r.to_string()).collect();
        println!(
            "{:<6}  {:<20}  {:<16}  {}",
            match (s.keep, s.locked_until) {
                (true, Some(_)) => "LOCKED",
                (true, None) => "KEEP",
                (false, _) => "EXPIRE",
            },
            s.id,
            kind,
            reasons.join("; ")
        );
    }
    if r.sets.is_empty() {
        println!("no backups or dumps in {}", r.repository);
    }
    match (&r.wal.first, &r.wal.last) {
        (Some(first), Some(last)) => println!(
            "WAL: {} objects {would}removed ({first} .. {last}), {} freed; the archive keeps everything from {} on",
            r.wal.objects,
            human_bytes(r.wal.bytes),
            r.wal.kept_from.as_deref().unwrap_or("?")
        ),
        _ => println!(
            "WAL: nothing {would}removed{}",
            match &r.wal.kept_from {
                Some(k) => format!(" (the oldest kept backup starts at {k})"),
                None => String::new(),
            }
        ),
    }
    if let Some(until) = r.wal.retained_until {
        println!(
            "WAL: {} objects ({}) no backup needs stay under Object Lock retention; the last of them can go from {}",
            r.wal.retained_objects,
            human_bytes(r.wal.retained_bytes),
            until.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    let plural = |n: u64, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    if let Some(first) = r.sets.iter().filter_map(|s| s.locked_until).min() {
        println!(
            "{} the rules let go {} under Object Lock retention (LOCKED): each goes at the first expire after its date, the first from {}",
            plural(r.sets_retained, "set"),
            if r.sets_retained == 1 { "stays" } else { "stay" },
            first.format("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    println!(
        "{} and {} {}expired, {} freed{}",
        plural(r.backups_expired, "backup"),
        plural(r.dumps_expired, "dump"),
        if r.dry_run { "would be " } else { "" },
        human_bytes(r.bytes_freed + r.wal.bytes),
        if r.dry_run {
            "; dry run: nothing was changed"
        } else {
            ""
        }
    );
}
