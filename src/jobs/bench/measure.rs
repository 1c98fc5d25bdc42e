//! Measuring one step: run a child process to its end and read what it
//! cost — wall time, its CPU and peak RSS (`wait4`), the server's CPU
//! (`/proc` of the postmaster) and what the rest of the machine did.
//!
//! Owns: child processes of the bench and the `/proc` arithmetic. Must
//! never: know what a step means (the caller builds the command and reads
//! its output).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// What one child process cost.
#[derive(Debug, Clone, Default)]
pub struct ChildCost {
    pub wall_seconds: f64,
    /// user + system CPU of the child and every descendant it waited for.
    pub cpu_seconds: f64,
    /// The largest resident set of one process of the tree (`ru_maxrss` of
    /// `wait4`: the child's own, or that of a descendant it waited for,
    /// whichever is larger). Not a sum.
    pub peak_rss_bytes: u64,
    /// The exit code, or 128 + the signal that ended it.
    pub code: i32,
}

/// A finished child: its cost and where its output went.
#[derive(Debug)]
pub struct ChildRun {
    pub cost: ChildCost,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl ChildRun {
    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The last non-empty line of stderr (what a tool says when it fails).
    pub fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines
            .iter()
            .rev()
            .take(3)
            .rev()
            .cloned()
            .collect::<Vec<_>>();
        tail.join(" / ")
    }
}

/// Runs `cmd` to its end with stdout and stderr in `out_prefix.stdout` and
/// `.stderr`, and reaps it with `wait4` so that its resource usage
/// (including its waited-for descendants: pg_dump's workers, pgtide's
/// pg_dump) is its alone. Its pid goes into `pid` while it runs (for a
/// signal). Blocking: call it on the blocking pool.
pub fn run_child(mut cmd: Command, out_prefix: &Path, pid: &ChildPid) -> std::io::Result<ChildRun> {
    let stdout = out_prefix.with_extension("stdout");
    let stderr = out_prefix.with_extension("stderr");
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(&stdout)?)
        .stderr(fs::File::create(&stderr)?);
    let start = Instant::now();
    let child = cmd.spawn()?;
    let child_pid = child.id() as libc::pid_t;
    pid.set(Some(child_pid));
    // Wait for the end without reaping (the pid stays ours), forget the pid,
    // then reap: a signal never reaches a reused pid.
    loop {
        // SAFETY: siginfo_t is plain old data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: child_pid is our own child, not yet reaped.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                child_pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let guard = pid.forget();
    let pid = child_pid;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own child, not yet reaped (std's Child is never
        // waited on: dropping it does not wait).
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    drop(guard);
    let wall_seconds = start.elapsed().as_secs_f64();
    drop(child);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    };
    Ok(ChildRun {
        cost: ChildCost {
            wall_seconds,
            cpu_seconds: tv(usage.ru_utime) + tv(usage.ru_stime),
            // Linux reports ru_maxrss in KiB.
            peak_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
            code,
        },
        stdout,
        stderr,
    })
}

/// The pid of a running child, for a signal from another thread; cleared
/// (under its lock) before the child is reaped.
#[derive(Debug, Default)]
pub struct ChildPid(std::sync::Mutex<Option<libc::pid_t>>);

impl ChildPid {
    fn set(&self, pid: Option<libc::pid_t>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = pid;
    }

    /// Clears the pid and holds the lock until the guard is dropped.
    fn forget(&self) -> std::sync::MutexGuard<'_, Option<libc::pid_t>> {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *g = None;
        g
    }

    /// Sends `signal` to the child, if it has not ended yet.
    pub fn signal(&self, signal: libc::c_int) {
        if let Some(p) = *self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            // SAFETY: p is our child, not yet reaped (it is reaped only
            // after the pid is cleared under this lock).
            unsafe { libc::kill(p, signal) };
        }
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Fields after the command name of `/proc/PID/stat` (field 3, the state,
/// is index 0).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn ticks(fields: &[String], range: std::ops::Range<usize>) -> u64 {
    fields[range]
        .iter()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum()
}

