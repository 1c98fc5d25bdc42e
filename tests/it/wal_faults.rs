//! Fault injection for `pgtide wal stream` (DESIGN.md §3; STYLE.md habits 7
//! and 9). Named scenarios against a real PostgreSQL 15: the walsender
//! terminated, the server restarted and crashed (and pgtide stopped with
//! SIGTERM while it is down), the TCP connection cut mid-message by the
//! relay, pgtide SIGKILLed mid-segment (the prefix its pieces hold must
//! never shrink when it starts again), the S3 store down for half a minute (and pgtide
//! stopped during a second outage), and the slot's `restart_lsn` sampled
//! against what the repository holds.
//!
//! Every scenario ends with the same oracles:
//! - gap-free: `pgtide list --json` shows no gap on the timeline; every
//!   segment from the first to the last, fetched with `pgtide wal fetch`,
//!   equals the server's own file in pg_wal (`wal_keep_size` keeps them) and
//!   `pg_waldump` reads the whole range (it fails on a missing or damaged
//!   record);
//! - no lost commits: a writer records each committed id with the WAL insert
//!   position after its commit; after `pg_switch_wal()` the archive must reach
//!   past the last one. `server_restart_and_crash` also restores a base
//!   backup + the archive and finds every committed id.
//!
//! The streamer is a child process ([`Streamer`]) so that it can be killed;
//! its `-v` log goes to a file. Every wait has a deadline; nothing asserts on
//! timings. WAL volumes stay at a few 16 MiB segments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pgtide::pg::lsn::{parse_segment_name, segment_name, Lsn};
use pgtide::repo::wal_pieces::{self, Piece};

use crate::harness::cli::{Cli, CliOutput, PGTIDE_BIN};
use crate::harness::cut::Relay;
use crate::harness::pg::{pg_tool, PgCluster, SUPERUSER};
use crate::harness::s3::{s3_env, S3Server};

pub(crate) const SLOT: &str = "faults";
pub(crate) const TLI: u32 = 1;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

pub(crate) fn lsn(text: &str) -> u64 {
    text.parse::<Lsn>().unwrap_or_else(|e| panic!("{e}")).0
}

