//! The steps a benchmark can measure: pgtide's jobs and their peers, what
//! each is called, which `--only` group it belongs to, which peers its
//! ratios compare it with, and the command line that runs it.
//!
//! Owns: the catalogue and the argument lists (pure). Must never: run them.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// An `--only` group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    Dump,
    Restore,
    Backup,
    PhysicalRestore,
    Wal,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Dump,
        Group::Restore,
        Group::Backup,
        Group::PhysicalRestore,
        Group::Wal,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Group::Dump => "dump",
            Group::Restore => "restore",
            Group::Backup => "backup",
            Group::PhysicalRestore => "physical-restore",
            Group::Wal => "wal",
        }
    }

    /// Parses `--only`: a comma-separated list of group keys.
    pub fn parse_list(s: &str) -> Result<Vec<Group>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let g = Group::ALL
                .into_iter()
                .find(|g| g.key() == part)
                .ok_or_else(|| {
                    format!("--only {part:?}: use dump, restore, backup, physical-restore or wal, separated by commas")
                })?;
            if !out.contains(&g) {
                out.push(g);
            }
        }
        if out.is_empty() {
            return Err(
                "--only names no step: use dump, restore, backup, physical-restore or wal".into(),
            );
        }
        out.sort();
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    PgtideDump,
    PgDump,
    PgtideRestore,
    PgRestore,
    PgtideBackup1,
    PgtideBackup3,
    Basebackup0,
    Basebackup1,
    Basebackup3,
    PgbackrestBackup,
    PgtidePhysicalRestore,
    PgbackrestRestore,
    TarExtract,
    PgtideWal,
    PgReceivewal,
}

impl Step {
    pub const ALL: [Step; 15] = [
        Step::PgtideDump,
        Step::PgDump,
        Step::PgtideRestore,
        Step::PgRestore,
        Step::PgtideBackup1,
        Step::PgtideBackup3,
        Step::Basebackup0,
        Step::Basebackup1,
        Step::Basebackup3,
        Step::PgbackrestBackup,
        Step::PgtidePhysicalRestore,
        Step::PgbackrestRestore,
        Step::TarExtract,
        Step::PgtideWal,
        Step::PgReceivewal,
    ];

    pub fn group(self) -> Group {
        use Step::*;
        match self {
            PgtideDump | PgDump => Group::Dump,
            PgtideRestore | PgRestore => Group::Restore,
            PgtideBackup1 | PgtideBackup3 | Basebackup0 | Basebackup1 | Basebackup3
            | PgbackrestBackup => Group::Backup,
            PgtidePhysicalRestore | PgbackrestRestore | TarExtract => Group::PhysicalRestore,
            PgtideWal | PgReceivewal => Group::Wal,
        }
    }

