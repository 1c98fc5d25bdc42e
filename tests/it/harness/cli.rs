//! Runs the built `pgtide` binary and checks what it printed.
//!
//! The child gets a clean environment for pgtide: inherited `PGTIDE_*`
//! variables (but not `PGTIDE_TEST_*`), libpq's `PG*` variables and `RUST_LOG`
//! are removed, so only what a test sets reaches it. Every run has a timeout
//! (default 300 s); a run that outlives it is killed and the test panics with
//! what it printed so far.
//!
//! ```ignore
//! let out = pgtide(&["dump", "--help"]);
//! out.assert_ok();
//! Cli::new(["restore", "x"]).env("PGTIDE_LOG", "debug").run().assert_one_line_error(2, "no such backup");
//! ```

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary cargo built for this test run.
pub const PGTIDE_BIN: &str = env!("CARGO_BIN_EXE_pgtide");

const LIBPQ_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "PGAPPNAME",
    "PGTARGETSESSIONATTRS",
    "PGCONNECT_TIMEOUT",
];

/// Runs `pgtide ARGS` with no extra environment.
pub fn pgtide<S: AsRef<OsStr>>(args: &[S]) -> CliOutput {
    Cli::new(args).run()
}

/// Runs `pgtide ARGS` with extra environment variables.
pub fn pgtide_env<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> CliOutput {
    let mut cli = Cli::new(args);
    for (k, v) in env {
        cli.env(k, v);
    }
    cli.run()
}

/// A `pgtide` invocation being put together.
pub struct Cli {
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    cwd: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Cli {
    /// `pgtide ARGS`.
    pub fn new<I, S>(args: I) -> Cli
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Cli {
            args: args
                .into_iter()
                .map(|a| a.as_ref().to_os_string())
                .collect(),
            env: Vec::new(),
            env_remove: Vec::new(),
            cwd: None,
            stdin: None,
            timeout: Duration::from_secs(300),
        }
    }

