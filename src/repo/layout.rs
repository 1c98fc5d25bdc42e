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

/// Bytes `[start, end)` of the segment stored at `segment_key`:
/// `<segment key>.<START, 8 hex digits>-<END, 8 hex digits>.piece`.
pub fn wal_piece(segment_key: &str, start: u64, end: u64) -> String {
    format!("{segment_key}.{start:08X}-{end:08X}.piece")
}

/// The prefix under which the partials and pieces of the segment at
/// `segment_key` are (its `.backup` files too: readers filter by suffix).
pub fn wal_partials_prefix(segment_key: &str) -> String {
    format!("{segment_key}.")
}

/// The byte range of its segment that a piece's key records: `[start, end)`
/// of a `.piece`, `[0, LEN)` of an older `.partial`. `None` for any other key
/// (a segment, a `.backup` file) and for a range that is empty or reversed.
pub fn wal_piece_range(key: &str) -> Option<(u64, u64)> {
    let hex = |h: &str| {
        (h.len() == 8)
            .then(|| u64::from_str_radix(h, 16).ok())
            .flatten()
    };
    let (start, end) = if let Some(k) = key.strip_suffix(".partial") {
        (0, hex(k.rsplit('.').next()?)?)
    } else {
        let k = key.strip_suffix(".piece")?;
        let (a, b) = k.rsplit('.').next()?.split_once('-')?;
        (hex(a)?, hex(b)?)
    };
    (start < end).then_some((start, end))
}

/// The key of the segment a piece or partial belongs to.
pub fn wal_piece_segment(key: &str) -> Option<&str> {
    wal_piece_range(key)?;
    key.rsplit_once('.')
        .and_then(|(k, _)| k.rsplit_once('.'))
        .map(|(seg, _)| seg)
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
        assert_eq!(wal_piece_range(&partial), Some((0, 0x2000)));
        assert_eq!(wal_piece_range(&seg), None);
        let piece = wal_piece(&seg, 0x2000, 0x1000000);
        assert_eq!(
            piece,
            "wal/00000001/000000010000000000000003.00002000-01000000.piece"
        );
        assert!(piece.starts_with(&wal_partials_prefix(&seg)));
        assert_eq!(wal_piece_range(&piece), Some((0x2000, 0x1000000)));
        assert_eq!(wal_piece_segment(&piece), Some(seg.as_str()));
        assert_eq!(wal_piece_segment(&partial), Some(seg.as_str()));
        assert_eq!(wal_piece_segment(&seg), None);
        // Empty, reversed and malformed ranges are not pieces.
        assert_eq!(wal_piece_range(&wal_piece(&seg, 5, 5)), None);
        assert_eq!(wal_piece_range(&wal_piece(&seg, 6, 5)), None);
        assert_eq!(wal_piece_range(&format!("{seg}.xyz-00000001.piece")), None);
        assert_eq!(wal_piece_range(&format!("{seg}.00000000.partial")), None);
        assert_eq!(
            wal_piece_range("wal/00000001/000000010000000000000002.00000028.backup"),
            None
        );
    }
}
