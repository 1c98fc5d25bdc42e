//! `pgtide init`: make a new repository, optionally with S3 Object Lock
//! (`--object-lock DURATION`, `--object-lock-mode governance|compliance`).
//! Other commands that write (`dump`, `backup`, `wal …`) create a plain
//! repository on first use; a repository with Object Lock is made only here.
//!
//! `--json` prints `{repository, format_version, created: true,
//! object_lock: {mode, seconds} | null}`.

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::exit::{CliError, USAGE};
use super::output::print_json;
use super::settings::parse_duration;
use super::RepoArg;
use crate::repo::{ObjectLock, Repository};
use crate::storage::RetentionMode;

/// 100 years: S3 takes retain-until dates far beyond, but a longer period
/// is a typo.
const MAX_LOCK_SECONDS: u64 = 100 * 365 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockModeArg {
    /// Users with s3:BypassGovernanceRetention can still delete early
    Governance,
    /// Nobody can delete early, not even the account's root user
    Compliance,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// S3 Object Lock: every object pgtide keeps is retained (cannot be
    /// deleted or overwritten) for at least this long after it is written,
    /// e.g. 14d; the bucket must have Object Lock enabled
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub object_lock: Option<std::time::Duration>,
    /// Object Lock mode of that retention
    #[arg(long, value_enum, default_value_t = LockModeArg::Governance, requires = "object_lock")]
    pub object_lock_mode: LockModeArg,
}

#[derive(Debug, Serialize)]
struct InitReport {
    repository: String,
    format_version: u32,
    created: bool,
    object_lock: Option<ObjectLock>,
}

pub async fn run(a: InitArgs, json: bool) -> Result<(), CliError> {
    let object_lock = match a.object_lock {
        None => None,
        Some(d) if d.as_secs() == 0 || d.as_secs() > MAX_LOCK_SECONDS => {
            return Err(CliError::new(
                USAGE,
                "--object-lock must be between 1s and 100 years (e.g. 14d)",
            ))
        }
        Some(d) => Some(ObjectLock {
            mode: match a.object_lock_mode {
                LockModeArg::Governance => RetentionMode::Governance,
                LockModeArg::Compliance => RetentionMode::Compliance,
            },
            // Whole seconds, rounded up: at least what was asked.
            seconds: d.as_secs() + u64::from(d.subsec_nanos() > 0),
        }),
    };
    let storage = crate::storage::open(&a.repo.url())
        .await
        .map_err(crate::repo::RepoError::from)?;
    let repo = Repository::init(storage, object_lock).await?;
    let report = InitReport {
        repository: repo.location(),
        format_version: repo.format_version(),
        created: true,
        object_lock: repo.object_lock(),
    };
    if json {
        print_json(&report);
    } else {
        match &report.object_lock {
            None => println!("initialized repository {}", report.repository),
            Some(l) => println!(
                "initialized repository {} with Object Lock: every object kept is retained in {} mode for {} after it is written",
                report.repository,
                l.mode.as_str(),
                crate::units::format_duration(std::time::Duration::from_secs(l.seconds))
            ),
        }
    }
    Ok(())
}
