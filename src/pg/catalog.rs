//! Catalog queries a dump needs, run inside the dump's snapshot, returning
//! plain structs. Nothing here writes.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio_postgres::Client;

use super::version::ServerVersion;

/// Schemas whose contents are never dumped.
const SYSTEM_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub version: ServerVersion,
    pub version_string: String,
    pub database: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// Empty when the role may not read `pg_control_system()`.
    pub system_identifier: String,
    pub block_size: u64,
}

pub async fn server_info(c: &Client) -> Result<ServerInfo, tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4, \
                    current_database()::text, pg_encoding_to_char(d.encoding)::text, \
                    d.datcollate::text, d.datctype::text, current_setting('block_size')::int8, \
                    has_function_privilege('pg_control_system()', 'execute') \
             FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await?;
    let can_read_control: bool = row.get(7);
    let system_identifier = if can_read_control {
        c.query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await?
        .get(0)
    } else {
        String::new()
    };
    Ok(ServerInfo {
        version_string: row.get(0),
        version: ServerVersion(row.get::<_, i32>(1) as u32),
        database: row.get(2),
        encoding: row.get(3),
        collate: row.get(4),
        ctype: row.get(5),
        block_size: row.get::<_, i64>(6) as u64,
        system_identifier,
    })
}

/// What a server knows about database locale providers. These are version
/// facts like those of `ServerVersion`; they live beside the only queries
/// and statements that need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocaleSupport {
    /// `pg_database.datlocprovider` and `CREATE DATABASE … LOCALE_PROVIDER`,
    /// with the `icu` provider and `ICU_LOCALE` (PostgreSQL 15+).
    pub provider: bool,
    /// `daticurules` and `ICU_RULES` (16+).
    pub icu_rules: bool,
    /// The `builtin` provider and `BUILTIN_LOCALE`; the locale column is
    /// `datlocale` (17+; 15 and 16 call it `daticulocale`).
    pub builtin: bool,
}

impl LocaleSupport {
    pub fn of(v: ServerVersion) -> LocaleSupport {
        LocaleSupport {
            provider: v.major() >= 15,
            icu_rules: v.major() >= 16,
            builtin: v.major() >= 17,
        }
    }

    /// Whether `CREATE DATABASE` on this server can use `provider` (a
    /// word as [`DatabaseInfo::locale_provider`] holds it).
    pub fn can_create(self, provider: &str) -> bool {
        match provider {
            "libc" => true,
            "icu" => self.provider,
            "builtin" => self.builtin,
            _ => false,
        }
    }
}

/// The current database's locale provider and the properties
/// `pg_dump --create` carries (owner, comment, settings, limits, grants).
#[derive(Debug, Clone, Default)]
pub struct DatabaseInfo {
    /// `libc`, `icu` or `builtin`; `None` before PostgreSQL 15 (libc).
    pub locale_provider: Option<String>,
    /// ICU or builtin locale, when the provider is not libc.
    pub locale: Option<String>,
    pub icu_rules: Option<String>,
    pub owner: String,
    pub comment: Option<String>,
    /// `name=value`, as `pg_db_role_setting.setconfig` stores them.
    pub settings: Vec<String>,
    /// -1 is no limit.
    pub connection_limit: i32,
    pub is_template: bool,
    /// `None` when `datacl` is NULL (default privileges); else (grantee,
    /// `None` = PUBLIC; privilege; grantable) in ACL order.
    pub grants: Option<Vec<(Option<String>, String, bool)>>,
}

