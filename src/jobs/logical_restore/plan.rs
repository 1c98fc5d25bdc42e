//! The plan of a logical restore: what `super::run` does, in order,
//! decided from facts read beforehand (the manifest, the schema archive's
//! table of contents, what the target has). Pure: `--dry-run` prints the
//! plan, `super::execute` runs it, and neither decides anything the other
//! must repeat.
//!
//! Must never: connect, read files, or look at `dry_run`.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{archive, database_property_statements, toc, RestoreSettings};
use crate::pg::pattern::{selected, NamePattern};
use crate::pg::quote_ident;
use crate::repo::manifest::{DumpManifest, OwnedBy};

/// What a restore covers: from the patterns, the manifest and (when the
/// schema is restored) the schema archive's table of contents.
#[derive(Debug)]
pub(super) struct Selection {
    /// Tables whose rows are loaded (indexes into the manifest's tables).
    pub tables: Vec<usize>,
    /// Sequences whose values are set (indexes into the manifest's).
    pub sequences: Vec<usize>,
    /// Materialized views to refresh (indexes into the manifest's).
    pub matviews: Vec<usize>,
    pub large_objects: bool,
    /// Entries of the table of contents to restore; `None`: all.
    pub keep: Option<Vec<bool>>,
    /// Tables the schema part restores, partitioned ones included.
    pub schema_tables: usize,
}

impl Selection {
    pub fn new(
        m: &DumpManifest,
        toc: Option<&archive::Toc<String>>,
        s: &RestoreSettings,
    ) -> Selection {
        Self::of(m, toc, &s.tables, &s.exclude_tables)
    }

    fn of(
        m: &DumpManifest,
        toc: Option<&archive::Toc<String>>,
        include_tables: &[NamePattern],
        exclude_tables: &[NamePattern],
    ) -> Selection {
        let include = !include_tables.is_empty();
        let excluded =
            |schema: &str, name: &str| exclude_tables.iter().any(|p| p.matches(schema, name));
        let tables: Vec<usize> = (0..m.tables.len())
            .filter(|&i| {
                selected(
                    include_tables,
                    exclude_tables,
                    &m.tables[i].schema,
                    &m.tables[i].name,
                )
            })
            .collect();
        let toc_sel = toc
            .filter(|_| include || !exclude_tables.is_empty())
            .map(|t| toc::select(t, include_tables, exclude_tables));
        // With --table: the sequences the schema part restores (those the
        // chosen tables own); without a schema, those the manifest says the
        // chosen tables own.
        let owned_by_chosen = |o: &OwnedBy| {
            tables
                .iter()
                .any(|&i| o.is(&m.tables[i].schema, &m.tables[i].name))
        };
        let sequences = (0..m.sequences.len())
            .filter(|&i| {
                let q = &m.sequences[i];
                !excluded(&q.schema, &q.name)
                    && (!include
                        || match &toc_sel {
                            Some(t) => t.sequences.contains(&(q.schema.clone(), q.name.clone())),
                            None => q.owned_by.as_ref().is_some_and(owned_by_chosen),
                        })
            })
            .collect();
        let matviews = (0..m.matviews.len())
            .filter(|&i| !include && !excluded(&m.matviews[i].schema, &m.matviews[i].name))
            .collect();
        Selection {
            tables,
            sequences,
            matviews,
            large_objects: !include,
            schema_tables: toc_sel.as_ref().map_or(0, |t| t.tables.len()),
            keep: toc_sel.map(|t| t.keep),
        }
    }

    /// Nothing to restore from any table.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.schema_tables == 0
    }
}

/// What the planner needs to know of the target, read before planning.
#[derive(Debug, Default)]
pub(super) struct TargetFacts {
    /// `--create`: the `CREATE DATABASE` statement (checked against the
    /// target server's version).
    pub create_sql: Option<String>,
    /// Tablespaces the restored objects use that the target lacks.
    pub missing_tablespaces: BTreeSet<String>,
}

