//! Printing: human text on stdout, `--json` documents on stdout, progress
//! bars on stderr when it is a terminal, errors as one line on stderr
//! (`error: …`).
//!
//! # `--json` output
//!
//! With `--json`, a command prints one pretty-printed JSON object on stdout
//! and nothing else there; errors still go to stderr as one line, with the
//! exit code of `cli/exit.rs`. The objects are the `Serialize` report types
//! of `jobs`. Fields are always present (`null` when they have no value),
//! new fields may be added, none is removed or changes type without a note
//! in CHANGELOG.md. Sizes are bytes, durations seconds (a float), times RFC
//! 3339 UTC, LSNs PostgreSQL's `X/Y` text, WAL segments their 24-digit file
//! names. A field `name[]` is an array of the objects listed under
//! `command.name[]`.
//!
//! The list below is read by the integration test `tests/it/json.rs`, which
//! runs each command and checks that its JSON has these fields: keep one
//! line per object, in this form (`- COMMAND: {FIELD, …}`).
//!
//! - `dump`: {id, database, tables, rows, sequences, large_objects, bytes_in, bytes_stored, seconds, mb_per_second}
//! - `restore`: {id, database, dry_run, steps[], plan[], tables, rows, bytes, sequences, large_objects, seconds, mb_per_second, skipped_foreign_keys[]}
//!   (a logical restore; with `--dry-run`, `steps` and `plan` are what would be done; `skipped_foreign_keys`: one line each for the foreign keys of a `--table` restore not created because the table they reference is neither restored nor in the target)
//! - `restore.plan[]`: {kind, summary, objects[]}
//!   (one per line of `steps`, in order; `kind`: read-dump, create-database, default-tablespace, drop-existing, pre-data, load, early-index, sequences, large-objects, post-data, refresh-matviews, database-properties; `objects`: what it touches, as text: tables with their parts, sequences, materialized views, large object oids, pg_restore list entries)
//! - `restore --pgdata`: {backup, pgdata, files, bytes, sparse_files, sparse_bytes, seconds, started, recovery, timeline}
//!   (`recovery` and `timeline`: what the server said, with `--start`; `sparse_*`: 0 here)
//! - `restore --table`: {backup, target, kind, source_database, database, tables[], table_count, rows, sequences, foreign_keys[], files, bytes, sparse_files, sparse_bytes, recovery, cleaned_up[], seconds}
//!   (from a backup into `--db`, also with `--database`: `kind` is `tables` or `database`; `target`: the recovery target as text; `tables` empty for `--database`; `files`, `bytes`: what the scratch restore wrote; `sparse_files`, `sparse_bytes`: the other databases' relation files left as empty sparse files, not downloaded; `recovery`: what the scratch server said; `cleaned_up`: what killed runs left, removed first)
//! - `restore --table.tables[]`: {source, restored_as, rows, replaced}
//!   (`replaced`: a live table of that name was replaced, `--clean`)
//! - `restore --table.foreign_keys[]`: {name, table, references, outcome}
//!   (`outcome`: `created`, `not-valid` (rows violate it: created NOT VALID), `skipped` (the referenced table is not in the target), `recreated` or `recreated-not-valid` (a live table's key to a table `--clean` replaced))
//! - `backup`: {id, label, system_identifier, timeline, start_lsn, end_lsn, wal_start, wal_end, files, bytes_in, bytes_stored, seconds, mb_per_second}
//! - `list`: {repository, system_identifier, object_lock, dumps[], backups[], wal[], incomplete[], deleting[]}
//!   (`object_lock`: {mode, seconds} of a repository with Object Lock, or null)
//! - `list.dumps[]`: {id, kind, name, database, server_version, started_at, finished_at, tables, rows, bytes_raw, bytes_stored, schema_only, data_only, proven_at}
//! - `list.backups[]`: {id, name, server_version, started_at, finished_at, timeline, start_lsn, end_lsn, wal_start, wal_end, files, bytes_raw, bytes_stored, proven_at}
//!   (`proven_at`: when a `pgtide drill` of it last passed)
//! - `list.wal[]`: {timeline, segments, first, last, gaps[]}
//!   (one per timeline; `gaps`: segments missing between first and last)
//! - `list.incomplete[]`: {id, objects, bytes}
//!   (dumps and backups without a manifest: running, or failed)
//! - `list.deleting[]`: {id, objects, bytes}
//!   (interrupted deletions: the next `delete` or `expire` finishes them)
//! - `info` of a dump: {format_version, kind, id, name, started_at, finished_at, source, options, compression, tables[], sequences[], packs[], stats}
//!   (its manifest, docs/FORMAT.md)
//! - `info` of a backup: {format_version, kind, id, label, name, started_at, finished_at, system_identifier, timeline, start_lsn, end_lsn, wal_start, wal_end, files[], packs[], stats}
//!   (its manifest, docs/FORMAT.md)
//! - `drill`: `DrillReport`, fields listed in `src/cli/drill.rs`
//! - `bench`: `BenchReport`, fields listed in `src/cli/bench.rs`
//!   (also `info` of a dump or backup carries `drill` {passed_at, failed_at, failure}: what drills recorded)
//! - `verify`: {id, ok, packs, chunks, bytes_stored, bytes_raw, problems[], seconds}
//!   (printed also when problems are found, before exit 5)
//! - `copy`: {from, to, sets[], wal, bytes_copied, seconds}
//!   (`wal`: {objects_copied, objects_present, bytes_copied}; the WAL of the copied backups, or all of it with `all`)
//! - `copy.sets[]`: {id, kind, status, objects_copied, objects_present, bytes_copied}
//!   (`status`: `copied`, or `present` when the target already held the whole set)
//! - `delete`: {id, deleted, bytes_freed, locked_until, finished_deletions[]}
//!   (`finished_deletions`: interrupted deletions finished first, {id, objects, bytes_freed}; `deleted` false and `locked_until` its date when Object Lock retains the set: printed before exit 12)
//! - `expire`: {repository, dry_run, now, policy, finished_deletions[], newest_restorable_backup, sets[], backups_expired, dumps_expired, bytes_freed, sets_retained, wal}
//!   (`wal`: {kept_from, objects, bytes, first, last, retained_objects, retained_bytes, retained_until}; the `retained_` ones: WAL no backup needs that Object Lock still retains)
//! - `expire.sets[]`: {id, kind, database, finished_at, keep, reasons[], bytes, locked_until}
//!   (every complete backup, then every dump by database; `reasons`: the rules that keep it, or why it goes; `locked_until`: kept only because Object Lock retains it until then, else null)
//! - `status`: {source, repository, daemon, lock, wal, jobs, errors[]}
//!   (what `GET /status` of the daemon answers, or with `source` `repository` what the repository records; fields in `src/daemon/status.rs`)
//! - `delete --wal-before`: {kept_from, objects, bytes_freed, retained_objects, retained_bytes, retained_until}
//! - `wal stream`: {segments, partials, piece_bytes, merges, sent_bytes, reconnects, timeline, flushed}
//!   (`partials`: pieces uploaded, merged ones included; `piece_bytes`: the
//!   WAL bytes they held; `sent_bytes`: bytes of the WAL objects sent,
//!   segments and pieces, compressed)
//!   (when it stops: `--stop-at` reached, or interrupted)
//! - `wal push`: {name, outcome, bytes}
//!   (`outcome`: `stored`, `already-archived` or `partial`)
//!
//! - `init`: {repository, format_version, encrypted, keys[], object_lock}
//!   (`keys`: the recipients, and `passphrase`, it was encrypted for; `object_lock`: {mode, seconds} with `--object-lock`, else null)
//! - `key generate`: {identity_file, recipient}
//! - `key list`: {repository, generation, current_epoch, epochs[], keys[]}
//! - `key list.epochs[]`: {epoch, recipient, created_at}
//! - `key list.keys[]`: {kind, recipient, added_at, epochs[]}
//!   (`kind`: `recipient` or `passphrase`; `recipient` null for a passphrase)
//! - `key add`: {repository, action, key, generation, current_epoch}
//! - `key remove`: {repository, action, key, generation, current_epoch}
//!
//! Every object above also has the top-level field `requests`: {put, get, list, head, delete}
//! (integers: the storage requests the command made, by kind, retries included; see
//! `storage::requests` for what each kind counts).
//!
//! `wal fetch` prints nothing: PostgreSQL reads only its exit code.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::jobs::Progress;

