//! `pgtide drill`: prove a backup or dump restores. The copy goes into a
//! scratch directory with a private server (Unix socket inside it, no TCP),
//! the checks run, and the server and directory are always torn down — on
//! SIGINT/SIGTERM through the cancellation token, after a crash by the next
//! drill (`scratch::reap`).
//!
//! Physical backup: pre-flight (packs present, the backup's WAL in the
//! archive, free space) → restore the files (`physical_restore::run`) → recovery to the
//! target with promotion (`physical_restore::start_and_wait`) → recovery point, amcheck,
//! every table counted, `--sql` → tear down.
//! Dump: pre-flight → initdb a scratch cluster → start it → the logical
//! restore job (`--create`, no owners or privileges: roles are not in a
//! dump) → row counts against the manifest, amcheck, `--sql` → tear down.
//!
//! Every step is timed. A failed pre-flight, restore or start ends the drill;
//! a failed check does not stop the other checks. The job never prints; it
//! returns a `DrillReport` whose first failed step decides the exit code.
//!
//! Stopping: every step watches the cancellation token (the restores take
//! it and stop their workers themselves; the other steps are statements
//! and child processes, dropped where they wait), so the steps end, and
//! then the scratch server and directory go, before `Interrupted`.

mod backup;
pub mod checks;
mod dump;
pub mod plan;
pub mod scratch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::logical_restore::{self, RestoreSettings};
use super::physical_restore::{self, select::Target, PitrSettings};
use super::{cancellable, JobError, Progress};
use crate::pipeline::Compression;
use crate::repo::manifest::{BackupManifest, DumpManifest};
use crate::repo::runs::RunRecord;
use crate::repo::{RepoError, Repository, SetKind};
use crate::units::human_bytes;
use plan::{Expect, Plan};
use scratch::Scratch;

#[derive(Debug, Clone)]
pub struct DrillSettings {
    /// The directory under which the drill's own scratch directory is made.
    pub scratch_base: PathBuf,
    /// Leave the scratch directory (server stopped) for inspection.
    pub keep: bool,
    /// Only the pre-flight: say what would be done, write nothing.
    pub dry_run: bool,
    /// Physical backups: where recovery stops.
    pub target: Target,
    /// The `--sql` file's text.
    pub sql: Option<String>,
    /// Database the `--sql` file runs in [default: `postgres` for a backup,
    /// the dump's database for a dump].
    pub sql_database: Option<String>,
    /// Directory of the server programs (pg_ctl, initdb).
    pub pg_bin: Option<PathBuf>,
    /// pg_dump whose pg_restore loads a dump.
    pub pg_dump: Option<PathBuf>,
    /// As root: the OS user that owns the scratch files and runs the server.
    pub os_user: Option<String>,
    /// The backed-up cluster's superuser [default: postgres, then the OS user].
    pub superuser: Option<String>,
    pub jobs: usize,
    pub repo_url: String,
    /// Key flags of an encrypted repository, for the scratch server's
    /// `restore_command`.
    pub secret_args: Vec<String>,
}

/// One timed step of a drill.
#[derive(Debug, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub ok: bool,
    /// The check could not run here (amcheck not installed): not a failure.
    pub skipped: bool,
    pub seconds: f64,
    /// What was done or found, one line; the error when it failed.
    pub detail: String,
    /// The exit code of a failed step (filled in by the CLI).
    pub code: Option<u8>,
    #[serde(skip)]
    pub error: Option<JobError>,
}

#[derive(Debug, Serialize)]
pub struct DrillReport {
    pub id: String,
    /// "backup" or "dump".
    pub kind: &'static str,
    pub ok: bool,
    /// Only the pre-flight ran (`--dry-run`).
    pub dry_run: bool,
    pub target: String,
    /// The drill's own directory (made and removed by it).
    pub scratch: String,
    pub kept: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub seconds: f64,
    /// Drills whose pgtide died, cleaned up before this one started.
    pub cleaned_up: Vec<String>,
    /// What the drill restores where, and which checks it runs.
    pub plan: Plan,
    pub steps: Vec<Step>,
}

impl DrillReport {
    /// The step that failed first, if any.
    pub fn first_failure(&self) -> Option<&Step> {
        self.steps.iter().find(|s| !s.ok)
    }