    /// The program it runs (`pgtide` for pgtide's own jobs).
    pub fn tool(self) -> &'static str {
        use Step::*;
        match self {
            PgtideDump
            | PgtideRestore
            | PgtideBackup1
            | PgtideBackup3
            | PgtidePhysicalRestore
            | PgtideWal => "pgtide",
            PgDump => "pg_dump",
            PgRestore => "pg_restore",
            Basebackup0 | Basebackup1 | Basebackup3 => "pg_basebackup",
            PgbackrestBackup | PgbackrestRestore => "pgbackrest",
            PgReceivewal => "pg_receivewal",
            TarExtract => "tar",
        }
    }

    pub fn is_pgtide(self) -> bool {
        self.tool() == "pgtide"
    }

    pub fn name(self, jobs: usize) -> String {
        use Step::*;
        match self {
            PgtideDump => format!("pgtide dump -j{jobs}"),
            PgDump => format!("pg_dump -Fd -j{jobs}"),
            PgtideRestore => format!("pgtide restore -j{jobs}"),
            PgRestore => format!("pg_restore -j{jobs}"),
            PgtideBackup1 => "pgtide backup zstd:1".into(),
            PgtideBackup3 => "pgtide backup zstd:3".into(),
            Basebackup0 => "pg_basebackup -Ft none".into(),
            Basebackup1 => "pg_basebackup -Ft client-zstd:1".into(),
            Basebackup3 => "pg_basebackup -Ft client-zstd:3".into(),
            PgbackrestBackup => format!("pgbackrest backup zst:1 p{jobs}"),
            PgtidePhysicalRestore => "pgtide restore --pgdata".into(),
            PgbackrestRestore => format!("pgbackrest restore p{jobs}"),
            TarExtract => "tar -I zstd -xf base.tar.zst".into(),
            PgtideWal => "pgtide wal stream".into(),
            PgReceivewal => "pg_receivewal".into(),
        }
    }

    /// The peers this step's ratios compare it with.
    pub fn peers(self) -> &'static [Step] {
        use Step::*;
        match self {
            PgtideDump => &[PgDump],
            PgtideRestore => &[PgRestore],
            PgtideBackup1 => &[Basebackup1, PgbackrestBackup],
            PgtideBackup3 => &[Basebackup3],
            PgtidePhysicalRestore => &[PgbackrestRestore, TarExtract],
            PgtideWal => &[PgReceivewal],
            _ => &[],
        }
    }

    /// Takes a worker count (pg_basebackup does not).
    pub fn uses_jobs(self) -> bool {
        !matches!(
            self,
            Step::Basebackup0 | Step::Basebackup1 | Step::Basebackup3
        )
    }

    /// Measured again at each `--scale-jobs` count.
    pub fn scales(self) -> bool {
        matches!(self, Step::PgtideDump | Step::PgDump | Step::PgtideBackup1)
    }

    /// Where a peer leaves its output, under the work directory (pgtide's
    /// jobs write to the repository, except `wal stream`'s scratch one).
    pub fn output_dir(self, work: &Path) -> PathBuf {
        use Step::*;
        work.join(match self {
            PgDump => "pg_dump.dir",
            Basebackup0 => "basebackup-none",
            Basebackup1 => "basebackup-zstd1",
            Basebackup3 => "basebackup-zstd3",
            PgbackrestBackup => "pgbackrest/repo",
            PgtidePhysicalRestore => "restore-pgtide",
            PgbackrestRestore => "restore-pgbackrest",
            TarExtract => "restore-tar",
            PgtideWal => "wal-repo",
            PgReceivewal => "pg_receivewal",
            PgtideDump | PgtideRestore | PgRestore | PgtideBackup1 | PgtideBackup3 => "repo",
        })
    }
}

/// A step at a number of workers: `--jobs`, or one of `--scale-jobs` for
/// the steps that scale with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Task {
    pub step: Step,
    pub jobs: usize,
}

impl Task {
    /// The step's name; `-jN` added for a worker count other than `main`
    /// when the name does not already say it.
    pub fn name(self, main: usize) -> String {
        if !self.step.uses_jobs() {
            return self.step.name(main);
        }
        let n = self.step.name(self.jobs);
        if self.jobs == main || n.contains(&format!("-j{}", self.jobs)) {
            n
        } else {
            format!("{n} -j{}", self.jobs)
        }
    }

    /// The peers to compare with, at the same worker count.
    pub fn peers(self) -> Vec<Task> {
        self.step
            .peers()
            .iter()
            .map(|p| Task {
                step: *p,
                jobs: self.jobs,
            })
            .collect()
    }
}

/// What the command builders need to know.
pub struct CommandContext<'a> {
    /// A libpq `key=value` string for the measured database (no password).
    pub db: &'a str,
    /// The same for the scratch database a logical restore goes into.
    pub restore_db: &'a str,
    pub repo: &'a str,
    pub work: &'a Path,
    pub jobs: usize,
    /// The dump and backup the restores read.
    pub dump_id: Option<&'a str>,
    pub backup_id: Option<&'a str>,
    pub wal_end: Option<&'a str>,
    pub pgbackrest_config: Option<&'a Path>,
}

