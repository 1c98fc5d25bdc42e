//! The service: one long-lived process per cluster that runs the jobs the
//! CLI runs — `wal stream` continuously, backups and dumps on schedules,
//! retention after each success — and reports on them over HTTP.
//!
//! It is a supervisor, not a second engine: every job is the same function
//! the CLI calls. It holds the repository's writer lock for its whole life
//! (so a second daemon, or a `pgtide backup` from a shell, is refused), runs
//! at most one job of each kind at a time, restarts the WAL stream with
//! backoff, and keeps its state (the last runs) in the repository, so a
//! daemon started on another host knows what the old one did.
//!
//! Stopping: SIGTERM/SIGINT cancel one token that every task watches; the
//! stream flushes what it holds, a backup or dump in flight removes what it
//! wrote (nothing half-written is ever listed), then the lock is released.
//! A daemon killed with SIGKILL leaves incomplete sets and its lock behind:
//! the next start on the same host takes the lock back at once and removes
//! the incomplete sets. SIGHUP re-reads the configuration.

pub mod config;
pub mod http;
mod jobs;
pub mod metrics;
pub mod notify;
pub mod schedule;
pub mod slot_guard;
pub mod status;
mod wal;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::jobs::wal::stream::StreamLive;
use crate::repo::lock::{LockTimings, RepoLock};
use crate::repo::runs::RunRecord;
use crate::repo::{RepoError, Repository, SetKind};
use crate::storage::counted::{Counted, StorageCounters};
use config::{DaemonConfig, Overrides};
use metrics::Metrics;

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("lost the repository lock to another process: stopped")]
    LockLost,
    /// A bug: a task panicked or stopped when it must not.
    #[error("{}", crate::cli::exit::internal_message(.0))]
    Internal(String),
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The jobs the daemon runs, by the `kind` of their records and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// A physical full backup.
    Backup,
    /// Logical dumps: the configured one with this index, or all of them.
    Dump(Option<usize>),
    /// Retention.
    Expire,
    /// A restore drill (`[drill]`).
    Drill,
}

impl JobKind {
    pub fn label(&self) -> &'static str {
        match self {
            JobKind::Backup => "full",
            JobKind::Dump(_) => "dump",
            JobKind::Expire => "expire",
            JobKind::Drill => "drill",
        }
    }
}

/// A job asked for by the schedule, the HTTP API or a finished job.
#[derive(Debug, Clone)]
pub struct Request {
    pub kind: JobKind,
    pub trigger: &'static str,
    pub job_id: String,
}

/// A job that runs now.
#[derive(Debug, Clone, Serialize)]
pub struct Running {
    pub job_id: String,
    pub started_at: DateTime<Utc>,
    pub trigger: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorEntry {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub message: String,
}

/// The WAL stream task's health.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalTaskState {
    pub running: bool,
    pub restarts: u64,
    pub last_error: Option<String>,
}

/// What the slot guard last saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlotState {
    pub retained_bytes: Option<u64>,
    pub over_warn: bool,
    pub resets: u64,
    pub last_reset: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// The mutable state the tasks write and the HTTP server reads.
#[derive(Debug, Default)]
pub struct State {
    pub running: BTreeMap<&'static str, Running>,
    pub last: BTreeMap<String, (Option<RunRecord>, Option<RunRecord>)>,
    pub next_runs: BTreeMap<String, DateTime<Utc>>,
    pub wal: WalTaskState,
    pub slot: SlotState,
    pub errors: VecDeque<ErrorEntry>,
    pub archive: Option<status::ArchiveSummary>,
    pub repository_size: Option<u64>,
    /// Failures in a row of each scheduled job (by schedule key), for the
    /// retry backoff.
    pub failures: BTreeMap<String, u32>,
    /// A backup or dump finished while retention ran (which may have listed
    /// the sets before it): run retention once more when it ends.
    pub expire_again: bool,
}

