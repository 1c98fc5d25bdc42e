//! pgBackRest as a peer: its configuration in a scratch directory, written
//! by the bench, and the checks that say whether it can run here at all.
//!
//! The differences from a production set-up, on purpose: no
//! `archive_command` (the bench does not change the server's settings), so
//! `archive-check=n` and `archive-copy=n` — a backup that is not
//! consistent on its own, like pgtide's and pg_basebackup's without their
//! WAL; compression `zst` at pgtide's default level 1; `process-max` =
//! `--jobs`; `start-fast=y` (pgtide and pg_basebackup here also ask for a
//! fast checkpoint); the repository on the local disk.
//!
//! Owns: the configuration text (pure) and the scratch directories. Must
//! never: touch a configuration outside the work directory.

use std::path::{Path, PathBuf};

/// Who owns the data directory: pgBackRest reads it directly and runs as
/// that OS user.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone)]
pub struct PgBackRest {
    pub program: PathBuf,
    pub config: PathBuf,
    pub dir: PathBuf,
    /// Set when the bench runs as root and the server as another user.
    pub run_as: Option<Owner>,
}

pub struct Facts<'a> {
    pub data_dir: &'a Path,
    pub socket_dir: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub jobs: usize,
}

/// The configuration file's text.
pub fn config_text(dir: &Path, f: &Facts<'_>) -> String {
    let d = dir.display();
    format!(
        "[global]\n\
         repo1-path={d}/repo\n\
         log-path={d}/log\n\
         lock-path={d}/lock\n\
         spool-path={d}/spool\n\
         compress-type=zst\n\
         compress-level=1\n\
         process-max={jobs}\n\
         start-fast=y\n\
         archive-check=n\n\
         archive-copy=n\n\
         log-level-console=error\n\
         log-level-file=off\n\
         \n\
         [{stanza}]\n\
         pg1-path={data}\n\
         pg1-port={port}\n\
         pg1-socket-path={socket}\n\
         pg1-user={user}\n",
        jobs = f.jobs,
        stanza = super::steps::PGBACKREST_STANZA,
        data = f.data_dir.display(),
        port = f.port,
        socket = f.socket_dir,
        user = f.user,
    )
}

/// Whether pgBackRest can run against this data directory from this
/// process, and as whom.
pub fn owner_check(data_dir: &Path) -> Result<Option<Owner>, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(data_dir).map_err(|e| {
        format!(
            "it reads the data directory, and {} is not readable here: {e}",
            data_dir.display()
        )
    })?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if me == meta.uid() {
        Ok(None)
    } else if me == 0 {
        Ok(Some(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        }))
    } else {
        Err(format!(
            "it must run as the owner of {} (uid {}), and this is uid {me}",
            data_dir.display(),
            meta.uid()
        ))
    }
}

/// Makes `path` (a directory) belong to `owner`, when set.
pub fn give(path: &Path, owner: Option<Owner>) -> std::io::Result<()> {
    if let Some(o) = owner {
        std::os::unix::fs::chown(path, Some(o.uid), Some(o.gid))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_scratch_repository_and_the_server() {
        let t = config_text(
            Path::new("/w/pgbackrest"),
            &Facts {
                data_dir: Path::new("/pg/data"),
                socket_dir: "/run/pg",
                port: 5433,
                user: "postgres",
                jobs: 2,
            },
        );
        assert!(t.contains("repo1-path=/w/pgbackrest/repo\n"));
        assert!(t.contains("process-max=2\n"));
        assert!(t.contains("compress-type=zst\ncompress-level=1\n"));
        assert!(t.contains("[bench]\npg1-path=/pg/data\npg1-port=5433\n"));
    }
}
