//! Real S3-compatible servers on 127.0.0.1 for the integration tests.
//!
//! - [`S3Server::moto()`]: `moto_server -H 127.0.0.1 -p PORT` (PyPI
//!   `moto[server]`), keeps everything in RAM. Accepts any credentials.
//! - [`S3Server::s3s_fs()`]: `s3s-fs --host 127.0.0.1 --port PORT --access-key
//!   test --secret-key test DIR` (crates.io `s3s-fs`), stores under a temp
//!   dir, checks signatures.
//!
//! Binaries: `PGTIDE_TEST_MOTO_SERVER` / `PGTIDE_TEST_S3S_FS` (exported by
//! scripts/test.sh); otherwise moto from the repository's `.deps/venv` (the
//! pinned version) or PATH, s3s-fs from PATH or `~/.cargo/bin`.
//!
//! Each is started once per test process, on a free port, the first time a
//! test asks for it; [`S3Server::s3s_fs_with_keys`] starts a private instance
//! (stopped on `Drop`) for tests that need other credentials or an outage: a
//! private instance can be [`stop`](S3Server::stop)ped and
//! [`start_again`](S3Server::start_again)ed on the same port and data dir. A missing binary
//! or a server that does not come up is a panic naming what to install, never
//! a skip.
//!
//! Servers run under a small `sh` wrapper whose stdin is a pipe held by this
//! process: when the test process exits (however it exits) the pipe closes and
//! the wrapper kills the server and removes its data dir.
//!
//! Credentials: the first call sets `AWS_ACCESS_KEY_ID=test`,
//! `AWS_SECRET_ACCESS_KEY=test` (and `AWS_EC2_METADATA_DISABLED=true`) in this
//! process, so `pgtide::storage::open(url)` finds them through the standard
//! chain; [`s3_env()`] returns the same pairs for tests that spawn the CLI.
//!
//! Every test gets its own bucket: [`S3Server::fresh_bucket`] (async) or
//! [`S3Server::fresh_bucket_blocking`] (from `#[test]` or async code alike).

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

/// Access key every shared server accepts (and the process environment holds).
pub const ACCESS_KEY: &str = "test";
/// Secret key every shared server accepts (and the process environment holds).
pub const SECRET_KEY: &str = "test";
/// Region used in every test URL.
pub const REGION: &str = "us-east-1";
/// Key prefix inside each test bucket used by [`TestBucket::url`].
pub const PREFIX: &str = "prefix";

/// Environment a process needs to reach the test servers with the standard
/// credential chain (pass these to spawned `pgtide` commands).
pub fn s3_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

/// Put [`s3_env()`] into this process's environment (once; idempotent).
pub fn set_process_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (k, v) in s3_env() {
            std::env::set_var(k, v);
        }
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Kind {
    Moto,
    S3sFs,
}

impl S3Kind {
    pub fn name(self) -> &'static str {
        match self {
            S3Kind::Moto => "moto_server",
            S3Kind::S3sFs => "s3s-fs",
        }
    }
}

/// A running S3-compatible server.
#[derive(Debug)]
pub struct S3Server {
    kind: S3Kind,
    port: u16,
    endpoint: String,
    /// The wrapper and the pipe that keeps the server alive.
    guard: Mutex<Option<(Child, ChildStdin)>>,
    log: PathBuf,
    /// The wrapper's arguments and data dir, to start it again.
    args: Vec<String>,
    data_dir: Option<PathBuf>,
    /// Private instances may be stopped and started again.
    private: bool,
}

