//! `pgtide daemon` against real servers: schedules produce backups and
//! dumps while rows are written, retention keeps what the rules say,
//! `/status` and `/metrics` report it, a PITR restore of what it archived
//! holds every committed row; the repository lock, SIGKILL mid-backup, the
//! slot guard, secrets that never leak, and bad configurations.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::cli::{pgtide, PGTIDE_BIN};
use crate::harness::pg::{PgCluster, PASSWORD, SCRAM_USER};
use crate::harness::s3::{s3_env, S3Server};
use crate::pitr::{free_port, restore, work_dir};

const TOKEN: &str = "tok-5f2a9c1e77";

/// A running `pgtide daemon`, killed on drop; its stderr goes to a file.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    pub port: u16,
}

impl Daemon {
    fn start(config: &Path, dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = dir.join(format!("daemon-{}.log", fastrand::u32(..)));
        let port = http_port(config);
        let mut cmd = Command::new(PGTIDE_BIN);
        cmd.args(["daemon", "--config"])
            .arg(config)
            .env_remove("PGHOST")
            .env_remove("PGPASSWORD")
            .env_remove("PGUSER")
            .env_remove("PGTIDE_REPO")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in s3_env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon {
            child: Some(cmd.spawn().expect("start pgtide daemon")),
            log,
            port,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
    }

    /// Wait for the process to end; its exit code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                panic!("daemon did not exit within {limit:?}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(self.port, "GET", path, None)
    }

    /// Poll /status until `ok` holds for it.
    fn wait_status(
        &self,
        what: &str,
        limit: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let (code, body) = self.get("/status");
            if code == 200 {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if ok(&v) {
                    return v;
                }
                if Instant::now() > deadline {
                    panic!(
                        "{what}: not within {limit:?}\nstatus: {v:#}\n--- daemon log ---\n{}",
                        self.log()
                    );
                }
            } else if Instant::now() > deadline {
                panic!(
                    "{what}: /status answered {code}\n--- daemon log ---\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn http_port(config: &Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let t: toml::Table = toml::from_str(&text).unwrap();
    t["http"]["listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// One request to 127.0.0.1:`port` through pgtide's own client; (0, error)
/// when nothing answers.
fn http(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}{path}");
    let body = (method == "POST").then(bytes::Bytes::new);
    match rt.block_on(pgtide::daemon::notify::request(
        method,
        &url,
        body,
        token,
        Duration::from_secs(10),
    )) {
        Ok((code, body)) => (code, String::from_utf8_lossy(&body).into_owned()),
        Err(e) => (0, e),
    }
}

/// Check the Prometheus text exposition format line by line: comments are
/// `# HELP`/`# TYPE`/`# UNIT`/`# EOF`, samples `name{labels} value`.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("# ") {
            assert!(
                ["HELP ", "TYPE ", "UNIT ", "EOF"]
                    .iter()
                    .any(|p| c.starts_with(p)),
                "bad comment line {line:?}"
            );
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample {line:?}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = name.strip_prefix(metric) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels in {line:?}"
                );
            }
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.push((name.to_string(), v));
    }
    out
}