pub(crate) fn show_lsn(l: u64) -> String {
    Lsn(l).to_string()
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `timeout`
/// with `what` and `diag()`.
pub(crate) fn wait_for<T>(
    what: &str,
    timeout: Duration,
    diag: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", diag());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// The repository under test
// ---------------------------------------------------------------------------

/// Where the streamer archives, and the environment pgtide needs to reach it.
pub(crate) struct Repo {
    pub(crate) url: String,
    pub(crate) env: Vec<(String, String)>,
    /// The directory of a local repository (for looking at pieces).
    pub(crate) local: Option<PathBuf>,
}

impl Repo {
    pub(crate) fn local(dir: &Path) -> Repo {
        Repo {
            url: dir.display().to_string(),
            env: Vec::new(),
            local: Some(dir.to_path_buf()),
        }
    }

    pub(crate) fn s3(url: String) -> Repo {
        Repo {
            url,
            env: s3_env()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            local: None,
        }
    }

    /// `pgtide ARGS --repo URL` with the repository's environment.
    pub(crate) fn run(&self, args: &[&str]) -> CliOutput {
        let mut cli = Cli::new(args);
        cli.arg("--repo")
            .arg(&self.url)
            .timeout(Duration::from_secs(120));
        for (k, v) in &self.env {
            cli.env(k, v);
        }
        cli.run()
    }

    /// Complete segments archived on timeline 1 (from `pgtide list --json`).
    pub(crate) fn listed(&self) -> Option<Listed> {
        let out = self.run(&["list", "--json"]);
        out.assert_ok();
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|e| panic!("list --json is not JSON: {e}\n{out}"));
        let tl = v["wal"]
            .as_array()?
            .iter()
            .find(|t| t["timeline"].as_u64() == Some(TLI as u64))?;
        let segno = |k: &str| {
            let name = tl[k].as_str().expect("segment name");
            // The segment size does not change the name's layout for 16 MiB.
            parse_segment_name(name, 16 << 20)
                .unwrap_or_else(|| panic!("bad segment name {name}"))
                .1
        };
        Some(Listed {
            first: segno("first"),
            last: segno("last"),
            gaps: tl["gaps"]
                .as_array()
                .map(|g| {
                    g.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// End of what a local repository holds on timeline 1: the end of the
    /// newest complete segment or of the longest prefix held in pieces,
    /// whichever is further (read from the files: pieces are not listed by
    /// the CLI).
    pub(crate) fn held_end(&self, seg: u64) -> u64 {
        let dir = self
            .local
            .as_ref()
            .expect("held_end needs a local repository")
            .join(format!("wal/{TLI:08X}"));
        let mut end = 0;
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((_, segno)) = parse_segment_name(&name, seg) {
                end = end.max((segno + 1) * seg);
            }
        }
        for (name, len) in self.partials() {
            let (_, segno) =
                parse_segment_name(&name, seg).unwrap_or_else(|| panic!("bad piece name {name}"));
            end = end.max(segno * seg + len);
        }
        end
    }

    /// Piece files (`.piece`, older `.partial`) of a local repository on
    /// timeline 1, by segment name.
    pub(crate) fn piece_files(&self) -> BTreeMap<String, Vec<Piece>> {
        let dir = self
            .local
            .as_ref()
            .expect("pieces need a local repository")
            .join(format!("wal/{TLI:08X}"));
        let mut by_segment: BTreeMap<String, Vec<Piece>> = BTreeMap::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(p) = Piece::from_key(&name) {
                by_segment
                    .entry(name[..24].to_string())
                    .or_default()
                    .push(p);
            }
        }
        by_segment
    }

    /// `(segment name, length of the prefix its pieces hold)` of a local
    /// repository on timeline 1.
    pub(crate) fn partials(&self) -> Vec<(String, u64)> {
        self.piece_files()
            .into_iter()
            .map(|(name, pieces)| (name, wal_pieces::held(pieces).end))
            .filter(|(_, len)| *len > 0)
            .collect()
    }

    pub(crate) fn fetch(&self, name: &str, dest: &Path) -> CliOutput {
        let dest = dest.display().to_string();
        self.run(&["wal", "fetch", "--prefetch", "0", name, &dest])
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) gaps: Vec<String>,
}

// ---------------------------------------------------------------------------
// The streamer, as a killable child process
// ---------------------------------------------------------------------------

pub(crate) struct Streamer {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Streamer {
    /// `pgtide wal stream -v …` with a clean environment (PATH only, plus
    /// the repository's), stdout and stderr to files in `dir`.
    pub(crate) fn start(
        dir: &Path,
        tag: &str,
        conninfo: &str,
        repo: &Repo,
        create_slot: bool,
        partial_interval: &str,
    ) -> Streamer {
        Streamer::start_with(
            dir,
            tag,
            conninfo,
            repo,
            create_slot,
            partial_interval,
            &[],
            &[],
        )
    }

    /// [`Streamer::start`] with more arguments and environment variables.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_with(
        dir: &Path,
        tag: &str,
        conninfo: &str,
        repo: &Repo,
        create_slot: bool,
        partial_interval: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Streamer {
        let stdout = dir.join(format!("stream-{tag}.out"));
        let stderr = dir.join(format!("stream-{tag}.err"));
        let mut cmd = Command::new(PGTIDE_BIN);
        cmd.args(["wal", "stream", "-v", "--db", conninfo, "--repo", &repo.url])
            .args(["--slot", SLOT, "--partial-interval", partial_interval])
            .args(["--status-interval", "1s"]);
        if create_slot {
            cmd.arg("--create-slot");
        }
        cmd.args(args);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .envs(repo.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("create stderr file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {PGTIDE_BIN}: {e}"));
        Streamer {
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    pub(crate) fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stdout).unwrap_or_default()).into_owned()
    }

    /// What it printed, for failure messages.
    pub(crate) fn describe(&self) -> String {
        format!(
            "--- streamer status: {:?} ---\n--- streamer stdout ---\n{}\n--- streamer stderr (tail) ---\n{}",
            self.status,
            self.stdout().trim_end(),
            tail(&self.stderr(), 60)
        )
    }

    pub(crate) fn running(&mut self) -> bool {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("wait for pgtide");
        }
        self.status.is_none()
    }

    #[track_caller]
    pub(crate) fn assert_running(&mut self) {
        assert!(self.running(), "the streamer exited\n{}", self.describe());
    }

    pub(crate) fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill {sig} {} failed", self.child.id());
    }

    /// SIGKILL, and reap it.
    pub(crate) fn kill9(&mut self) {
        if self.running() {
            self.signal("-KILL");
            self.status = Some(self.child.wait().expect("wait for pgtide"));
        }
    }

    /// SIGTERM: it must flush and exit 0 within a minute.
    pub(crate) fn terminate(&mut self) {
        self.assert_running();
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.running() {
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "the streamer did not exit within 60 s of SIGTERM\n{}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            self.status.is_some_and(|s| s.success()),
            "the streamer did not exit 0 on SIGTERM\n{}",
            self.describe()
        );
        assert!(
            self.stdout().contains("wal stream stopped"),
            "no summary on stdout\n{}",
            self.describe()
        );
    }

    /// Reconnects it logged ("WAL stream interrupted, reconnecting").
    pub(crate) fn reconnects(&self) -> usize {
        self.stderr()
            .lines()
            .filter(|l| l.contains("reconnecting"))
            .count()
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// The writer: committed ids and where their commits ended
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
pub(crate) struct WriterLog {
    /// `(id, WAL insert position read after the commit)`, in commit order.
    pub(crate) committed: Vec<(i64, u64)>,
    /// Statements that failed (server gone, connection killed).
    pub(crate) failures: u64,
}

/// Inserts rows `(id, pad)` with ids 1, 2, 3, … (one transaction each) at
/// about `rows_per_sec`, `pad_bytes` of random hex per row (stored
/// uncompressed), reconnecting after errors, until stopped.
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<WriterLog>>,
}

const TABLE_SQL: &str = "CREATE TABLE t (id bigint PRIMARY KEY, pad text); \
                         ALTER TABLE t ALTER pad SET STORAGE EXTERNAL;";

impl Writer {
    pub(crate) fn start(pg: &PgCluster, pad_bytes: usize, rows_per_sec: f64) -> Writer {
        let config = pg.pg_config(SUPERUSER, "postgres");
        let stop = Arc::new(AtomicBool::new(false));
        let md5s = (pad_bytes / 32).max(1) as i32;
        let handle = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(write_loop(config, md5s, rows_per_sec, stop))
            })
        };
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    pub(crate) fn stop(mut self) -> WriterLog {
        self.stop.store(true, Ordering::SeqCst);
        self.handle
            .take()
            .expect("writer thread")
            .join()
            .expect("writer thread panicked")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn write_loop(
    config: tokio_postgres::Config,
    md5s: i32,
    rows_per_sec: f64,
    stop: Arc<AtomicBool>,
) -> WriterLog {
    let mut log = WriterLog::default();
    let mut client: Option<tokio_postgres::Client> = None;
    let started = Instant::now();
    let mut id = 0i64;
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let due = started + Duration::from_secs_f64(n as f64 / rows_per_sec);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        n += 1;
        if client.is_none() {
            match tokio::time::timeout(
                Duration::from_secs(5),
                config.connect(tokio_postgres::NoTls),
            )
            .await
            {
                Ok(Ok((c, conn))) => {
                    tokio::spawn(conn);
                    client = Some(c);
                }
                _ => {
                    log.failures += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let c = client.as_ref().expect("connected");
        id += 1;
        let step = async {
            c.execute(
                "INSERT INTO t (id, pad) SELECT $1::bigint, string_agg(md5(random()::text), '') \
                 FROM generate_series(1, $2::int)",
                &[&id, &md5s],
            )
            .await?;
            let row = c
                .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                .await?;
            Ok::<String, tokio_postgres::Error>(row.get(0))
        };
        match tokio::time::timeout(Duration::from_secs(20), step).await {
            Ok(Ok(l)) => {
                log.committed.push((id, lsn(&l)));
            }
            _ => {
                // The commit may or may not have happened: not recorded.
                log.failures += 1;
                client = None;
            }
        }
    }
    log
}

// ---------------------------------------------------------------------------
// The rig: a cluster, a repository, a scratch dir
// ---------------------------------------------------------------------------

pub(crate) struct Rig {
    pub(crate) pg: PgCluster,
    pub(crate) seg: u64,
    dir: tempfile::TempDir,
}

impl Rig {
    pub(crate) fn start() -> Rig {
        let pg = PgCluster::start(15);
        // Keep every segment in pg_wal so archived ones can be compared with
        // the server's own files.
        pg.set_conf("wal_keep_size", "2GB");
        pg.execute("postgres", TABLE_SQL);
        let seg: u64 = pg
            .query_one(
                "postgres",
                "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'",
            )
            .parse()
            .expect("wal_segment_size");
        assert_eq!(seg, 16 << 20, "these tests assume 16 MiB segments");
        let dir = tempfile::Builder::new()
            .prefix("pgtide-wal-faults-")
            .tempdir()
            .expect("temp dir");
        Rig { pg, seg, dir }
    }

    pub(crate) fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        p
    }

    pub(crate) fn local_repo(&self) -> Repo {
        Repo::local(&self.dir.path().join("repo"))
    }

    pub(crate) fn conninfo(&self, port: u16) -> String {
        format!("host=127.0.0.1 port={port} user={SUPERUSER} dbname=postgres")
    }

    pub(crate) fn insert_lsn(&self) -> u64 {
        lsn(&self
            .pg
            .query_one("postgres", "SELECT pg_current_wal_insert_lsn()::text"))
    }

    /// PID of the walsender holding the slot, if any.
    pub(crate) fn slot_pid(&self) -> Option<String> {
        self.pg
            .query(
                "postgres",
                &format!("SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = '{SLOT}' AND active"),
            )
            .into_iter()
            .next()
            .and_then(|r| r[0].clone())
    }

    pub(crate) fn restart_lsn(&self) -> Option<u64> {
        self.pg
            .query(
                "postgres",
                &format!(
                    "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
                ),
            )
            .into_iter()
            .next()
            .and_then(|r| r[0].clone())
            .map(|l| lsn(&l))
    }

    pub(crate) fn diag(&self, s: &Streamer) -> String {
        format!(
            "{}\n--- server log (tail) ---\n{}",
            s.describe(),
            tail(&self.pg.log(), 30)
        )
    }

    /// Wait until the streamer streams through the slot (possibly again).
    /// Returns the walsender's pid.
    pub(crate) fn wait_streaming(&self, s: &mut Streamer, not_pid: Option<&str>) -> String {
        wait_for(
            "the streamer to stream through the slot",
            Duration::from_secs(120),
            || self.diag(s),
            || {
                self.slot_pid()
                    .filter(|p| Some(p.as_str()) != not_pid)
                    .filter(|p| {
                        let state = self.pg.query(
                            "postgres",
                            &format!("SELECT state FROM pg_stat_replication WHERE pid = {p}"),
                        );
                        state.first().and_then(|r| r[0].as_deref()) == Some("streaming")
                    })
            },
        )
    }

    /// Wait until no walsender holds the slot (after a SIGKILL or SIGTERM the
    /// old one may linger until it notices; a new streamer treats a busy slot
    /// at its first connection as another streamer's).
    pub(crate) fn wait_slot_released(&self, s: &Streamer) {
        wait_for(
            "the killed streamer's walsender to release the slot",
            Duration::from_secs(120),
            || self.diag(s),
            || self.slot_pid().is_none().then_some(()),
        );
    }

    /// Wait until the archive holds the segment containing `upto - 1`.
    pub(crate) fn wait_archived(&self, repo: &Repo, s: &Streamer, upto: u64) -> Listed {
        let need = (upto - 1) / self.seg;
        wait_for(
            &format!(
                "segment {} to be archived",
                segment_name(TLI, need, self.seg)
            ),
            Duration::from_secs(180),
            || self.diag(s),
            || repo.listed().filter(|l| l.last >= need),
        )
    }

    /// Wait until the server's WAL has moved `bytes` past `from`.
    pub(crate) fn wait_wal(&self, from: u64, bytes: u64, s: &Streamer) -> u64 {
        wait_for(
            &format!("{bytes} bytes of WAL after {}", show_lsn(from)),
            Duration::from_secs(180),
            || self.diag(s),
            || Some(self.insert_lsn()).filter(|l| *l >= from + bytes),
        )
    }

    /// End of a scenario: stop the writer, switch segments, wait for the
    /// archive to reach the switch, stop the streamer (SIGTERM, exit 0), then
    /// check the last commit is archived and the archive is gap-free.
    pub(crate) fn finish(
        &self,
        repo: &Repo,
        s: &mut Streamer,
        writer: Writer,
    ) -> (WriterLog, Listed) {
        let log = writer.stop();
        assert!(
            !log.committed.is_empty(),
            "the writer committed nothing ({} failures)",
            log.failures
        );
        let switch = lsn(&self
            .pg
            .query_one("postgres", "SELECT pg_switch_wal()::text"));
        let listed = self.wait_archived(repo, s, switch);
        s.terminate();
        let (last_id, last_commit) = *log.committed.last().expect("commits");
        assert!(
            (listed.last + 1) * self.seg >= last_commit,
            "the archive ends at {} but row {last_id} committed at {}\n{}",
            show_lsn((listed.last + 1) * self.seg),
            show_lsn(last_commit),
            self.diag(s)
        );
        let listed = self.check_gap_free(repo);
        (log, listed)
    }

    /// The gap-free oracle (see the module docs).
    pub(crate) fn check_gap_free(&self, repo: &Repo) -> Listed {
        let listed = repo.listed().expect("the archive holds segments");
        assert!(
            listed.gaps.is_empty(),
            "the archive has gaps: {:?}",
            listed.gaps
        );
        assert!(listed.last > listed.first, "too little WAL: {listed:?}");
        let dir = self.scratch("fetched");
        for segno in listed.first..=listed.last {
            let name = segment_name(TLI, segno, self.seg);
            let dest = dir.join(&name);
            repo.fetch(&name, &dest).assert_ok();
            let got = std::fs::read(&dest).expect("read fetched segment");
            assert_eq!(got.len() as u64, self.seg, "{name} has the wrong size");
            let server = self.pg.data_dir().join("pg_wal").join(&name);
            if let Ok(theirs) = std::fs::read(&server) {
                if got != theirs {
                    let at = got.iter().zip(&theirs).position(|(a, b)| a != b);
                    panic!(
                        "archived {name} differs from the server's pg_wal/{name} (first difference at byte {at:?})"
                    );
                }
            }
        }
        let start = show_lsn(listed.first * self.seg);
        let end = show_lsn((listed.last + 1) * self.seg);
        let out = Command::new(pg_tool(15, "pg_waldump"))
            .arg("-p")
            .arg(&dir)
            .arg(format!("--start={start}"))
            .arg(format!("--end={end}"))
            .arg("--stats")
            .output()
            .expect("run pg_waldump");
        assert!(
            out.status.success(),
            "pg_waldump --start={start} --end={end} failed on the archived segments {}..{}: {}\n{}",
            segment_name(TLI, listed.first, self.seg),
            segment_name(TLI, listed.last, self.seg),
            String::from_utf8_lossy(&out.stderr),
            tail(&String::from_utf8_lossy(&out.stdout), 10)
        );
        std::fs::remove_dir_all(&dir).expect("remove fetched segments");
        listed
    }

    /// Check the slot against the repository every 100 ms (recording each
    /// `restart_lsn` seen) until `done` (3 minutes at most).
    fn sample_slot_until(
        &self,
        repo: &Repo,
        floor: u64,
        s: &Streamer,
        seen: &mut BTreeSet<u64>,
        samples: &mut u64,
        mut done: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "timed out sampling the slot\n{}",
                self.diag(s)
            );
            if let Some(r) = self.check_slot_behind_archive(repo, floor, s) {
                seen.insert(r);
            }
            *samples += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The feedback oracle: the slot holds nothing the repository lacks.
    /// Returns the `restart_lsn` checked.
    #[track_caller]
    pub(crate) fn check_slot_behind_archive(
        &self,
        repo: &Repo,
        floor: u64,
        s: &Streamer,
    ) -> Option<u64> {
        let restart = self.restart_lsn()?;
        // Read after restart_lsn: the archive only grows.
        let held = repo.held_end(self.seg).max(floor);
        assert!(
            restart <= held,
            "the slot's restart_lsn {} is past the end of what the repository holds ({})\n{}",
            show_lsn(restart),
            show_lsn(held),
            self.diag(s)
        );
        Some(restart)
    }
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// The walsender is terminated twice mid-stream while a writer runs: the
/// streamer reconnects through the slot and the archive stays gap-free.
#[test]
fn walsender_terminated_twice() {
    let rig = Rig::start();
    let repo = rig.local_repo();
    let out = rig.scratch("out");
    let mut s = Streamer::start(&out, "1", &rig.conninfo(rig.pg.port()), &repo, true, "1s");
    let mut pid = rig.wait_streaming(&mut s, None);
    let writer = Writer::start(&rig.pg, 32 << 10, 60.0);
    for round in 0..2 {
        let from = rig.insert_lsn();
        rig.wait_wal(from, 10 << 20, &s);
        rig.pg
            .query("postgres", &format!("SELECT pg_terminate_backend({pid})"));
        pid = rig.wait_streaming(&mut s, Some(&pid));
        s.assert_running();
        assert!(
            s.reconnects() > round,
            "round {round}: no reconnect in the log\n{}",
            rig.diag(&s)
        );
    }
    let from = rig.insert_lsn();
    rig.wait_wal(from, 4 << 20, &s);
    let (log, listed) = rig.finish(&repo, &mut s, writer);
    assert!(s.reconnects() >= 2, "{}", rig.diag(&s));
    eprintln!(
        "walsender_terminated_twice: {} rows, {} writer failures, archive {listed:?}",
        log.committed.len(),
        log.failures
    );
}

/// The server restarts cleanly, then crashes and starts again, while a
/// writer runs. Besides the archive oracles, a base backup taken before the
/// faults plus the archive restores every committed row.
#[test]
fn server_restart_and_crash() {
    let rig = Rig::start();
    let repo = rig.local_repo();
    let out = rig.scratch("out");
    let conninfo = rig.conninfo(rig.pg.port());
    let mut s = Streamer::start(&out, "1", &conninfo, &repo, true, "1s");
    rig.wait_streaming(&mut s, None);
    let mut backup = Cli::new(["backup", "--json", "--db", &conninfo, "--repo", &repo.url]);
    backup.timeout(Duration::from_secs(300));
    backup.run().assert_ok();

    let writer = Writer::start(&rig.pg, 32 << 10, 60.0);
    let from = rig.insert_lsn();
    rig.wait_wal(from, 10 << 20, &s);
    rig.pg.restart();
    rig.wait_streaming(&mut s, None);
    let from = rig.insert_lsn();
    rig.wait_wal(from, 10 << 20, &s);
    rig.pg.crash();
    std::thread::sleep(Duration::from_secs(1));
    rig.pg.start_again();
    rig.wait_streaming(&mut s, None);
    let from = rig.insert_lsn();
    rig.wait_wal(from, 6 << 20, &s);
    assert!(s.reconnects() >= 2, "{}", rig.diag(&s));

    // Crashed again, and the streamer is told to stop while the server is
    // away: it exits 0; started again once the server is back, it resumes
    // from the slot.
    rig.pg.crash();
    let before = s.reconnects();
    wait_for(
        "the streamer to retry while the server is down",
        Duration::from_secs(60),
        || rig.diag(&s),
        || (s.reconnects() > before).then_some(()),
    );
    s.terminate();
    rig.pg.start_again();
    rig.wait_slot_released(&s);
    let mut s2 = Streamer::start(&out, "2", &conninfo, &repo, false, "1s");
    rig.wait_streaming(&mut s2, None);
    let from = rig.insert_lsn();
    rig.wait_wal(from, 6 << 20, &s2);
    let (log, listed) = rig.finish(&repo, &mut s2, writer);
    eprintln!(
        "server_restart_and_crash: {} rows, {} writer failures, archive {listed:?}",
        log.committed.len(),
        log.failures
    );

    // The strongest oracle: restore the backup and replay the archive.
    let (missing, restored, r) = missing_after_restore(&repo, &log);
    assert!(
        missing.is_empty(),
        "{} committed rows are missing after restoring backup + archive (first: {:?})\n{r}\n--- recovery log ---\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        restored.log()
    );
}

/// Ids whose commit the client saw acknowledged and that are missing from
/// a restore of the backup replayed to the end of the archive.
pub(crate) fn missing_after_restore(
    repo: &Repo,
    log: &WriterLog,
) -> (Vec<i64>, Restored, CliOutput) {
    let restored = Restored::new();
    let mut cmd = Cli::new([
        "restore",
        "latest",
        "--json",
        "--repo",
        &repo.url,
        "--pgdata",
        &restored.pgdata.display().to_string(),
        "--start",
        "--set",
        &format!("port={}", restored.port),
    ]);
    for (k, v) in &repo.env {
        cmd.env(k, v);
    }
    cmd.timeout(Duration::from_secs(300));
    let r = cmd.run();
    r.assert_ok();
    let ids: BTreeSet<i64> = restored.ids();
    let missing = log
        .committed
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !ids.contains(id))
        .collect();
    (missing, restored, r)
}

/// A data directory restored by `pgtide restore --start`, stopped on drop.
pub(crate) struct Restored {
    _dir: tempfile::TempDir,
    pub(crate) pgdata: PathBuf,
    pub(crate) port: u16,
}

impl Restored {
    pub(crate) fn new() -> Restored {
        let dir = tempfile::Builder::new()
            .prefix("pgtide-wal-faults-restore-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        // The server runs as postgres when we are root: let it in.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod restore dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Restored {
            pgdata: dir.path().join("data"),
            _dir: dir,
            port,
        }
    }

    pub(crate) fn psql(&self, sql: &str) -> String {
        let out = Command::new(pg_tool(15, "psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", "postgres", "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql on the restored server failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub(crate) fn ids(&self) -> BTreeSet<i64> {
        self.psql("SELECT id FROM t")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().parse().expect("id"))
            .collect()
    }

    pub(crate) fn log(&self) -> String {
        tail(
            &std::fs::read_to_string(self.pgdata.join("pgtide-recovery.log")).unwrap_or_default(),
            40,
        )
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if !self.pgdata.join("postmaster.pid").exists() {
            return;
        }
        let pg_ctl = pg_tool(15, "pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_ctl);
            c
        } else {
            Command::new(pg_ctl)
        };
        let _ = cmd
            .args(["stop", "-w", "-t", "60", "-m", "immediate", "-D"])
            .arg(&self.pgdata)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub(crate) fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// The TCP connection is cut mid-message (after a few hundred KB from the
/// server) three times by the relay between pgtide and PostgreSQL.
#[test]
fn connection_cut_mid_message() {
    let rig = Rig::start();
    let repo = rig.local_repo();
    let out = rig.scratch("out");
    let relay = Relay::start(rig.pg.port());
    let mut s = Streamer::start(&out, "1", &rig.conninfo(relay.port()), &repo, true, "1s");
    rig.wait_streaming(&mut s, None);
    let writer = Writer::start(&rig.pg, 32 << 10, 60.0);
    for (i, budget) in [300_000u64, 450_000, 700_000].into_iter().enumerate() {
        let from = rig.insert_lsn();
        rig.wait_wal(from, 5 << 20, &s);
        let connections = relay.connections();
        relay.cut_after_server_bytes(budget);
        wait_for(
            &format!("cut {} of the relay", i + 1),
            Duration::from_secs(120),
            || rig.diag(&s),
            || (relay.cuts() > i as u64).then_some(()),
        );
        wait_for(
            "the streamer to connect through the relay again",
            Duration::from_secs(120),
            || rig.diag(&s),
            || (relay.connections() > connections).then_some(()),
        );
        rig.wait_streaming(&mut s, None);
        s.assert_running();
    }
    let from = rig.insert_lsn();
    rig.wait_wal(from, 6 << 20, &s);
    let (log, listed) = rig.finish(&repo, &mut s, writer);
    assert!(s.reconnects() >= 3, "{}", rig.diag(&s));
    eprintln!(
        "connection_cut_mid_message: {} rows, {} cuts, archive {listed:?}",
        log.committed.len(),
        relay.cuts()
    );
}

/// pgtide is SIGKILLed while a segment is being filled (its tail is in the
/// repository as pieces), and started again on the same slot: the slot
/// never passes what the repository holds, the segment is archived complete
/// later, starting with the pieces' bytes, and the pieces are removed.
#[test]
fn streamer_sigkill_mid_segment() {
    let rig = Rig::start();
    let repo = rig.local_repo();
    let out = rig.scratch("out");
    let conninfo = rig.conninfo(rig.pg.port());
    let mut s = Streamer::start(&out, "1", &conninfo, &repo, true, "1s");
    rig.wait_streaming(&mut s, None);
    // Where the slot stands before any fault (see slot_never_passes_the_archive).
    let floor = rig.restart_lsn().expect("slot");
    let writer = Writer::start(&rig.pg, 32 << 10, 40.0);
    // At least one complete segment, then a partial of the next one.
    let from = rig.insert_lsn();
    rig.wait_wal(from, rig.seg, &s);
    rig.wait_archived(&repo, &s, from + 1);
    let (partial, len) = wait_for(
        "pieces of the segment being filled",
        Duration::from_secs(120),
        || rig.diag(&s),
        || {
            let listed = repo.listed()?;
            repo.partials().into_iter().find(|(name, len)| {
                let (_, segno) = parse_segment_name(name, rig.seg).expect("name");
                segno > listed.last && *len > 64 << 10
            })
        },
    );
    s.kill9();
    // The walsender lingers until it notices; the slot must not move past
    // what the repository holds.
    for _ in 0..10 {
        rig.check_slot_behind_archive(&repo, floor, &s);
        std::thread::sleep(Duration::from_millis(200));
    }
    rig.wait_slot_released(&s);
    let (_, len_now) = repo
        .partials()
        .into_iter()
        .rfind(|(n, _)| *n == partial)
        .expect("the partial is still there");
    assert!(len_now >= len);
    let saved = rig.scratch("saved").join(&partial);
    repo.fetch(&partial, &saved).assert_ok();
    let saved = std::fs::read(&saved).expect("read saved partial");

    // Started again with a tiny partial interval, it re-receives the segment
    // from its start and could upload a piece after every message while
    // catching up: the prefix held may never be shorter than what the
    // repository already held (taking bytes back would lose WAL the slot let
    // go of). Once it is past that point, a piece per message is only slow:
    // it is stopped and started again with the usual interval.
    let mut s2 = Streamer::start(&out, "2", &conninfo, &repo, false, "1ms");
    let complete_path = repo
        .local
        .as_ref()
        .expect("local")
        .join(format!("wal/{TLI:08X}/{partial}"));
    wait_for(
        &format!("{partial} to be held beyond {len_now} bytes again"),
        Duration::from_secs(180),
        || rig.diag(&s2),
        || {
            for _ in 0..100 {
                let held: Vec<u64> = repo
                    .partials()
                    .into_iter()
                    .filter(|(n, _)| *n == partial)
                    .map(|(_, l)| l)
                    .collect();
                let shorter: Vec<u64> = held.iter().copied().filter(|l| *l < len_now).collect();
                assert!(
                    shorter.is_empty(),
                    "after the restart the repository holds a partial of {partial} of {shorter:?} bytes, \
                     shorter than the {len_now} bytes it held before\n{}",
                    rig.diag(&s2)
                );
                if complete_path.exists() || held.iter().any(|l| *l > len_now) {
                    return Some(());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        },
    );
    s2.terminate();
    rig.wait_slot_released(&s2);
    let mut s3 = Streamer::start(&out, "3", &conninfo, &repo, false, "1s");
    rig.wait_streaming(&mut s3, None);
    let (_, segno) = parse_segment_name(&partial, rig.seg).expect("name");
    rig.wait_archived(&repo, &s3, (segno + 1) * rig.seg);
    rig.check_slot_behind_archive(&repo, floor, &s3);
    assert!(
        repo.partials().iter().all(|(n, _)| *n != partial),
        "the partials of {partial} remain after it was archived complete: {:?}",
        repo.partials()
    );
    let dest = rig.scratch("complete").join(&partial);
    repo.fetch(&partial, &dest).assert_ok();
    let complete = std::fs::read(&dest).expect("read complete segment");
    assert_eq!(
        complete[..len_now as usize],
        saved[..len_now as usize],
        "{partial}: the complete segment does not start with the bytes of its partial"
    );
    let theirs = std::fs::read(rig.pg.data_dir().join("pg_wal").join(&partial))
        .expect("the server still has the segment (wal_keep_size)");
    assert!(
        complete == theirs,
        "{partial} differs from the server's file"
    );
    let (log, listed) = rig.finish(&repo, &mut s3, writer);
    eprintln!(
        "streamer_sigkill_mid_segment: {} rows, partial {partial} at {len_now} bytes, archive {listed:?}",
        log.committed.len()
    );
}

/// The S3 server (a private s3s-fs) is stopped for ~30 seconds while WAL is
/// written, then started again on the same port and data dir: the streamer
/// survives and the archive is gap-free (fetched from S3).
#[test]
fn s3_outage() {
    let rig = Rig::start();
    let s3 = S3Server::s3s_fs_with_keys(
        crate::harness::s3::ACCESS_KEY,
        crate::harness::s3::SECRET_KEY,
    );
    let bucket = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(s3.fresh_bucket());
    let repo = Repo::s3(bucket.url.clone());
    let out = rig.scratch("out");
    let mut s = Streamer::start(&out, "1", &rig.conninfo(rig.pg.port()), &repo, true, "1s");
    rig.wait_streaming(&mut s, None);
    let writer = Writer::start(&rig.pg, 32 << 10, 25.0);
    let from = rig.insert_lsn();
    rig.wait_wal(from, rig.seg, &s);
    rig.wait_archived(&repo, &s, from + 1);

    s3.stop();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
        s.assert_running();
    }
    s3.start_again();
    s.assert_running();
    // It resumes by itself: what was written during the outage arrives.
    let switch = lsn(&rig.pg.query_one("postgres", "SELECT pg_switch_wal()::text"));
    rig.wait_archived(&repo, &s, switch);
    let reconnects = s.reconnects();
    assert!(reconnects >= 1, "{}", rig.diag(&s));

    // A second outage, during which it is told to stop: it exits 0, and a
    // new streamer started once the store is back carries on.
    s3.stop();
    wait_for(
        "the streamer to notice the store is down",
        Duration::from_secs(60),
        || rig.diag(&s),
        || (s.reconnects() > reconnects).then_some(()),
    );
    s.terminate();
    s3.start_again();
    rig.wait_slot_released(&s);
    let mut s2 = Streamer::start(&out, "2", &rig.conninfo(rig.pg.port()), &repo, false, "1s");
    rig.wait_streaming(&mut s2, None);
    let from = rig.insert_lsn();
    rig.wait_wal(from, 4 << 20, &s2);
    let (log, listed) = rig.finish(&repo, &mut s2, writer);
    eprintln!(
        "s3_outage: {} rows, {reconnects} reconnects logged in the first outage, archive {listed:?}",
        log.committed.len(),
    );
}

/// Feedback: sampled throughout a run (with a walsender terminated in the
/// middle, and a SIGKILL of the streamer at the end), the slot's
/// `restart_lsn` is never past the end of what the repository holds.
#[test]
fn slot_never_passes_the_archive() {
    let rig = Rig::start();
    rig.pg.query(
        "postgres",
        &format!("SELECT pg_create_physical_replication_slot('{SLOT}', true)"),
    );
    // Where the slot was created: WAL before it was never the streamer's to
    // archive (it starts at that segment's start and may report it).
    let floor = rig.restart_lsn().expect("slot");
    let repo = rig.local_repo();
    let out = rig.scratch("out");
    let conninfo = rig.conninfo(rig.pg.port());
    let mut s = Streamer::start(&out, "1", &conninfo, &repo, false, "1s");
    let pid = rig.wait_streaming(&mut s, None);
    let writer = Writer::start(&rig.pg, 32 << 10, 60.0);
    let mut seen = BTreeSet::new();
    let mut samples = 0;
    // Three segments of WAL, with the walsender terminated half-way.
    let from = rig.insert_lsn();
    let mut terminated = false;
    rig.sample_slot_until(&repo, floor, &s, &mut seen, &mut samples, || {
        if !terminated && rig.insert_lsn() > from + 3 * rig.seg / 2 {
            rig.pg
                .query("postgres", &format!("SELECT pg_terminate_backend({pid})"));
            terminated = true;
        }
        rig.insert_lsn() >= from + 3 * rig.seg
    });
    assert!(terminated);
    assert!(
        seen.len() > 3,
        "restart_lsn hardly moved ({seen:?}): the streamer does not report progress\n{}",
        rig.diag(&s)
    );
    assert!(s.reconnects() >= 1, "{}", rig.diag(&s));
    // SIGKILLed: the walsender lingers until it notices; the slot stays put.
    s.kill9();
    let killed = Instant::now();
    rig.sample_slot_until(&repo, floor, &s, &mut seen, &mut samples, || {
        killed.elapsed() > Duration::from_secs(2) && rig.slot_pid().is_none()
    });
    // Started again: sampled while it catches up and one more segment.
    let mut s2 = Streamer::start(&out, "2", &conninfo, &repo, false, "1s");
    let from = rig.insert_lsn();
    rig.sample_slot_until(&repo, floor, &s2, &mut seen, &mut samples, || {
        rig.insert_lsn() >= from + rig.seg
    });
    let (log, listed) = rig.finish(&repo, &mut s2, writer);
    rig.check_slot_behind_archive(&repo, floor, &s2);
    eprintln!(
        "slot_never_passes_the_archive: {samples} samples, {} distinct restart_lsn, {} rows, archive {listed:?}",
        seen.len(),
        log.committed.len()
    );
}