impl S3Server {
    /// The process-wide moto server (started on first use).
    pub fn moto() -> &'static S3Server {
        static SERVER: OnceLock<S3Server> = OnceLock::new();
        SERVER.get_or_init(|| S3Server::start(S3Kind::Moto, ACCESS_KEY, SECRET_KEY))
    }

    /// The process-wide s3s-fs server (started on first use), accepting
    /// [`ACCESS_KEY`] / [`SECRET_KEY`].
    pub fn s3s_fs() -> &'static S3Server {
        static SERVER: OnceLock<S3Server> = OnceLock::new();
        SERVER.get_or_init(|| S3Server::start(S3Kind::S3sFs, ACCESS_KEY, SECRET_KEY))
    }

    /// A private s3s-fs that accepts only these keys; stopped on `Drop`.
    pub fn s3s_fs_with_keys(access_key: &str, secret_key: &str) -> S3Server {
        let mut server = S3Server::start(S3Kind::S3sFs, access_key, secret_key);
        server.private = true;
        server
    }

    /// Stop a private server (connections are refused until
    /// [`start_again`](Self::start_again)); its data dir is kept.
    pub fn stop(&self) {
        assert!(self.private, "only a private S3 server may be stopped");
        assert!(
            self.stop_keeping_data(),
            "{} on port {} is not running",
            self.kind.name(),
            self.port
        );
    }

    /// Stop the wrapper with "keep" (the data dir stays); false when it
    /// was not running.
    fn stop_keeping_data(&self) -> bool {
        use std::io::Write as _;
        let Some((mut child, mut stdin)) = self.guard.lock().unwrap().take() else {
            return false;
        };
        let _ = stdin.write_all(b"keep\n");
        drop(stdin);
        let _ = child.wait();
        true
    }

    /// Start a stopped private server again on the same port and data dir.
    pub fn start_again(&self) {
        assert!(self.private, "only a private S3 server may be restarted");
        assert!(
            self.guard.lock().unwrap().is_none(),
            "{} on port {} already runs",
            self.kind.name(),
            self.port
        );
        // The old listening socket may linger for a moment: retry.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            *self.guard.lock().unwrap() = Some(spawn_wrapper(
                self.kind.name(),
                &self.args,
                &self.log,
                self.data_dir.as_deref(),
            ));
            match self.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("{} did not start again: {e}", self.kind.name())
                }
                Err(_) => {
                    self.stop_keeping_data();
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    pub fn kind(&self) -> S3Kind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Repository URL for `bucket` and `prefix` on this server (the bucket
    /// need not exist).
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        format!(
            "s3://{bucket}/{prefix}?endpoint={}&region={REGION}&path_style=true",
            self.endpoint
        )
    }

    /// An SDK client for this server with the test credentials, built by the
    /// driver itself (`S3Options::client`).
    pub async fn client(&self) -> aws_sdk_s3::Client {
        set_process_env();
        pgtide::storage::S3Options::parse(self.url("x", "").trim_start_matches("s3://"))
            .expect("test URL parses")
            .client()
            .await
    }

    /// Create a new, empty bucket with a unique name.
    pub async fn fresh_bucket(&self) -> TestBucket {
        self.new_bucket(false).await
    }

    /// Create a new, empty bucket with Object Lock enabled (and so
    /// versioning), with no default retention rule (moto only).
    pub async fn fresh_object_lock_bucket(&self) -> TestBucket {
        self.new_bucket(true).await
    }

    async fn new_bucket(&self, object_lock: bool) -> TestBucket {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pgtide-{}-{}-{:04x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            fastrand::u16(..)
        );
        let client = self.client().await;
        let mut req = client.create_bucket().bucket(&name);
        if object_lock {
            req = req.object_lock_enabled_for_bucket(true);
        }
        if let Err(e) = req.send().await {
            panic!(
                "{}: could not create bucket {name}: {}\n{}",
                self.kind.name(),
                aws_sdk_s3::error::DisplayErrorContext(&e),
                self.log_tail()
            );
        }
        TestBucket {
            url: self.url(&name, PREFIX),
            endpoint: self.endpoint.clone(),
            name,
        }
    }

    /// [`fresh_bucket`](Self::fresh_bucket) for synchronous tests; also safe
    /// to call from inside a runtime (it runs on a helper thread).
    pub fn fresh_bucket_blocking(&'static self) -> TestBucket {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(self.fresh_bucket())
        })
        .join()
        .expect("bucket creation thread panicked")
    }

    fn start(kind: S3Kind, access_key: &str, secret_key: &str) -> S3Server {
        set_process_env();
        let program = find_program(kind);
        let mut last_err = String::new();
        // A port found free can be taken before the server binds it: retry.
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!(
                "pgtide-{}-{}-{port}.log",
                kind.name(),
                std::process::id()
            ));
            let mut data_dir = None;
            let mut args: Vec<String> = vec![program.display().to_string()];
            match kind {
                S3Kind::Moto => {
                    args.extend(["-H", "127.0.0.1", "-p"].map(String::from));
                    args.push(port.to_string());
                }
                S3Kind::S3sFs => {
                    let dir = tempfile::Builder::new()
                        .prefix("pgtide-s3s-fs-")
                        .tempdir()
                        .expect("create s3s-fs data dir")
                        .keep();
                    args.extend(["--host", "127.0.0.1", "--port"].map(String::from));
                    args.push(port.to_string());
                    args.extend([
                        "--access-key".to_string(),
                        access_key.to_string(),
                        "--secret-key".to_string(),
                        secret_key.to_string(),
                        dir.display().to_string(),
                    ]);
                    data_dir = Some(dir);
                }
            }
            let guard = spawn_wrapper(kind.name(), &args, &log, data_dir.as_deref());
            let server = S3Server {
                kind,
                port,
                endpoint: format!("http://127.0.0.1:{port}"),
                guard: Mutex::new(Some(guard)),
                log,
                args,
                data_dir,
                private: false,
            };
            match server.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("{} did not start: {last_err}", kind.name());
    }

    /// Wait until the server accepts TCP connections and answers HTTP.
    fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((child, _)) = self.guard.lock().unwrap().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{} exited with {status} before answering on port {}\n{}",
                        self.kind.name(),
                        self.port,
                        self.log_tail()
                    ));
                }
            }
            if http_answers(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not answer on 127.0.0.1:{} within {timeout:?}\n{}",
                    self.kind.name(),
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Last lines of the server's output, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!(
            "--- {} ({}) ---\n{tail}",
            self.kind.name(),
            self.log.display()
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Closing the pipe makes the wrapper kill the server and clean up.
        if let Some((mut child, stdin)) = self.guard.lock().unwrap().take() {
            drop(stdin);
            let _ = child.wait();
        } else if let Some(dir) = &self.data_dir {
            // Stopped with `stop`, which kept the data dir.
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Start `sh -c WRAPPER sh ARGS…` with the server's log and data dir.
pub(crate) fn spawn_wrapper(
    name: &str,
    args: &[String],
    log: &std::path::Path,
    data_dir: Option<&std::path::Path>,
) -> (Child, ChildStdin) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WRAPPER)
        .arg("sh")
        .args(args)
        .env("PGTIDE_S3_LOG", log)
        .env(
            "PGTIDE_S3_CLEAN",
            data_dir.map(|d| d.as_os_str()).unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run sh to start {name}: {e}"));
    let stdin = child.stdin.take().expect("piped stdin");
    (child, stdin)
}

/// `sh -c WRAPPER sh PROGRAM ARGS…`: runs the server in the background, kills
/// it and removes its log when our stdin reaches EOF (this process exited or
/// dropped the pipe), exits with the server's status, and removes
/// `$PGTIDE_S3_CLEAN`. A server that dies by itself leaves its log for
/// [`S3Server::log_tail`]. The line `keep` on stdin ([`S3Server::stop`])
/// kills the server but keeps its data dir (and log) for a restart.
pub(crate) const WRAPPER: &str = r#"
exec 3<&0
"$@" </dev/null >"$PGTIDE_S3_LOG" 2>&1 &
pid=$!
( read -r cmd <&3
  if [ "$cmd" = keep ]; then : >"$PGTIDE_S3_LOG.keep"; kill "$pid" 2>/dev/null
  else kill "$pid" 2>/dev/null; rm -f "$PGTIDE_S3_LOG"; fi ) &
wait "$pid"
status=$?
if [ -e "$PGTIDE_S3_LOG.keep" ]; then rm -f "$PGTIDE_S3_LOG.keep"
elif [ -n "$PGTIDE_S3_CLEAN" ]; then rm -rf "$PGTIDE_S3_CLEAN"; fi
exit "$status"
"#;

/// A bucket created for one test.
#[derive(Debug, Clone)]
pub struct TestBucket {
    pub name: String,
    /// `s3://NAME/prefix?endpoint=http://127.0.0.1:PORT&region=us-east-1&path_style=true`
    pub url: String,
    pub endpoint: String,
}

impl TestBucket {
    /// The repository URL with another prefix.
    pub fn url_with_prefix(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region={REGION}&path_style=true",
            self.name, self.endpoint
        )
    }
}