    /// One line for the run record and the text output.
    pub fn message(&self) -> String {
        match self.first_failure() {
            Some(s) => format!("{} failed: {}", s.name, s.detail),
            None => format!(
                "{} {} restored and checked in {:.1} s",
                self.kind, self.id, self.seconds
            ),
        }
    }
}

/// The steps as they run.
struct Steps {
    steps: Vec<Step>,
    progress: Arc<Progress>,
    /// The drill's token: each step stops when it fires.
    cancel: CancellationToken,
}

impl Steps {
    fn begin(&self, phase: &str) -> Instant {
        self.progress.set_phase(phase);
        Instant::now()
    }

    /// Record a step's outcome; true when it passed.
    fn end(&mut self, name: &'static str, t: Instant, r: Result<String, JobError>) -> bool {
        let seconds = t.elapsed().as_secs_f64();
        let ok = r.is_ok();
        let (detail, error) = match r {
            Ok(d) => (d, None),
            Err(e) => (e.to_string(), Some(e)),
        };
        self.steps.push(Step {
            name,
            ok,
            skipped: false,
            seconds,
            detail,
            code: None,
            error,
        });
        ok
    }

    fn skipped(&mut self, name: &'static str, t: Instant, why: String) {
        self.end(name, t, Ok(why));
        if let Some(s) = self.steps.last_mut() {
            s.skipped = true;
        }
    }
}

