//! Starting a restored data directory (`--start`): the server programs of
//! the backup's major version, the configuration files a backup may lack,
//! and waiting for recovery to end, with the server's own reason when it
//! does not.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{io, running_as_root, PitrSettings};
use crate::jobs::JobError;

/// The server log of `--start`, inside the data directory.
pub const RECOVERY_LOG: &str = "pgtide-recovery.log";

/// pg_ctl of the backup's major version.
fn find_pg_ctl(s: &PitrSettings, major: u32) -> Result<PathBuf, JobError> {
    find_server_tool(s.pg_bin.as_deref(), "pg_ctl", major)
}

/// A server program (`pg_ctl`, `initdb`) of PostgreSQL `major`: in `pg_bin`
/// first, then the usual package directories, then `PATH`.
pub(crate) fn find_server_tool(
    pg_bin: Option<&Path>,
    tool: &'static str,
    major: u32,
) -> Result<PathBuf, JobError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(b) = pg_bin {
        dirs.push(b.to_path_buf());
    }
    dirs.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    dirs.push(PathBuf::from(format!("/usr/pgsql-{major}/bin")));
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    for d in dirs {
        let p = d.join(tool);
        if !p.is_file() {
            continue;
        }
        let out = std::process::Command::new(&p).arg("--version").output();
        if let Ok(o) = out {
            let v = String::from_utf8_lossy(&o.stdout);
            if crate::pg::version::tool_major(&v) == Some(major) {
                return Ok(p);
            }
        }
    }
    Err(crate::pg::tools::ToolError::ServerToolNotFound { tool, major }.into())
}

/// Start the restored server and wait until recovery has ended (promoted,
/// paused at the target, or shut down). Returns what the server said.
/// Configuration files a server needs to start, with what pgtide writes
/// when the backup has none.
const MINIMAL_CONFIG: &[(&str, &str)] = &[
    (
        "postgresql.conf",
        "# Written by pgtide restore --start: the backed-up cluster kept its\n\
         # configuration outside its data directory (as Debian's packages do).\n\
         # Its ALTER SYSTEM settings are in postgresql.auto.conf.\n",
    ),
    (
        "pg_hba.conf",
        "# Written by pgtide restore --start: the backup had no pg_hba.conf.\n\
         # Local connections by the matching OS user, and passwords over loopback.\n\
         local all all peer\n\
         host all all 127.0.0.1/32 scram-sha-256\n\
         host all all ::1/128 scram-sha-256\n",
    ),
    ("pg_ident.conf", ""),
];

/// A backup of a cluster whose configuration lives outside its data
/// directory (Debian's layout: /etc/postgresql/MAJOR/NAME) has no
/// postgresql.conf, pg_hba.conf or pg_ident.conf, and a server cannot start
/// without them: write minimal ones, and say so.
pub(super) fn write_missing_config(pgdata: &Path) -> Result<(), JobError> {
    let mut written = Vec::new();
    for (name, text) in MINIMAL_CONFIG {
        let path = pgdata.join(name);
        if path.exists() {
            continue;
        }
        std::fs::write(&path, text).map_err(io(format!("write {}", path.display())))?;
        written.push(*name);
    }
    if !written.is_empty() {
        // Handled here: the restore goes on with these.
        tracing::warn!(
            "the backup has no {} (the cluster kept its configuration outside its data directory): \
             wrote minimal ones into {} so that the server can start; replace them with the \
             cluster's own before using it",
            written.join(", "),
            pgdata.display()
        );
    }
    Ok(())
}

pub(crate) async fn start_and_wait(
    s: &PitrSettings,
    major: u32,
) -> Result<(String, Option<u32>), JobError> {
    let pg_ctl = find_pg_ctl(s, major)?;
    let log = s.pgdata.join(RECOVERY_LOG);
    // The backup may carry the log of the server it was taken from (restored
    // by pgtide too): its "ready to accept connections" and FATAL lines are
    // not this server's. Start from an empty log.
    match std::fs::remove_file(&log) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(format!("remove {}", log.display()))(e))
        }
        _ => {}
    }
    let mut cmd = if running_as_root() {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", s.os_user.as_deref().unwrap_or("postgres"), "--"])
            .arg(&pg_ctl);
        c
    } else {
        tokio::process::Command::new(&pg_ctl)
    };
    cmd.arg("-D")
        .arg(&s.pgdata)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "86400", "start"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        // Stopped while it waits (the restore interrupted), pg_ctl goes;
        // the server it started runs on its own, as pg_ctl leaves it.
        .kill_on_drop(true);
    let out = cmd.output().await.map_err(io("run pg_ctl start"))?;
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    if !out.status.success() && !read_log().contains("shutting down") {
        return Err(server_failed(
            "the restored server did not start",
            last_fatal(&read_log()).unwrap_or_else(|| crate::pg::tools::tail_lines(&out.stderr, 2)),
        ));
    }
    // Wait for the end of recovery as the log tells it.
    let deadline = Instant::now() + Duration::from_secs(86400);
    loop {
        let text = read_log();
        if let Some(f) = last_fatal(&text) {
            return Err(server_failed("recovery failed", f));
        }
        let done = text.contains("database system is ready to accept connections")
            || text.contains("recovery has paused")
            || text.contains("pausing at the end of recovery")
            || text.contains("database system is shut down");
        if done {
            let tli = text
                .lines()
                .rev()
                .find_map(|l| l.split("selected new timeline ID: ").nth(1))
                .and_then(|v| v.trim().parse().ok());
            let summary = text
                .lines()
                .filter(|l| {
                    l.contains("recovery stopping")
                        || l.contains("redo done at")
                        || l.contains("last completed transaction")
                        || l.contains("recovery has paused")
                })
                .map(|l| {
                    l.split_once(": ")
                        .map(|x| x.1)
                        .unwrap_or(l)
                        .trim()
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Ok((summary, tli));
        }
        if Instant::now() > deadline {
            return Err(server_failed(
                "wait for recovery",
                "recovery did not end within a day".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The restored server failed (exit 1, "other failure"): not a bad command
/// line, which `JobError::Invalid` (exit 2) would claim.
fn server_failed(context: &str, what: String) -> JobError {
    JobError::Io {
        context: context.to_string(),
        source: std::io::Error::other(what),
    }
}

fn last_fatal(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find(|l| l.contains("FATAL:") || l.contains("PANIC:"))
        .map(|l| {
            l.split_once(": ")
                .map(|x| x.1)
                .unwrap_or(l)
                .trim()
                .to_string()
        })
}