/// Everything the tasks and the HTTP handlers share.
#[derive(Debug)]
pub struct Shared {
    pub cfg: RwLock<Arc<DaemonConfig>>,
    pub repo: Repository,
    pub started_at: DateTime<Utc>,
    pub host: String,
    pub live: Arc<StreamLive>,
    pub metrics: Metrics,
    pub counters: Arc<StorageCounters>,
    counted_before: Mutex<(Vec<u64>, u64, crate::storage::requests::Requests)>,
    pub state: Mutex<State>,
    requests: mpsc::UnboundedSender<Request>,
    pub cancel: CancellationToken,
    /// Wakes the WAL task to start the stream again with the current
    /// configuration (after a reload changed `[wal]` or `[source]`).
    wal_restart: tokio::sync::Notify,
}

impl Shared {
    pub fn cfg(&self) -> Arc<DaemonConfig> {
        self.cfg.read().expect("config lock").clone()
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("state lock")
    }

    /// Remove every secret of the configuration from a message.
    pub fn redact(&self, message: &str) -> String {
        let cfg = self.cfg();
        let mut m = message.to_string();
        for s in cfg.secrets() {
            if s.len() >= 3 {
                m = m.replace(&s, "***");
            }
        }
        if let Some(w) = &cfg.webhook {
            m = m.replace(w, "(webhook)");
        }
        m
    }

    /// Ask for a job. `Err(running)` when one of that kind already runs.
    pub fn request(&self, kind: JobKind, trigger: &'static str) -> Result<String, Running> {
        self.request_or(kind, trigger, |_| {})
    }

    /// `request`, calling `busy` with the state (under its lock) when a job
    /// of that kind already runs.
    fn request_or(
        &self,
        kind: JobKind,
        trigger: &'static str,
        busy: impl FnOnce(&mut State),
    ) -> Result<String, Running> {
        let label = kind.label();
        let job_id = {
            let mut st = self.state();
            if let Some(r) = st.running.get(label) {
                let r = r.clone();
                busy(&mut st);
                return Err(r);
            }
            let job_id = format!(
                "{label}-{}-{:04x}",
                Utc::now().format("%Y%m%dT%H%M%SZ"),
                fastrand::u16(..)
            );
            st.running.insert(
                label,
                Running {
                    job_id: job_id.clone(),
                    started_at: Utc::now(),
                    trigger: trigger.to_string(),
                },
            );
            job_id
        };
        // The receiver lives as long as the supervisor; once it is gone the
        // daemon is stopping and the job would be abandoned anyway.
        let _ = self.requests.send(Request {
            kind,
            trigger,
            job_id: job_id.clone(),
        });
        Ok(job_id)
    }

    /// The record of a failed run of `kind` that started at `started_at`
    /// and ends now.
    pub fn failure(
        &self,
        kind: &str,
        started_at: DateTime<Utc>,
        trigger: &str,
        message: String,
    ) -> RunRecord {
        let now = Utc::now();
        RunRecord {
            kind: kind.to_string(),
            ok: false,
            started_at,
            finished_at: now,
            seconds: (now - started_at).num_milliseconds().max(0) as f64 / 1000.0,
            bytes: 0,
            id: None,
            trigger: trigger.to_string(),
            message: Some(message),
            database: None,
            host: self.host.clone(),
        }
    }

    fn note_error(&self, kind: &str, message: &str) {
        let message = self.redact(message);
        let mut st = self.state();
        st.errors.push_front(ErrorEntry {
            at: Utc::now(),
            kind: kind.to_string(),
            message,
        });
        st.errors.truncate(20);
    }

    /// Store a finished run in the repository, the state and the metrics,
    /// and notify.
    async fn finish(&self, mut r: RunRecord) {
        r.message = r.message.map(|m| self.redact(&m));
        if r.kind == "full" || r.kind == "dump" {
            let result = if r.ok { "success" } else { "failure" };
            self.metrics
                .runs
                .get_or_create(&metrics::KindResultLabel {
                    kind: r.kind.clone(),
                    result: result.into(),
                })
                .inc();
        }
        {
            let mut st = self.state();
            let e = st.last.entry(r.kind.clone()).or_default();
            if r.ok {
                e.0 = Some(r.clone());
            } else {
                e.1 = Some(r.clone());
            }
        }
        if !r.ok {
            self.note_error(&r.kind, r.message.as_deref().unwrap_or("failed"));
        }
        if let Err(e) = self.repo.record_run(&r).await {
            // Handled here: the run itself is done; only its record is missing.
            tracing::warn!("could not record the {} run in the repository: {e}", r.kind);
        }
        let cfg = self.cfg();
        if let Some(url) = &cfg.webhook {
            if !r.ok || cfg.notify_success {
                notify::send(url, &r).await;
            }
        }
    }

