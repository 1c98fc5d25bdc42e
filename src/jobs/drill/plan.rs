//! What a drill will do, decided before anything is written: where the copy
//! goes, how its private server is configured, which checks run, and how
//! their results are judged. Pure functions of facts read beforehand (the
//! manifest, the archive listing, the scratch path); no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::jobs::physical_restore::select::Target;
use crate::pg::lsn::{segment_name, Lsn};

/// The port of the scratch server. It listens on no TCP address: the port
/// only names its socket file, inside the private scratch directory, so it
/// can never collide with another server.
pub const SCRATCH_PORT: u16 = 5432;

/// Longest Unix socket path (`sun_path` holds 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Files the drill writes beside the data directory.
pub const HBA_FILE: &str = "pg_hba.conf";
pub const IDENT_FILE: &str = "pg_ident.conf";
pub const DATA_DIR: &str = "data";
pub const TABLESPACE_DIR: &str = "tblspc";
/// The log of a scratch cluster made by initdb (a restored one logs into its
/// data directory, `physical_restore::RECOVERY_LOG`).
pub const SERVER_LOG: &str = "server.log";

/// A check the drill runs on the restored copy, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Physical: recovery reached the target (or the end of the archive).
    RecoveryPoint,
    /// Dump: every table holds the rows the manifest counted.
    RowCounts,
    /// amcheck: heap (14+) and every B-tree with `heapallindexed`.
    Amcheck,
    /// Physical: a `count(*)` of every table of every database.
    TablesReadable,
    /// `--sql FILE`: every statement returns true.
    Sql,
}

/// Where a drill puts its copy, what it checks. `--dry-run`-printable.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub id: String,
    /// "backup" or "dump".
    pub kind: &'static str,
    /// The drill's own directory: the data directory, the socket, the
    /// server's hba file; removed at the end.
    pub scratch: PathBuf,
    pub data_dir: PathBuf,
    /// Tablespace oid → its directory inside the scratch directory.
    pub tablespaces: Vec<(String, PathBuf)>,
    /// PostgreSQL major version of the scratch server.
    pub major: u32,
    /// Bytes the copy needs on the scratch file system (an estimate).
    pub needs_bytes: u64,
    pub target: String,
    pub checks: Vec<Check>,
}

impl Plan {
    pub fn socket_path(&self) -> PathBuf {
        self.scratch.join(format!(".s.PGSQL.{SCRATCH_PORT}"))
    }

    /// A scratch path too long for the server's socket is refused before
    /// anything is written.
    pub fn check_socket_path(&self) -> Result<(), String> {
        let n = self.socket_path().as_os_str().len();
        if n > MAX_SOCKET_PATH {
            return Err(format!(
                "scratch directory {} is too deep for a Unix socket path ({n} bytes, at most {MAX_SOCKET_PATH}): choose a shorter --scratch",
                self.scratch.display()
            ));
        }
        Ok(())
    }
}

/// The plan for a physical backup.
pub fn backup_plan(
    m: &crate::repo::manifest::BackupManifest,
    scratch: &Path,
    target: &Target,
    sql: bool,
) -> Plan {
    let mut checks = vec![Check::RecoveryPoint, Check::Amcheck, Check::TablesReadable];
    if sql {
        checks.push(Check::Sql);
    }
    Plan {
        id: m.id.clone(),
        kind: "backup",
        scratch: scratch.to_path_buf(),
        data_dir: scratch.join(DATA_DIR),
        tablespaces: m
            .tablespaces
            .iter()
            .map(|t| {
                (
                    t.oid.to_string(),
                    scratch.join(TABLESPACE_DIR).join(t.oid.to_string()),
                )
            })
            .collect(),
        major: m.server_version_num / 10000,
        // The files, plus room for the WAL replay brings in (the server
        // recycles segments; a few are enough).
        needs_bytes: m.stats.raw_bytes + 4 * m.wal_segment_size,
        target: target_text(target),
        checks,
    }
}

