//! `restore --pgdata` as the command line asks for it, made into the job's
//! settings: the recovery target, `--tablespace-map`, `--set`, the data
//! directory made absolute, and the backup picked for the target. The cli
//! only maps its flags into a [`Request`] and prints the report.
//!
//! Must never: print, or know about flags' spelling beyond the messages.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::select::{self, Target};
use super::{choose, PitrReport, PitrSettings};
use crate::jobs::{JobError, Progress};
use crate::pg::lsn::Lsn;
use crate::repo::{Repository, SetKind};

/// The recovery target options (at most one is given).
#[derive(Debug, Clone, Default)]
pub struct TargetFlags {
    pub time: Option<String>,
    pub lsn: Option<Lsn>,
    pub xid: Option<String>,
    pub name: Option<String>,
    pub immediate: bool,
}

impl TargetFlags {
    /// The target they name; none: the end of the archived WAL.
    pub fn target(&self) -> Result<Target, JobError> {
        Ok(if let Some(t) = &self.time {
            Target::Time {
                at: select::parse_time(t).map_err(JobError::Invalid)?,
                text: t.clone(),
            }
        } else if let Some(l) = self.lsn {
            Target::Lsn(l)
        } else if let Some(x) = &self.xid {
            Target::Xid(x.clone())
        } else if let Some(n) = &self.name {
            Target::Name(n.clone())
        } else if self.immediate {
            Target::Immediate
        } else {
            Target::End
        })
    }
}

/// A physical restore as asked for, before it is checked.
#[derive(Debug, Clone)]
pub struct Request {
    /// A backup id (or a unique prefix), or `latest`: the newest backup
    /// that can reach the target along the timeline.
    pub backup: String,
    /// The data directory to write (relative to the current directory).
    pub pgdata: PathBuf,
    pub target: TargetFlags,
    /// `recovery_target_action`; default `promote`.
    pub action: Option<String>,
    /// `recovery_target_timeline`; default `latest`.
    pub timeline: Option<String>,
    /// Stop just before the target instead of just after it.
    pub exclusive: bool,
    pub force: bool,
    pub jobs: usize,
    /// `OID=DIR` (or `LOCATION=DIR`) each.
    pub tablespace_map: Vec<String>,
    pub start: bool,
    pub pg_bin: Option<PathBuf>,
    pub os_user: Option<String>,
    pub repo_url: String,
    /// Key flags for `restore_command` (encrypted repositories).
    pub secret_args: Vec<String>,
    /// `NAME=VALUE` each, for postgresql.auto.conf.
    pub settings: Vec<String>,
}

/// The settings of the restore `r` asks for; usage errors for a bad
/// target, tablespace mapping or setting.
pub fn settings(r: &Request) -> Result<PitrSettings, JobError> {
    let usage = JobError::Invalid;
    let target = r.target.target()?;
    let mut tablespace_map = Vec::new();
    for m in &r.tablespace_map {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| usage(format!("--tablespace-map {m:?}: use OID=DIR")))?;
        tablespace_map.push((k.to_string(), PathBuf::from(v)));
    }
    let mut settings = Vec::new();
    for kv in &r.settings {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| {
                !k.trim().is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            })
            .ok_or_else(|| usage(format!("--set {kv:?}: use NAME=VALUE")))?;
        settings.push((k.trim().to_string(), v.to_string()));
    }
    let pgdata = if r.pgdata.is_absolute() {
        r.pgdata.clone()
    } else {
        std::env::current_dir()
            .map_err(|e| JobError::Io {
                context: "current directory".into(),
                source: e,
            })?
            .join(&r.pgdata)
    };
    Ok(PitrSettings {
        pgdata,
        target,
        action: r.action.clone().unwrap_or_else(|| "promote".into()),
        timeline: r.timeline.clone().unwrap_or_else(|| "latest".into()),
        inclusive: !r.exclusive,
        force: r.force,
        jobs: r.jobs,
        tablespace_map,
        start: r.start,
        pg_bin: r.pg_bin.clone(),
        os_user: r.os_user.clone(),
        repo_url: r.repo_url.clone(),
        secret_args: r.secret_args.clone(),
        settings,
        zero_databases: Default::default(),
    })
}

/// The backup to restore: `backup` resolved, or for `latest` the newest
/// that can reach the target of `s` along its timeline.
pub async fn pick(repo: &Repository, backup: &str, s: &PitrSettings) -> Result<String, JobError> {
    if backup == "latest" {
        Ok(choose(repo, &s.target, &s.timeline).await??)
    } else {
        Ok(repo.resolve(SetKind::Backup, backup).await?)
    }
}

/// Pick the backup (see [`pick`]) and restore it with `s` (from
/// [`settings`]); `cancel` stops it (see [`super::run`]).
pub async fn run(
    repo: &Repository,
    backup: &str,
    s: &PitrSettings,
    progress: std::sync::Arc<Progress>,
    cancel: CancellationToken,
) -> Result<PitrReport, JobError> {
    let id = crate::jobs::cancellable(&cancel, pick(repo, backup, s)).await?;
    super::run(repo, &id, s, progress, cancel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request {
        Request {
            backup: "latest".into(),
            pgdata: PathBuf::from("/srv/pg"),
            target: TargetFlags::default(),
            action: None,
            timeline: None,
            exclusive: false,
            force: false,
            jobs: 2,
            tablespace_map: Vec::new(),
            start: false,
            pg_bin: None,
            os_user: None,
            repo_url: "/repo".into(),
            secret_args: Vec::new(),
            settings: Vec::new(),
        }
    }

    #[test]
    fn defaults_recover_to_the_end_of_the_latest_timeline_and_promote() {
        let s = settings(&request()).unwrap();
        assert!(matches!(s.target, Target::End));
        assert_eq!(
            (s.action.as_str(), s.timeline.as_str()),
            ("promote", "latest")
        );
        assert!(s.inclusive);
    }

    #[test]
    fn maps_and_settings_are_parsed_and_bad_ones_are_usage_errors() {
        let r = Request {
            tablespace_map: vec!["16384=/mnt/fast".into()],
            settings: vec!["port=5433".into(), "log.x=a=b".into()],
            target: TargetFlags {
                name: Some("before".into()),
                ..TargetFlags::default()
            },
            ..request()
        };
        let s = settings(&r).unwrap();
        assert_eq!(
            s.tablespace_map,
            [("16384".to_string(), PathBuf::from("/mnt/fast"))]
        );
        assert_eq!(
            s.settings,
            [
                ("port".to_string(), "5433".to_string()),
                ("log.x".to_string(), "a=b".to_string())
            ]
        );
        assert!(matches!(s.target, Target::Name(ref n) if n == "before"));
        let bad = |r: Request| settings(&r).unwrap_err().to_string();
        assert_eq!(
            bad(Request {
                tablespace_map: vec!["16384".into()],
                ..request()
            }),
            "--tablespace-map \"16384\": use OID=DIR"
        );
        assert_eq!(
            bad(Request {
                settings: vec!["bad name=1".into()],
                ..request()
            }),
            "--set \"bad name=1\": use NAME=VALUE"
        );
    }

    #[test]
    fn a_relative_data_directory_is_made_absolute() {
        let s = settings(&Request {
            pgdata: PathBuf::from("restored"),
            ..request()
        })
        .unwrap();
        assert!(s.pgdata.is_absolute() && s.pgdata.ends_with("restored"));
    }
}