pub async fn database_info(
    c: &Client,
    version: ServerVersion,
) -> Result<DatabaseInfo, tokio_postgres::Error> {
    let loc = LocaleSupport::of(version);
    let provider = if loc.provider {
        "CASE d.datlocprovider WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' \
              WHEN 'b' THEN 'builtin' ELSE d.datlocprovider::text END"
    } else {
        "NULL::text"
    };
    let locale = match (loc.builtin, loc.provider) {
        (true, _) => "d.datlocale::text",
        (false, true) => "d.daticulocale::text",
        (false, false) => "NULL::text",
    };
    let rules = if loc.icu_rules {
        "d.daticurules::text"
    } else {
        "NULL::text"
    };
    let row = c
        .query_one(
            &format!(
                "SELECT {provider}, {locale}, {rules}, pg_get_userbyid(d.datdba)::text, \
                        shobj_description(d.oid, 'pg_database'), d.datconnlimit, d.datistemplate, \
                        (SELECT s.setconfig::text[] FROM pg_db_role_setting s \
                          WHERE s.setdatabase = d.oid AND s.setrole = 0), \
                        d.datacl IS NULL \
                 FROM pg_database d WHERE d.datname = current_database()"
            ),
            &[],
        )
        .await?;
    let provider: Option<String> = row.get(0);
    let default_acl: bool = row.get(8);
    let grants = if default_acl {
        None
    } else {
        let rows = c
            .query(
                "SELECT CASE WHEN a.grantee = 0 THEN NULL \
                             ELSE pg_get_userbyid(a.grantee)::text END, \
                        a.privilege_type, a.is_grantable \
                 FROM pg_database d \
                 CROSS JOIN LATERAL aclexplode(d.datacl) WITH ORDINALITY \
                      AS a(grantor, grantee, privilege_type, is_grantable, ord) \
                 WHERE d.datname = current_database() ORDER BY a.ord",
                &[],
            )
            .await?;
        Some(
            rows.into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        )
    };
    Ok(DatabaseInfo {
        // The locale of a libc database is its LC_COLLATE/LC_CTYPE; 15 and
        // 16 may leave daticulocale set after a provider change, so only
        // keep it when it means something.
        locale: if provider.as_deref().is_some_and(|p| p != "libc") {
            row.get(1)
        } else {
            None
        },
        icu_rules: if provider.as_deref() == Some("icu") {
            row.get::<_, Option<String>>(2).filter(|r| !r.is_empty())
        } else {
            None
        },
        locale_provider: provider,
        owner: row.get(3),
        comment: row.get(4),
        connection_limit: row.get(5),
        is_template: row.get(6),
        settings: row.get::<_, Option<Vec<String>>>(7).unwrap_or_default(),
        grants,
    })
}

/// A relation a dump may name: tables, sequences, views and so on.
#[derive(Debug, Clone)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// pg_class.relkind: r, p, v, m, S, f.
    pub kind: char,
    /// Size of the main fork in bytes (0 for relations without storage).
    pub bytes: u64,
    /// Member of an extension (its data comes with CREATE EXTENSION) unless
    /// it is one of the extension's configuration tables.
    pub extension_member: bool,
    /// `pg_extension_config_dump` condition for configuration tables.
    pub extension_filter: Option<String>,
    /// For matviews: populated in the source.
    pub populated: bool,
    /// For sequences: the table that owns it (identity or serial).
    pub owned_by: Option<u32>,
}

pub async fn relations(c: &Client) -> Result<Vec<Relation>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, \
                CASE WHEN c.relkind IN ('r', 'm', 'S') THEN pg_relation_size(c.oid) ELSE 0 END, \
                EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                        AND d.objid = c.oid AND d.deptype = 'e'), \
                (SELECT x.cond FROM pg_extension e, \
                        unnest(e.extconfig, e.extcondition) AS x(reloid, cond) \
                  WHERE x.reloid = c.oid LIMIT 1), \
                c.relispopulated, \
                (SELECT d.refobjid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                        AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass \
                        AND d.deptype IN ('a', 'i') AND c.relkind = 'S' LIMIT 1), \
                EXISTS (SELECT 1 FROM pg_extension e WHERE c.oid = ANY (e.extconfig)) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relpersistence <> 't' \
           AND {SYSTEM_SCHEMAS} \
         ORDER BY n.nspname, c.relname"
    );
    let rows = c.query(&sql, &[]).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let kind: String = r.get(3);
            let is_config: bool = r.get(9);
            Relation {
                oid: r.get(0),
                schema: r.get(1),
                name: r.get(2),
                kind: kind.chars().next().unwrap_or('?'),
                bytes: r.get::<_, i64>(4).max(0) as u64,
                extension_member: r.get::<_, bool>(5) && !is_config,
                extension_filter: r
                    .get::<_, Option<String>>(6)
                    .filter(|s| !s.trim().is_empty()),
                populated: r.get(7),
                owned_by: r.get(8),
            }
        })
        .collect())
}

/// COPY column lists: no dropped and no generated columns, in attnum order.
pub async fn columns(
    c: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, Vec<String>>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT attrelid, attname::text FROM pg_attribute \
             WHERE attrelid = ANY($1) AND attnum > 0 AND NOT attisdropped AND attgenerated = '' \
             ORDER BY attrelid, attnum",
            &[&oids],
        )
        .await?;
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(out)
}

/// Types resolved through domains to the type they are built on (domains
/// over domains too): `base_of(<type oid>)` as SQL.
const BASE_TYPE_CTE: &str = "base(oid, base, depth) AS ( \
      SELECT oid, typbasetype, 1 FROM pg_type WHERE typtype = 'd' \
    UNION ALL \
      SELECT b.oid, t.typbasetype, b.depth + 1 FROM base b \
      JOIN pg_type t ON t.oid = b.base AND t.typtype = 'd' WHERE b.depth < 100)";

fn base_of(type_oid: &str) -> String {
    format!(
        "coalesce((SELECT b.base FROM base b WHERE b.oid = {type_oid} \
                   ORDER BY b.depth DESC LIMIT 1), {type_oid})"
    )
}

