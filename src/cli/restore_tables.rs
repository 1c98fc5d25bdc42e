//! `pgtide restore <backup|latest> --db CONN --table PATTERN… | --database
//! NAME`: tables or a database of a physical backup, at a recovery
//! target, into a live server (`jobs::table_pitr`). The flags mapped to
//! the job's settings; the report printed.
//!
//! `--json` prints `jobs::table_pitr::Report` (fields listed in
//! `cli/output.rs`).

use std::sync::Arc;

use super::exit::{self, CliError};
use super::output::{print_json, ProgressDisplay};
use super::{check_jobs, conninfo, RestoreArgs};
use crate::jobs::physical_restore::request::TargetFlags;
use crate::jobs::table_pitr::{self, Settings, What};
use crate::jobs::Progress;
use crate::repo::SetKind;
use crate::units::human_bytes;

/// The flags that only a restore from a backup into `--db` takes.
fn backup_flags(a: &RestoreArgs) -> [(&'static str, bool); 11] {
    [
        ("--target-time", a.target_time.is_some()),
        ("--target-lsn", a.target_lsn.is_some()),
        ("--target-xid", a.target_xid.is_some()),
        ("--target-name", a.target_name.is_some()),
        ("--target-immediate", a.target_immediate),
        ("--target-timeline", a.target_timeline.is_some()),
        ("--target-exclusive", a.target_exclusive),
        ("--into-schema", a.into_schema.is_some()),
        ("--database", a.database.is_some()),
        ("--scratch", a.scratch.is_some()),
        ("--superuser", a.superuser.is_some()),
    ]
}

/// A restore from a backup into `--db`: a backup id, or a flag only that
/// restore takes (`latest` alone is the newest dump, as it always was).
pub(super) fn wanted(a: &RestoreArgs) -> bool {
    a.pgdata.is_none()
        && (SetKind::of_id(&a.id) == Some(SetKind::Backup)
            || backup_flags(a).iter().any(|(_, set)| *set))
}

/// Flags that mean nothing here, refused rather than ignored.
fn check_flags(a: &RestoreArgs) -> Result<(), CliError> {
    let usage = |m: String| Err(CliError::new(exit::USAGE, m));
    let tables = !a.filter.tables.is_empty();
    if a.into_schema.is_some() && !tables {
        return usage("--into-schema applies to --table".into());
    }
    if !tables && a.database.is_none() {
        return usage(match backup_flags(a).iter().find(|(_, set)| *set) {
            Some((flag, _)) => format!(
                "{flag} applies to restoring a physical backup: add --pgdata DIR to restore the whole cluster, or --table PATTERN or --database NAME to restore part of it into --db"
            ),
            None => format!(
                "{} is a backup: add --pgdata DIR to restore the whole cluster, or --table PATTERN or --database NAME to restore part of it into --db",
                a.id
            ),
        });
    }
    let refused = [
        ("--target-action", a.target_action.is_some()),
        ("--force", a.force),
        ("--tablespace-map", !a.tablespace_map.is_empty()),
        ("--start", a.start),
        ("--set", !a.settings.is_empty()),
        ("--create", a.create),
        ("--schema-only", a.schema_only),
        ("--data-only", a.data_only),
        ("--dry-run", a.dry_run),
        ("--no-tablespaces", a.no_tablespaces),
    ];
    if let Some((flag, _)) = refused.iter().find(|(_, set)| *set) {
        return usage(format!(
            "{flag} does not apply to restoring tables or a database of a backup into --db{}",
            match *flag {
                "--create" => " (--database creates the database --db names)",
                "--target-action" => " (its scratch copy is always promoted)",
                _ => "",
            }
        ));
    }
    if a.into_schema.as_deref().is_some_and(str::is_empty) {
        return usage("--into-schema needs a schema name".into());
    }
    if a.early_index_size.is_some() && tables {
        return usage("--early-index-size applies to --database without --table".into());
    }
    Ok(())
}

pub(super) async fn run(a: RestoreArgs, json: bool) -> Result<(), CliError> {
    check_flags(&a)?;
    if SetKind::of_id(&a.id) == Some(SetKind::Dump) {
        return Err(CliError::new(
            exit::USAGE,
            format!(
                "{} is a dump: --target-*, --into-schema, --database, --scratch and --superuser apply to restoring from a physical backup (restore a dump's tables with --table alone)",
                a.id
            ),
        ));
    }
    let (include, exclude) = a.filter.patterns()?;
    let target = TargetFlags {
        time: a.target_time.clone(),
        lsn: a.target_lsn,
        xid: a.target_xid.clone(),
        name: a.target_name.clone(),
        immediate: a.target_immediate,
    }
    .target()?;
    let what = if include.is_empty() {
        What::Database { exclude }
    } else {
        What::Tables {
            include,
            exclude,
            into_schema: a.into_schema.clone(),
        }
    };
    let scratch_base = match a.scratch.clone() {
        Some(p) if p.is_absolute() => p,
        Some(p) => std::env::current_dir()
            .map_err(|e| CliError::new(exit::FAILURE, format!("current directory: {e}")))?
            .join(p),
        None => std::env::temp_dir(),
    };
    let url = a.repo.url();
    let s = Settings {
        conn: conninfo(&a.db)?,
        backup: a.id.clone(),
        target,
        timeline: a.target_timeline.clone().unwrap_or_else(|| "latest".into()),
        inclusive: !a.target_exclusive,
        what,
        source_database: a.database.clone(),
        clean: a.clean,
        jobs: check_jobs(a.jobs)?,
        scratch_base,
        pg_bin: a.pg_bin.clone(),
        pg_dump: a.pg_dump.clone(),
        os_user: a.os_user.clone(),
        superuser: a.superuser.clone(),
        no_owner: a.no_owner,
        no_privileges: a.no_privileges,
        early_index_size: a.early_index_size.unwrap_or(32 << 20),
        repo_url: url.clone(),
        secret_args: a.secrets.pass_on(),
    };
    let repo = super::keys::open_for_reading(&url, &a.secrets).await?;
    let progress = Arc::new(Progress::default());
    let display = ProgressDisplay::start(progress.clone(), !json, "tables");
    let r = table_pitr::run(&repo, &s, progress, super::cancel_on_signal()).await;
    drop(display);
    let r = r?;
    if json {
        print_json(&r);
        return Ok(());
    }
    for line in &r.cleaned_up {
        println!("{line}");
    }
    match r.kind {
        "database" => println!(
            "restored database {} at {} from backup {} as database {}: {} tables, {} rows, {} sequences",
            r.source_database, r.target, r.backup, r.database, r.table_count, r.rows, r.sequences
        ),
        _ => {
            println!(
                "restored {} table{} of database {} at {} from backup {} into {}: {} rows, {} sequences",
                r.tables.len(),
                if r.tables.len() == 1 { "" } else { "s" },
                r.source_database,
                r.target,
                r.backup,
                r.database,
                r.rows,
                r.sequences
            );
            for t in &r.tables {
                println!(
                    "  {} -> {}{} ({} rows)",
                    t.source,
                    t.restored_as,
                    if t.replaced { " (replaced)" } else { "" },
                    t.rows
                );
            }
            for k in &r.foreign_keys {
                println!(
                    "  foreign key {} of {} (references {}): {}",
                    k.name, k.table, k.references, k.outcome
                );
            }
        }
    }
    println!(
        "  scratch copy: {} files ({}) restored, {} files ({}) of other databases left out; {:.1} s",
        r.files,
        human_bytes(r.bytes),
        r.sparse_files,
        human_bytes(r.sparse_bytes),
        r.seconds
    );
    if !r.recovery.is_empty() {
        println!("  recovery: {}", r.recovery);
    }
    Ok(())
}