/// The server's CPU, read from `/proc`: the postmaster's own and reaped
/// children's time plus that of its live children, so backends that ended
/// during a step are counted too.
#[derive(Debug, Clone)]
pub struct ServerCpu {
    postmaster: u32,
}

impl ServerCpu {
    /// The postmaster of the data directory `data_dir`, when its
    /// `postmaster.pid` is readable and names a live process here.
    pub fn open(data_dir: &Path) -> Result<ServerCpu, String> {
        let pidfile = data_dir.join("postmaster.pid");
        let text = fs::read_to_string(&pidfile)
            .map_err(|e| format!("cannot read {}: {e}", pidfile.display()))?;
        let pid: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("{} names no process", pidfile.display()))?;
        if stat_fields(pid).is_none() {
            return Err(format!(
                "the postmaster (pid {pid} in {}) is not a process of this machine",
                pidfile.display()
            ));
        }
        Ok(ServerCpu { postmaster: pid })
    }

    /// The postmaster's live children.
    pub fn children(&self) -> Vec<u32> {
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                stat_fields(*pid)
                    .and_then(|f| f.get(1)?.parse::<u32>().ok())
                    .is_some_and(|ppid| ppid == self.postmaster)
            })
            .collect()
    }

    /// The live children not in `before` that serve a connection (a client
    /// backend or walsender; not an autovacuum or parallel worker, which
    /// the server starts on its own).
    pub fn new_connections(&self, before: &[u32]) -> usize {
        self.children()
            .into_iter()
            .filter(|pid| !before.contains(pid))
            .filter(|pid| {
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                !cmd.is_empty() && !cmd.contains("autovacuum") && !cmd.contains("parallel worker")
            })
            .count()
    }

    /// CPU seconds the server has used so far.
    pub fn seconds(&self) -> Option<f64> {
        // Index 11..15 are utime, stime, cutime, cstime (fields 14–17).
        let pm = stat_fields(self.postmaster)?;
        let mut total = ticks(&pm, 11..15);
        for child in self.children() {
            if let Some(f) = stat_fields(child) {
                total += ticks(&f, 11..13);
            }
        }
        Some(total as f64 / clock_ticks())
    }
}

/// CPU seconds the whole machine has been busy so far (all cores).
pub fn machine_busy_seconds() -> Option<f64> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy = all but idle
    // and iowait.
    let busy = v
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4);
    Some(busy.map(|(_, t)| *t).sum::<u64>() as f64 / clock_ticks())
}

/// Drops the page cache (root only), after a `sync`: every step then reads
/// its input from disk. False when it could not.
pub fn drop_page_cache() -> bool {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Bytes of the files under `path` (0 when it does not exist).
pub fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_cost_is_measured() {
        let dir = std::env::temp_dir().join(format!("pgtide-measure-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let pid = ChildPid::default();
        let run = run_child(cmd, &dir.join("t"), &pid).unwrap();
        pid.signal(libc::SIGINT); // ended: nothing to signal
        assert_eq!(run.cost.code, 3);
        assert_eq!(run.stdout_text().trim(), "out");
        assert_eq!(run.stderr_tail(), "err");
        assert!(run.cost.peak_rss_bytes > 0);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// ru_maxrss of wait4 is the largest process of the tree: here a
    /// grandchild holding 30 MB under a small shell.
    #[test]
    fn peak_rss_covers_waited_descendants() {
        let dir = std::env::temp_dir().join(format!("pgtide-measure-rss-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "sh -c 'x=$(head -c 30000000 /dev/zero | tr \"\\0\" a); echo ${#x}'; true",
        ]);
        let run = run_child(cmd, &dir.join("t"), &ChildPid::default()).unwrap();
        assert_eq!(run.stdout_text().trim(), "30000000");
        assert!(run.cost.peak_rss_bytes >= 30_000_000, "{:?}", run.cost);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn own_process_is_not_a_postmaster_directory() {
        let dir = std::env::temp_dir();
        assert!(ServerCpu::open(&dir.join("no-such-pgdata")).is_err());
        assert!(machine_busy_seconds().is_some());
    }
}
