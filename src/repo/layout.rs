//! Object key names. The only place that knows how keys are spelled.

/// The repository marker: format name and version.
pub const MARKER: &str = "pgtide.json";
pub const DUMPS: &str = "dumps/";
/// The cluster (system identifier, segment size) of physical backups and WAL.
pub const CLUSTER: &str = "cluster.json";

pub const BACKUPS: &str = "backups/";

/// The writer lock (`repo::lock`).
pub const LOCK: &str = "locks/writer.json";

/// Records of the daemon's runs (`repo::runs`): one immutable object per run.
pub const RUNS: &str = "runs/";

/// The two kinds of sets a repository holds: logical dumps (`D`) and
/// physical base backups (`F`), each under its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    Dump,
    Backup,
}

impl SetKind {
    pub fn prefix(self) -> &'static str {
        match self {
            SetKind::Dump => DUMPS,
            SetKind::Backup => BACKUPS,
        }
    }
    pub fn letter(self) -> char {
        match self {
            SetKind::Dump => 'D',
            SetKind::Backup => 'F',
        }
    }
    pub fn noun(self) -> &'static str {
        match self {
            SetKind::Dump => "dump",
            SetKind::Backup => "backup",
        }
    }
    /// The kind an id names, by its letter.
    pub fn of_id(id: &str) -> Option<SetKind> {
        match id.as_bytes().get(15) {
            Some(b'D') => Some(SetKind::Dump),
            Some(b'F') => Some(SetKind::Backup),
            _ => None,
        }
    }
}

pub fn set_prefix(kind: SetKind, id: &str) -> String {
    format!("{}{id}/", kind.prefix())
}

pub fn set_started(kind: SetKind, id: &str) -> String {
    format!("{}{id}/started.json", kind.prefix())
}

pub fn set_manifest(kind: SetKind, id: &str) -> String {
    format!("{}{id}/manifest.json", kind.prefix())
}

/// Written before a set's manifest is removed: the set is being deleted. It
/// is no longer listed or read, and the next `expire` or `delete` finishes
/// the deletion if this one is interrupted. Removed last.
pub fn set_deleting(kind: SetKind, id: &str) -> String {
    format!("{}{id}/deleting.json", kind.prefix())
}

pub fn set_packs(kind: SetKind, id: &str) -> String {
    format!("{}{id}/packs/", kind.prefix())
}

/// PostgreSQL's own `backup_manifest`, kept beside ours.
pub fn backup_pg_manifest(id: &str) -> String {
    format!("{BACKUPS}{id}/backup_manifest")
}

pub fn dump_manifest(id: &str) -> String {
    set_manifest(SetKind::Dump, id)
}

pub fn dump_packs(id: &str) -> String {
    set_packs(SetKind::Dump, id)
}

/// The id part of a key under a kind's prefix, if the key is a set's object.
pub fn set_id_of(kind: SetKind, key: &str) -> Option<&str> {
    let rest = key.strip_prefix(kind.prefix())?;
    let (id, _) = rest.split_once('/')?;
    valid_id(id).then_some(id)
}

pub fn dump_id_of(key: &str) -> Option<&str> {
    set_id_of(SetKind::Dump, key)
}

/// Ids look like `20261123-060012D`: UTC date, time, kind letter, optional
/// `-N` suffix when two start in the same second.
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() >= 16
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15].is_ascii_uppercase()
        && (b.len() == 16
            || (b[16] == b'-' && b.len() > 17 && b[17..].iter().all(u8::is_ascii_digit)))
}

pub fn new_id(now: chrono::DateTime<chrono::Utc>, kind: char, attempt: u32) -> String {
    let base = format!("{}{}", now.format("%Y%m%d-%H%M%S"), kind);
    if attempt == 0 {
        base
    } else {
        format!("{base}-{}", attempt + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-23T06:00:12Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(new_id(t, 'D', 0), "20261123-060012D");
        assert_eq!(new_id(t, 'D', 1), "20261123-060012D-2");
        assert!(valid_id("20261123-060012D"));
        assert!(valid_id("20261123-060012D-2"));
        assert!(!valid_id("20261123-060012"));
        assert!(!valid_id("../../etc"));
        assert_eq!(
            dump_id_of("dumps/20261123-060012D/manifest.json"),
            Some("20261123-060012D")
        );
        assert_eq!(dump_id_of("dumps/x/manifest.json"), None);
    }
}
