//! What a table restore from a backup does with the tables it found on the
//! scratch server, decided before anything is changed: which tables (the
//! patterns, partitions with their partitioned table), where each one is
//! staged and where it ends, which pg_dump entries go to the target, and
//! the statements of the final swap. Pure functions of facts read
//! beforehand; no I/O.
//!
//! Staging: each chosen table is moved, on the scratch server (which is
//! pgtide's own and writable after promotion), into a staging schema
//! named for this restore, one per source schema; `ALTER TABLE … SET
//! SCHEMA` takes its indexes, constraints and owned sequences along. Its
//! schema is dumped from there and created, loaded and indexed in a
//! staging schema of the same name in the target, which no live query
//! sees. One transaction then moves the tables into their final schema
//! (after dropping the live tables they replace, with `--clean`), so
//! sessions of the live database see the old table or the restored one,
//! never a half-loaded one.
//!
//! Must never: connect, read files, or run anything.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::pg::catalog::Relation;
use crate::pg::dump_archive::Toc;
use crate::pg::pattern::{selected, NamePattern};
use crate::pg::{display_qualified, quote_ident, quote_qualified};

/// Prefix of every staging schema (`<prefix>_<n>`); a left-over one (a
/// killed restore) is recognisable by it.
pub const STAGING: &str = "pgtide_restore";

/// A table's parent in the scratch server's `pg_inherits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub child: u32,
    pub parent: u32,
    /// A partition of a partitioned table (else plain inheritance).
    pub partition: bool,
}

/// The tables the patterns choose: tables (plain and partitioned) of the
/// database, not members of an extension, matching `include` and no
/// `exclude`, plus every partition (at any depth) of a chosen partitioned
/// table. A chosen partition or inheritance child whose parent is not
/// chosen is refused: restored alone it would be attached to, or inherit
/// from, the live parent. Returned as indexes into `rels`, in its order.
pub fn choose_tables(
    rels: &[Relation],
    parents: &[Parent],
    include: &[NamePattern],
    exclude: &[NamePattern],
) -> Result<Vec<usize>, String> {
    let is_table = |r: &Relation| matches!(r.kind, 'r' | 'p') && !r.extension_member;
    let mut chosen: HashSet<u32> = rels
        .iter()
        .filter(|r| is_table(r) && selected(include, exclude, &r.schema, &r.name))
        .map(|r| r.oid)
        .collect();
    // Partitions follow their partitioned table, down every level.
    loop {
        let more: Vec<u32> = parents
            .iter()
            .filter(|p| p.partition && chosen.contains(&p.parent) && !chosen.contains(&p.child))
            .map(|p| p.child)
            .collect();
        if more.is_empty() {
            break;
        }
        chosen.extend(more);
    }
    let by_oid: HashMap<u32, &Relation> = rels.iter().map(|r| (r.oid, r)).collect();
    let name = |oid: u32| {
        by_oid
            .get(&oid)
            .map(|r| display_qualified(&r.schema, &r.name))
            .unwrap_or_else(|| format!("relation {oid}"))
    };
    let mut orphans: Vec<&Parent> = parents
        .iter()
        .filter(|p| chosen.contains(&p.child) && !chosen.contains(&p.parent))
        .collect();
    orphans.sort_by_key(|p| (name(p.child), p.parent));
    if let Some(p) = orphans.first() {
        return Err(if p.partition {
            format!(
                "table {} is a partition of {}: restore the partitioned table (its partitions come with it), or exclude the partition",
                name(p.child),
                name(p.parent)
            )
        } else {
            format!(
                "table {} inherits from {}: choose {} too, or exclude {}",
                name(p.child),
                name(p.parent),
                name(p.parent),
                name(p.child)
            )
        });
    }
    Ok((0..rels.len())
        .filter(|&i| chosen.contains(&rels[i].oid))
        .collect())
}

/// Where one table goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Its oid on the scratch server.
    pub oid: u32,
    /// (schema, name) in the backed-up database.
    pub source: (String, String),
    /// The staging schema, on the scratch server and in the target.
    pub stage: String,
    /// (schema, name) where it ends in the target.
    pub target: (String, String),
    /// `r` (has rows) or `p` (partitioned: its rows are in its partitions).
    pub kind: char,
    /// Bytes of its main fork on the scratch server.
    pub bytes: u64,
}