/// The plan for a logical dump, restored into a cluster of `major`.
pub fn dump_plan(
    m: &crate::repo::manifest::DumpManifest,
    scratch: &Path,
    major: u32,
    sql: bool,
) -> Plan {
    let mut checks = vec![Check::RowCounts, Check::Amcheck];
    if sql {
        checks.push(Check::Sql);
    }
    Plan {
        id: m.id.clone(),
        kind: "dump",
        scratch: scratch.to_path_buf(),
        data_dir: scratch.join(DATA_DIR),
        tablespaces: Vec::new(),
        major,
        // A fresh cluster (~40 MB), the rows, and as much again for indexes.
        needs_bytes: (64 << 20) + m.stats.raw_bytes * 2,
        target: "dump snapshot".into(),
        checks,
    }
}

pub fn target_text(t: &Target) -> String {
    match t {
        Target::End => "end of the archive".into(),
        Target::Time { text, .. } => format!("time {text}"),
        Target::Lsn(l) => format!("lsn {l}"),
        Target::Xid(x) => format!("xid {x}"),
        Target::Name(n) => format!("restore point {n}"),
        Target::Immediate => "consistency (immediate)".into(),
    }
}

/// Settings of the scratch server, appended to `postgresql.auto.conf` after
/// the backup's own (later lines win). It must be private (no TCP, its
/// socket in the scratch directory, trust only there), harmless (never
/// archive into the production repository, run no production hook, wait for
/// no synchronous standby) and able to start on a smaller machine than the
/// one backed up.
pub fn server_settings(scratch: &Path, major: u32) -> Vec<(String, String)> {
    let s = |k: &str, v: &str| (k.to_string(), v.to_string());
    let dir = scratch.display().to_string();
    let mut out = vec![
        s("listen_addresses", ""),
        s("unix_socket_directories", &dir),
        s("unix_socket_permissions", "0700"),
        s("port", &SCRATCH_PORT.to_string()),
        s("hba_file", &scratch.join(HBA_FILE).display().to_string()),
        s(
            "ident_file",
            &scratch.join(IDENT_FILE).display().to_string(),
        ),
        s("cluster_name", "pgtide-drill"),
        s("archive_mode", "off"),
        s("archive_command", ""),
        s("archive_cleanup_command", ""),
        s("recovery_end_command", ""),
        s("primary_conninfo", ""),
        s("primary_slot_name", ""),
        s("synchronous_standby_names", ""),
        // Recovery runs without read-only sessions: the drill connects after
        // promotion, and the primary's max_connections & co. need not fit.
        s("hot_standby", "off"),
        s("ssl", "off"),
        s("logging_collector", "off"),
        s("log_destination", "stderr"),
        s("shared_buffers", "128MB"),
        s("huge_pages", "off"),
        s("fsync", "off"),
        s("statement_timeout", "0"),
        s("default_transaction_read_only", "off"),
        // Never the production server's pid file (Debian sets one).
        s("external_pid_file", ""),
    ];
    if major <= 14 {
        // Removed in 15; elsewhere it may name a production path.
        out.push(s("stats_temp_directory", "pg_stat_tmp"));
    }
    out
}

/// The postgresql.conf of a restored copy whose backup had none.
pub const NO_CONF: &str = "# written by pgtide drill: the backed-up cluster kept its configuration\n# outside its data directory; the settings are in postgresql.auto.conf\n";

/// The pg_hba.conf of a scratch server: trust on its socket, which only the
/// server's OS user (and root) can reach; nothing else.
pub const HBA: &str =
    "# written by pgtide drill: the socket is in a private directory\nlocal all all trust\n";

/// What "recovery reached the expected point" means, from the facts read
/// before the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Replay must reach this LSN (a `--target-lsn`, or the start of the
    /// archive's last segment when recovering to the end), on `timeline`.
    AtLeast {
        lsn: Lsn,
        timeline: u32,
        why: String,
    },
    /// Recovery must have stopped at the configured target (time, xid,
    /// name, immediate): PostgreSQL logs "recovery stopping".
    Stopped,
}

