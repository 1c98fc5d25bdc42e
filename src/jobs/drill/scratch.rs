//! The scratch directory of a drill (and of `restore --table`/`--database`
//! from a backup, which share it and its registry) and its private
//! server's life: created
//! with a marker in a registry (`$TMPDIR/pgtide-drills-<uid>/<name>.json`: the pid
//! of pgtide, the directory), always torn down (server stopped, directory
//! removed, marker removed), and what a killed drill left found and removed
//! by the next one. Never touches a directory without a marker, nor a
//! server whose data directory is not inside a marked scratch directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::jobs::physical_restore::running_as_root;
use crate::jobs::JobError;

/// Prefix of every scratch directory a drill creates.
pub const PREFIX: &str = "pgtide-drill-";

/// The marker of a running drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    /// The pgtide process running the drill.
    pub pid: u32,
    pub scratch: PathBuf,
    pub data_dir: PathBuf,
    pub started_at: DateTime<Utc>,
    /// What is being drilled.
    pub id: String,
}

/// A new scratch directory's name: `pgtide-drill-<UTC time>-<pid>-<random>`
/// (a daemon may start two drills within a second).
pub fn dir_name() -> String {
    format!(
        "{PREFIX}{}-{}-{:04x}",
        Utc::now().format("%Y%m%dT%H%M%S"),
        std::process::id(),
        fastrand::u16(..)
    )
}

/// The registry of running drills: one marker file per scratch directory,
/// one registry per user (a root-owned one would lock others out).
pub fn registry() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    std::env::temp_dir().join(format!("pgtide-drills-{uid}"))
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> JobError {
    let context = context.into();
    move |source| JobError::Io { context, source }
}

/// A scratch directory in use: created by [`Scratch::create`], removed by
/// [`Scratch::remove`] (or by the next drill, if this process dies).
#[derive(Debug)]
pub struct Scratch {
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    marker: PathBuf,
    /// The OS user the server runs as (as root), who must own the directory.
    pub os_user: Option<String>,
}

impl Scratch {
    /// A new, empty scratch directory under `base` (mode 0700, given to the
    /// server's OS user when root), registered before it exists.
    pub fn create(dir: &Path, id: &str, os_user: Option<String>) -> Result<Scratch, JobError> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with(PREFIX))
            .ok_or_else(|| {
                JobError::Invalid(format!("{} is not a drill directory name", dir.display()))
            })?
            .to_string();
        let dir = dir.to_path_buf();
        let data_dir = dir.join(super::plan::DATA_DIR);
        let reg = registry();
        create_private_dir(&reg)?;
        let marker = reg.join(format!("{name}.json"));
        let m = Marker {
            pid: std::process::id(),
            scratch: dir.clone(),
            data_dir: data_dir.clone(),
            started_at: Utc::now(),
            id: id.to_string(),
        };
        // Whole or absent: written aside, then renamed into place.
        let tmp = reg.join(format!("{name}.json.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&m).expect("marker serializes"),
        )
        .map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &marker).map_err(io(format!("write {}", marker.display())))?;
        let s = Scratch {
            dir,
            data_dir,
            marker,
            os_user,
        };
        if let Err(e) = std::fs::create_dir(&s.dir) {
            let _ = std::fs::remove_file(&s.marker);
            return Err(io(format!("create {}", s.dir.display()))(e));
        }
        set_mode(&s.dir, 0o700)?;
        Ok(s)
    }

    /// Write a file of the drill's own into the scratch directory.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, JobError> {
        let p = self.dir.join(name);
        std::fs::write(&p, text).map_err(io(format!("write {}", p.display())))?;
        Ok(p)
    }

    /// Write a file into the data directory, owned by the server's OS user.
    pub fn write_data_file(&self, name: &str, text: &str) -> Result<(), JobError> {
        let p = self.data_dir.join(name);
        std::fs::write(&p, text).map_err(io(format!("write {}", p.display())))?;
        if running_as_root() {
            let user = self.os_user.as_deref().unwrap_or("postgres");
            let st = std::process::Command::new("chown")
                .arg(format!("{user}:"))
                .arg(&p)
                .status()
                .map_err(io("run chown"))?;
            if !st.success() {
                return Err(JobError::Invalid(format!(
                    "could not give {} to OS user {user} (name the server's user with --os-user)",
                    p.display()
                )));
            }
        }
        Ok(())
    }

    /// As root, give the whole scratch directory to the server's OS user.
    pub fn give_to_server_user(&self) -> Result<(), JobError> {
        if !running_as_root() {
            return Ok(());
        }
        let user = self.os_user.as_deref().unwrap_or("postgres");
        let st = std::process::Command::new("chown")
            .args(["-R", &format!("{user}:")])
            .arg(&self.dir)
            .status()
            .map_err(io("run chown"))?;
        if !st.success() {
            return Err(JobError::Invalid(format!(
                "could not give {} to OS user {user} (name the server's user with --os-user)",
                self.dir.display()
            )));
        }
        Ok(())
    }

    /// Stop the server (if one runs on the data directory) and, unless
    /// `keep`, remove the directory; then drop the marker. Returns what was
    /// done, for the report.
    pub async fn remove(self, keep: bool) -> Result<String, JobError> {
        let data = self.data_dir.clone();
        let dir = self.dir.clone();
        // Kept: a clean (fast) shutdown, so the directory starts again as
        // it was; removed: at once.
        let sig = if keep { libc::SIGINT } else { libc::SIGQUIT };
        let stopped = tokio::task::spawn_blocking(move || stop_server_with(&data, sig))
            .await
            .unwrap_or(false);
        if !keep {
            let d = dir.clone();
            tokio::task::spawn_blocking(move || remove_dir(&d))
                .await
                .map_err(|e| JobError::Invalid(format!("remove the scratch directory: {e}")))??;
        }
        match std::fs::remove_file(&self.marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(format!("remove {}", self.marker.display()))(e))
            }
            _ => {}
        }
        let stopped = if stopped { "server stopped, " } else { "" };
        Ok(if keep {
            format!("{stopped}kept {}", dir.display())
        } else {
            format!("{stopped}removed {}", dir.display())
        })
    }
}