impl Placement {
    /// Its staged name, for SQL.
    pub fn staged(&self) -> String {
        quote_qualified(&self.stage, &self.source.1)
    }
    /// Its final name, for SQL.
    pub fn final_name(&self) -> String {
        quote_qualified(&self.target.0, &self.target.1)
    }
    /// Its source name, for SQL.
    pub fn source_name(&self) -> String {
        quote_qualified(&self.source.0, &self.source.1)
    }
    /// Its final name, for people.
    pub fn shown(&self) -> String {
        display_qualified(&self.target.0, &self.target.1)
    }
    /// Its source name, for people.
    pub fn shown_source(&self) -> String {
        display_qualified(&self.source.0, &self.source.1)
    }
}

/// The placement of each chosen table: staged in `<prefix>_<n>` (one per
/// source schema, numbered in schema order), ending in `into` (`--into-
/// schema`) or its own schema. Two tables that would end under one name
/// are refused.
pub fn place(
    tables: &[&Relation],
    into: Option<&str>,
    prefix: &str,
) -> Result<Vec<Placement>, String> {
    let schemas: BTreeSet<&str> = tables.iter().map(|r| r.schema.as_str()).collect();
    let stage: HashMap<&str, String> = schemas
        .iter()
        .enumerate()
        .map(|(n, s)| (*s, format!("{prefix}_{}", n + 1)))
        .collect();
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    let mut out = Vec::new();
    for r in tables {
        let target = (
            into.map(str::to_string).unwrap_or_else(|| r.schema.clone()),
            r.name.clone(),
        );
        let source = display_qualified(&r.schema, &r.name);
        if let Some(other) = seen.insert(target.clone(), source.clone()) {
            return Err(format!(
                "tables {other} and {source} would both become {}: restore them with separate runs",
                display_qualified(&target.0, &target.1)
            ));
        }
        out.push(Placement {
            oid: r.oid,
            source: (r.schema.clone(), r.name.clone()),
            stage: stage[r.schema.as_str()].clone(),
            target,
            kind: r.kind,
            bytes: r.bytes,
        });
    }
    Ok(out)
}

/// The staging schemas of `placements`, each once, in order.
pub fn stage_schemas(placements: &[Placement]) -> Vec<String> {
    let set: BTreeSet<&String> = placements.iter().map(|p| &p.stage).collect();
    set.into_iter().cloned().collect()
}

/// On the scratch server: the staging schemas, and every chosen table
/// moved into its own (with its indexes, constraints, owned sequences).
pub fn scratch_moves(placements: &[Placement]) -> String {
    let mut sql: Vec<String> = stage_schemas(placements)
        .iter()
        .map(|s| format!("CREATE SCHEMA {}", quote_ident(s)))
        .collect();
    for p in placements {
        sql.push(format!(
            "ALTER TABLE {} SET SCHEMA {}",
            p.source_name(),
            quote_ident(&p.stage)
        ));
    }
    format!("BEGIN; {}; COMMIT", sql.join("; "))
}

/// Entry types of a `pg_dump --table` archive that are not restored: a
/// publication must exist for a table to join it, and the staging tables
/// must not join live publications.
const LEFT_OUT: &[&str] = &["PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA"];

/// Which entries of the staged tables' schema archive go to the target:
/// all but foreign keys to tables outside the restore (`outward`, entry
/// indexes: the swap creates those once the tables are in place) and
/// publication memberships.
pub fn keep_entries(toc: &Toc<String>, outward: &[usize]) -> Vec<bool> {
    toc.entries
        .iter()
        .enumerate()
        .map(|(i, e)| !outward.contains(&i) && !LEFT_OUT.contains(&e.desc.as_str()))
        .collect()
}

/// The swap, in one transaction (run statement by statement, the foreign
/// keys between them): the final schemas made where missing, the live
/// tables that `--clean` replaces dropped (RESTRICT: a view over one stops
/// the swap), the staged tables moved into place, the staging schemas
/// dropped (RESTRICT: empty by then).
pub fn swap_statements(placements: &[Placement], replaced: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let finals: BTreeSet<&String> = placements.iter().map(|p| &p.target.0).collect();
    for s in finals {
        out.push(format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)));
    }
    if !replaced.is_empty() {
        // One statement: a partitioned table takes its partitions along.
        let list: Vec<String> = replaced
            .iter()
            .map(|(s, n)| quote_qualified(s, n))
            .collect();
        out.push(format!("DROP TABLE IF EXISTS {} RESTRICT", list.join(", ")));
    }
    for p in placements {
        out.push(format!(
            "ALTER TABLE {} SET SCHEMA {}",
            p.staged(),
            quote_ident(&p.target.0)
        ));
    }
    for s in stage_schemas(placements) {
        out.push(format!("DROP SCHEMA {} RESTRICT", quote_ident(&s)));
    }
    out
}

