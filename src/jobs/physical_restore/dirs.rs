//! The directories of a physical restore: preparing the data and
//! tablespace directories (and putting them back when a restore stops),
//! joining manifest paths safely, flushing what was written, and giving it
//! to the server's OS user.

use super::*;

pub(super) fn is_empty_dir(p: &Path) -> Result<bool, JobError> {
    match std::fs::read_dir(p) {
        Ok(mut rd) => Ok(rd.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io(format!("read {}", p.display()))(e)),
    }
}

/// Make `dir` an empty directory (mode 0700), refusing to touch a non-empty
/// one unless `force`. True when it did not exist before. Blocking.
pub(super) fn prepare_dir(dir: &Path, force: bool, what: &'static str) -> Result<bool, JobError> {
    let created = std::fs::symlink_metadata(dir).is_err();
    if !is_empty_dir(dir)? {
        if !force {
            return Err(JobError::DirectoryNotEmpty {
                what,
                path: dir.display().to_string(),
            });
        }
        empty_dir(dir)?;
    }
    std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("chmod {}", dir.display())))?;
    }
    Ok(created)
}

/// Remove everything inside `dir` (symbolic links, not what they point
/// at). Blocking.
pub(super) fn empty_dir(dir: &Path) -> Result<(), JobError> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        r => r.map_err(io(format!("read {}", dir.display())))?,
    };
    for e in entries {
        let p = e.map_err(io(format!("read {}", dir.display())))?.path();
        let r = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(format!("remove {}", p.display()))(e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// After an interrupted restore: the directories it prepared as it found
/// them, the ones it created removed and the others (empty, or emptied
/// by `--force`) emptied. Blocking.
pub(super) fn unprepare(prepared: &[(PathBuf, bool)]) -> Result<(), JobError> {
    for (dir, created) in prepared {
        if !*created {
            empty_dir(dir)?;
            continue;
        }
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(format!("remove {}", dir.display()))(e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A relative archive path that cannot escape its directory.
/// (`id`: the backup, named in the error.)
pub(super) fn safe_join(id: &str, base: &Path, rel: &str) -> Result<PathBuf, JobError> {
    let p = Path::new(rel.trim_end_matches('/'));
    if p.is_absolute()
        || p.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return Err(JobError::Damaged {
            id: id.to_string(),
            what: format!("its manifest names the unsafe path {rel:?}"),
        });
    }
    Ok(base.join(p))
}

/// Flush every file system holding restored files (`syncfs(2)` on Linux;
/// elsewhere a full `sync`).
pub(super) fn sync_filesystems(dirs: &[PathBuf]) -> Result<(), JobError> {
    for d in dirs {
        let f = std::fs::File::open(d).map_err(io(format!("open {}", d.display())))?;
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::io::AsRawFd;
            // SAFETY: syncfs only reads the descriptor, which `f` keeps open.
            if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
                return Err(io(format!("sync {}", d.display()))(
                    std::io::Error::last_os_error(),
                ));
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            drop(f);
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
        }
    }
    Ok(())
}

pub fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: as root, give the files to the OS user
/// that will run the server (`--os-user`, default `postgres`).
pub(super) fn chown_if_root(
    pgdata: &Path,
    ts: &HashMap<u32, PathBuf>,
    user: Option<&str>,
) -> Result<(), JobError> {
    if !running_as_root() {
        return Ok(());
    }
    let user = user.unwrap_or("postgres");
    for dir in std::iter::once(pgdata).chain(ts.values().map(PathBuf::as_path)) {
        let st = std::process::Command::new("chown")
            .args(["-R", &format!("{user}:")])
            .arg(dir)
            .status()
            .map_err(io("run chown"))?;
        if !st.success() {
            return Err(JobError::Invalid(format!(
                "could not give {} to OS user {user} (name the server's user with --os-user)",
                dir.display()
            )));
        }
    }
    Ok(())
}