/// A restore, step by step, in the order they run.
#[derive(Debug)]
pub struct Plan {
    pub database: String,
    /// Objects go in the target's default tablespace
    /// (`pg_restore --no-tablespaces`): asked for, or forced because the
    /// target lacks tablespaces of the dump.
    pub no_tablespaces: bool,
    pub steps: Vec<Step>,
    /// Bytes of the rows loaded (with a schema-only restore: 0).
    pub bytes: u64,
}

/// One step. A list of table-of-contents entries (`list`) is a mask over
/// the schema archive's entries for `pg_restore --use-list`; `None` runs
/// the whole section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Checked before planning (every pack there, with its size); listed
    /// so that the report says so.
    ReadDump {
        packs: usize,
        bytes: u64,
    },
    CreateDatabase {
        sql: String,
    },
    /// A note, done by `Plan::no_tablespaces`: the target lacks these.
    DefaultTablespace {
        missing: Vec<String>,
    },
    /// `--clean`: pg_restore's DROP statements for the entries.
    DropExisting {
        list: Option<Vec<bool>>,
    },
    PreData {
        list: Option<Vec<bool>>,
    },
    /// COPY FROM of every part of `tables` (indexes into the manifest),
    /// with `jobs` workers; the indexes and keys of each table in `early`
    /// are built (a pg_restore of its entries) as soon as it is loaded.
    LoadTables {
        tables: Vec<usize>,
        jobs: usize,
        early: Vec<EarlyBuild>,
    },
    Sequences {
        sequences: Vec<usize>,
    },
    LargeObjects {
        count: usize,
    },
    PostData {
        list: Option<Vec<bool>>,
        jobs: usize,
    },
    RefreshMatviews {
        matviews: Vec<usize>,
    },
    DatabaseProperties {
        statements: Vec<String>,
    },
}

/// The indexes and keys of one big table, built as soon as it is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyBuild {
    /// Index of the table in the manifest.
    pub table: usize,
    /// Its own post-data entries.
    pub list: Vec<bool>,
}

/// A step as reports show it: `--json`'s `plan[]`.
#[derive(Debug, Clone, Serialize)]
pub struct PlanEntry {
    /// `read-dump`, `create-database`, `default-tablespace`,
    /// `drop-existing`, `pre-data`, `load`, `early-index`, `sequences`,
    /// `large-objects`, `post-data`, `refresh-matviews`,
    /// `database-properties`.
    pub kind: &'static str,
    /// One line, as in `steps[]`.
    pub summary: String,
    /// What the step touches: tables (with their parts), sequences,
    /// materialized views, large objects, schema entries, the database.
    pub objects: Vec<String>,
}