    /// Mirror the state into the metrics (before a scrape).
    pub fn refresh_metrics(&self) {
        let m = &self.metrics;
        m.up.set(1);
        let st = self.state();
        for (kind, (ok, _)) in &st.last {
            let Some(ok) = ok else { continue };
            if kind == "full" || kind == "dump" {
                let l = Metrics::kind(kind);
                m.last_success
                    .get_or_create(&l)
                    .set(ok.finished_at.timestamp_millis() as f64 / 1000.0);
                m.last_duration.get_or_create(&l).set(ok.seconds);
                m.last_size.get_or_create(&l).set(ok.bytes as i64);
            } else if kind == "expire" {
                m.expire_last_success
                    .set(ok.finished_at.timestamp_millis() as f64 / 1000.0);
            } else if kind == "drill" {
                m.drill_last_success
                    .set(ok.finished_at.timestamp_millis() as f64 / 1000.0);
            }
        }
        use std::sync::atomic::Ordering::Relaxed;
        m.wal_archived_lsn
            .set(self.live.archived.load(Relaxed) as i64);
        m.wal_lag_bytes.set(self.live.lag_bytes() as i64);
        m.wal_lag_seconds
            .set(self.live.lag_seconds(Utc::now().timestamp_millis()));
        m.wal_streaming
            .set(i64::from(self.live.connected.load(Relaxed)));
        m.slot_retained
            .set(st.slot.retained_bytes.map_or(-1, |b| b as i64));
        m.slot_over_warn.set(i64::from(st.slot.over_warn));
        m.repository_size
            .set(st.repository_size.unwrap_or(0) as i64);
        drop(st);
        // Counters only go up: add what was counted since the last scrape.
        let now: Vec<(&str, u64)> = self.counters.snapshot();
        let retries = crate::storage::RETRIES.load(Relaxed);
        let mut before = self.counted_before.lock().expect("counter lock");
        if before.0.len() != now.len() {
            before.0 = vec![0; now.len()];
        }
        for (i, (op, n)) in now.iter().enumerate() {
            let add = n.saturating_sub(before.0[i]);
            m.storage_calls
                .get_or_create(&metrics::OpLabel { op: op.to_string() })
                .inc_by(add);
            before.0[i] = *n;
        }
        let requests = crate::storage::requests::snapshot();
        let added = requests.since(&before.2);
        for kind in crate::storage::requests::Kind::ALL {
            m.storage_requests
                .get_or_create(&metrics::Metrics::kind(kind.as_str()))
                .inc_by(added.get_kind(kind));
        }
        before.2 = requests;
        m.storage_retries.inc_by(retries.saturating_sub(before.1));
        before.1 = retries;
    }
}

/// Run the daemon until SIGTERM/SIGINT (Ok) or a fatal error.
pub async fn run(config_path: Option<PathBuf>, flags: Overrides) -> Result<(), DaemonError> {
    let cfg = Arc::new(DaemonConfig::load(config_path.as_deref(), &flags)?);
    let counters = Arc::new(StorageCounters::default());
    let storage = crate::storage::open(&cfg.repo)
        .await
        .map_err(RepoError::from)?;
    let storage = Counted::wrap(storage, counters.clone());
    let repo = Repository::open_storage(storage, true).await?;
    let lock = RepoLock::acquire(
        &repo,
        "daemon",
        LockTimings {
            heartbeat: cfg.lock_heartbeat,
            stale_after: cfg.lock_stale_after,
        },
    )
    .await?;
    tracing::info!(repository = %repo.location(), "repository lock taken");
    let result = run_locked(cfg, flags, config_path, repo, counters, &lock).await;
    if let Err(e) = lock.release().await {
        tracing::warn!("could not release the repository lock: {e}");
    }
    result
}