/// The expectation for `target`, given the backup's consistency point and
/// the complete segments the archive holds per timeline.
pub fn expect(
    target: &Target,
    backup_end: Lsn,
    backup_timeline: u32,
    held: &BTreeMap<u32, BTreeSet<u64>>,
    seg_size: u64,
) -> Expect {
    match target {
        Target::Lsn(l) => Expect::AtLeast {
            lsn: (*l).max(backup_end),
            timeline: backup_timeline,
            why: format!("the target {l}"),
        },
        Target::End => {
            // `--target-timeline latest`: the newest timeline with segments.
            let newest = held
                .iter()
                .rfind(|(t, s)| **t >= backup_timeline && !s.is_empty());
            match newest.and_then(|(t, s)| s.iter().next_back().map(|l| (*t, *l))) {
                Some((tli, last)) if Lsn(last * seg_size) > backup_end => Expect::AtLeast {
                    lsn: Lsn(last * seg_size),
                    timeline: tli,
                    why: format!(
                        "the archive's last segment {}",
                        segment_name(tli, last, seg_size)
                    ),
                },
                _ => Expect::AtLeast {
                    lsn: backup_end,
                    timeline: backup_timeline,
                    why: "the backup's consistency point".into(),
                },
            }
        }
        _ => Expect::Stopped,
    }
}

/// The first segment the archive lacks between `from` (where replay
/// stopped) and `to` on `timeline`: the reason recovery ended early.
pub fn first_gap(
    held: &BTreeMap<u32, BTreeSet<u64>>,
    timeline: u32,
    from: Lsn,
    to: Lsn,
    seg_size: u64,
) -> Option<String> {
    let set = held.get(&timeline)?;
    (from.segno(seg_size)..=to.segno(seg_size))
        .find(|n| !set.contains(n))
        .map(|n| segment_name(timeline, n, seg_size))
}

/// One table whose restored row count differs from the dump's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountMismatch {
    pub table: String,
    pub expected: u64,
    /// `None`: the table is missing from the restored database.
    pub found: Option<u64>,
}

/// Compare the manifest's per-table row counts with what the restored
/// database holds (`counted`: qualified name → rows). Tables with a row
/// filter (extension configuration tables) hold the extension's own rows
/// too and are left out.
pub fn compare_counts(
    tables: &[crate::repo::manifest::TableEntry],
    counted: &BTreeMap<String, u64>,
) -> Vec<CountMismatch> {
    tables
        .iter()
        .filter(|t| t.filter.is_none())
        .filter_map(|t| {
            let key = t.qualified();
            let found = counted.get(&key).copied();
            (found != Some(t.rows())).then(|| CountMismatch {
                table: key,
                expected: t.rows(),
                found,
            })
        })
        .collect()
}

