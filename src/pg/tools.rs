//! The external PostgreSQL tools pgtide runs for the schema: `pg_dump` (taken
//! in the dump's snapshot) and `pg_restore` (pre-data and post-data). pgtide
//! picks the newest pg_dump it can find unless told which one to use, and
//! uses the pg_restore next to it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::version::{tool_major, ServerVersion};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("no pg_dump found (install the PostgreSQL client tools, or name one with --pg-dump or PGTIDE_PG_DUMP)")]
    NotFound,
    #[error("{path} is not a usable pg_dump: {reason}")]
    Unusable { path: String, reason: String },
    #[error("pg_dump {tool_major} ({path}) is older than the server (PostgreSQL {server}): install pg_dump {server_major} or newer, or name one with --pg-dump or PGTIDE_PG_DUMP")]
    TooOld {
        path: String,
        tool_major: u32,
        server: ServerVersion,
        server_major: u32,
    },
    /// A server tool of one major version (pg_ctl for a physical restore's
    /// `--start`) that is nowhere to be found.
    #[error("no {tool} for PostgreSQL {major} found: name its directory with --pg-bin")]
    ServerToolNotFound { tool: &'static str, major: u32 },
    #[error("pg_restore is missing next to {pg_dump} (expected {expected})")]
    NoRestore { pg_dump: String, expected: String },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("running {tool}: {source}")]
    Spawn {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct PgTools {
    pub pg_dump: PathBuf,
    pub pg_restore: PathBuf,
    pub major: u32,
    /// `pg_dump --version` output, e.g. `pg_dump (PostgreSQL) 15.18`.
    pub version: String,
}

fn version_of(path: &Path) -> Result<(u32, String), String> {
    let out = std::process::Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("--version exited with {}", out.status));
    }
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let major = tool_major(&line).ok_or_else(|| format!("unexpected --version output {line:?}"))?;
    Ok((major, line))
}

/// Directories where PostgreSQL client tools usually live.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for pattern_dir in [
        "/usr/lib/postgresql",
        "/usr/local/pgsql",
        "/opt/homebrew/opt",
    ] {
        if let Ok(rd) = std::fs::read_dir(pattern_dir) {
            for e in rd.flatten() {
                dirs.push(e.path().join("bin"));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/usr") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("pgsql-") {
                dirs.push(e.path().join("bin"));
            }
        }
    }
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    dirs
}

impl PgTools {
    /// `explicit` is a pg_dump binary or the directory holding it
    /// (`--pg-dump` / `PGTIDE_PG_DUMP`); otherwise the newest one found.
    pub fn find(explicit: Option<&Path>) -> Result<PgTools, ToolError> {
        let pg_dump = match explicit {
            Some(p) => {
                let p = if p.is_dir() {
                    p.join("pg_dump")
                } else {
                    p.to_path_buf()
                };
                let (major, version) = version_of(&p).map_err(|reason| ToolError::Unusable {
                    path: p.display().to_string(),
                    reason,
                })?;
                (p, major, version)
            }
            None => {
                let mut best: Option<(PathBuf, u32, String)> = None;
                let mut seen = std::collections::HashSet::new();
                for dir in candidate_dirs() {
                    let p = dir.join("pg_dump");
                    if !p.is_file() || !seen.insert(p.clone()) {
                        continue;
                    }
                    if let Ok((major, version)) = version_of(&p) {
                        if best.as_ref().is_none_or(|b| major > b.1) {
                            best = Some((p, major, version));
                        }
                    }
                }
                best.ok_or(ToolError::NotFound)?
            }
        };
        let (path, major, version) = pg_dump;
        let restore = path.with_file_name("pg_restore");
        if !restore.is_file() {
            return Err(ToolError::NoRestore {
                pg_dump: path.display().to_string(),
                expected: restore.display().to_string(),
            });
        }
        Ok(PgTools {
            pg_dump: path,
            pg_restore: restore,
            major,
            version,
        })
    }

    /// pg_dump refuses servers newer than itself; say so before it does.
    pub fn check_server(&self, server: ServerVersion) -> Result<(), ToolError> {
        if self.major < server.major() {
            return Err(ToolError::TooOld {
                path: self.pg_dump.display().to_string(),
                tool_major: self.major,
                server,
                server_major: server.major(),
            });
        }
        Ok(())
    }
}

/// Keep the last lines of a tool's stderr for the error message.
pub fn tail_lines(stderr: &[u8], max_lines: usize) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(max_lines);
    lines[start..].join("; ")
}

/// Run a tool to completion and return its stdout; on failure its stderr
/// becomes the error message.
pub async fn output(
    tool: &'static str,
    mut cmd: tokio::process::Command,
) -> Result<Vec<u8>, ToolError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tracing::debug!(?cmd, "running {tool}");
    let out = cmd
        .output()
        .await
        .map_err(|source| ToolError::Spawn { tool, source })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            tool,
            status: out.status.to_string(),
            stderr: tail_lines(&out.stderr, 3),
        });
    }
    Ok(out.stdout)
}

/// Run a tool to completion, ignoring its stdout.
pub async fn run(tool: &'static str, cmd: tokio::process::Command) -> Result<(), ToolError> {
    output(tool, cmd).await.map(drop)
}
