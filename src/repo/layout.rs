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
/// Key sets of an encrypted repository: `keys/NNNNNN.json`, the highest
/// number current.
pub const KEYS: &str = "keys/";

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

/// Pack `index` of a set: `dumps/<id>/packs/000003.pack`.
pub fn pack_key(kind: SetKind, id: &str, index: u32) -> String {
    format!("{}{index:06}.pack", set_packs(kind, id))
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

/// Everything of the WAL archive is under this prefix.
pub const WAL: &str = "wal/";

/// A timeline history file: `wal/00000002.history`.
pub fn wal_history(name: &str) -> String {
    format!("{WAL}{name}")
}

/// A segment or another file of timeline `tli` (`.backup`):
/// `wal/00000001/000000010000000000000003`.
pub fn wal_file(tli: u32, name: &str) -> String {
    format!("{WAL}{tli:08X}/{name}")
}

/// The first `len` bytes of the segment stored at `segment_key`:
/// `<segment key>.<LEN, 8 hex digits>.partial`.
pub fn wal_partial(segment_key: &str, len: u64) -> String {
    format!("{segment_key}.{len:08X}.partial")
}

/// The prefix under which the partials of the segment at `segment_key` are.
pub fn wal_partials_prefix(segment_key: &str) -> String {
    format!("{segment_key}.")
}

/// The length a partial's key records (0 if it is not one).
pub fn wal_partial_len(key: &str) -> u64 {
    key.strip_suffix(".partial")
        .and_then(|k| k.rsplit('.').next())
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
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

    /// The keys docs/FORMAT.md lists.
    #[test]
    fn keys() {
        let id = "20261123-060012D";
        assert_eq!(
            pack_key(SetKind::Dump, id, 3),
            "dumps/20261123-060012D/packs/000003.pack"
        );
        assert_eq!(
            pack_key(SetKind::Backup, "20261123-060012F", 0),
            "backups/20261123-060012F/packs/000000.pack"
        );
        assert_eq!(wal_history("00000002.history"), "wal/00000002.history");
        let seg = wal_file(1, "000000010000000000000003");
        assert_eq!(seg, "wal/00000001/000000010000000000000003");
        let partial = wal_partial(&seg, 0x2000);
        assert_eq!(
            partial,
            "wal/00000001/000000010000000000000003.00002000.partial"
        );
        assert!(partial.starts_with(&wal_partials_prefix(&seg)));
        assert_eq!(wal_partial_len(&partial), 0x2000);
        assert_eq!(wal_partial_len(&seg), 0);
    }
}