fn metric(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// A config file for `pg` (as scram_user, password in a file) and `repo`.
fn write_config(dir: &Path, pg: &PgCluster, repo: &str, extra: &str) -> PathBuf {
    let pw = dir.join("pgpass");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let path = dir.join(format!("pgtide-{}.toml", fastrand::u32(..)));
    let mut f = std::fs::File::create(&path).unwrap();
    write!(
        f,
        r#"[source]
db = "host=127.0.0.1 port={port} user={SCRAM_USER} dbname=postgres"
password_file = "{pw}"
[repository]
url = "{repo}"
[http]
listen = "127.0.0.1:{http}"
token_file = "{token}"
[lock]
heartbeat = "1s"
stale_after = "5s"
{extra}
"#,
        port = pg.port(),
        pw = pw.display(),
        http = free_port(),
        token = token.display(),
    )
    .unwrap();
    path
}

/// A webhook receiver on 127.0.0.1: answers 200 to every request and keeps
/// the bodies.
struct Hook {
    port: u16,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Hook {
    fn start() -> Hook {
        use std::io::{BufRead, BufReader, Read};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let b = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.to_ascii_lowercase();
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                b.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Hook { port, bodies }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

fn rows(pg: &PgCluster) -> i64 {
    pg.query_one("app", "SELECT count(*) FROM t")
        .parse()
        .unwrap()
}

/// Writes rows into app.t until dropped.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(pg: &PgCluster) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let port = pg.port();
        let handle = std::thread::spawn(move || {
            let mut i = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = crate::harness::pg::query_port(
                    port,
                    "app",
                    &format!("INSERT INTO t (v) SELECT md5(g::text) FROM generate_series({i}, {i} + 199) g"),
                );
                i += 200;
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn app_cluster() -> PgCluster {
    let pg = PgCluster::start(15);
    pg.create_db("app");
    pg.execute(
        "app",
        &format!(
            "CREATE TABLE t (id bigserial PRIMARY KEY, v text);
             GRANT ALL ON t, t_id_seq TO {SCRAM_USER};"
        ),
    );
    pg
}

/// The whole service: schedules, retention, status, metrics, run endpoints,
/// the lock against a second daemon, SIGTERM, and a PITR restore of what
/// it archived holding every committed row.
#[test]
fn daemon_backs_up_dumps_expires_reports_and_restores() {
    let pg = app_cluster();
    let dir = work_dir("pgtide-daemon-");
    let repo = dir.path().join("repo").display().to_string();
    let config = write_config(
        dir.path(),
        &pg,
        &repo,
        r#"[wal]
slot = "pgtide_daemon"
partial_interval = "1s"
status_interval = "1s"
slot_check_interval = "1s"
[backup]
schedule = "@every 6s"
[[dump]]
database = "app"
schedule = "@every 9s"
jobs = 2
[retention.backups]
keep_last = 2
[retention.dumps]
keep_last = 1
[log]
format = "json"
"#,
    );
    let writer = Writer::start(&pg);
    let mut d = Daemon::start(&config, dir.path(), &[]);
    let ok_runs = |kind: &str| {
        walk(&Path::new(&repo).join("runs").join(kind))
            .iter()
            .filter(|p| {
                std::fs::read(p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|r| r["ok"] == true)
            })
            .count()
    };
    let v = d.wait_status(
        "three backups, two dumps and a retention run after them",
        Duration::from_secs(180),
        |v| {
            let at = |k: &str| {
                v["jobs"][k]["last_success"]["finished_at"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            };
            let (Some(full), Some(dump), Some(expire)) = (at("full"), at("dump"), at("expire"))
            else {
                return false;
            };
            ok_runs("full") >= 3 && ok_runs("dump") >= 2 && expire > full && expire > dump
        },
    );
    assert_eq!(v["source"], "daemon");
    assert!(v["wal"]["streaming"].as_bool().unwrap(), "{v:#}");

    // Retention ran after the runs: fewer backups and dumps are listed than
    // were taken (one more of each may have completed since the last
    // retention run).
    let l = pgtide(&["list", "--json", "--repo", &repo]);
    l.assert_ok();
    let l: serde_json::Value = serde_json::from_str(&l.stdout).unwrap();
    let successes = ok_runs;
    let backups = l["backups"].as_array().unwrap().len();
    let dumps = l["dumps"].as_array().unwrap().len();
    assert!(backups <= 3 && backups < successes("full"), "{l:#}");
    assert!(dumps <= 2 && dumps < successes("dump"), "{l:#}");

    // Health and metrics.
    let (code, body) = d.get("/healthz");
    assert_eq!(code, 200, "{body}");
    let (code, text) = d.get("/metrics");
    assert_eq!(code, 200);
    let samples = parse_metrics(&text);
    for name in [
        "pgtide_backup_last_success_timestamp_seconds{kind=\"full\"}",
        "pgtide_backup_last_success_timestamp_seconds{kind=\"dump\"}",
        "pgtide_backup_last_duration_seconds{kind=\"full\"}",
        "pgtide_backup_last_size_bytes{kind=\"full\"}",
        "pgtide_backups_total{kind=\"full\",result=\"success\"}",
        "pgtide_wal_archived_lsn",
        "pgtide_wal_archive_lag_bytes",
        "pgtide_wal_archive_lag_seconds",
        "pgtide_slot_retained_bytes",
        "pgtide_storage_requests_total{kind=\"put\"}",
        "pgtide_storage_calls_total{op=\"put\"}",
        "pgtide_storage_retries_total",
        "pgtide_repository_size_bytes",
    ] {
        assert!(metric(&samples, name).is_some(), "{name} missing:\n{text}");
    }
    assert!(
        metric(
            &samples,
            "pgtide_backup_last_success_timestamp_seconds{kind=\"full\"}"
        )
        .unwrap()
            > 1.7e9
    );
    assert!(metric(&samples, "pgtide_wal_archived_lsn").unwrap() > 0.0);
    let (code, body) = d.get("/backups");
    assert_eq!(code, 200);
    let b: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(b["backups"].is_array());

    // The run endpoints want the token.
    assert_eq!(http(d.port, "POST", "/run/expire", None).0, 401);
    assert_eq!(http(d.port, "POST", "/run/expire", Some("wrong")).0, 401);
    let (code, body) = http(d.port, "POST", "/run/expire", Some(TOKEN));
    assert!(code == 202 || code == 409, "{code} {body}");

    // A second daemon on the same repository is refused, naming the holder.
    let config2 = write_config(dir.path(), &pg, &repo, "[wal]\nslot = \"other\"\n");
    let out = pgtide(&["daemon", "--config", config2.to_str().unwrap()]);
    out.assert_one_line_error(9, "is locked by pgtide daemon (pid");
    // So is a backup from a shell.
    let out = pgtide(&[
        "backup",
        "--repo",
        &repo,
        "--db",
        &pg.conninfo("postgres", "postgres"),
    ]);
    out.assert_one_line_error(9, "is locked by pgtide daemon");

    // Stop writing, note what was committed, let the archive catch up.
    drop(writer);
    let committed = rows(&pg);
    let lsn = pg.query_one("postgres", "SELECT pg_current_wal_lsn()");
    d.wait_status(
        "the archive holds every committed row",
        Duration::from_secs(30),
        |v| {
            let a = v["wal"]["archived_lsn"].as_str().unwrap_or("0/0");
            lsn_value(a) >= lsn_value(&lsn)
        },
    );

    // SIGTERM: a clean stop within seconds, the lock released.
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(40)), Some(0), "{}", d.log());
    let s = pgtide(&[
        "status",
        "--json",
        "--repo",
        &repo,
        "--listen",
        &format!("127.0.0.1:{}", d.port),
    ]);
    s.assert_ok();
    let s: serde_json::Value = serde_json::from_str(&s.stdout).unwrap();
    assert_eq!(s["source"], "repository");
    assert!(s["lock"].is_null(), "{s:#}");
    assert!(s["jobs"]["full"]["last_success"]["id"].is_string());
    let v = pgtide(&["verify", "latest", "--repo", &repo]);
    v.assert_ok();
    // With nothing running, the same policy from the config file leaves
    // exactly what it says.
    let e = pgtide(&["expire", "--json", "--config", config.to_str().unwrap()]);
    e.assert_ok();
    let l: serde_json::Value =
        serde_json::from_str(&pgtide(&["list", "--json", "--repo", &repo]).stdout).unwrap();
    assert_eq!(l["backups"].as_array().unwrap().len(), 2, "{l:#}");
    assert_eq!(l["dumps"].as_array().unwrap().len(), 1, "{l:#}");
    assert!(
        l["wal"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["gaps"].as_array().unwrap().is_empty()),
        "{l:#}"
    );

    // Every committed row is in a restore to the end of the archive.
    let socket = work_dir("pgtide-daemon-sock-");
    give_dir(socket.path());
    let r = restore(&repo, "latest", &[], Some(socket.path()));
    let in_app = r_query(&r, "app", "SELECT count(*) FROM t");
    assert_eq!(in_app, committed.to_string(), "rows lost\n{}", r.log());

    // No secret in anything the daemon said; its log is JSON lines.
    let log = d.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(log.contains("daemon started"), "{log}");
    for secret in [PASSWORD, TOKEN] {
        assert!(!log.contains(secret), "secret in the log:\n{log}");
        assert!(!s.to_string().contains(secret), "secret in the status");
        assert!(!text.contains(secret), "secret in the metrics");
    }
}

fn give_dir(p: &Path) {
    crate::harness::pg::give_to_server_user(p);
}

fn r_query(r: &crate::pitr::Restored, db: &str, sql: &str) -> String {
    let out = crate::pitr::clean_command(crate::harness::pg::pg_tool(15, "psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            db,
        ])
        .arg("-p")
        .arg(r.port.to_string())
        .arg("-c")
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn lsn_value(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

/// SIGKILL in the middle of a backup upload while WAL streams, then a
/// restart: the lock is taken back at once, the half-written backup is
/// removed and never listed, the archive has no gap, SIGHUP picks up a new
/// schedule, and the repository verifies clean.
#[test]
fn daemon_killed_mid_backup_restarts_clean() {
    let pg = app_cluster();
    pg.execute(
        "app",
        "INSERT INTO t (v) SELECT repeat(md5(g::text), 20) FROM generate_series(1, 60000) g",
    );
    let dir = work_dir("pgtide-daemon-kill-");
    let repo = dir.path().join("repo").display().to_string();
    let config = write_config(
        dir.path(),
        &pg,
        &repo,
        r#"[wal]
slot = "pgtide_kill"
partial_interval = "1s"
[backup]
schedule = "@every 3s"
max_rate = "2MiB"
"#,
    );
    let writer = Writer::start(&pg);
    let mut d = Daemon::start(&config, dir.path(), &[]);
    // Wait until the backup has written packs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let packs = walk(&Path::new(&repo).join("backups"))
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "pack"))
            .count();
        if packs > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no backup started\n{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    d.signal("KILL");
    d.wait(Duration::from_secs(10));
    let l: serde_json::Value =
        serde_json::from_str(&pgtide(&["list", "--json", "--repo", &repo]).stdout).unwrap();
    assert!(l["backups"].as_array().unwrap().is_empty(), "{l:#}");
    assert_eq!(l["incomplete"].as_array().unwrap().len(), 1, "{l:#}");

    // Started again: same host, the killed pid is gone: no wait for staleness.
    let config = write_config(
        dir.path(),
        &pg,
        &repo,
        "[wal]\nslot = \"pgtide_kill\"\npartial_interval = \"1s\"\n[backup]\nschedule = \"0 0 1 1 *\"\n",
    );
    let mut d = Daemon::start(&config, dir.path(), &[]);
    d.wait_status(
        "the restarted daemon streams",
        Duration::from_secs(30),
        |v| v["wal"]["streaming"].as_bool() == Some(true),
    );
    assert!(d.log().contains("no longer runs"), "{}", d.log());
    let l: serde_json::Value =
        serde_json::from_str(&pgtide(&["list", "--json", "--repo", &repo]).stdout).unwrap();
    assert!(l["incomplete"].as_array().unwrap().is_empty(), "{l:#}");
    // A backup asked for over HTTP completes and verifies.
    let (code, body) = http(d.port, "POST", "/run/backup", Some(TOKEN));
    assert_eq!(code, 202, "{body}");
    let v = d.wait_status("the backup asked for", Duration::from_secs(120), |v| {
        v["jobs"]["full"]["last_success"]["trigger"] == "http"
    });
    let id = v["jobs"]["full"]["last_success"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A restore drill asked for over HTTP proves that backup.
    let (code, body) = http(d.port, "POST", "/run/drill", Some(TOKEN));
    assert_eq!(code, 202, "{body}");
    let v = d.wait_status("the drill asked for", Duration::from_secs(180), |v| {
        v["jobs"]["drill"]["last_success"].is_object()
            || v["jobs"]["drill"]["last_failure"].is_object()
    });
    assert!(
        v["jobs"]["drill"]["last_success"]["id"] == id.as_str(),
        "{v:#}\n{}",
        d.log()
    );
    let (_, text) = d.get("/metrics");
    assert!(
        metric(
            &parse_metrics(&text),
            "pgtide_drill_last_success_timestamp_seconds"
        )
        .unwrap()
            > 1.7e9,
        "{text}"
    );

    // SIGHUP: a new schedule takes effect without a restart.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("0 0 1 1 *", "@every 2s")
            .replace("partial_interval = \"1s\"", "partial_interval = \"2s\""),
    )
    .unwrap();
    d.signal("HUP");
    d.wait_status(
        "a run of the reloaded schedule",
        Duration::from_secs(120),
        |v| v["jobs"]["full"]["last_success"]["trigger"] == "schedule",
    );
    assert!(d.log().contains("configuration reloaded"), "{}", d.log());
    assert!(d.log().contains("restarting the WAL stream"), "{}", d.log());
    drop(writer);
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(40)), Some(0));
    pgtide(&["verify", &id, "--repo", &repo]).assert_ok();
    let l: serde_json::Value =
        serde_json::from_str(&pgtide(&["list", "--json", "--repo", &repo]).stdout).unwrap();
    assert!(l["incomplete"].as_array().unwrap().is_empty(), "{l:#}");
    for w in l["wal"].as_array().unwrap() {
        assert!(
            w["gaps"].as_array().unwrap().is_empty(),
            "a gap in the archive: {l:#}"
        );
    }

    // A retention run killed half-way through deleting a backup (its
    // marker written, its manifest gone): never listed as complete, and
    // finished by the next start.
    let set = Path::new(&repo).join("backups").join(&id);
    std::fs::write(set.join("deleting.json"), "{}").unwrap();
    std::fs::remove_file(set.join("manifest.json")).unwrap();
    let l: serde_json::Value =
        serde_json::from_str(&pgtide(&["list", "--json", "--repo", &repo]).stdout).unwrap();
    assert!(
        l["backups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["id"] != id.as_str()),
        "{l:#}"
    );
    assert_eq!(l["deleting"].as_array().unwrap().len(), 1, "{l:#}");
    let mut d = Daemon::start(&config, dir.path(), &[]);
    d.wait_status("the daemon started again", Duration::from_secs(30), |_| {
        true
    });
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(40)), Some(0), "{}", d.log());
    assert!(
        d.log().contains("finished the interrupted deletion"),
        "{}",
        d.log()
    );
    let l: serde_json::Value =
        serde_json::from_str(&pgtide(&["list", "--json", "--repo", &repo]).stdout).unwrap();
    assert!(l["deleting"].as_array().unwrap().is_empty(), "{l:#}");
    assert!(
        walk(&set).iter().all(|p| p.is_dir()),
        "objects of the deleted backup are left: {:?}",
        walk(&set)
    );
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Two daemons on one S3 repository: the second is refused; when the first
/// stops heart-beating (SIGSTOP), the lock goes stale and is taken over, and
/// the first, resumed, finds it lost the lock and stops.
#[test]
fn two_daemons_on_s3_exclude_each_other_and_a_stale_lock_is_taken_over() {
    let s3 = S3Server::moto();
    let bucket = s3.fresh_bucket_blocking();
    let pg = app_cluster();
    let dir = work_dir("pgtide-daemon-s3-");
    let cfg_a = write_config(dir.path(), &pg, &bucket.url, "[wal]\nstream = false\n");
    let cfg_b = write_config(dir.path(), &pg, &bucket.url, "[wal]\nstream = false\n");
    // moto takes any secret: one that cannot appear by chance.
    let env = [("AWS_SECRET_ACCESS_KEY", S3_SECRET)];
    let mut a = Daemon::start(&cfg_a, dir.path(), &env);
    a.wait_status("daemon a answers", Duration::from_secs(30), |_| true);
    let mut b = Daemon::start(&cfg_b, dir.path(), &env);
    assert_eq!(b.wait(Duration::from_secs(30)), Some(9), "{}", b.log());
    assert!(
        b.log().contains("is locked by pgtide daemon (pid"),
        "{}",
        b.log()
    );

    a.signal("STOP");
    std::thread::sleep(Duration::from_secs(7));
    let b = Daemon::start(&cfg_b, dir.path(), &env);
    let status = b.wait_status(
        "daemon b took the stale lock",
        Duration::from_secs(30),
        |_| true,
    );
    assert!(
        b.log().contains("taking over the stale lock"),
        "{}",
        b.log()
    );
    a.signal("CONT");
    assert_eq!(a.wait(Duration::from_secs(30)), Some(9), "{}", a.log());
    assert!(a.log().contains("lost the repository lock"), "{}", a.log());
    let (_, metrics) = b.get("/metrics");
    for text in [a.log(), b.log(), status.to_string(), metrics] {
        for secret in [S3_SECRET, PASSWORD, TOKEN] {
            assert!(!text.contains(secret), "a secret leaked:\n{text}");
        }
    }
}

const S3_SECRET: &str = "s3-secret-71c0e4b9";

/// With the archive stalled (the repository's WAL directory replaced by a
/// file: every upload fails, even as root), the slot guard warns past
/// slot_warn and, past slot_max, drops and recreates the slot; status, the
/// metrics and the webhook report it. Once the archive works again, the
/// WAL the server freed meanwhile is a gap that `list` reports.
#[test]
fn slot_guard_gives_the_slot_up_when_the_archive_stalls() {
    let pg = app_cluster();
    let dir = work_dir("pgtide-daemon-slot-");
    let repo = dir.path().join("repo");
    let repo_url = repo.to_str().unwrap().to_string();
    let hook = Hook::start();
    let config = write_config(
        dir.path(),
        &pg,
        &repo_url,
        &format!(
            r#"[wal]
slot = "pgtide_guard"
partial_interval = "1s"
slot_check_interval = "1s"
slot_warn = "1MiB"
slot_max = "4MiB"
[notify]
webhook = "http://127.0.0.1:{}/hook"
"#,
            hook.port
        ),
    );
    let d = Daemon::start(&config, dir.path(), &[]);
    d.wait_status("streaming", Duration::from_secs(30), |v| {
        v["wal"]["streaming"].as_bool() == Some(true)
    });
    // Some complete segments in the archive first.
    let segments = || -> u64 {
        let l: serde_json::Value =
            serde_json::from_str(&pgtide(&["list", "--json", "--repo", &repo_url]).stdout)
                .unwrap_or_default();
        l["wal"]
            .as_array()
            .map(|a| a.iter().map(|w| w["segments"].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0)
    };
    pg.execute("app", "INSERT INTO t (v) VALUES ('before')");
    pg.query_one("postgres", "SELECT pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(30);
    while segments() == 0 {
        assert!(Instant::now() < deadline, "nothing archived\n{}", d.log());
        std::thread::sleep(Duration::from_millis(200));
    }

    // Stall the archive.
    std::fs::rename(repo.join("wal"), dir.path().join("wal.saved")).unwrap();
    std::fs::write(repo.join("wal"), b"not a directory").unwrap();
    pg.execute(
        "app",
        "INSERT INTO t (v) SELECT repeat(md5(g::text), 10) FROM generate_series(1, 40000) g",
    );
    let v = d.wait_status(
        "the slot guard resets the slot",
        Duration::from_secs(60),
        |v| v["wal"]["slot_resets"].as_u64().unwrap_or(0) >= 1,
    );
    assert!(v["jobs"]["slot"]["last_failure"]["message"]
        .as_str()
        .unwrap()
        .contains("dropped slot pgtide_guard"));
    assert!(d.log().contains("more than wal.slot_warn"), "{}", d.log());
    let (code, _) = d.get("/healthz");
    assert_eq!(code, 503);
    let (_, text) = d.get("/metrics");
    let samples = parse_metrics(&text);
    assert!(
        metric(&samples, "pgtide_slot_resets_total").unwrap() >= 1.0,
        "{text}"
    );
    // The failure reached the webhook, as JSON.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events: Vec<serde_json::Value> = hook
            .bodies()
            .iter()
            .filter_map(|b| serde_json::from_str(b).ok())
            .collect();
        if events
            .iter()
            .any(|e| e["event"] == "pgtide.run.failed" && e["kind"] == "slot")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no slot event at the webhook: {events:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The server frees the WAL the old slot held; the archive comes back.
    for _ in 0..3 {
        pg.query_one("postgres", "SELECT pg_switch_wal()");
        pg.execute("postgres", "CHECKPOINT");
    }
    std::fs::remove_file(repo.join("wal")).unwrap();
    std::fs::rename(dir.path().join("wal.saved"), repo.join("wal")).unwrap();
    pg.execute("app", "INSERT INTO t (v) VALUES ('after')");
    pg.query_one("postgres", "SELECT pg_switch_wal()");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let l: serde_json::Value =
            serde_json::from_str(&pgtide(&["list", "--json", "--repo", &repo_url]).stdout)
                .unwrap_or_default();
        let gaps: usize = l["wal"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|w| w["gaps"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
        if gaps > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no gap reported after the slot was given up: {l:#}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(d.log().contains("the archive has a gap"), "{}", d.log());
}

/// Without a token the run endpoints are off (403), the rest answers.
#[test]
fn run_endpoints_are_off_without_a_token() {
    let pg = app_cluster();
    let dir = work_dir("pgtide-daemon-notoken-");
    let repo = dir.path().join("repo").display().to_string();
    let config = write_config(dir.path(), &pg, &repo, "[wal]\nstream = false\n");
    let text = std::fs::read_to_string(&config).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("token_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon::start(&config, dir.path(), &[]);
    d.wait_status("the daemon answers", Duration::from_secs(30), |_| true);
    for kind in ["backup", "dump", "expire"] {
        let (code, body) = http(d.port, "POST", &format!("/run/{kind}"), Some(TOKEN));
        assert_eq!(code, 403, "{kind}: {body}");
    }
    assert_eq!(d.get("/livez").0, 200);
    assert_eq!(d.get("/healthz").0, 200);
    d.signal("INT");
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0), "{}", d.log());
}

/// Bad configurations: one line naming the key, the line or the file;
/// exit 2. An unreachable repository: one line, non-zero.
#[test]
fn bad_configurations_are_one_line_errors() {
    let dir = work_dir("pgtide-daemon-bad-");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let p = write(
        "unknown.toml",
        "[backup]\nschedule = \"@daily\"\nkeep_last = 3\n",
    );
    pgtide(&["daemon", "--config", &p]).assert_one_line_error(2, "unknown field `keep_last`");
    let out = pgtide(&["daemon", "--config", &p]);
    assert!(out.stderr.contains("line 3"), "{out}");
    let p = write("cron.toml", "[backup]\nschedule = \"0 25 * * *\"\n");
    pgtide(&["daemon", "--config", &p]).assert_one_line_error(2, "backup.schedule:");
    let p = write(
        "token.toml",
        "[http]\ntoken_file = \"/nonexistent/pgtide-token\"\n",
    );
    pgtide(&["daemon", "--config", &p])
        .assert_one_line_error(2, "cannot read HTTP token file /nonexistent/pgtide-token");
    pgtide(&["daemon", "--config", "/nonexistent/pgtide.toml"])
        .assert_one_line_error(2, "cannot read config file /nonexistent/pgtide.toml");
    let port = free_port();
    let p = write(
        "unreachable.toml",
        &format!(
            "[repository]\nurl = \"s3://b/p?endpoint=http://127.0.0.1:{port}&region=us-east-1\"\n[wal]\nstream = false\n"
        ),
    );
    let out = crate::harness::cli::Cli::new(["daemon", "--config", &p])
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .timeout(Duration::from_secs(120))
        .run();
    assert!(!out.status.success(), "{out}");
    assert_eq!(
        out.stderr
            .trim()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{out}"
    );
}

/// `[[repository]]` with `copy = true`: each dump and backup the daemon
/// completes is copied to Azurite (the backup's WAL too), recorded as a
/// `copy` run, and the copy's own retention keeps one dump there while
/// the primary keeps two.
#[test]
fn daemon_keeps_a_copy_repository_in_step() {
    let pg = app_cluster();
    let dir = work_dir("pgtide-daemon-copy-");
    let repo = dir.path().join("repo").display().to_string();
    let copy = crate::harness::emulators::Emulator::azurite()
        .fresh_blocking()
        .url;
    let config = write_config(
        dir.path(),
        &pg,
        &repo,
        &format!(
            r#"[wal]
stream = false
[backup]
wal = "stream"
[[dump]]
database = "app"
schedule = "@yearly"
[[repository]]
url = "{copy}"
copy = true
[repository.retention.dumps]
keep_last = 1
"#
        ),
    );
    // The primary as a [[repository]] entry too.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[repository]\nurl", "[[repository]]\nurl");
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon::start(&config, dir.path(), &[]);
    d.wait_status("the daemon answers", Duration::from_secs(30), |_| true);
    let copies_ok = |v: &serde_json::Value| {
        v["jobs"]["copy"]["last_success"]["id"]
            .as_str()
            .map(str::to_string)
    };
    let mut last = None;
    for kind in ["dump", "dump", "backup"] {
        let (code, body) = http(d.port, "POST", &format!("/run/{kind}"), Some(TOKEN));
        assert_eq!(code, 202, "{kind}: {body}");
        let before = last.clone();
        let v = d.wait_status(
            &format!("the {kind} is copied"),
            Duration::from_secs(120),
            |v| copies_ok(v).is_some() && copies_ok(v) != before,
        );
        assert!(
            v["jobs"]["copy"]["last_failure"].is_null(),
            "{v:#}\n{}",
            d.log()
        );
        last = copies_ok(&v);
    }
    let primary = crate::pitr::listing(&repo);
    let copied = crate::pitr::listing(&copy);
    assert_eq!(primary["dumps"].as_array().unwrap().len(), 2, "{primary:#}");
    assert_eq!(copied["dumps"].as_array().unwrap().len(), 1, "{copied:#}");
    assert_eq!(
        copied["dumps"][0]["id"], primary["dumps"][1]["id"],
        "the newest dump is kept in the copy"
    );
    assert_eq!(copied["backups"][0]["id"], primary["backups"][0]["id"]);
    assert_eq!(copied["system_identifier"], primary["system_identifier"]);
    pgtide(&["verify", "latest", "--repo", &copy]).assert_ok();
    let backup_id = primary["backups"][0]["id"].as_str().unwrap();
    pgtide(&["verify", backup_id, "--repo", &copy]).assert_ok();
    d.signal("INT");
    assert_eq!(d.wait(Duration::from_secs(30)), Some(0), "{}", d.log());
}
