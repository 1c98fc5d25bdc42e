//! A restore that will read one database only (`restore --table` /
//! `--database` into a scratch server) need not download the others: their
//! relation files are written as empty sparse files of the recorded size,
//! as pgBackRest's `--db-include` does. Replay stays correct, because every
//! page that WAL after the backup's checkpoint touches starts from a
//! full-page image (with `full_page_writes`, PostgreSQL's default); those
//! databases are then unreadable, and nothing reads them.
//!
//! Which databases: the backup's own `pg_database` file says which oid has
//! which name. Kept whole: the database asked for (every oid that had its
//! name in any row version), the databases initdb makes (oids below
//! 16384: template1, template0, postgres — templates that a `CREATE
//! DATABASE` replayed later may copy), and any database directory the file
//! does not name (created while the backup ran). When the name is not in
//! the file at all (the database was created after the backup, maybe from a
//! template that would be zeroed), nothing is zeroed.
//!
//! Kept in every database: its `PG_VERSION` and `pg_filenode.map`, which are
//! not relation files. Pure: decides from the manifest and the catalog's
//! rows; the restore writes the files.

use std::collections::BTreeSet;

use crate::pg::proto::shared_catalog::NamedRow;
use crate::repo::manifest::BackupFile;

/// `FirstNormalObjectId`: databases initdb creates have smaller oids.
pub const FIRST_NORMAL_OID: u32 = 16384;

/// The database directory a backed-up file lies in: `base/<oid>/…` in the
/// data directory, `PG_<version>_<catversion>/<oid>/…` in a tablespace.
pub fn database_of(f: &BackupFile) -> Option<u32> {
    let mut parts = f.path.split('/');
    let first = parts.next()?;
    let ok = match f.tablespace {
        None => first == "base",
        Some(_) => first.starts_with("PG_"),
    };
    if !ok {
        return None;
    }
    let oid = parts.next()?.parse().ok()?;
    // A file, not the directory itself.
    parts.next().filter(|n| !n.is_empty())?;
    Some(oid)
}

/// A relation file: a file number, an optional fork (`_fsm`, `_vm`,
/// `_init`) and an optional segment number (`.1`, …).
pub fn is_relation_file(name: &str) -> bool {
    let (base, seg) = match name.split_once('.') {
        Some((b, s)) => (b, Some(s)),
        None => (name, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if seg.is_some_and(|s| !digits(s)) {
        return false;
    }
    let number = match base.split_once('_') {
        Some((n, "fsm" | "vm" | "init")) => n,
        Some(_) => return false,
        None => base,
    };
    digits(number)
}

/// Whether `f` is written as an empty sparse file: a relation file of one of
/// the databases `zeroed`.
pub fn is_zeroed(f: &BackupFile, zeroed: &BTreeSet<u32>) -> bool {
    f.kind == "file"
        && database_of(f).is_some_and(|d| zeroed.contains(&d))
        && f.path.rsplit('/').next().is_some_and(is_relation_file)
}

/// What a restore that reads database `keep` may leave out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// These databases' relation files are written as sparse zeros.
    Zero(BTreeSet<u32>),
    /// Everything is restored, for this reason.
    Whole(String),
}

/// The databases whose relation files need not be downloaded, given the
/// rows of the backup's `pg_database` file and the oids of the database
/// directories the backup holds.
pub fn choose(rows: &[NamedRow], keep: &str, present: &BTreeSet<u32>) -> Choice {
    if !rows.iter().any(|r| r.name == keep) {
        return Choice::Whole(format!(
            "database {keep} is not in the backup's pg_database (created after the backup, or \
             never): every database is restored"
        ));
    }
    let zero = present
        .iter()
        .copied()
        .filter(|&oid| oid >= FIRST_NORMAL_OID)
        .filter(|&oid| rows.iter().any(|r| r.oid == oid))
        .filter(|&oid| !rows.iter().any(|r| r.oid == oid && r.name == keep))
        .collect();
    Choice::Zero(zero)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tablespace: Option<u32>, path: &str) -> BackupFile {
        BackupFile {
            tablespace,
            path: path.into(),
            kind: "file".into(),
            mode: 0o600,
            mtime: 0,
            size: 8192,
            target: None,
            stream: None,
        }
    }

    #[test]
    fn relation_files_and_their_databases() {
        assert_eq!(database_of(&file(None, "base/16384/16385")), Some(16384));
        assert_eq!(database_of(&file(None, "base/16384")), None);
        assert_eq!(database_of(&file(None, "global/1262")), None);
        assert_eq!(
            database_of(&file(Some(16500), "PG_15_202209061/16384/16390.1")),
            Some(16384)
        );
        assert_eq!(database_of(&file(Some(16500), "base/1/2")), None);
        for name in [
            "16385",
            "16385.1",
            "16385_fsm",
            "16385_vm",
            "16385_init",
            "1_vm.12",
        ] {
            assert!(is_relation_file(name), "{name}");
        }
        for name in [
            "PG_VERSION",
            "pg_filenode.map",
            "pg_internal.init",
            "16385_x",
            "16385.",
            "t16385",
            "",
        ] {
            assert!(!is_relation_file(name), "{name}");
        }
        let zero = BTreeSet::from([16384]);
        assert!(is_zeroed(&file(None, "base/16384/16385_vm"), &zero));
        assert!(!is_zeroed(&file(None, "base/16384/pg_filenode.map"), &zero));
        assert!(!is_zeroed(&file(None, "base/16400/16385"), &zero));
        let mut dir = file(None, "base/16384/16385");
        dir.kind = "dir".into();
        assert!(!is_zeroed(&dir, &zero));
    }

    fn row(oid: u32, name: &str, live: bool) -> NamedRow {
        NamedRow {
            oid,
            name: name.into(),
            live,
        }
    }

    #[test]
    fn only_other_named_user_databases_are_zeroed() {
        let rows = [
            row(1, "template1", true),
            row(4, "template0", true),
            row(5, "postgres", true),
            row(16384, "app", true),
            row(16390, "shop", true),
            // Renamed from "app": kept, in case the name means it at the target.
            row(16395, "app", false),
            row(16395, "app_old", true),
        ];
        // 16400: a directory pg_database does not name.
        let present = BTreeSet::from([1, 4, 5, 16384, 16390, 16395, 16400]);
        assert_eq!(
            choose(&rows, "app", &present),
            Choice::Zero(BTreeSet::from([16390]))
        );
        assert_eq!(
            choose(&rows, "shop", &present),
            Choice::Zero(BTreeSet::from([16384, 16395]))
        );
        assert_eq!(
            choose(&rows, "postgres", &present),
            Choice::Zero(BTreeSet::from([16384, 16390, 16395]))
        );
        assert!(matches!(choose(&rows, "new", &present), Choice::Whole(_)));
    }
}