    /// One more argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Cli {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Cli {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Cli {
        self.env_remove.push(key.as_ref().to_os_string());
        self
    }

    /// Working directory of the child.
    pub fn current_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Cli {
        self.cwd = Some(dir.into());
        self
    }

    /// Bytes written to the child's stdin (default: /dev/null).
    pub fn stdin(&mut self, bytes: impl Into<Vec<u8>>) -> &mut Cli {
        self.stdin = Some(bytes.into());
        self
    }

    /// Kill the child and panic after this long (default 300 s).
    pub fn timeout(&mut self, timeout: Duration) -> &mut Cli {
        self.timeout = timeout;
        self
    }

    fn cmdline(&self) -> String {
        let mut s = String::from("pgtide");
        for a in &self.args {
            s.push(' ');
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(char::is_whitespace) {
                s.push_str(&format!("{a:?}"));
            } else {
                s.push_str(&a);
            }
        }
        s
    }

    /// The command, with the environment cleaned as the module says.
    fn command(&self) -> Command {
        let mut cmd = Command::new(PGTIDE_BIN);
        cmd.args(&self.args);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            let drop = (k.starts_with("PGTIDE_") && !k.starts_with("PGTIDE_TEST_"))
                || LIBPQ_ENV.contains(&k.as_ref())
                || k == "RUST_LOG";
            if drop {
                cmd.env_remove(&key);
            }
        }
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Starts the binary with the debug-build hook `PGTIDE_TEST_PAUSE`
    /// naming `point` and returns once it has said that it waits there
    /// (`pgtide test pause: POINT` on stderr), still running. Panics with
    /// what it printed if it ends first or takes longer than the timeout.
    pub fn spawn_paused(&self, point: &str) -> Paused {
        let cmdline = self.cmdline();
        let mut cmd = self.command();
        cmd.env("PGTIDE_TEST_PAUSE", point)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {PGTIDE_BIN} ({cmdline}): {e}"));
        let mut out = child.stdout.take().expect("stdout pipe");
        let stdout = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut err = child.stderr.take().expect("stderr pipe");
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut piece = [0u8; 4096];
            while let Ok(n) = err.read(&mut piece) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&piece[..n]);
            }
        });
        let mut paused = Paused {
            cmdline,
            child,
            stdout,
            stderr,
            stderr_reader,
            timeout: self.timeout,
        };
        let marker = format!("pgtide test pause: {point}");
        let deadline = Instant::now() + self.timeout;
        loop {
            if paused.stderr_text().contains(&marker) {
                return paused;
            }
            let ended = paused.child.try_wait().expect("wait for pgtide").is_some();
            if ended || Instant::now() >= deadline {
                let _ = paused.child.kill();
                let out = paused.finish();
                panic!("never reached the pause point {point:?}\n{out}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs the binary to completion.
    pub fn run(&self) -> CliOutput {
        let cmdline = self.cmdline();
        let mut cmd = self.command();
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {PGTIDE_BIN} ({cmdline}): {e}"));
        let stdin_writer = match (child.stdin.take(), self.stdin.clone()) {
            (Some(mut pipe), Some(bytes)) => Some(std::thread::spawn(move || {
                // The child may exit without reading everything: ignore EPIPE.
                let _ = pipe.write_all(&bytes);
            })),
            _ => None,
        };
        let read_all = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let stdout = read_all(Box::new(child.stdout.take().expect("stdout pipe")));
        let stderr = read_all(Box::new(child.stderr.take().expect("stderr pipe")));

        let deadline = Instant::now() + self.timeout;
        let (status, timed_out) = loop {
            match child.try_wait().expect("wait for pgtide") {
                Some(status) => break (status, false),
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    break (child.wait().expect("wait for killed pgtide"), true);
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        if let Some(w) = stdin_writer {
            let _ = w.join();
        }
        let out = CliOutput {
            cmdline,
            status,
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout.join().expect("stdout reader")).into_owned(),
            stderr: String::from_utf8_lossy(&stderr.join().expect("stderr reader")).into_owned(),
        };
        assert!(
            !timed_out,
            "timed out after {:?} and killed\n{out}",
            self.timeout
        );
        out
    }
}

/// A run started by [`Cli::spawn_paused`], waiting at its pause point.
pub struct Paused {
    cmdline: String,
    child: std::process::Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr_reader: std::thread::JoinHandle<()>,
    timeout: Duration,
}

impl Paused {
    /// The process id, for signals.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Sends `signal` (`INT`, `TERM`, …) with kill(1) and waits for the
    /// process to end (killing it after the timeout); what it printed.
    pub fn signal(mut self, signal: &str) -> CliOutput {
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} {}", self.child.id());
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().expect("wait for pgtide").is_none() {
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let out = self.finish();
                panic!("did not end within {timeout:?} of SIG{signal}\n{out}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.finish()
    }

    /// Waits for the end (after a kill) and collects the output.
    fn finish(mut self) -> CliOutput {
        let status = self.child.wait().expect("wait for pgtide");
        let _ = self.stderr_reader.join();
        let stderr = String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned();
        CliOutput {
            cmdline: self.cmdline,
            status,
            code: status.code(),
            stdout: String::from_utf8_lossy(&self.stdout.join().expect("stdout reader"))
                .into_owned(),
            stderr,
        }
    }
}

/// What one run printed and how it ended.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The command line, for messages.
    pub cmdline: String,
    pub status: ExitStatus,
    /// Exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        writeln!(f, "exit: {}", self.status)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

impl CliOutput {
    /// Exit code 0, or panic printing both streams.
    #[track_caller]
    pub fn assert_ok(&self) -> &CliOutput {
        assert!(self.status.success(), "expected success\n{self}");
        self
    }

    /// This exit code, or panic printing both streams.
    #[track_caller]
    pub fn assert_exit(&self, code: i32) -> &CliOutput {
        assert_eq!(self.code, Some(code), "expected exit code {code}\n{self}");
        self
    }

    /// Exit code `code`; no panic text; exactly one line of stderr starting
    /// with `error: `, which is stderr's last non-empty line and contains
    /// `contains`.
    #[track_caller]
    pub fn assert_one_line_error(&self, code: i32, contains: &str) -> &CliOutput {
        self.assert_exit(code);
        assert!(
            !self.stderr.contains("panicked at") && !self.stdout.contains("panicked at"),
            "the binary panicked\n{self}"
        );
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(
            errors.len(),
            1,
            "expected exactly one `error: ` line on stderr\n{self}"
        );
        let last = self
            .stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        assert!(
            last.starts_with("error: "),
            "stderr's last line is not the `error: ` line\n{self}"
        );
        assert!(
            last.contains(contains),
            "the error line does not contain {contains:?}\n{self}"
        );
        self
    }

    /// The one `error: ` line of stderr, if there is exactly one.
    pub fn error_line(&self) -> Option<&str> {
        let mut errors = self.stderr.lines().filter(|l| l.starts_with("error: "));
        let first = errors.next()?;
        errors.next().is_none().then_some(first)
    }

    /// stdout's lines.
    pub fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}