async fn run_locked(
    cfg: Arc<DaemonConfig>,
    flags: Overrides,
    config_path: Option<PathBuf>,
    repo: Repository,
    counters: Arc<StorageCounters>,
    lock: &RepoLock,
) -> Result<(), DaemonError> {
    // Whatever a killed predecessor left half-written or half-deleted:
    // nobody else writes sets while we hold the lock.
    for d in repo.finish_deletions().await? {
        tracing::warn!(
            "finished the interrupted deletion of {} ({} objects)",
            d.id,
            d.objects
        );
    }
    for kind in [SetKind::Backup, SetKind::Dump] {
        for i in repo.incomplete(kind).await? {
            tracing::warn!(
                "removing the incomplete {} {} left by an interrupted run",
                kind.noun(),
                i.id
            );
            repo.delete(kind, &i.id).await?;
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let shared = Arc::new(Shared {
        cfg: RwLock::new(cfg.clone()),
        repo: repo.clone(),
        started_at: Utc::now(),
        host: crate::repo::lock::hostname(),
        live: Arc::new(StreamLive::default()),
        metrics: Metrics::new(),
        counters,
        counted_before: Mutex::new((Vec::new(), 0, Default::default())),
        state: Mutex::new(State::default()),
        requests: tx,
        cancel: cancel.clone(),
        wal_restart: tokio::sync::Notify::new(),
    });
    for kind in crate::repo::runs::KINDS {
        let last = repo.last_runs(kind).await?;
        shared.state().last.insert(kind.to_string(), last);
    }

    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|e| DaemonError::Listen {
            addr: cfg.http.listen,
            source: e,
        })?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(http::serve(shared.clone(), listener));
    let (reset_tx, reset_rx) = mpsc::channel(1);
    if cfg.wal.stream {
        tasks.spawn(wal::wal_task(shared.clone(), reset_rx));
        tasks.spawn(slot_guard::run(shared.clone(), reset_tx));
    }
    tasks.spawn(status::refresher(shared.clone()));
    tracing::info!(
        listen = %cfg.http.listen,
        wal_stream = cfg.wal.stream,
        backup_schedule = %cfg.backup.schedule.as_ref().map_or("none".into(), |s| s.to_string()),
        dumps = cfg.dumps.len(),
        "daemon started"
    );

    let mut jobs = tokio::task::JoinSet::new();
    let mut job_labels: std::collections::HashMap<tokio::task::Id, &'static str> =
        std::collections::HashMap::new();
    let signals = Signals::new()?;
    tokio::pin!(signals);
    let lost = lock.lost();
    let mut fatal = None;
    loop {
        let next = next_due(&shared);
        let sleep = next
            .as_ref()
            .map(|(_, at)| (*at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .unwrap_or(Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {
                if let Some((kind, _)) = next {
                    if let Err(r) = shared.request(kind.clone(), "schedule") {
                        tracing::warn!(
                            "skipping the scheduled {} run: {} from {} still runs",
                            kind.label(), r.job_id, r.started_at
                        );
                    }
                    // Past this run: the next one is computed from now.
                    shared.state().next_runs.remove(&schedule_key(&kind));
                }
            }
            Some(req) = rx.recv() => {
                let s = shared.clone();
                let token = cancel.child_token();
                let label = req.kind.label();
                let handle = jobs.spawn(async move { jobs::run_job(s, req, token).await });
                job_labels.insert(handle.id(), label);
            }
            Some(done) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                match done {
                    Ok((id, ())) => {
                        job_labels.remove(&id);
                    }
                    Err(e) => {
                        let label = job_labels.remove(&e.id()).unwrap_or("job");
                        jobs::job_panicked(&shared, label, &e).await;
                    }
                }
            }
            Some(ended) = tasks.join_next(), if !cancel.is_cancelled() => {
                // The stream, the slot guard, the HTTP server and the
                // refresher run until told to stop: one that ends (a panic)
                // leaves the service half blind. Stop, and let the service
                // manager start a fresh process.
                tracing::error!("a task of the daemon stopped unexpectedly: stopping the daemon");
                if let Err(e) = ended {
                    if e.is_panic() {
                        fatal = Some(DaemonError::Internal(
                            crate::cli::exit::take_panic()
                                .unwrap_or_else(|| "a task of the daemon panicked".into()),
                        ));
                    }
                }
                if fatal.is_none() {
                    fatal = Some(DaemonError::Internal("a task of the daemon stopped".into()));
                }
                break;
            }
            sig = signals.recv() => match sig {
                Signal::Stop => {
                    tracing::info!("stopping: finishing the WAL stream, abandoning jobs in flight");
                    break;
                }
                Signal::Reload => reload(&shared, config_path.as_deref(), &flags),
            },
            _ = lost.cancelled() => {
                fatal = Some(DaemonError::LockLost);
                break;
            }
        }
    }
    cancel.cancel();
    // Tasks stop within seconds; a stuck one does not keep the process up.
    let drain = async {
        while jobs.join_next().await.is_some() {}
        while tasks.join_next().await.is_some() {}
    };
    if tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within 30 s: exiting anyway");
    }
    match fatal {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The key of a job's schedule in `State::next_runs` (`full`, `dump[0]`, …).
fn schedule_key(kind: &JobKind) -> String {
    match kind {
        JobKind::Dump(Some(i)) => format!("dump[{i}]"),
        other => other.label().to_string(),
    }
}

/// The next scheduled job and when it is due; fills `next_runs` for status.
fn next_due(shared: &Shared) -> Option<(JobKind, DateTime<Utc>)> {
    let cfg = shared.cfg();
    let now = Utc::now();
    let mut st = shared.state();
    let mut wanted: Vec<(JobKind, &schedule::Schedule)> = Vec::new();
    if let Some(s) = &cfg.backup.schedule {
        wanted.push((JobKind::Backup, s));
    }
    for (i, d) in cfg.dumps.iter().enumerate() {
        wanted.push((JobKind::Dump(Some(i)), &d.schedule));
    }
    if let Some(s) = &cfg.drill.schedule {
        wanted.push((JobKind::Drill, s));
    }
    let keys: Vec<String> = wanted.iter().map(|(k, _)| schedule_key(k)).collect();
    st.next_runs.retain(|k, _| keys.contains(k));
    let mut best: Option<(JobKind, DateTime<Utc>)> = None;
    for (kind, sched) in wanted {
        let key = schedule_key(&kind);
        let at = match st.next_runs.get(&key) {
            Some(at) => *at,
            None => match sched.next_after(now, &cfg.timezone) {
                Some(at) => {
                    st.next_runs.insert(key, at);
                    at
                }
                None => continue,
            },
        };
        if best.as_ref().is_none_or(|(_, b)| at < *b) {
            best = Some((kind, at));
        }
    }
    best
}

fn reload(shared: &Shared, path: Option<&std::path::Path>, flags: &Overrides) {
    match DaemonConfig::load(path, flags) {
        Ok(new) => {
            let old = shared.cfg();
            if new.repo != old.repo || new.http.listen != old.http.listen {
                tracing::warn!(
                    "configuration reloaded; the repository and http.listen keep their old values until a restart"
                );
            } else {
                tracing::info!("configuration reloaded");
            }
            let mut new = new;
            new.repo = old.repo.clone();
            new.http.listen = old.http.listen;
            if new.wal.stream != old.wal.stream {
                tracing::warn!("[wal] stream keeps its old value until a restart");
                new.wal.stream = old.wal.stream;
            }
            // The stream reads its settings when it starts: start it again
            // when they changed.
            let stream_settings = |c: &DaemonConfig| format!("{:?} {:?}", c.wal, c.db);
            let restart_stream = new.wal.stream && stream_settings(&new) != stream_settings(&old);
            *shared.cfg.write().expect("config lock") = Arc::new(new);
            if restart_stream {
                tracing::info!("[wal] or [source] changed: restarting the WAL stream");
                shared.wal_restart.notify_one();
            }
            // Schedules may have changed: recompute every next run.
            shared.state().next_runs.clear();
        }
        Err(e) => {
            // Handled here: the daemon goes on with the configuration it has.
            tracing::error!("configuration not reloaded, keeping the current one: {e}");
        }
    }
}
enum Signal {
    Stop,
    Reload,
}

/// SIGTERM, SIGINT and SIGHUP as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals, DaemonError> {
        use tokio::signal::unix::{signal, SignalKind};
        let io = |e| DaemonError::Io {
            context: "install the signal handlers",
            source: e,
        };
        Ok(Signals {
            term: signal(SignalKind::terminate()).map_err(io)?,
            int: signal(SignalKind::interrupt()).map_err(io)?,
            hup: signal(SignalKind::hangup()).map_err(io)?,
        })
    }

    async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
