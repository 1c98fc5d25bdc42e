//! Printing: human text on stdout, `--json` documents on stdout (one JSON
//! object per command, schemas are the `Serialize` report types in `jobs`),
//! progress bars on stderr when it is a terminal, errors as one line on
//! stderr (`error: …`).
//!
//! `--json` output by command:
//! - `dump`: `DumpReport` {id, database, tables, rows, sequences, large_objects,
//!   bytes_in, bytes_stored, seconds, mb_per_second}
//! - `restore`: `RestoreReport` {id, database, dry_run, steps[], tables, rows,
//!   bytes, sequences, large_objects, seconds, mb_per_second}
//! - `list`: `Listing` {repository, system_identifier, dumps\[DumpSummary\],
//!   backups\[BackupSummary\], wal\[WalTimeline\], incomplete\[{id, objects,
//!   bytes}\], deleting\[{id, objects, bytes}\] (interrupted deletions)};
//!   each dump and backup has `proven_at` (when a drill of it last passed)
//! - `info`: the dump's or backup's manifest (docs/FORMAT.md), plus `drill`
//!   {passed_at, failed_at, failure} (`DrillHistory`: what drills recorded)
//! - `drill`: `DrillReport`, fields listed in `src/cli/drill.rs`
//! - `verify`: `VerifyReport` {id, ok, packs, chunks, bytes_stored, bytes_raw, problems[], seconds}
//! - `expire`: `ExpireReport`, fields listed in `src/cli/expire.rs`
//! - `delete`: `DeleteReport` {id, bytes_freed, finished_deletions\[{id,
//!   objects, bytes_freed}\] (interrupted deletions finished first)}

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::jobs::Progress;

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("reports serialize")
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
