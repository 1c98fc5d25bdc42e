//! `pgtide drill`: flags → `DrillSettings`, the job, its record in the
//! repository, its output and exit code.
//!
//! `--json` prints `DrillReport` (src/jobs/drill/mod.rs): {id, kind
//! ("backup" or "dump"), ok, dry_run, target, scratch (the drill's
//! directory), kept, started_at, finished_at, seconds, cleaned_up\[string\]
//! (what interrupted drills left, removed first), plan {id, kind, scratch,
//! data_dir, tablespaces\[\[oid, dir\]\], major, needs_bytes, target,
//! checks\[recovery_point|row_counts|amcheck|tables_readable|sql\]}, steps\[{name, ok, skipped, seconds, detail,
//! code (exit code of a failed step, else null)}\]}. Step names, in order:
//! preflight, scratch (only when it fails), restore, recovery,
//! recovery_point, initdb, start, row_counts, amcheck, tables_readable, sql,
//! cleanup. The exit code is the `code` of the first failed step.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::exit::{self, CliError};
use super::output::{print_json, ProgressDisplay};
use super::settings::default_jobs;
use super::RepoArg;
use crate::jobs::drill::{self, DrillSettings};
use crate::jobs::physical_restore::select;
use crate::jobs::Progress;
use crate::repo::SetKind;

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Backup or dump id, or `latest` (the newest backup; the newest dump
    /// when the repository holds no backup)
    #[arg(default_value = "latest")]
    pub id: String,
    #[command(flatten)]
    pub repo: RepoArg,
    #[command(flatten)]
    pub secrets: super::keys::SecretArgs,
    /// Recover to this time (with a UTC offset) instead of the end of the archive
    #[arg(long, group = "target")]
    pub target_time: Option<String>,
    /// Recover to this LSN
    #[arg(long, group = "target")]
    pub target_lsn: Option<crate::pg::lsn::Lsn>,
    /// Recover to this transaction id
    #[arg(long, group = "target")]
    pub target_xid: Option<String>,
    /// Recover to this restore point
    #[arg(long, group = "target")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long, group = "target")]
    pub target_immediate: bool,
    /// SQL checks: every statement that returns a value must return true
    #[arg(long, value_name = "FILE")]
    pub sql: Option<PathBuf>,
    /// Database the --sql checks run in [default: postgres for a backup, the dump's database]
    #[arg(long, value_name = "NAME", requires = "sql")]
    pub sql_database: Option<String>,
    /// Where the drill makes its scratch directory [default: the temp dir]
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// Leave the scratch directory (server stopped) for inspection
    #[arg(long)]
    pub keep: bool,
    /// Check the repository and the scratch space and say what would be done, changing nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Directory of pg_ctl and initdb [default: found by major version]
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// pg_dump whose pg_restore loads a dump (binary or its directory) [default: the newest found]
    #[arg(long, env = "PGTIDE_PG_DUMP")]
    pub pg_dump: Option<PathBuf>,
    /// When run as root: the OS user that owns the scratch files and runs the server [default: postgres]
    #[arg(long)]
    pub os_user: Option<String>,
    /// The backed-up cluster's superuser [default: the one its pg_authid names, postgres, the OS user]
    #[arg(long)]
    pub superuser: Option<String>,
    /// Parallel restore workers
    #[arg(long, short = 'j', default_value_t = default_jobs())]
    pub jobs: usize,
}

fn target(a: &DrillArgs) -> Result<select::Target, CliError> {
    Ok(crate::jobs::physical_restore::request::TargetFlags {
        time: a.target_time.clone(),
        lsn: a.target_lsn,
        xid: a.target_xid.clone(),
        name: a.target_name.clone(),
        immediate: a.target_immediate,
    }
    .target()?)
}

