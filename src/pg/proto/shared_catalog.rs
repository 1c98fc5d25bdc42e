//! Rows of the shared catalogs `pg_authid` and `pg_database`, read from a
//! cluster's files: `global/pg_filenode.map` gives the file of each (their
//! files move after a `VACUUM FULL`), and the heap pages of that file hold
//! the rows. A drill needs the name of the bootstrap superuser (the role with
//! oid 10) to connect to a restored copy of a cluster whose superuser is not
//! called `postgres`; a table or database restore needs the oid of each
//! database, to write the files of the others as empty sparse files. Pure:
//! bytes in, rows out; never panics on bad bytes.
//!
//! Layouts (PostgreSQL 13–18): the map is `int32 magic (0x592717), int32
//! num_mappings, {Oid, RelFileNumber}[64], crc32, pad`; a heap page starts
//! with a 24-byte header (`pd_lower` at 12, `pd_upper` at 14,
//! `pd_pagesize_version` at 18), then 4-byte line pointers (`lp_off:15,
//! lp_flags:2, lp_len:15`, normal = 1); a tuple header has `t_xmax` at 4,
//! `t_infomask` at 20 and `t_hoff` at 22; a `pg_authid` row starts with
//! `oid` (4 bytes) followed by `rolname` (64 bytes, NUL-padded), a
//! `pg_database` row with `oid` and `datname`, alike.

/// `pg_authid`'s relation oid (and its file name before any rewrite).
pub const PG_AUTHID: u32 = 1260;
/// `pg_database`'s relation oid (and its file name before any rewrite).
pub const PG_DATABASE: u32 = 1262;
const BOOTSTRAP_SUPERUSER: u32 = 10;
const MAP_MAGIC: i32 = 0x592717;
const MAX_MAPPINGS: usize = 64;
const NAMEDATALEN: usize = 64;
/// `HEAP_XMAX_INVALID`: the row version was not deleted or updated.
const XMAX_INVALID: u16 = 0x0800;
/// `HEAP_XMAX_LOCK_ONLY`: `t_xmax` only locked the row version.
const XMAX_LOCK_ONLY: u16 = 0x0080;

/// A row whose first two columns are `oid` and a `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedRow {
    pub oid: u32,
    pub name: String,
    /// Not deleted or updated (as far as the row version's header says:
    /// a row version whose deleter aborted also looks dead).
    pub live: bool,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The file number of relation `oid` in a `pg_filenode.map`.
pub fn mapped_file(map: &[u8], oid: u32) -> Option<u32> {
    if u32_at(map, 0)? as i32 != MAP_MAGIC {
        return None;
    }
    let n = (u32_at(map, 4)? as usize).min(MAX_MAPPINGS);
    (0..n).find_map(|i| {
        let at = 8 + i * 8;
        (u32_at(map, at)? == oid)
            .then(|| u32_at(map, at + 4))
            .flatten()
    })
}

/// The names the bootstrap superuser has in the heap file of `pg_authid`,
/// the live row version first (a renamed role leaves its old versions until
/// vacuum). Little-endian pages, as on every platform pgtide runs on.
pub fn bootstrap_superuser(file: &[u8]) -> Vec<String> {
    let rows = named_rows(file);
    let mut out: Vec<String> = Vec::new();
    for live in [true, false] {
        for r in rows
            .iter()
            .filter(|r| r.oid == BOOTSTRAP_SUPERUSER && r.live == live)
        {
            if !out.contains(&r.name) {
                out.push(r.name.clone());
            }
        }
    }
    out
}

/// Every row version of the heap file `file` of a catalog whose rows start
/// with `oid` and a `name` (`pg_authid`, `pg_database`), in file order;
/// row versions with an empty or non-UTF-8 name are left out.
pub fn named_rows(file: &[u8]) -> Vec<NamedRow> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < file.len() {
        let page_size = u16_at(file, at + 18)
            .map(|v| usize::from(v & 0xFF00))
            .filter(|s| *s >= 1024)
            .unwrap_or(8192);
        let end = (at + page_size).min(file.len());
        rows_of_page(&file[at..end], &mut out);
        at += page_size;
    }
    out
}