/// Run the drill of set `id` (a backup or a dump id, resolved).
pub async fn run(
    repo: &Repository,
    id: &str,
    s: &DrillSettings,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<DrillReport, JobError> {
    use tracing::Instrument;
    let span = tracing::info_span!("job", kind = "drill", id = %id);
    drill(repo, id, s, progress, cancel).instrument(span).await
}

async fn drill(
    repo: &Repository,
    id: &str,
    s: &DrillSettings,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<DrillReport, JobError> {
    let started_at = Utc::now();
    let t0 = Instant::now();
    // A dry run changes nothing, not even what dead drills left.
    let cleaned_up = if s.dry_run {
        Vec::new()
    } else {
        tokio::task::spawn_blocking(scratch::reap)
            .await
            .unwrap_or_default()
    };
    for line in &cleaned_up {
        tracing::warn!("{line}");
    }
    let mut steps = Steps {
        steps: Vec::new(),
        progress,
        cancel: cancel.clone(),
    };
    // The drill's own directory, named now so that the plan says where.
    let dir = s.scratch_base.join(scratch::dir_name());
    let (plan, flow) = match SetKind::of_id(id) {
        Some(SetKind::Backup) => {
            let m: BackupManifest = cancellable(&cancel, repo.load(SetKind::Backup, id)).await?;
            let plan = plan::backup_plan(&m, &dir, &s.target, s.sql.is_some());
            (plan, Flow::Backup(Box::new(m)))
        }
        _ => {
            let m = cancellable(&cancel, repo.load_dump(id)).await?;
            let src = m.source.server_version_num / 10000;
            let plan = plan::dump_plan(&m, &dir, src, s.sql.is_some());
            (plan, Flow::Dump(Box::new(m)))
        }
    };
    let mut report = DrillReport {
        id: plan.id.clone(),
        kind: plan.kind,
        ok: false,
        dry_run: s.dry_run,
        target: plan.target.clone(),
        scratch: plan.scratch.display().to_string(),
        kept: false,
        started_at,
        finished_at: started_at,
        seconds: 0.0,
        cleaned_up,
        plan: plan.clone(),
        steps: Vec::new(),
    };

    // Pre-flight: nothing written yet.
    let t = steps.begin("checking the repository and the scratch space");
    // Nothing is written yet: stopped here, there is nothing to remove.
    let pre = cancellable(&cancel, preflight(repo, s, &plan, &flow)).await;
    let pre = match pre {
        Ok((facts, detail)) => {
            steps.end("preflight", t, Ok(detail));
            facts
        }
        Err(JobError::Interrupted) => return Err(JobError::Interrupted),
        Err(e) => {
            steps.end("preflight", t, Err(e));
            return Ok(finish(report, steps, t0));
        }
    };
    let plan = Plan {
        major: pre.major,
        ..plan
    };
    report.plan = plan.clone();
    if s.dry_run {
        return Ok(finish(report, steps, t0));
    }

    let t = steps.begin("creating the scratch directory");
    let scr = match Scratch::create(&plan.scratch, id, s.os_user.clone()) {
        Ok(x) => x,
        Err(e) => {
            steps.end("scratch", t, Err(e));
            return Ok(finish(report, steps, t0));
        }
    };
    // Every step stops on the token: the flow returns soon after it fires.
    match &flow {
        Flow::Backup(m) => backup::flow(repo, s, &plan, m, &pre, &scr, &mut steps).await,
        Flow::Dump(m) => dump::flow(repo, s, &plan, m, &pre, &scr, &mut steps).await,
    }
    // Once the token fired, a failed step is the interruption (see
    // `jobs::stopped`); a drill whose steps all passed stands.
    let interrupted = cancel.is_cancelled() && steps.steps.iter().any(|s| !s.ok);
    let t = steps.begin("stopping the scratch server and removing its directory");
    let keep = s.keep && !interrupted;
    let removed = scr.remove(keep).await;
    if interrupted {
        if let Err(e) = removed {
            tracing::warn!("cleaning up the interrupted drill: {e}");
        }
        return Err(JobError::Interrupted);
    }
    report.kept = keep;
    steps.end("cleanup", t, removed);
    Ok(finish(report, steps, t0))
}

enum Flow {
    Backup(Box<BackupManifest>),
    Dump(Box<DumpManifest>),
}

/// What the pre-flight learned for the later steps.
#[derive(Default)]
struct Facts {
    /// Complete WAL segments per timeline (physical).
    held: std::collections::BTreeMap<u32, std::collections::BTreeSet<u64>>,
    /// Server programs of the scratch cluster's version (backups: pg_ctl,
    /// checked here and found again by `pitr`; dumps: initdb and pg_ctl).
    initdb: Option<PathBuf>,
    pg_ctl: Option<PathBuf>,
    major: u32,
}

async fn preflight(
    repo: &Repository,
    s: &DrillSettings,
    plan: &Plan,
    flow: &Flow,
) -> Result<(Facts, String), JobError> {
    let mut facts = Facts {
        major: plan.major,
        ..Facts::default()
    };
    let kind = match flow {
        Flow::Backup(_) => SetKind::Backup,
        Flow::Dump(_) => SetKind::Dump,
    };
    let packs = match flow {
        Flow::Backup(m) => &m.packs,
        Flow::Dump(m) => &m.packs,
    };
    if let Err(what) = repo.check_packs(kind, &plan.id, packs).await? {
        return Err(JobError::Damaged {
            id: plan.id.clone(),
            what,
        });
    }
    let mut notes = vec![format!(
        "{} pack{} present",
        packs.len(),
        if packs.len() == 1 { "" } else { "s" }
    )];
    match flow {
        Flow::Backup(m) => {
            let archive = repo.wal_archive(m.wal_segment_size, Compression::None);
            let wal = JobError::archive("list the WAL archive");
            // A drill proves restorability: what the archive holds comes
            // from a full listing, not from the index (which a segment
            // removed behind pgtide's back would outlive).
            archive
                .rebuild_index()
                .await
                .map_err(JobError::archive("list the WAL archive"))?;
            if m.timeline == m.end_timeline {
                if let Some(name) = archive
                    .missing_in_range(m.timeline, m.start_lsn, m.end_lsn)
                    .await
                    .map_err(JobError::archive("list the WAL archive"))?
                {
                    return Err(JobError::RecoveryShort(format!(
                        "WAL segment {name} that backup {} needs is missing from the archive: the backup cannot be restored (run pgtide verify {})",
                        m.id, m.id
                    )));
                }
            }
            facts.held = archive.segments().await.map_err(wal)?;
            notes.push(format!("WAL {}..{} archived", m.wal_start, m.wal_end));
            // Found now rather than after the whole restore.
            facts.pg_ctl = Some(physical_restore::find_server_tool(
                s.pg_bin.as_deref(),
                "pg_ctl",
                plan.major,
            )?);
        }
        Flow::Dump(m) => {
            if m.options.data_only {
                return Err(JobError::Invalid(format!(
                    "dump {} holds only data (dumped with --data-only): a drill restores into an empty cluster and needs the schema; drill a full dump",
                    m.id
                )));
            }
            // The dump's own major first, else the oldest newer one found.
            let mut found = None;
            for major in plan.major..=plan.major.max(13) + 10 {
                if let (Ok(i), Ok(c)) = (
                    physical_restore::find_server_tool(s.pg_bin.as_deref(), "initdb", major),
                    physical_restore::find_server_tool(s.pg_bin.as_deref(), "pg_ctl", major),
                ) {
                    found = Some((major, i, c));
                    break;
                }
            }
            let Some((major, i, c)) = found else {
                return Err(JobError::Invalid(format!(
                    "no initdb and pg_ctl of PostgreSQL {} or newer found for the scratch cluster: name their directory with --pg-bin",
                    plan.major
                )));
            };
            facts.major = major;
            facts.initdb = Some(i);
            facts.pg_ctl = Some(c);
            notes.push(format!("scratch cluster: PostgreSQL {major}"));
        }
    }
    plan.check_socket_path().map_err(JobError::Invalid)?;
    std::fs::create_dir_all(&s.scratch_base).map_err(|e| JobError::Io {
        context: format!("create {}", s.scratch_base.display()),
        source: e,
    })?;
    let free = scratch::free_bytes(&s.scratch_base)?;
    if free < plan.needs_bytes {
        return Err(JobError::Invalid(format!(
            "{} has {} free, the drill of {} needs about {}: choose another --scratch",
            s.scratch_base.display(),
            human_bytes(free),
            plan.id,
            human_bytes(plan.needs_bytes)
        )));
    }
    notes.push(format!(
        "{} free for {} needed",
        human_bytes(free),
        human_bytes(plan.needs_bytes)
    ));
    Ok((facts, notes.join(", ")))
}

async fn amcheck_step(steps: &mut Steps, plan: &Plan, user: &str, dbs: &[String]) {
    let t = steps.begin("amcheck: heap and B-tree indexes");
    let mut heap = 0;
    let mut idx = 0;
    let mut problems = Vec::new();
    let mut available = true;
    for db in dbs {
        match cancellable(&steps.cancel, checks::amcheck(&plan.scratch, user, db)).await {
            Ok(r) if !r.available => {
                available = false;
                break;
            }
            Ok(r) => {
                heap += r.heap_checked;
                idx += r.indexes_checked;
                problems.extend(r.problems.into_iter().map(|p| format!("{db}: {p}")));
            }
            Err(e) => {
                steps.end("amcheck", t, Err(e));
                return;
            }
        }
    }
    if !available {
        steps.skipped(
            "amcheck",
            t,
            format!(
                "not run: the amcheck extension is not installed with the PostgreSQL {} binaries of the scratch server",
                plan.major
            ),
        );
        return;
    }
    let r = if problems.is_empty() {
        Ok(format!(
            "{heap} tables and {idx} B-tree indexes (with all heap tuples) verified in {} databases{}",
            dbs.len(),
            if heap == 0 {
                " (heap checks need amcheck 1.3, PostgreSQL 14+)"
            } else {
                ""
            }
        ))
    } else {
        Err(JobError::DrillCheck(format!(
            "amcheck found {} problem{}: {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("; ")
        )))
    };
    steps.end("amcheck", t, r);
}

async fn sql_step(steps: &mut Steps, plan: &Plan, user: &str, db: &str, sql: &str) {
    let t = steps.begin("running the --sql checks");
    let r = match cancellable(&steps.cancel, checks::run_sql(&plan.scratch, user, db, sql)).await {
        Ok(results) => plan::judge_sql(&results)
            .map(|n| format!("{n} checks true in database {db}"))
            .map_err(|e| JobError::DrillCheck(format!("{e} (in database {db})"))),
        Err(e) => Err(e),
    };
    steps.end("sql", t, r);
}

fn finish(mut report: DrillReport, steps: Steps, t0: Instant) -> DrillReport {
    report.steps = steps.steps;
    report.ok = report.steps.iter().all(|s| s.ok);
    report.finished_at = Utc::now();
    report.seconds = t0.elapsed().as_secs_f64();
    report
}

/// Store the drill's outcome as a run record of kind `drill`, so `status`,
/// `list`/`info` and the daemon see when each backup and dump was last
/// proven.
pub async fn record(repo: &Repository, r: &DrillReport, trigger: &str) -> Result<(), RepoError> {
    repo.record_run(&RunRecord {
        kind: "drill".into(),
        ok: r.ok,
        started_at: r.started_at,
        finished_at: r.finished_at,
        seconds: r.seconds,
        bytes: 0,
        id: Some(r.id.clone()),
        trigger: trigger.into(),
        message: Some(r.message()),
        database: None,
        host: crate::repo::lock::hostname(),
    })
    .await
}