/// The types of the COPY columns (as [`columns`] lists them), domains
/// resolved to the type they are built on: what decides whether a table can
/// travel in binary COPY (`pg::copy_binary`).
pub async fn column_base_types(
    c: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, Vec<u32>>, tokio_postgres::Error> {
    let sql = format!(
        "WITH RECURSIVE {BASE_TYPE_CTE} \
         SELECT a.attrelid, {} FROM pg_attribute a \
         WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped \
           AND a.attgenerated = '' \
         ORDER BY a.attrelid, a.attnum",
        base_of("a.atttypid")
    );
    let rows = c.query(&sql, &[&oids]).await?;
    let mut out: HashMap<u32, Vec<u32>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(out)
}

/// For each of `tables` (quoted qualified names), its columns' base types by
/// column name, and their names as `format_type` writes them; an empty map
/// for a table that does not exist.
pub async fn column_base_types_by_name(
    c: &Client,
    tables: &[String],
) -> Result<Vec<HashMap<String, (u32, String)>>, tokio_postgres::Error> {
    let sql = format!(
        "WITH RECURSIVE {BASE_TYPE_CTE} \
         SELECT t.i::int4, a.attname::text, x.base, format_type(x.base, NULL) \
         FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i) \
         JOIN pg_attribute a ON a.attrelid = to_regclass(t.name) \
              AND a.attnum > 0 AND NOT a.attisdropped, \
         LATERAL (SELECT {} AS base) x",
        base_of("a.atttypid")
    );
    let rows = c.query(&sql, &[&tables]).await?;
    let mut out = vec![HashMap::new(); tables.len()];
    for r in rows {
        let i = r.get::<_, i32>(0) as usize;
        if let Some(m) = i.checked_sub(1).and_then(|i| out.get_mut(i)) {
            m.insert(r.get(1), (r.get(2), r.get(3)));
        }
    }
    Ok(out)
}

pub async fn indexes(
    c: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, Vec<String>>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT i.indrelid, ic.relname::text FROM pg_index i \
             JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = ANY($1) \
             ORDER BY 1, 2",
            &[&oids],
        )
        .await?;
    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(out)
}

/// Current `last_value, is_called` of sequences, read in batches.
pub async fn sequence_values(
    c: &Client,
    seqs: &[(String, String)],
) -> Result<Vec<(i64, bool)>, tokio_postgres::Error> {
    let mut out = Vec::with_capacity(seqs.len());
    for batch in seqs.chunks(200) {
        let sql = batch
            .iter()
            .enumerate()
            .map(|(i, (s, n))| {
                format!(
                    "SELECT {i}::int4, last_value, is_called FROM {}",
                    super::quote_qualified(s, n)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let mut rows: Vec<(i32, i64, bool)> = c
            .query(&sql, &[])
            .await?
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        rows.sort_by_key(|r| r.0);
        out.extend(rows.into_iter().map(|(_, v, c)| (v, c)));
    }
    Ok(out)
}

/// For each view or matview, the views and matviews its query reads.
pub async fn view_dependencies(
    c: &Client,
) -> Result<BTreeMap<u32, Vec<u32>>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT DISTINCT r.ev_class, d.refobjid FROM pg_rewrite r \
             JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid \
                             AND d.refclassid = 'pg_class'::regclass \
             JOIN pg_class rc ON rc.oid = d.refobjid AND rc.relkind IN ('v', 'm') \
             WHERE d.refobjid <> r.ev_class",
            &[],
        )
        .await?;
    let mut out: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(out)
}

/// Order `matviews` so that each comes after every matview it reads,
/// directly or through views. Cycles cannot exist in a valid catalog; if one
/// shows up, the remaining order is kept as given.
pub fn refresh_order(matviews: &[u32], deps: &BTreeMap<u32, Vec<u32>>) -> Vec<u32> {
    fn visit(
        n: u32,
        deps: &BTreeMap<u32, Vec<u32>>,
        wanted: &HashSet<u32>,
        seen: &mut HashSet<u32>,
        out: &mut Vec<u32>,
    ) {
        if !seen.insert(n) {
            return;
        }
        for &d in deps.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
            visit(d, deps, wanted, seen, out);
        }
        if wanted.contains(&n) {
            out.push(n);
        }
    }
    let wanted: HashSet<u32> = matviews.iter().copied().collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for &m in matviews {
        visit(m, deps, &wanted, &mut seen, &mut out);
    }
    out
}