fn rows_of_page(page: &[u8], out: &mut Vec<NamedRow>) {
    let (Some(lower), Some(_upper)) = (u16_at(page, 12), u16_at(page, 14)) else {
        return;
    };
    let lower = usize::from(lower).min(page.len());
    let mut lp = 24;
    while lp + 4 <= lower {
        let Some(v) = u32_at(page, lp) else { return };
        lp += 4;
        let off = (v & 0x7FFF) as usize;
        let flags = (v >> 15) & 0x3;
        let len = (v >> 17) as usize;
        if flags != 1 || off == 0 {
            continue;
        }
        let Some(tuple) = page.get(off..off + len) else {
            continue;
        };
        let (Some(xmax), Some(infomask), Some(&hoff)) =
            (u32_at(tuple, 4), u16_at(tuple, 20), tuple.get(22))
        else {
            continue;
        };
        let hoff = usize::from(hoff);
        let Some(oid) = u32_at(tuple, hoff) else {
            continue;
        };
        let Some(raw) = tuple.get(hoff + 4..hoff + 4 + NAMEDATALEN) else {
            continue;
        };
        let name = &raw[..raw.iter().position(|&c| c == 0).unwrap_or(NAMEDATALEN)];
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        out.push(NamedRow {
            oid,
            name: name.to_string(),
            live: xmax == 0 || infomask & (XMAX_INVALID | XMAX_LOCK_ONLY) != 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An 8 KiB heap page holding `rows` (oid, name, xmax), tuples packed
    /// from the end as PostgreSQL places them.
    fn page(rows: &[(u32, &str, u32)]) -> Vec<u8> {
        let mut p = vec![0u8; 8192];
        let mut upper = 8192usize;
        let mut lower = 24usize;
        for (oid, name, xmax) in rows {
            let hoff = 24usize;
            let len = hoff + 4 + NAMEDATALEN + 8;
            upper -= (len + 7) & !7;
            let t = &mut p[upper..upper + len];
            t[4..8].copy_from_slice(&xmax.to_le_bytes());
            let infomask: u16 = if *xmax == 0 { XMAX_INVALID } else { 0 };
            t[20..22].copy_from_slice(&infomask.to_le_bytes());
            t[22] = hoff as u8;
            t[hoff..hoff + 4].copy_from_slice(&oid.to_le_bytes());
            t[hoff + 4..hoff + 4 + name.len()].copy_from_slice(name.as_bytes());
            let lp = (upper as u32) | (1 << 15) | ((len as u32) << 17);
            p[lower..lower + 4].copy_from_slice(&lp.to_le_bytes());
            lower += 4;
        }
        p[12..14].copy_from_slice(&(lower as u16).to_le_bytes());
        p[14..16].copy_from_slice(&(upper as u16).to_le_bytes());
        p[18..20].copy_from_slice(&(8192u16 | 4).to_le_bytes());
        p
    }

    #[test]
    fn the_live_name_of_oid_10_comes_first() {
        let mut file = page(&[
            (3373, "pg_monitor", 0),
            (10, "old_admin", 741),
            (4200, "app", 0),
        ]);
        file.extend(page(&[(10, "dba", 0)]));
        assert_eq!(bootstrap_superuser(&file), ["dba", "old_admin"]);
        assert!(bootstrap_superuser(&page(&[(16384, "x", 0)])).is_empty());
    }

    #[test]
    fn database_rows_come_with_their_oids_and_liveness() {
        let mut file = page(&[(1, "template1", 0), (16384, "app", 0), (16390, "app", 912)]);
        file.extend(page(&[(5, "postgres", 0)]));
        let rows = named_rows(&file);
        let row = |oid: u32, name: &str, live: bool| NamedRow {
            oid,
            name: name.into(),
            live,
        };
        assert_eq!(
            rows,
            [
                row(1, "template1", true),
                row(16384, "app", true),
                row(16390, "app", false),
                row(5, "postgres", true)
            ]
        );
        // A row version whose xmax only locked it is still live.
        let mut locked = page(&[(16400, "locked", 77)]);
        let lp = u32::from_le_bytes(locked[24..28].try_into().unwrap());
        let off = (lp & 0x7FFF) as usize;
        locked[off + 20..off + 22].copy_from_slice(&XMAX_LOCK_ONLY.to_le_bytes());
        assert!(named_rows(&locked)[0].live);
    }

    #[test]
    fn garbage_and_truncation_give_nothing_and_never_panic() {
        let good = page(&[(10, "postgres", 0)]);
        assert_eq!(bootstrap_superuser(&good), ["postgres"]);
        for cut in [0, 1, 23, 30, 100, 8000, 8191] {
            let _ = bootstrap_superuser(&good[..cut]);
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut bad = good.clone();
            for _ in 0..20 {
                let i = rng.usize(..bad.len());
                bad[i] = rng.u8(..);
            }
            let _ = bootstrap_superuser(&bad);
            let _ = named_rows(&bad);
        }
    }

    #[test]
    fn the_filenode_map_names_the_file_of_pg_authid() {
        let mut map = vec![0u8; 512];
        map[0..4].copy_from_slice(&MAP_MAGIC.to_le_bytes());
        map[4..8].copy_from_slice(&2u32.to_le_bytes());
        map[8..12].copy_from_slice(&1262u32.to_le_bytes());
        map[12..16].copy_from_slice(&1262u32.to_le_bytes());
        map[16..20].copy_from_slice(&PG_AUTHID.to_le_bytes());
        map[20..24].copy_from_slice(&16999u32.to_le_bytes());
        assert_eq!(mapped_file(&map, PG_AUTHID), Some(16999));
        assert_eq!(mapped_file(&map, 1213), None);
        assert_eq!(mapped_file(&map[..6], PG_AUTHID), None);
        map[0] = 0;
        assert_eq!(mapped_file(&map, PG_AUTHID), None);
    }
}