pub const WAL_SLOT_PGTIDE: &str = "pgtide_bench_pgtide";
pub const WAL_SLOT_RECEIVEWAL: &str = "pgtide_bench_receivewal";
pub const PGBACKREST_STANZA: &str = "bench";

/// The arguments (after the program) of `step`, or why it cannot run yet.
pub fn arguments<'a>(step: Step, c: &CommandContext<'a>) -> Result<Vec<OsString>, String> {
    use Step::*;
    let j = c.jobs.to_string();
    let out = step.output_dir(c.work).into_os_string();
    let s = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
    let need = |v: Option<&'a str>, what: &str| v.ok_or_else(|| format!("no {what} to read"));
    let mut args = match step {
        PgtideDump => s(&[
            "--json", "dump", "--db", c.db, "--repo", c.repo, "--jobs", &j,
        ]),
        PgDump => s(&["-Fd", "-j", &j, "-d", c.db, "-f"]),
        PgtideRestore => s(&[
            "--json",
            "restore",
            need(c.dump_id, "dump")?,
            "--repo",
            c.repo,
            "--db",
            c.restore_db,
            "--create",
            "--jobs",
            &j,
        ]),
        PgRestore => {
            let mut a = s(&["-j", &j, "-d", c.restore_db]);
            a.push(PgDump.output_dir(c.work).into_os_string());
            return Ok(a);
        }
        PgtideBackup1 | PgtideBackup3 => s(&[
            "--json",
            "backup",
            "--db",
            c.db,
            "--repo",
            c.repo,
            "--jobs",
            &j,
            "--compress",
            if step == PgtideBackup1 {
                "zstd:1"
            } else {
                "zstd:3"
            },
        ]),
        Basebackup0 | Basebackup1 | Basebackup3 => s(&[
            "-d",
            c.db,
            "-Ft",
            "-c",
            "fast",
            "-Z",
            match step {
                Basebackup0 => "none",
                Basebackup1 => "client-zstd:1",
                _ => "client-zstd:3",
            },
            "-D",
        ]),
        PgbackrestBackup | PgbackrestRestore => {
            let config = c
                .pgbackrest_config
                .ok_or_else(|| "pgBackRest is not configured".to_owned())?;
            let mut a = vec![OsString::from("--config"), config.as_os_str().to_owned()];
            a.extend(s(&["--stanza", PGBACKREST_STANZA]));
            if step == PgbackrestBackup {
                a.extend(s(&["--type", "full", "backup"]));
            } else {
                let mut p = OsString::from("--pg1-path=");
                p.push(&out);
                a.push(p);
                a.push("restore".into());
            }
            return Ok(a);
        }
        TarExtract => {
            let mut a = vec![OsString::from("-C"), out];
            a.extend(s(&["-I", "zstd", "-xf"]));
            a.push(
                Basebackup1
                    .output_dir(c.work)
                    .join("base.tar.zst")
                    .into_os_string(),
            );
            return Ok(a);
        }
        PgtidePhysicalRestore => s(&[
            "--json",
            "restore",
            need(c.backup_id, "backup")?,
            "--repo",
            c.repo,
            "--jobs",
            &j,
            "--pgdata",
        ]),
        PgtideWal => {
            let mut a = s(&[
                "--json",
                "wal",
                "stream",
                "--db",
                c.db,
                "--slot",
                WAL_SLOT_PGTIDE,
                "--stop-at",
                need(c.wal_end, "WAL burst")?,
                "--repo",
            ]);
            a.push(out);
            return Ok(a);
        }
        PgReceivewal => s(&[
            "-d",
            c.db,
            "--slot",
            WAL_SLOT_RECEIVEWAL,
            "--endpos",
            need(c.wal_end, "WAL burst")?,
            "--no-loop",
            "-D",
        ]),
    };
    if matches!(
        step,
        PgDump | Basebackup0 | Basebackup1 | Basebackup3 | PgtidePhysicalRestore | PgReceivewal
    ) {
        args.push(out);
    }
    Ok(args)
}