/// Build the plan. `do_schema`: the dump's schema archive is restored (it
/// has one, and not `--data-only`).
pub(super) fn build(
    m: &DumpManifest,
    toc: Option<&archive::Toc<String>>,
    sel: &Selection,
    s: &RestoreSettings,
    target: &TargetFacts,
) -> Plan {
    let do_schema = !s.data_only && m.schema.is_some();
    let do_data = !s.schema_only;
    let database = s.conn.dbname.clone().unwrap_or_default();
    let mut steps = vec![Step::ReadDump {
        packs: m.packs.len(),
        bytes: m.packs.iter().map(|p| p.size).sum(),
    }];
    if let Some(sql) = &target.create_sql {
        steps.push(Step::CreateDatabase { sql: sql.clone() });
    }
    let missing = &target.missing_tablespaces;
    if !missing.is_empty() {
        steps.push(Step::DefaultTablespace {
            missing: missing.iter().cloned().collect(),
        });
    }
    // The indexes and keys of big tables, built as soon as each is loaded,
    // and the list of the post-data pass that does the rest.
    let mut early = Vec::new();
    let mut post_list = sel.keep.clone();
    if let (Some(t), true, true) = (toc, do_schema, do_data) {
        let all = vec![true; t.entries.len()];
        let keep = sel.keep.as_deref().unwrap_or(&all);
        let own = toc::own_index_entries(t, keep);
        let mut rest = keep.to_vec();
        for &i in &sel.tables {
            let table = &m.tables[i];
            if table.raw_bytes() < s.early_index_size {
                continue;
            }
            let Some(entries) = own.get(&(table.schema.clone(), table.name.clone())) else {
                continue;
            };
            let mut only = vec![false; t.entries.len()];
            for &e in entries {
                only[e] = true;
                rest[e] = false;
            }
            early.push(EarlyBuild {
                table: i,
                list: only,
            });
        }
        if !early.is_empty() {
            post_list = Some(rest);
        }
    }
    if do_schema {
        if s.clean {
            steps.push(Step::DropExisting {
                list: sel.keep.clone(),
            });
        }
        steps.push(Step::PreData {
            list: sel.keep.clone(),
        });
    }
    let mut bytes = 0;
    if do_data {
        bytes = sel.tables.iter().map(|&i| m.tables[i].raw_bytes()).sum();
        steps.push(Step::LoadTables {
            tables: sel.tables.clone(),
            jobs: s.jobs,
            early,
        });
        steps.push(Step::Sequences {
            sequences: sel.sequences.clone(),
        });
        if sel.large_objects && !m.large_objects.items.is_empty() {
            steps.push(Step::LargeObjects {
                count: m.large_objects.items.len(),
            });
        }
    }
    // Post-data, then matviews (they may need the indexes of what they read).
    if do_schema {
        steps.push(Step::PostData {
            list: post_list,
            jobs: s.jobs,
        });
    }
    if do_data && !sel.matviews.is_empty() {
        steps.push(Step::RefreshMatviews {
            matviews: sel.matviews.clone(),
        });
    }
    // The database's own properties come last, as pg_dumpall used to put
    // them: a setting such as default_transaction_read_only or a connection
    // limit must not get in the way of the restore's own sessions.
    if s.create {
        let statements =
            database_property_statements(&database, &m.database, s.no_owner, s.no_privileges);
        if !statements.is_empty() {
            steps.push(Step::DatabaseProperties { statements });
        }
    }
    Plan {
        database,
        no_tablespaces: s.no_tablespaces || !missing.is_empty(),
        steps,
        bytes,
    }
}