/// The verdict on the results of a `--sql` file run as one simple query:
/// for each statement that returns rows, its first column of its first row
/// (`None` for no rows). Every one must be `t`; a file with none is refused.
pub fn judge_sql(results: &[Option<String>]) -> Result<usize, String> {
    if results.is_empty() {
        return Err("the --sql file has no statement that returns a value".into());
    }
    for (i, r) in results.iter().enumerate() {
        match r.as_deref() {
            Some("t") => {}
            Some(v) => return Err(format!("check {} of the --sql file returned {v}", i + 1)),
            None => return Err(format!("check {} of the --sql file returned no row", i + 1)),
        }
    }
    Ok(results.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn held(v: &[(u32, &[u64])]) -> BTreeMap<u32, BTreeSet<u64>> {
        v.iter()
            .map(|(t, s)| (*t, s.iter().copied().collect()))
            .collect()
    }

    #[test]
    fn the_end_of_the_archive_is_its_newest_timelines_last_segment() {
        let h = held(&[(1, &[2, 3, 4, 5]), (2, &[5, 6, 7])]);
        let e = expect(&Target::End, Lsn(2 * SEG + 100), 1, &h, SEG);
        assert_eq!(
            e,
            Expect::AtLeast {
                lsn: Lsn(7 * SEG),
                timeline: 2,
                why: "the archive's last segment 000000020000000000000007".into()
            }
        );
        // Nothing past the backup: its own end.
        let h = held(&[(1, &[2])]);
        assert!(matches!(
            expect(&Target::End, Lsn(2 * SEG + 100), 1, &h, SEG),
            Expect::AtLeast { lsn: Lsn(l), .. } if l == 2 * SEG + 100
        ));
        assert_eq!(
            expect(&Target::Immediate, Lsn(1), 1, &h, SEG),
            Expect::Stopped
        );
        assert!(matches!(
            expect(&Target::Lsn(Lsn(3 * SEG)), Lsn(1), 1, &h, SEG),
            Expect::AtLeast { lsn: Lsn(l), .. } if l == 3 * SEG
        ));
    }

    #[test]
    fn the_gap_named_is_the_first_missing_segment_after_replay() {
        let h = held(&[(1, &[2, 3, 5, 6])]);
        assert_eq!(
            first_gap(&h, 1, Lsn(3 * SEG + 8), Lsn(6 * SEG), SEG).as_deref(),
            Some("000000010000000000000004")
        );
        assert_eq!(first_gap(&h, 1, Lsn(5 * SEG), Lsn(6 * SEG), SEG), None);
    }

    #[test]
    fn counts_compare_by_qualified_name_and_skip_filtered_tables() {
        use crate::repo::manifest::{StreamRef, TableEntry, TablePart};
        let t = |name: &str, rows: u64, filter: Option<&str>| TableEntry {
            oid: 1,
            schema: "public".into(),
            name: name.into(),
            columns: vec![],
            relation_bytes: 0,
            filter: filter.map(String::from),
            indexes: vec![],
            binary: false,
            column_types: vec![],
            parts: vec![TablePart {
                ctid: None,
                rows,
                stream: StreamRef::default(),
            }],
        };
        let tables = vec![
            t("a", 10, None),
            t("b", 5, None),
            t("c", 1, None),
            t("cfg", 3, Some("WHERE x")),
        ];
        let counted: BTreeMap<String, u64> = [("public.a".to_string(), 10), ("public.b".into(), 4)]
            .into_iter()
            .collect();
        assert_eq!(
            compare_counts(&tables, &counted),
            vec![
                CountMismatch {
                    table: "public.b".into(),
                    expected: 5,
                    found: Some(4)
                },
                CountMismatch {
                    table: "public.c".into(),
                    expected: 1,
                    found: None
                }
            ]
        );
    }

    #[test]
    fn sql_checks_must_all_be_true() {
        assert_eq!(judge_sql(&[Some("t".into()), Some("t".into())]), Ok(2));
        assert_eq!(
            judge_sql(&[Some("t".into()), Some("f".into())]).unwrap_err(),
            "check 2 of the --sql file returned f"
        );
        assert!(judge_sql(&[None]).unwrap_err().contains("no row"));
        assert!(judge_sql(&[]).is_err());
    }

    #[test]
    fn the_scratch_server_is_private_and_harmless() {
        let s = server_settings(Path::new("/tmp/pgtide-drill-x"), 15);
        let get = |k: &str| s.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("listen_addresses"), Some(""));
        assert_eq!(get("unix_socket_directories"), Some("/tmp/pgtide-drill-x"));
        assert_eq!(get("archive_mode"), Some("off"));
        assert_eq!(get("synchronous_standby_names"), Some(""));
        assert_eq!(get("hba_file"), Some("/tmp/pgtide-drill-x/pg_hba.conf"));
        assert_eq!(get("stats_temp_directory"), None);
        assert!(server_settings(Path::new("/x"), 14)
            .iter()
            .any(|(k, _)| k == "stats_temp_directory"));
        let plan = Plan {
            id: "x".into(),
            kind: "dump",
            scratch: PathBuf::from(format!("/{}", "d".repeat(100))),
            data_dir: PathBuf::new(),
            tablespaces: vec![],
            major: 15,
            needs_bytes: 0,
            target: String::new(),
            checks: vec![],
        };
        assert!(plan.check_socket_path().is_err());
    }
}