fn create_private_dir(p: &Path) -> Result<(), JobError> {
    std::fs::create_dir_all(p).map_err(io(format!("create {}", p.display())))?;
    set_mode(p, 0o700)
}

fn set_mode(p: &Path, mode: u32) -> Result<(), JobError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", p.display())))
}

/// Remove a scratch directory. A few tries: the restore's own writes have
/// all ended when this runs, but a child process stopped with the drill
/// (`initdb`, killed when its step was dropped) is sent SIGKILL without
/// being waited for, and may create one more entry while the tree is
/// being removed.
fn remove_dir(p: &Path) -> Result<(), JobError> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(io(format!("remove {}", p.display()))(e)),
            Ok(()) => return Ok(()),
        }
    }
}

/// True when process `pid` exists (whoever owns it) and is not a zombie
/// waiting for its parent (or init) to reap it.
fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // /proc/PID/stat: "pid (comm) S …"; comm may hold spaces and parens.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    exists && !zombie
}

/// True when the drill that wrote `m` still runs: its pid is alive and (where
/// /proc tells) is a pgtide process, not a reused pid.
fn drill_alive(m: &Marker) -> bool {
    if !alive(m.pid as i32) {
        return false;
    }
    match std::fs::read(format!("/proc/{}/cmdline", m.pid)) {
        Ok(cmd) => String::from_utf8_lossy(&cmd).contains("pgtide"),
        Err(_) => true,
    }
}

/// The postmaster running on `data_dir`, from its `postmaster.pid` (first
/// line the pid, second the data directory), if it is alive.
fn postmaster(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let dir = lines.next()?.trim();
    let same = Path::new(dir) == data_dir
        || Path::new(dir).canonicalize().ok() == data_dir.canonicalize().ok();
    (same && alive(pid)).then_some(pid)
}

/// Stop the server on `data_dir` at once, as `pg_ctl stop -m immediate`
/// does (SIGQUIT to the postmaster), then SIGKILL if it lingers. Returns
/// whether a server was running.
pub fn stop_server(data_dir: &Path) -> bool {
    stop_server_with(data_dir, libc::SIGQUIT)
}

