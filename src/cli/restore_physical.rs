//! `pgtide restore --pgdata`: the flags that belong to a physical restore
//! (and those that do not), mapped to the job's request; the report printed.

use std::sync::Arc;

use super::exit::{self, CliError};
use super::output::{print_json, ProgressDisplay};
use super::{cancel_on_signal, check_jobs, RestoreArgs};
use crate::jobs::Progress;
use crate::units::human_bytes;

/// `restore` serves a dump (into --db) and a backup (into --pgdata): a flag
/// of the other kind would be silently ignored, and a point-in-time target
/// without --pgdata would restore the latest dump instead. Refuse both.
pub(super) fn check_flags(a: &RestoreArgs) -> Result<(), CliError> {
    let physical = [
        ("--target-time", a.target_time.is_some()),
        ("--target-lsn", a.target_lsn.is_some()),
        ("--target-xid", a.target_xid.is_some()),
        ("--target-name", a.target_name.is_some()),
        ("--target-immediate", a.target_immediate),
        ("--target-action", a.target_action.is_some()),
        ("--target-timeline", a.target_timeline.is_some()),
        ("--target-exclusive", a.target_exclusive),
        ("--force", a.force),
        ("--tablespace-map", !a.tablespace_map.is_empty()),
        ("--start", a.start),
        ("--pg-bin", a.pg_bin.is_some()),
        ("--os-user", a.os_user.is_some()),
        ("--set", !a.settings.is_empty()),
    ];
    let logical = [
        ("--create", a.create),
        ("--clean", a.clean),
        ("--schema-only", a.schema_only),
        ("--data-only", a.data_only),
        ("--table", !a.filter.tables.is_empty()),
        ("--exclude-table", !a.filter.exclude_tables.is_empty()),
        ("--dry-run", a.dry_run),
        ("--no-owner", a.no_owner),
        ("--no-privileges", a.no_privileges),
        ("--no-tablespaces", a.no_tablespaces),
        ("--early-index-size", a.early_index_size.is_some()),
        ("--db", a.db.db.is_some()),
    ];
    let from_backup = [
        ("--into-schema", a.into_schema.is_some()),
        ("--database", a.database.is_some()),
        ("--scratch", a.scratch.is_some()),
        ("--superuser", a.superuser.is_some()),
    ];
    let first =
        |flags: &[(&'static str, bool)]| flags.iter().find(|(_, set)| *set).map(|(f, _)| *f);
    match (&a.pgdata, first(&physical), first(&logical)) {
        (None, Some(flag), _) => Err(CliError::new(
            exit::USAGE,
            format!("{flag} applies to restoring a physical backup: add --pgdata DIR, or name a backup (or a --target-*) to restore tables or a database from it into --db with --table or --database (otherwise restore loads a dump into --db)"),
        )),
        (Some(_), _, Some(flag)) => Err(CliError::new(
            exit::USAGE,
            format!("{flag} applies to restoring a dump into --db, not to a physical restore into --pgdata"),
        )),
        (Some(_), _, _) if first(&from_backup).is_some() => Err(CliError::new(
            exit::USAGE,
            format!(
                "{} applies to restoring tables or a database of a backup into --db, not to a physical restore into --pgdata",
                first(&from_backup).unwrap_or_default()
            ),
        )),
        _ => Ok(()),
    }
}

pub(super) async fn run(a: RestoreArgs, json: bool) -> Result<(), CliError> {
    use crate::jobs::physical_restore::request;
    let req = request::Request {
        backup: a.id.clone(),
        pgdata: a.pgdata.clone().expect("checked by the caller"),
        target: request::TargetFlags {
            time: a.target_time.clone(),
            lsn: a.target_lsn,
            xid: a.target_xid.clone(),
            name: a.target_name.clone(),
            immediate: a.target_immediate,
        },
        action: a.target_action.map(|t| t.as_str().to_string()),
        timeline: a.target_timeline.clone(),
        exclusive: a.target_exclusive,
        force: a.force,
        jobs: check_jobs(a.jobs)?,
        tablespace_map: a.tablespace_map.clone(),
        start: a.start,
        pg_bin: a.pg_bin.clone(),
        os_user: a.os_user.clone(),
        repo_url: a.repo.url(),
        secret_args: a.secrets.pass_on(),
        settings: a.settings.clone(),
    };
    // Bad flags are refused before the repository is opened.
    let s = request::settings(&req)?;
    let repo = super::keys::open_for_reading(&req.repo_url, &a.secrets).await?;
    if repo.encrypted()
        && req.secret_args.is_empty()
        && std::env::var_os("PGTIDE_PASSPHRASE").is_some()
    {
        tracing::warn!("the passphrase came from PGTIDE_PASSPHRASE: the server's restore_command needs it in the server's environment too (or use --passphrase-file)");
    }
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), !json, "files");
    let r = request::run(&repo, &req.backup, &s, progress, cancel_on_signal()).await?;
    drop(display);
    if json {
        print_json(&r);
    } else {
        println!(
            "restored backup {} into {}: {} files, {}, {:.1} s",
            r.backup,
            r.pgdata,
            r.files,
            human_bytes(r.bytes),
            r.seconds
        );
        match &r.recovery {
            Some(summary) => println!(
                "recovery ended{}: {}",
                r.timeline
                    .map(|t| format!(" on timeline {t}"))
                    .unwrap_or_default(),
                if summary.is_empty() {
                    "see pgtide-recovery.log"
                } else {
                    summary
                }
            ),
            None => println!(
                "start the server to recover (recovery.signal and restore_command are in place)"
            ),
        }
    }
    Ok(())
}