/// A libpq `key='value'` string with the quotes left out where a value
/// needs none (`host=127.0.0.1 port=5432`): the same connection, easier to
/// read in a report and to paste.
pub fn plain_conninfo(s: &str) -> String {
    let simple = |v: &str| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-/:@,+".contains(c))
    };
    let mut out: Vec<String> = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ' ') {
                value.push(c);
            }
        }
        if simple(&value) {
            out.push(format!("{key}={value}"));
        } else {
            let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
            out.push(format!("{key}='{escaped}'"));
        }
    }
    out.join(" ")
}

/// A command line as text, for the report.
pub fn display(program: &str, args: &[OsString]) -> String {
    let mut s = program.to_owned();
    for a in args {
        let a = a.to_string_lossy();
        s.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_parses_group_keys() {
        assert_eq!(
            Group::parse_list("wal,dump,dump").unwrap(),
            vec![Group::Dump, Group::Wal]
        );
        assert!(Group::parse_list("dumps")
            .unwrap_err()
            .contains("\"dumps\""));
        assert!(Group::parse_list(",").is_err());
    }

    #[test]
    fn names_are_unique_and_peers_are_peers() {
        let names: std::collections::BTreeSet<String> =
            Step::ALL.iter().map(|s| s.name(2)).collect();
        assert_eq!(names.len(), Step::ALL.len());
        for s in Step::ALL {
            for p in s.peers() {
                assert!(!p.is_pgtide());
                assert_eq!(p.group(), s.group());
            }
        }
    }

    #[test]
    fn conninfo_loses_only_needless_quotes() {
        assert_eq!(
            plain_conninfo(
                "host='127.0.0.1' port='5432' user='postgres' dbname='my db' password='a\\'b'"
            ),
            "host=127.0.0.1 port=5432 user=postgres dbname='my db' password='a\\'b'"
        );
        assert_eq!(
            plain_conninfo("host='/run/pg' sslmode='prefer'"),
            "host=/run/pg sslmode=prefer"
        );
        assert_eq!(plain_conninfo(""), "");
    }

    #[test]
    fn tasks_at_other_worker_counts_say_so() {
        let t = |step, jobs| Task { step, jobs }.name(2);
        assert_eq!(t(Step::PgtideDump, 4), "pgtide dump -j4");
        assert_eq!(t(Step::PgtideBackup1, 2), "pgtide backup zstd:1");
        assert_eq!(t(Step::PgtideBackup1, 1), "pgtide backup zstd:1 -j1");
        let peers: Vec<String> = Task {
            step: Step::PgtideBackup1,
            jobs: 1,
        }
        .peers()
        .into_iter()
        .map(|p| p.name(2))
        .collect();
        assert_eq!(
            peers,
            [
                "pg_basebackup -Ft client-zstd:1",
                "pgbackrest backup zst:1 p1 -j1"
            ]
        );
    }

    #[test]
    fn commands_name_their_inputs() {
        let work = Path::new("/w");
        let c = CommandContext {
            db: "host=h dbname=d",
            restore_db: "host=h dbname=r",
            repo: "/w/repo",
            work,
            jobs: 2,
            dump_id: Some("D1"),
            backup_id: None,
            wal_end: Some("0/3000000"),
            pgbackrest_config: None,
        };
        let a = arguments(Step::PgRestore, &c).unwrap();
        assert_eq!(
            display("pg_restore", &a),
            "pg_restore -j 2 -d 'host=h dbname=r' /w/pg_dump.dir"
        );
        assert!(arguments(Step::PgtidePhysicalRestore, &c)
            .unwrap_err()
            .contains("backup"));
        assert!(arguments(Step::PgbackrestBackup, &c).is_err());
        let a = arguments(Step::PgReceivewal, &c).unwrap();
        assert_eq!(a.last().unwrap(), "/w/pg_receivewal");
        assert!(display("pg_receivewal", &a)
            .ends_with("--endpos 0/3000000 --no-loop -D /w/pg_receivewal"));
    }
}