/// A foreign key the swap creates (one that points out of the restore) or
/// recreates (one of a live table that points at a replaced one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub name: String,
    /// Its table, (schema, name).
    pub table: (String, String),
    /// The table it references, (schema, name).
    pub references: (String, String),
    /// `pg_get_constraintdef`, names qualified.
    pub definition: String,
}

impl ForeignKey {
    pub fn add_sql(&self, not_valid: bool) -> String {
        format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}{}",
            quote_qualified(&self.table.0, &self.table.1),
            quote_ident(&self.name),
            self.definition,
            if not_valid { " NOT VALID" } else { "" }
        )
    }

    pub fn drop_sql(&self) -> String {
        format!(
            "ALTER TABLE {} DROP CONSTRAINT {}",
            quote_qualified(&self.table.0, &self.table.1),
            quote_ident(&self.name)
        )
    }

    /// `foreign key NAME of TABLE (references TABLE)`, for people.
    pub fn describe(&self) -> String {
        format!(
            "foreign key {} of {} (references {})",
            crate::pg::display_ident(&self.name),
            display_qualified(&self.table.0, &self.table.1),
            display_qualified(&self.references.0, &self.references.1)
        )
    }
}

/// The restored tables' sequences (owned, by scratch oid of their table),
/// as they are named in the staging schemas.
pub fn staged_sequences(
    placements: &[Placement],
    owned: &BTreeMap<u32, Vec<String>>,
) -> Vec<(String, String)> {
    placements
        .iter()
        .flat_map(|p| {
            owned
                .get(&p.oid)
                .into_iter()
                .flatten()
                .map(|s| (p.stage.clone(), s.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(oid: u32, schema: &str, name: &str, kind: char) -> Relation {
        Relation {
            oid,
            schema: schema.into(),
            name: name.into(),
            kind,
            bytes: 8192,
            extension_member: false,
            extension_filter: None,
            populated: true,
            owned_by: None,
        }
    }

    fn pats(p: &[&str]) -> Vec<NamePattern> {
        p.iter().map(|p| NamePattern::parse(p).unwrap()).collect()
    }

    fn rels() -> Vec<Relation> {
        vec![
            rel(1, "public", "orders", 'r'),
            rel(2, "public", "events", 'p'),
            rel(3, "public", "events_2025", 'p'),
            rel(4, "public", "events_2025_11", 'r'),
            rel(5, "public", "orders_v", 'v'),
            rel(6, "sales", "orders", 'r'),
            rel(7, "public", "child", 'r'),
        ]
    }

    fn parents() -> Vec<Parent> {
        vec![
            Parent {
                child: 3,
                parent: 2,
                partition: true,
            },
            Parent {
                child: 4,
                parent: 3,
                partition: true,
            },
            Parent {
                child: 7,
                parent: 1,
                partition: false,
            },
        ]
    }

    #[test]
    fn patterns_choose_tables_and_partitions_follow() {
        let r = rels();
        let names = |p: &[&str], x: &[&str]| -> Result<Vec<u32>, String> {
            choose_tables(&r, &parents(), &pats(p), &pats(x))
                .map(|v| v.into_iter().map(|i| r[i].oid).collect())
        };
        assert_eq!(names(&["public.events"], &[]), Ok(vec![2, 3, 4]));
        assert_eq!(names(&["orders"], &[]), Ok(vec![1, 6]));
        assert_eq!(names(&["public.orders*"], &[]), Ok(vec![1]));
        assert_eq!(names(&["nothing"], &[]), Ok(vec![]));
        let e = names(&["public.events_2025_11"], &[]).unwrap_err();
        assert_eq!(
            e,
            "table public.events_2025_11 is a partition of public.events_2025: restore the partitioned table (its partitions come with it), or exclude the partition"
        );
        let e = names(&["public.child"], &[]).unwrap_err();
        assert!(
            e.starts_with("table public.child inherits from public.orders"),
            "{e}"
        );
        assert_eq!(
            names(&["public.child", "public.orders"], &[]),
            Ok(vec![1, 7])
        );
        // Extension members are not restored.
        let mut r2 = rels();
        r2[0].extension_member = true;
        assert_eq!(
            choose_tables(&r2, &[], &pats(&["public.orders"]), &[]),
            Ok(vec![])
        );
    }

    #[test]
    fn placements_stage_per_schema_and_refuse_two_tables_on_one_name() {
        let r = rels();
        let chosen = [&r[0], &r[5]];
        let p = place(&chosen, None, "pgtide_restore_ab").unwrap();
        assert_eq!(p[0].stage, "pgtide_restore_ab_1");
        assert_eq!(p[1].stage, "pgtide_restore_ab_2");
        assert_eq!(p[1].target, ("sales".to_string(), "orders".to_string()));
        assert_eq!(
            stage_schemas(&p),
            ["pgtide_restore_ab_1", "pgtide_restore_ab_2"]
        );
        let e = place(&chosen, Some("restored"), "x").unwrap_err();
        assert_eq!(
            e,
            "tables public.orders and sales.orders would both become restored.orders: restore them with separate runs"
        );
        let p = place(&[&r[0]], Some("Restored At"), "x").unwrap();
        assert_eq!(p[0].shown(), "\"Restored At\".orders");
        assert_eq!(p[0].final_name(), "\"Restored At\".\"orders\"");
        assert_eq!(
            scratch_moves(&p),
            "BEGIN; CREATE SCHEMA \"x_1\"; ALTER TABLE \"public\".\"orders\" SET SCHEMA \"x_1\"; COMMIT"
        );
    }

    #[test]
    fn the_swap_drops_what_it_replaces_then_moves() {
        let r = rels();
        let p = place(&[&r[1], &r[2], &r[3]], None, "s").unwrap();
        let replaced = vec![("public".to_string(), "events".to_string())];
        assert_eq!(
            swap_statements(&p, &replaced),
            [
                "CREATE SCHEMA IF NOT EXISTS \"public\"",
                "DROP TABLE IF EXISTS \"public\".\"events\" RESTRICT",
                "ALTER TABLE \"s_1\".\"events\" SET SCHEMA \"public\"",
                "ALTER TABLE \"s_1\".\"events_2025\" SET SCHEMA \"public\"",
                "ALTER TABLE \"s_1\".\"events_2025_11\" SET SCHEMA \"public\"",
                "DROP SCHEMA \"s_1\" RESTRICT",
            ]
        );
        let fk = ForeignKey {
            name: "Order fk".into(),
            table: ("public".into(), "items".into()),
            references: ("public".into(), "orders".into()),
            definition: "FOREIGN KEY (o) REFERENCES public.orders(id)".into(),
        };
        assert_eq!(
            fk.add_sql(true),
            "ALTER TABLE \"public\".\"items\" ADD CONSTRAINT \"Order fk\" FOREIGN KEY (o) REFERENCES public.orders(id) NOT VALID"
        );
        assert_eq!(
            fk.describe(),
            "foreign key \"Order fk\" of public.items (references public.orders)"
        );
    }

    #[test]
    fn outward_keys_and_publications_stay_out_of_the_target() {
        use crate::pg::dump_archive::Entry;
        let e = |id: i32, desc: &str| Entry {
            dump_id: id,
            desc: desc.into(),
            namespace: Some("s".into()),
            tag: "t".into(),
            tablespace: None,
            deps: vec![],
            foreign_key: None,
        };
        let toc = Toc {
            version: (1, 16, 0),
            encoding: None,
            entries: vec![
                e(1, "TABLE"),
                e(2, "FK CONSTRAINT"),
                e(3, "PUBLICATION TABLE"),
                e(4, "INDEX"),
            ],
        };
        assert_eq!(keep_entries(&toc, &[1]), [true, false, false, true]);
    }

    #[test]
    fn sequences_are_named_in_their_staging_schema() {
        let r = rels();
        let p = place(&[&r[0]], None, "s").unwrap();
        let owned = BTreeMap::from([(1, vec!["orders_id_seq".to_string()])]);
        assert_eq!(
            staged_sequences(&p, &owned),
            [("s_1".to_string(), "orders_id_seq".to_string())]
        );
    }
}