/// Print a report as JSON. An object gains the top-level field `requests`:
/// the storage requests this process has made so far, by kind
/// (`storage::requests`), unless the report carries its own.
pub fn print_json<T: serde::Serialize>(v: &T) {
    let mut value = serde_json::to_value(v).expect("reports serialize");
    if let serde_json::Value::Object(map) = &mut value {
        map.entry("requests").or_insert_with(|| {
            serde_json::to_value(crate::storage::requests::snapshot()).expect("counts serialize")
        });
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&value).expect("reports serialize")
    );
}

/// Draws a job's `Progress` until dropped. Does nothing unless stderr is a
/// terminal and output is for people.
pub struct ProgressDisplay {
    task: Option<tokio::task::JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl ProgressDisplay {
    pub fn start(progress: Arc<Progress>, enabled: bool, unit: &'static str) -> ProgressDisplay {
        if !enabled || !std::io::stderr().is_terminal() {
            return ProgressDisplay {
                task: None,
                bar: None,
            };
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg}\n  [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} ",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let b = bar.clone();
        let task = tokio::spawn(async move {
            loop {
                let total = Progress::get(&progress.total_bytes);
                let done = Progress::get(&progress.done_bytes);
                b.set_length(total.max(done));
                b.set_position(done);
                b.set_message(format!(
                    "{} — {}/{} {unit}, {} rows",
                    progress.phase(),
                    Progress::get(&progress.units_done),
                    Progress::get(&progress.units_total),
                    Progress::get(&progress.rows)
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        ProgressDisplay {
            task: Some(task),
            bar: Some(bar),
        }
    }
}

impl Drop for ProgressDisplay {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