/// `$PGTIDE_TEST_MOTO_SERVER` / `$PGTIDE_TEST_S3S_FS` (set by
/// scripts/test.sh), else the pinned moto in `.deps/venv`, else PATH, else
/// (s3s-fs) `$CARGO_HOME/bin` and `~/.cargo/bin`.
fn find_program(kind: S3Kind) -> PathBuf {
    let name = kind.name();
    let var = match kind {
        S3Kind::Moto => "PGTIDE_TEST_MOTO_SERVER",
        S3Kind::S3sFs => "PGTIDE_TEST_S3S_FS",
    };
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{var}={} does not exist", p.display());
        return p;
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if kind == S3Kind::Moto {
        dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps/venv/bin"));
    }
    dirs.extend(
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default(),
    );
    if kind == S3Kind::S3sFs {
        if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
            dirs.push(PathBuf::from(cargo_home).join("bin"));
        }
        if let Some(home) = std::env::var_os("HOME") {
            dirs.push(PathBuf::from(home).join(".cargo/bin"));
        }
    }
    if let Some(p) = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file()) {
        return p;
    }
    let install = match kind {
        S3Kind::Moto => "pip install 'moto[server]'",
        S3Kind::S3sFs => "cargo install s3s-fs@0.14.1 --features binary --locked",
    };
    panic!("{name} not found on PATH or in ~/.cargo/bin: install it with `{install}`");
}

/// A port in 12000..20000 (below the kernel's ephemeral range and apart from
/// the PostgreSQL harness's range) that is free now.
pub(crate) fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = fastrand::u16(12000..20000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port on 127.0.0.1 in 12000..20000");
}

/// True when something on `port` answers an HTTP request with a status line.
pub(crate) fn http_answers(port: u16) -> bool {
    use std::io::Write as _;
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 5];
    s.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}
