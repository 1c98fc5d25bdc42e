//! `pgtide drill`: prove a backup or dump restores. The copy goes into a
//! scratch directory with a private server (Unix socket inside it, no TCP),
//! the checks run, and the server and directory are always torn down — on
//! SIGINT/SIGTERM through the cancellation token, after a crash by the next
//! drill (`scratch::reap`).
//!
//! Physical backup: pre-flight (packs present, the backup's WAL in the
//! archive, free space) → restore the files (`pitr::run`) → recovery to the
//! target with promotion (`pitr::start_and_wait`) → recovery point, amcheck,
//! every table counted, `--sql` → tear down.
//! Dump: pre-flight → initdb a scratch cluster → start it → the logical
//! restore job (`--create`, no owners or privileges: roles are not in a
//! dump) → row counts against the manifest, amcheck, `--sql` → tear down.
//!
//! Every step is timed. A failed pre-flight, restore or start ends the drill;
//! a failed check does not stop the other checks. The job never prints; it
//! returns a `DrillReport` whose first failed step decides the exit code.

pub mod checks;
pub mod plan;
pub mod scratch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::pitr::{self, select::Target, PitrSettings};
use super::restore::{self, RestoreSettings};
use super::{JobError, Progress};
use crate::pipeline::Compression;
use crate::repo::manifest::{BackupManifest, DumpManifest};
use crate::repo::runs::RunRecord;
use crate::repo::wal_archive::WalArchive;
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
    };
    // The drill's own directory, named now so that the plan says where.
    let dir = s.scratch_base.join(scratch::dir_name());
    let (plan, flow) = match SetKind::of_id(id) {
        Some(SetKind::Backup) => {
            let m: BackupManifest = repo.load(SetKind::Backup, id).await?;
            let plan = plan::backup_plan(&m, &dir, &s.target, s.sql.is_some());
            (plan, Flow::Backup(Box::new(m)))
        }
        _ => {
            let m = repo.load_dump(id).await?;
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
    let pre = preflight(repo, s, &plan, &flow).await;
    let pre = match pre {
        Ok((facts, detail)) => {
            steps.end("preflight", t, Ok(detail));
            facts
        }
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
    let interrupted = {
        let work = async {
            match &flow {
                Flow::Backup(m) => backup_flow(repo, s, &plan, m, &pre, &scr, &mut steps).await,
                Flow::Dump(m) => dump_flow(repo, s, &plan, m, &pre, &scr, &mut steps).await,
            }
        };
        tokio::select! {
            _ = work => false,
            _ = cancel.cancelled() => true,
        }
    };
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
            let archive = WalArchive::new(
                repo.storage().clone(),
                m.wal_segment_size,
                Compression::None,
            );
            let wal = JobError::archive("list the WAL archive");
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
            facts.pg_ctl = Some(pitr::find_server_tool(
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
                    pitr::find_server_tool(s.pg_bin.as_deref(), "initdb", major),
                    pitr::find_server_tool(s.pg_bin.as_deref(), "pg_ctl", major),
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

/// The superusers to try on a restored cluster: `--superuser`, else the
/// bootstrap superuser named in its `pg_authid` file, `postgres`, the OS
/// user.
fn superusers(s: &DrillSettings, data_dir: &std::path::Path) -> Vec<String> {
    use crate::pg::proto::authid;
    if let Some(u) = &s.superuser {
        return vec![u.clone()];
    }
    let global = data_dir.join("global");
    let file = std::fs::read(global.join("pg_filenode.map"))
        .ok()
        .and_then(|m| authid::mapped_file(&m, authid::PG_AUTHID))
        .unwrap_or(authid::PG_AUTHID);
    let mut v = std::fs::read(global.join(file.to_string()))
        .map(|f| authid::bootstrap_superuser(&f))
        .unwrap_or_default();
    if !v.iter().any(|u| u == "postgres") {
        v.push("postgres".into());
    }
    let me = if pitr::running_as_root() {
        s.os_user.clone()
    } else {
        std::env::var("USER").ok()
    };
    if let Some(u) = me.filter(|u| !u.is_empty() && !v.contains(u)) {
        v.push(u);
    }
    v
}

fn pitr_settings(s: &DrillSettings, plan: &Plan) -> PitrSettings {
    PitrSettings {
        pgdata: plan.data_dir.clone(),
        target: s.target.clone(),
        action: "promote".into(),
        timeline: "latest".into(),
        inclusive: true,
        force: false,
        jobs: s.jobs,
        tablespace_map: plan.tablespaces.clone(),
        start: false,
        pg_bin: s.pg_bin.clone(),
        os_user: s.os_user.clone(),
        repo_url: s.repo_url.clone(),
        settings: plan::server_settings(&plan.scratch, plan.major),
    }
}

async fn backup_flow(
    repo: &Repository,
    s: &DrillSettings,
    plan: &Plan,
    m: &BackupManifest,
    facts: &Facts,
    scr: &Scratch,
    steps: &mut Steps,
) {
    let t = steps.begin("restoring the backup's files");
    let ps = pitr_settings(s, plan);
    let prepared = async {
        scr.write(plan::HBA_FILE, plan::HBA)?;
        scr.write(plan::IDENT_FILE, "")?;
        scr.give_to_server_user()?;
        let r = pitr::run(repo, &m.id, &ps, steps.progress.clone()).await?;
        // Clusters packaged the Debian way keep postgresql.conf outside the
        // data directory, so the backup has none; the server needs one (its
        // settings then come from postgresql.auto.conf and the defaults).
        if !plan.data_dir.join("postgresql.conf").exists() {
            scr.write_data_file("postgresql.conf", plan::NO_CONF)?;
        }
        Ok::<_, JobError>(r)
    }
    .await;
    let ok = steps.end(
        "restore",
        t,
        prepared.map(|r| {
            format!(
                "{} files, {} into {}",
                r.files,
                human_bytes(r.bytes),
                r.pgdata
            )
        }),
    );
    if !ok {
        return;
    }

    let t = steps.begin("recovering: PostgreSQL replays the archived WAL");
    let summary = match pitr::start_and_wait(&ps, plan.major).await {
        Ok((summary, tli)) => {
            // PostgreSQL 15+ appends resource usage to "redo done at …".
            let shown = summary
                .split("; ")
                .map(|l| l.split(" system usage:").next().unwrap_or(l))
                .collect::<Vec<_>>()
                .join("; ");
            let d = format!(
                "promoted{}: {}",
                tli.map(|t| format!(" to timeline {t}")).unwrap_or_default(),
                if shown.is_empty() { "-" } else { &shown }
            );
            steps.end("recovery", t, Ok(d));
            summary
        }
        Err(e) => {
            let e = match e.to_string() {
                m if m.contains("before configured recovery target was reached") => {
                    JobError::RecoveryShort(format!(
                        "recovery ended before reaching {}: the archive lacks the WAL up to it",
                        plan.target
                    ))
                }
                _ => e,
            };
            steps.end("recovery", t, Err(e));
            return;
        }
    };

    let t = steps.begin("checking where recovery stopped");
    let users = superusers(s, &plan.data_dir);
    let session = checks::superuser_session(&plan.scratch, &users).await;
    let (client, user) = match session {
        Ok(x) => x,
        Err(e) => {
            steps.end("recovery_point", t, Err(e));
            return;
        }
    };
    let r = recovery_point(&client, m, s, facts, &summary).await;
    steps.end("recovery_point", t, r);

    let dbs = match checks::databases(&client).await {
        Ok(d) => d,
        Err(e) => {
            let t = Instant::now();
            steps.end("amcheck", t, Err(e));
            return;
        }
    };
    drop(client);
    amcheck_step(steps, plan, &user, &dbs).await;

    let t = steps.begin("reading every table");
    let mut tables = 0usize;
    let mut rows = 0u64;
    let mut r = Ok(());
    for db in &dbs {
        match checks::count_tables(&plan.scratch, &user, db).await {
            Ok(c) => {
                tables += c.len();
                rows += c.values().sum::<u64>();
            }
            Err(e) => {
                r = Err(e);
                break;
            }
        }
    }
    steps.end(
        "tables_readable",
        t,
        r.map(|()| {
            format!(
                "{tables} tables ({rows} rows) read in {} databases",
                dbs.len()
            )
        }),
    );

    if let Some(sql) = &s.sql {
        let db = s.sql_database.clone().unwrap_or_else(|| "postgres".into());
        sql_step(steps, plan, &user, &db, sql).await;
    }
}

async fn recovery_point(
    c: &tokio_postgres::Client,
    m: &BackupManifest,
    s: &DrillSettings,
    facts: &Facts,
    summary: &str,
) -> Result<String, JobError> {
    let r = checks::recovered(c).await?;
    if r.in_recovery {
        return Err(JobError::DrillCheck(
            "the scratch server is still in recovery after the target".into(),
        ));
    }
    let replay = r.replay_lsn.ok_or_else(|| {
        JobError::DrillCheck("the scratch server reports no replayed WAL position".into())
    })?;
    let seg = m.wal_segment_size;
    match plan::expect(&s.target, m.end_lsn, m.timeline, &facts.held, seg) {
        Expect::AtLeast { lsn, timeline, why } => {
            if replay < lsn {
                let gap = plan::first_gap(&facts.held, timeline, replay, lsn, seg)
                    .map(|g| format!(": segment {g} is missing from the archive"))
                    .unwrap_or_default();
                return Err(JobError::RecoveryShort(format!(
                    "recovery stopped at {replay}, before {why} ({lsn}){gap}"
                )));
            }
            Ok(format!(
                "replayed to {replay} (expected at least {lsn}, {why}); now on timeline {}",
                r.timeline
            ))
        }
        Expect::Stopped => {
            if !summary.contains("recovery stopping") {
                return Err(JobError::RecoveryShort(format!(
                    "recovery ended at {replay} without reaching {} (the server said: {summary})",
                    plan::target_text(&s.target)
                )));
            }
            let stop = summary
                .split("; ")
                .find(|l| l.contains("recovery stopping"))
                .unwrap_or(summary);
            Ok(format!(
                "{stop}; replayed to {replay}, now on timeline {}",
                r.timeline
            ))
        }
    }
}

async fn amcheck_step(steps: &mut Steps, plan: &Plan, user: &str, dbs: &[String]) {
    let t = steps.begin("amcheck: heap and B-tree indexes");
    let mut heap = 0;
    let mut idx = 0;
    let mut problems = Vec::new();
    let mut available = true;
    for db in dbs {
        match checks::amcheck(&plan.scratch, user, db).await {
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
    let r = match checks::run_sql(&plan.scratch, user, db, sql).await {
        Ok(results) => plan::judge_sql(&results)
            .map(|n| format!("{n} checks true in database {db}"))
            .map_err(|e| JobError::DrillCheck(format!("{e} (in database {db})"))),
        Err(e) => Err(e),
    };
    steps.end("sql", t, r);
}

async fn dump_flow(
    repo: &Repository,
    s: &DrillSettings,
    plan: &Plan,
    m: &DumpManifest,
    facts: &Facts,
    scr: &Scratch,
    steps: &mut Steps,
) {
    const USER: &str = "postgres";
    let (Some(initdb), Some(pg_ctl)) = (&facts.initdb, &facts.pg_ctl) else {
        return;
    };
    let t = steps.begin("creating the scratch cluster (initdb)");
    let r = async {
        scr.write(plan::HBA_FILE, plan::HBA)?;
        scr.write(plan::IDENT_FILE, "")?;
        scr.give_to_server_user()?;
        let mut c = scratch::as_server_user(initdb, s.os_user.as_deref());
        c.arg("-D").arg(&plan.data_dir).args([
            "-U",
            USER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]);
        crate::pg::tools::run("initdb", c).await?;
        let mut conf = String::from("\n# written by pgtide drill\n");
        for (k, v) in plan::server_settings(&plan.scratch, facts.major) {
            conf.push_str(&format!("{k} = {}\n", pitr::recovery::conf_quote(&v)));
        }
        let auto = plan.data_dir.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&conf);
        std::fs::write(&auto, text).map_err(|e| JobError::Io {
            context: format!("write {}", auto.display()),
            source: e,
        })?;
        Ok::<_, JobError>(format!(
            "PostgreSQL {} in {}",
            facts.major,
            plan.data_dir.display()
        ))
    }
    .await;
    if !steps.end("initdb", t, r) {
        return;
    }

    let t = steps.begin("starting the scratch server");
    let log = plan.scratch.join(plan::SERVER_LOG);
    let mut c = scratch::as_server_user(pg_ctl, s.os_user.as_deref());
    c.arg("-D")
        .arg(&plan.data_dir)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "600", "start"])
        .stdout(std::process::Stdio::null());
    let r = crate::pg::tools::run("pg_ctl", c).await.map_err(|e| {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        let last = tail
            .lines()
            .rev()
            .find(|l| l.contains("FATAL"))
            .unwrap_or("");
        JobError::Io {
            context: "start the scratch server".into(),
            source: std::io::Error::other(format!("{e} {last}").trim().to_string()),
        }
    });
    if !steps.end(
        "start",
        t,
        r.map(|()| "listening on its socket only".into()),
    ) {
        return;
    }

    let db = m.source.database.clone();
    let t = steps.begin("restoring the dump");
    let r = async {
        // A fresh cluster has a `postgres` database; a dump of one takes
        // its place.
        if matches!(db.as_str(), "postgres" | "template1") {
            let c = crate::pg::connect::connect(
                &checks::scratch_conninfo(&plan.scratch, USER, "template1")?,
                "pgtide drill",
            )
            .await?;
            if db == "postgres" {
                c.simple_query("DROP DATABASE postgres")
                    .await
                    .map_err(JobError::sql(
                        "drop the scratch cluster's postgres database",
                    ))?;
            }
        }
        let rs = RestoreSettings {
            conn: checks::scratch_conninfo(&plan.scratch, USER, &db)?,
            jobs: s.jobs,
            create: db != "template1",
            clean: false,
            schema_only: false,
            data_only: false,
            tables: Vec::new(),
            exclude_tables: Vec::new(),
            dry_run: false,
            no_owner: true,
            no_privileges: true,
            no_tablespaces: true,
            early_index_size: 32 << 20,
            pg_dump: s.pg_dump.clone(),
            prefetch: 4,
        };
        restore::run(repo, &m.id, &rs, steps.progress.clone()).await
    }
    .await
    // The loader counts each part's rows against the manifest: in a drill
    // that is the row-count check failing, not a refused statement.
    .map_err(|e| match e {
        JobError::RowCount { .. } => JobError::DrillCheck(format!("row counts differ: {e}")),
        e => e,
    });
    let r = r.map(|r| {
        format!(
            "{} tables, {} rows, {} sequences, {} large objects into database {} (owners and privileges left out: roles are not in a dump)",
            r.tables, r.rows, r.sequences, r.large_objects, r.database
        )
    });
    if !steps.end("restore", t, r) {
        return;
    }

    let t = steps.begin("comparing row counts with the dump's manifest");
    let r = checks::count_tables(&plan.scratch, USER, &db)
        .await
        .and_then(|counted| {
            let bad = plan::compare_counts(&m.tables, &counted);
            if bad.is_empty() {
                let rows: u64 = m.tables.iter().map(|t| t.rows()).sum();
                return Ok(format!(
                    "{} tables, {rows} rows, as the manifest counted",
                    m.tables.len()
                ));
            }
            let list: Vec<String> = bad
                .iter()
                .take(10)
                .map(|b| match b.found {
                    Some(n) => format!("{} has {n} rows, the dump {}", b.table, b.expected),
                    None => format!("{} is missing (the dump has {} rows)", b.table, b.expected),
                })
                .collect();
            Err(JobError::DrillCheck(format!(
                "{} table{} differ from the dump's manifest: {}",
                bad.len(),
                if bad.len() == 1 { "" } else { "s" },
                list.join("; ")
            )))
        });
    steps.end("row_counts", t, r);

    amcheck_step(steps, plan, USER, std::slice::from_ref(&db)).await;

    if let Some(sql) = &s.sql {
        let sdb = s.sql_database.clone().unwrap_or_else(|| db.clone());
        sql_step(steps, plan, USER, &sdb, sql).await;
    }
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
