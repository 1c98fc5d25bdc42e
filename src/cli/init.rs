//! `pgtide init`'s Object Lock flags (`--object-lock DURATION`,
//! `--object-lock-mode governance|compliance`), flattened into the init
//! command of `keys.rs`. Other commands that write (`dump`, `backup`,
//! `wal …`) create a plain repository on first use; a repository with
//! Object Lock is made only by `init`.

use clap::{Args, ValueEnum};

use super::exit::{CliError, USAGE};
use super::settings::parse_duration;
use crate::repo::ObjectLock;
use crate::storage::RetentionMode;

/// 100 years: S3 takes retain-until dates far beyond, but a longer period
/// is a typo.
const MAX_LOCK_SECONDS: u64 = 100 * 365 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LockModeArg {
    /// Whoever may bypass or change retention can still delete early (S3
    /// governance, an unlocked Azure policy or GCS retention)
    Governance,
    /// Nobody can delete early, not even the account's owner (S3
    /// compliance, a locked Azure policy or GCS retention)
    Compliance,
}

#[derive(Debug, Args)]
pub struct ObjectLockArgs {
    /// Every object pgtide keeps is retained (cannot be deleted or
    /// overwritten) for at least this long after it is written, e.g. 14d:
    /// S3 Object Lock, Azure version-level immutability or GCS object
    /// retention, which the bucket or container must have enabled
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub object_lock: Option<std::time::Duration>,
    /// Object Lock mode of that retention
    #[arg(long, value_enum, default_value_t = LockModeArg::Governance, requires = "object_lock")]
    pub object_lock_mode: LockModeArg,
}

impl ObjectLockArgs {
    /// The setting the flags ask for; usage errors for a period out of range.
    pub fn object_lock(&self) -> Result<Option<ObjectLock>, CliError> {
        let Some(d) = self.object_lock else {
            return Ok(None);
        };
        if d.as_secs() == 0 || d.as_secs() > MAX_LOCK_SECONDS {
            return Err(CliError::new(
                USAGE,
                "--object-lock must be between 1s and 100 years (e.g. 14d)",
            ));
        }
        Ok(Some(ObjectLock {
            mode: match self.object_lock_mode {
                LockModeArg::Governance => RetentionMode::Governance,
                LockModeArg::Compliance => RetentionMode::Compliance,
            },
            // Whole seconds, rounded up: at least what was asked.
            seconds: d.as_secs() + u64::from(d.subsec_nanos() > 0),
        }))
    }
}