/// Of the `populated` matviews (in their given order), those that can be
/// refreshed: the ones that read, directly or through views and other
/// matviews, no matview of `considered` that is not populated. This is
/// pg_dump's rule (`buildMatViewRefreshDependencies`): a matview over an
/// unpopulated one stays unpopulated in the dump, since `REFRESH` of it
/// would fail ("materialized view … has not been populated"); matviews
/// outside `considered` (those pg_dump does not dump) do not count.
pub fn refreshable(
    populated: &[u32],
    considered: &HashSet<u32>,
    deps: &BTreeMap<u32, Vec<u32>>,
) -> Vec<u32> {
    let is_populated: HashSet<u32> = populated.iter().copied().collect();
    let reads_unpopulated = |start: u32| {
        let mut seen = HashSet::from([start]);
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for &d in deps.get(&n).map(Vec::as_slice).unwrap_or(&[]) {
                if !seen.insert(d) {
                    continue;
                }
                if considered.contains(&d) && !is_populated.contains(&d) {
                    return true;
                }
                stack.push(d);
            }
        }
        false
    };
    populated
        .iter()
        .copied()
        .filter(|&m| !reads_unpopulated(m))
        .collect()
}

#[derive(Debug, Clone)]
pub struct LargeObjectMeta {
    pub oid: u32,
    pub owner: String,
    pub default_acl: bool,
    pub comment: Option<String>,
    pub size: u64,
}

pub async fn large_objects(c: &Client) -> Result<Vec<LargeObjectMeta>, tokio_postgres::Error> {
    // The size comes from reading the object (lo_get of the whole object
    // would hold it in memory): seek to the end through the server-side API.
    let rows = c
        .query(
            "SELECT m.oid, pg_get_userbyid(m.lomowner)::text, m.lomacl IS NULL, \
                    obj_description(m.oid, 'pg_largeobject') \
             FROM pg_largeobject_metadata m ORDER BY m.oid",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| LargeObjectMeta {
            oid: r.get(0),
            owner: r.get(1),
            default_acl: r.get(2),
            comment: r.get(3),
            size: 0,
        })
        .collect())
}

/// Explicit grants of large objects with non-default privileges, in ACL
/// order (so that re-granting them in order rebuilds the same ACL).
pub async fn large_object_grants(
    c: &Client,
) -> Result<HashMap<u32, Vec<(Option<String>, String, bool)>>, tokio_postgres::Error> {
    let rows = c
        .query(
            "SELECT m.oid, CASE WHEN a.grantee = 0 THEN NULL \
                                ELSE pg_get_userbyid(a.grantee)::text END, \
                    a.privilege_type, a.is_grantable \
             FROM pg_largeobject_metadata m \
             CROSS JOIN LATERAL aclexplode(m.lomacl) WITH ORDINALITY \
                  AS a(grantor, grantee, privilege_type, is_grantable, ord) \
             ORDER BY m.oid, a.ord",
            &[],
        )
        .await?;
    let mut out: HashMap<u32, Vec<_>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2), r.get(3)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matviews_refresh_after_what_they_read() {
        // 3 reads view 10, which reads matview 2; 2 reads matview 1.
        let mut deps = BTreeMap::new();
        deps.insert(3, vec![10]);
        deps.insert(10, vec![2]);
        deps.insert(2, vec![1]);
        assert_eq!(refresh_order(&[3, 2, 1], &deps), vec![1, 2, 3]);
        assert_eq!(refresh_order(&[3, 1], &deps), vec![1, 3]);
        assert_eq!(refresh_order(&[], &deps), Vec::<u32>::new());
    }

    #[test]
    fn matviews_over_unpopulated_matviews_are_not_refreshed() {
        // 3 reads view 10, which reads matview 2; 2 reads matview 1; 4 reads 3.
        let mut deps = BTreeMap::new();
        deps.insert(3, vec![10]);
        deps.insert(10, vec![2]);
        deps.insert(2, vec![1]);
        deps.insert(4, vec![3]);
        let all: HashSet<u32> = [1, 2, 3, 4].into();
        assert_eq!(refreshable(&[4, 3, 2, 1], &all, &deps), vec![4, 3, 2, 1]);
        // 1 unpopulated: everything over it, however indirectly, stays so.
        assert_eq!(refreshable(&[4, 3, 2], &all, &deps), Vec::<u32>::new());
        // 2 unpopulated: 1 still refreshes.
        assert_eq!(refreshable(&[4, 3, 1], &all, &deps), vec![1]);
        // An unpopulated matview that is not dumped does not count.
        let dumped: HashSet<u32> = [2, 3, 4].into();
        assert_eq!(refreshable(&[4, 3, 2], &dumped, &deps), vec![4, 3, 2]);
        // Cycles (impossible in a valid catalog) do not loop.
        deps.insert(1, vec![4]);
        assert_eq!(refreshable(&[4, 3, 2, 1], &all, &deps), vec![4, 3, 2, 1]);
    }
}