impl Plan {
    /// Tables loaded.
    pub fn tables(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| match s {
                Step::LoadTables { tables, .. } => tables.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Sequence values set.
    pub fn sequences(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Sequences { sequences } => sequences.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Large objects restored.
    pub fn large_objects(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| match s {
                Step::LargeObjects { count } => *count as u64,
                _ => 0,
            })
            .sum()
    }

    /// The steps as reports show them, in order.
    pub fn describe(
        &self,
        id: &str,
        m: &DumpManifest,
        toc: Option<&archive::Toc<String>>,
    ) -> Vec<PlanEntry> {
        let entry = |kind, summary: String, objects| PlanEntry {
            kind,
            summary,
            objects,
        };
        // The entries a pg_restore run restores, as pg_restore -l names them.
        let entries = |list: &Option<Vec<bool>>| -> Vec<String> {
            match (toc, list) {
                (Some(t), Some(keep)) => toc::list_text(t, keep)
                    .lines()
                    .map(|l| l.split_once("; ").map_or(l, |(_, r)| r).to_string())
                    .collect(),
                _ => Vec::new(),
            }
        };
        let database = &self.database;
        let mut out = Vec::new();
        for step in &self.steps {
            match step {
                Step::ReadDump { packs, bytes } => out.push(entry(
                    "read-dump",
                    format!("read dump {id} ({packs} packs, {bytes} bytes)"),
                    Vec::new(),
                )),
                Step::CreateDatabase { .. } => out.push(entry(
                    "create-database",
                    format!("create database {database}"),
                    vec![database.clone()],
                )),
                Step::DefaultTablespace { missing } => {
                    let names = missing
                        .iter()
                        .map(|t| quote_ident(t))
                        .collect::<Vec<_>>()
                        .join(", ");
                    out.push(entry(
                        "default-tablespace",
                        format!("restore into the default tablespace (the target lacks {names})"),
                        missing.clone(),
                    ))
                }
                Step::DropExisting { list } => out.push(entry(
                    "drop-existing",
                    "drop the objects the dump will create".into(),
                    entries(list),
                )),
                Step::PreData { list } => out.push(entry(
                    "pre-data",
                    "restore pre-data (schemas, types, tables, functions) with pg_restore".into(),
                    entries(list),
                )),
                Step::LoadTables {
                    tables,
                    jobs,
                    early,
                } => {
                    let rows: u64 = tables.iter().map(|&i| m.tables[i].rows()).sum();
                    let bytes: u64 = tables.iter().map(|&i| m.tables[i].raw_bytes()).sum();
                    out.push(entry(
                        "load",
                        format!(
                            "load {} tables ({rows} rows, {bytes} bytes) with {jobs} workers",
                            tables.len()
                        ),
                        tables
                            .iter()
                            .map(|&i| {
                                let t = &m.tables[i];
                                format!(
                                    "{} ({} parts, {} rows, {} bytes)",
                                    t.qualified(),
                                    t.parts.len(),
                                    t.rows(),
                                    t.raw_bytes()
                                )
                            })
                            .collect(),
                    ));
                    if !early.is_empty() {
                        out.push(entry(
                            "early-index",
                            format!(
                                "build the indexes and keys of {} big tables as soon as each is loaded",
                                early.len()
                            ),
                            early
                                .iter()
                                .map(|b| m.tables[b.table].qualified())
                                .collect(),
                        ));
                    }
                }
                Step::Sequences { sequences } => out.push(entry(
                    "sequences",
                    format!("set {} sequence values", sequences.len()),
                    sequences
                        .iter()
                        .map(|&i| {
                            let q = &m.sequences[i];
                            format!("{}.{}", q.schema, q.name)
                        })
                        .collect(),
                )),
                Step::LargeObjects { count } => out.push(entry(
                    "large-objects",
                    format!("restore {count} large objects"),
                    m.large_objects
                        .items
                        .iter()
                        .map(|o| o.oid.to_string())
                        .collect(),
                )),
                Step::PostData { list, jobs } => out.push(entry(
                    "post-data",
                    format!(
                        "restore post-data (indexes, constraints, triggers) with pg_restore -j {jobs}"
                    ),
                    entries(list),
                )),
                Step::RefreshMatviews { matviews } => out.push(entry(
                    "refresh-matviews",
                    format!("refresh {} materialized views", matviews.len()),
                    matviews
                        .iter()
                        .map(|&i| format!("{}.{}", m.matviews[i].schema, m.matviews[i].name))
                        .collect(),
                )),
                Step::DatabaseProperties { statements } => out.push(entry(
                    "database-properties",
                    format!(
                        "set the properties of database {database} ({} statements: owner, grants, comment, settings, limits)",
                        statements.len()
                    ),
                    vec![database.clone()],
                )),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::conninfo::ConnInfo;
    use archive::{Entry, Toc};

    /// A dump with a schema archive: `public.big` (two parts, 100 bytes),
    /// `public.small` (one part, 10 bytes), a sequence owned by `small`, a
    /// materialized view and a large object.
    fn manifest() -> DumpManifest {
        let part = |rows: u64, bytes: u64| {
            serde_json::json!({"ctid": null, "rows": rows,
                "stream": {"raw_bytes": bytes, "stored_bytes": bytes, "chunks": []}})
        };
        let table = |name: &str, parts: Vec<serde_json::Value>| {
            serde_json::json!({"oid": 1, "schema": "public", "name": name, "columns": ["a"],
                "relation_bytes": 0, "filter": null, "indexes": [], "parts": parts})
        };
        serde_json::from_value(serde_json::json!({
            "format_version": 3, "kind": "dump", "id": "D1",
            "name": null, "description": null, "pgtide_version": "0",
            "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z",
            "source": {"server_version": "17.0", "server_version_num": 170000,
                       "database": "src", "connection": "", "system_identifier": "",
                       "encoding": "UTF8", "collate": "C", "ctype": "C", "snapshot": ""},
            "options": {"compression": "none", "chunk_size": 4194304, "jobs": 1,
                        "schema_only": false, "data_only": false, "tables": [],
                        "exclude_tables": [], "split_threshold": 0},
            "compression": "none",
            "schema": {"pg_dump_version": "17.0",
                       "stream": {"raw_bytes": 0, "stored_bytes": 0, "chunks": []}},
            "tables": [table("big", vec![part(6, 60), part(4, 40)]),
                       table("small", vec![part(1, 10)])],
            "sequences": [{"schema": "public", "name": "small_a_seq", "last_value": 5,
                           "is_called": true, "owned_by": {"schema": "public", "table": "small"}}],
            "large_objects": {"items": [{"oid": 42, "owner": "postgres", "size": 0,
                                         "grants": null, "comment": null}],
                              "stream": {"raw_bytes": 0, "stored_bytes": 0, "chunks": []}},
            "matviews": [{"schema": "public", "name": "mv"}],
            "packs": [],
            "stats": {"tables": 2, "rows": 11, "raw_bytes": 110, "stored_bytes": 110, "seconds": 1.0}
        }))
        .unwrap()
    }

    /// Its table of contents: the two tables and an index on `big`.
    fn toc() -> Toc<String> {
        let entry = |dump_id, desc: &str, tag: &str, deps: Vec<i32>| Entry {
            dump_id,
            desc: desc.into(),
            namespace: Some("public".into()),
            tag: tag.into(),
            tablespace: None,
            deps,
            foreign_key: None,
        };
        Toc {
            version: (1, 16, 0),
            encoding: None,
            entries: vec![
                entry(1, "TABLE", "big", vec![]),
                entry(2, "TABLE", "small", vec![]),
                entry(3, "INDEX", "big_a_idx", vec![1]),
            ],
        }
    }

    fn settings() -> RestoreSettings {
        RestoreSettings {
            conn: ConnInfo::parse("dbname=copy").unwrap(),
            jobs: 4,
            create: false,
            clean: false,
            schema_only: false,
            data_only: false,
            tables: Vec::new(),
            exclude_tables: Vec::new(),
            dry_run: false,
            no_owner: false,
            no_privileges: false,
            no_tablespaces: false,
            early_index_size: 50,
            pg_dump: None,
            prefetch: 4,
        }
    }

    fn kinds(p: &Plan, m: &DumpManifest, toc: Option<&Toc<String>>) -> Vec<&'static str> {
        p.describe("D1", m, toc).iter().map(|e| e.kind).collect()
    }

    #[test]
    fn a_full_restore_runs_every_step_in_order() {
        let (m, t, s) = (manifest(), toc(), settings());
        let sel = Selection::new(&m, Some(&t), &s);
        let p = build(&m, Some(&t), &sel, &s, &TargetFacts::default());
        assert_eq!(
            kinds(&p, &m, Some(&t)),
            [
                "read-dump",
                "pre-data",
                "load",
                "early-index",
                "sequences",
                "large-objects",
                "post-data",
                "refresh-matviews"
            ]
        );
        // The big table's index is built as soon as it is loaded, and left
        // out of the post-data pass.
        let Step::LoadTables { tables, early, .. } = &p.steps[2] else {
            panic!("{:?}", p.steps[2]);
        };
        assert_eq!(tables, &[0, 1]);
        assert_eq!(
            early,
            &[EarlyBuild {
                table: 0,
                list: vec![false, false, true]
            }]
        );
        assert_eq!(
            p.steps[5],
            Step::PostData {
                list: Some(vec![true, true, false]),
                jobs: 4
            }
        );
        assert_eq!((p.tables(), p.sequences(), p.large_objects()), (2, 1, 1));
        assert_eq!(p.bytes, 110);
        let lines = p.describe("D1", &m, Some(&t));
        assert_eq!(
            lines[2].summary,
            "load 2 tables (11 rows, 110 bytes) with 4 workers"
        );
        assert_eq!(
            lines[2].objects,
            [
                "public.big (2 parts, 10 rows, 100 bytes)",
                "public.small (1 parts, 1 rows, 10 bytes)"
            ]
        );
        assert_eq!(lines[3].objects, ["public.big"]);
        assert_eq!(lines[6].objects, ["TABLE public big", "TABLE public small"]);
    }

    #[test]
    fn small_tables_wait_for_the_post_data_pass() {
        let (m, t) = (manifest(), toc());
        let s = RestoreSettings {
            early_index_size: 1000,
            ..settings()
        };
        let sel = Selection::new(&m, Some(&t), &s);
        let p = build(&m, Some(&t), &sel, &s, &TargetFacts::default());
        assert!(!kinds(&p, &m, Some(&t)).contains(&"early-index"));
        assert!(p.steps.contains(&Step::PostData {
            list: None,
            jobs: 4
        }));
    }

    #[test]
    fn create_clean_and_missing_tablespaces() {
        let (m, t) = (manifest(), toc());
        let s = RestoreSettings {
            create: true,
            clean: true,
            ..settings()
        };
        let sel = Selection::new(&m, Some(&t), &s);
        let facts = TargetFacts {
            create_sql: Some("CREATE DATABASE copy".into()),
            missing_tablespaces: ["fast".to_string()].into(),
        };
        let p = build(&m, Some(&t), &sel, &s, &facts);
        assert!(p.no_tablespaces);
        assert_eq!(
            kinds(&p, &m, Some(&t))[..5],
            [
                "read-dump",
                "create-database",
                "default-tablespace",
                "drop-existing",
                "pre-data"
            ]
        );
    }

    #[test]
    fn data_only_and_schema_only_leave_out_the_other_half() {
        let m = manifest();
        let s = RestoreSettings {
            data_only: true,
            ..settings()
        };
        let sel = Selection::new(&m, None, &s);
        let p = build(&m, None, &sel, &s, &TargetFacts::default());
        assert_eq!(
            kinds(&p, &m, None),
            [
                "read-dump",
                "load",
                "sequences",
                "large-objects",
                "refresh-matviews"
            ]
        );
        let s = RestoreSettings {
            schema_only: true,
            ..settings()
        };
        let p = build(&m, None, &sel, &s, &TargetFacts::default());
        assert_eq!(kinds(&p, &m, None), ["read-dump", "pre-data", "post-data"]);
        assert_eq!((p.tables(), p.bytes), (0, 0));
    }

    #[test]
    fn a_table_pattern_takes_its_own_sequences_and_no_large_objects() {
        let (m, t) = (manifest(), toc());
        let s = RestoreSettings {
            tables: vec![NamePattern::parse("small").unwrap()],
            ..settings()
        };
        let sel = Selection::new(&m, Some(&t), &s);
        assert_eq!(sel.tables, [1]);
        assert_eq!(sel.keep.as_deref(), Some(&[false, true, false][..]));
        let p = build(&m, Some(&t), &sel, &s, &TargetFacts::default());
        assert_eq!(
            kinds(&p, &m, Some(&t)),
            ["read-dump", "pre-data", "load", "sequences", "post-data"]
        );
    }
}