pub async fn run(a: DrillArgs, json: bool) -> Result<(), CliError> {
    let target = target(&a)?;
    let targeted = !matches!(target, select::Target::End);
    let sql = match &a.sql {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| CliError::new(exit::USAGE, format!("--sql {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let url = a.repo.url();
    let repo = super::keys::open_for_reading(&url, &a.secrets).await?;
    let id = if a.id == "latest" {
        if targeted {
            crate::jobs::physical_restore::choose(&repo, &target, "latest")
                .await?
                .map_err(|e| CliError::new(exit::REPOSITORY, e.to_string()))?
        } else if repo.ids(SetKind::Backup).await?.is_empty() {
            repo.resolve_dump("latest").await?
        } else {
            repo.resolve(SetKind::Backup, "latest").await?
        }
    } else {
        repo.resolve_any(&a.id).await?
    };
    if targeted && SetKind::of_id(&id) != Some(SetKind::Backup) {
        return Err(CliError::new(
            exit::USAGE,
            format!("--target-* applies to physical backups; {id} is a dump"),
        ));
    }
    let s = DrillSettings {
        scratch_base: a.scratch.clone().unwrap_or_else(std::env::temp_dir),
        keep: a.keep,
        dry_run: a.dry_run,
        target,
        sql,
        sql_database: a.sql_database,
        pg_bin: a.pg_bin,
        pg_dump: a.pg_dump,
        os_user: a.os_user,
        superuser: a.superuser,
        jobs: super::check_jobs(a.jobs)?,
        repo_url: url,
        secret_args: a.secrets.pass_on(),
    };
    let s = DrillSettings {
        scratch_base: absolute(&s.scratch_base)?,
        ..s
    };
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), !json, "files");
    let r = drill::run(&repo, &id, &s, progress, super::cancel_on_signal()).await;
    drop(display);
    let mut r = r?;
    for step in &mut r.steps {
        step.code = step.error.as_ref().map(exit::classify);
    }
    if !r.dry_run {
        if let Err(e) = drill::record(&repo, &r, "cli").await {
            // Handled here: the drill's verdict stands without its record.
            tracing::warn!("could not record the drill in the repository: {e}");
        }
    }
    if json {
        print_json(&r);
    } else {
        for line in &r.cleaned_up {
            println!("{line}");
        }
        println!("drill of {} {} ({})", r.kind, r.id, r.target);
        for step in &r.steps {
            let mark = match (step.ok, step.skipped) {
                (true, false) => "ok  ",
                (true, true) => "skip",
                (false, _) => "FAIL",
            };
            println!(
                "  {mark} {:<16} {:>8.1} s  {}",
                step.name, step.seconds, step.detail
            );
        }
        if r.dry_run {
            let p = &r.plan;
            println!(
                "  would restore into {} (PostgreSQL {})",
                p.data_dir.display(),
                p.major
            );
            for (oid, dir) in &p.tablespaces {
                println!("  tablespace {oid} into {}", dir.display());
            }
            let checks: Vec<String> = p
                .checks
                .iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            println!("  then check: {}", checks.join(", "));
            println!("nothing was changed");
        } else if r.ok {
            println!(
                "{} {} is proven: restored and every check passed in {:.1} s",
                r.kind, r.id, r.seconds
            );
        }
    }
    match r.first_failure() {
        None => Ok(()),
        Some(step) => Err(CliError::new(
            step.code.unwrap_or(exit::FAILURE),
            format!(
                "drill of {} {} failed at {}: {}",
                r.kind, r.id, step.name, step.detail
            ),
        )),
    }
}

fn absolute(p: &std::path::Path) -> Result<PathBuf, CliError> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .map_err(|e| CliError::new(exit::FAILURE, format!("current directory: {e}")))?
        .join(p))
}

/// `info`: when drills last passed and failed on this set.
pub fn print_history(h: &crate::jobs::inspect::DrillHistory) {
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    match h.passed_at {
        Some(t) => println!("proven      {} (pgtide drill passed)", at(t)),
        None => println!("proven      never (run pgtide drill)"),
    }
    if let Some(t) = h.failed_at.filter(|f| h.passed_at.is_none_or(|p| *f > p)) {
        println!(
            "drill       failed {}: {}",
            at(t),
            h.failure.as_deref().unwrap_or("")
        );
    }
}

/// `list`: one line per backup or dump a drill proved.
pub fn print_proven(l: &crate::jobs::inspect::Listing) {
    let at = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let proven: Vec<(&str, &str, chrono::DateTime<chrono::Utc>)> = l
        .backups
        .iter()
        .filter_map(|b| b.proven_at.map(|t| ("backup", b.id.as_str(), t)))
        .chain(
            l.dumps
                .iter()
                .filter_map(|d| d.proven_at.map(|t| ("dump", d.id.as_str(), t))),
        )
        .collect();
    for (kind, id, t) in proven {
        println!("proven: {kind} {id} by pgtide drill at {}", at(t));
    }
}