/// Stop the server on `data_dir` with `sig` (SIGINT: fast shutdown,
/// SIGQUIT: immediate), then SIGKILL if it lingers.
fn stop_server_with(data_dir: &Path, sig: libc::c_int) -> bool {
    let Some(pid) = postmaster(data_dir) else {
        return false;
    };
    // SAFETY: signals to the postmaster of our own scratch data directory.
    unsafe { libc::kill(pid, sig) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        // Handled here: a server that ignores SIGQUIT would hold the
        // directory; nothing of it is worth keeping.
        tracing::warn!("the scratch server (pid {pid}) ignored SIGQUIT: killing it");
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    true
}

/// Remove what drills whose pgtide process is gone left behind: stop their
/// server, remove their scratch directory and marker. Returns one line per
/// drill cleaned up. Markers of running drills are left alone.
pub fn reap() -> Vec<String> {
    reap_in(&registry())
}

fn reap_in(registry: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(rd) = std::fs::read_dir(registry) else {
        return done;
    };
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let m: Marker = match serde_json::from_slice(&text) {
            Ok(m) => m,
            Err(e) => {
                // Handled here: a marker cut short by a crash names nothing
                // that can be trusted; leave the files for a human.
                tracing::warn!(
                    "ignoring the unreadable drill marker {}: {e}",
                    path.display()
                );
                continue;
            }
        };
        if drill_alive(&m) {
            continue;
        }
        // Only what the marker names, and only a drill's own directory.
        let ours = m
            .scratch
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(PREFIX))
            && m.data_dir.starts_with(&m.scratch);
        if !ours {
            tracing::warn!(
                "ignoring the drill marker {}: it names {}, not a drill directory",
                path.display(),
                m.scratch.display()
            );
            continue;
        }
        let stopped = stop_server(&m.data_dir);
        let existed = m.scratch.exists();
        if let Err(e) = remove_dir(&m.scratch) {
            tracing::warn!("could not remove the left-over drill directory: {e}");
            continue;
        }
        let _ = std::fs::remove_file(&path);
        done.push(format!(
            "cleaned up after an interrupted drill or restore of {} (pgtide pid {}, {}): {}{}",
            m.id,
            m.pid,
            m.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
            if stopped { "stopped its server, " } else { "" },
            if existed {
                format!("removed {}", m.scratch.display())
            } else {
                format!("{} was already gone", m.scratch.display())
            }
        ));
    }
    done
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64, JobError> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| JobError::Invalid(format!("bad path {}", dir.display())))?;
    // SAFETY: statvfs writes into the zeroed struct we pass; c is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io(format!("read the free space of {}", dir.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// A command run as the server's OS user (`runuser -u USER --` as root).
pub fn as_server_user(program: &Path, os_user: Option<&str>) -> tokio::process::Command {
    let mut c = if running_as_root() {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", os_user.unwrap_or("postgres"), "--"])
            .arg(program);
        c
    } else {
        tokio::process::Command::new(program)
    };
    c.stdin(std::process::Stdio::null())
        .current_dir("/")
        .kill_on_drop(true);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_drill_is_reaped_and_a_foreign_marker_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = tmp.path().join("registry");
        std::fs::create_dir_all(&reg).unwrap();
        let scratch = tmp.path().join(format!("{PREFIX}x-1"));
        std::fs::create_dir_all(scratch.join("data")).unwrap();
        let dead = Marker {
            pid: i32::MAX as u32,
            scratch: scratch.clone(),
            data_dir: scratch.join("data"),
            started_at: Utc::now(),
            id: "20260101T000000F".into(),
        };
        std::fs::write(reg.join("a.json"), serde_json::to_vec(&dead).unwrap()).unwrap();
        let foreign = Marker {
            scratch: tmp.path().join("precious"),
            data_dir: tmp.path().join("precious/data"),
            ..dead.clone()
        };
        std::fs::create_dir_all(&foreign.data_dir).unwrap();
        std::fs::write(reg.join("b.json"), serde_json::to_vec(&foreign).unwrap()).unwrap();
        let live = Marker {
            pid: std::process::id(),
            ..dead.clone()
        };
        let done = reap_in(&reg);
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(!scratch.exists());
        assert!(tmp.path().join("precious/data").exists());
        assert!(!reg.join("a.json").exists());
        // A live drill's marker stays (this test binary's pid: its
        // cmdline names pgtide's test binary).
        std::fs::write(reg.join("c.json"), serde_json::to_vec(&live).unwrap()).unwrap();
        std::fs::create_dir_all(&scratch).unwrap();
        reap_in(&reg);
        assert!(scratch.exists());
    }
}
