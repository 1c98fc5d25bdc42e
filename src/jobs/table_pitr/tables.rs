//! `restore <backup> --table …`: the tables the patterns choose on the
//! scratch server go into the live target database (see [`super::plan`]
//! for the staging and the swap):
//!
//! 1. choose the tables; find what comes with them (indexes, owned
//!    sequences) and the foreign keys that point out of the choice;
//! 2. check the target: a table (or an index or sequence of one) already
//!    there is refused without `--clean` (exit 6) — nothing is changed
//!    before this;
//! 3. on the scratch server, move the tables into their staging schemas
//!    and `pg_dump --schema-only` them;
//! 4. in the target: the staging schemas, pre-data (pg_restore), the rows
//!    (parallel COPY from the scratch server, [`super::copy`]), the
//!    sequence values, post-data (pg_restore -j: indexes, constraints,
//!    triggers, foreign keys among the restored tables);
//! 5. one transaction: drop the live tables `--clean` replaces (their
//!    inbound foreign keys dropped first, recreated after), move the
//!    staged tables into place, create the foreign keys that point out
//!    (skipped, with a warning naming them, when the referenced table is
//!    not in the target; NOT VALID, with a warning, when rows violate them).
//!
//! A failure or interrupt anywhere leaves the target as it was: the
//! caller drops the staging schemas.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::TryFutureExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::copy::{self, CopyTable, Servers};
use super::plan::{self, ForeignKey, Parent, Placement};
use super::{ForeignKeyOutcome, RestoredTable, Settings, Source};
use crate::jobs::logical_restore::{self, toc, PgRestore};
use crate::jobs::{cancellable, JobError, Progress};
use crate::pg::catalog::{self, Relation};
use crate::pg::dump_archive as archive;
use crate::pg::pattern::NamePattern;
use crate::pg::tools::{self, PgTools};
use crate::pg::{
    copy_binary, display_ident, display_qualified, quote_ident, quote_qualified, session,
};
use crate::repo::manifest::SequenceEntry;

/// Tables bigger than this are read in block ranges by several workers.
const SPLIT_SIZE: u64 = 256 << 20;
/// How long the swap waits for a lock on a live table.
const SWAP_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) struct Cx<'a> {
    pub s: &'a Settings,
    pub tools: &'a PgTools,
    pub source: &'a Source,
    pub target: &'a Client,
    pub scratch_dir: &'a Path,
    pub prefix: &'a str,
    pub progress: &'a Arc<Progress>,
    /// The recovery target, as text (for messages).
    pub recovery_target: &'a str,
    pub source_db: &'a str,
    /// Stops the restore: each step where it waits, the copy's workers
    /// aborted and awaited.
    pub cancel: &'a CancellationToken,
}

pub(super) struct Outcome {
    pub tables: Vec<RestoredTable>,
    pub sequences: u64,
    pub foreign_keys: Vec<ForeignKeyOutcome>,
}

pub(super) async fn restore(
    cx: &Cx<'_>,
    include: &[NamePattern],
    exclude: &[NamePattern],
    into: Option<&str>,
) -> Result<Outcome, JobError> {
    let (sc, tc) = (&cx.source.client, cx.target);
    let cancel = cx.cancel;
    let sessions = async {
        let src = catalog::server_info(sc)
            .await
            .map_err(JobError::sql("read the scratch server's information"))?;
        let dst = catalog::server_info(tc)
            .await
            .map_err(JobError::sql("read target server information"))?;
        // search_path = pg_catalog: every name the catalog prints is qualified.
        session::configure(sc, src.version, Duration::ZERO)
            .await
            .map_err(JobError::sql("configure the scratch session"))?;
        session::configure(tc, dst.version, SWAP_LOCK_TIMEOUT)
            .await
            .map_err(JobError::sql("configure the target session"))?;
        Ok::<_, JobError>((src, dst))
    };
    let (src, dst) = cancellable(cancel, sessions).await?;

    // 1. The tables, and what comes with them.
    cx.progress.set_phase("choosing the tables");
    let rels = cancellable(
        cancel,
        catalog::relations(sc).map_err(JobError::sql("list the scratch server's tables")),
    )
    .await?;
    let parents = cancellable(cancel, inherits(sc)).await?;
    let chosen =
        plan::choose_tables(&rels, &parents, include, exclude).map_err(JobError::Invalid)?;
    if chosen.is_empty() {
        let pats: Vec<&str> = include.iter().map(|p| p.original.as_str()).collect();
        return Err(JobError::NotAtTarget(format!(
            "no table of database {} at {} matches --table {}: nothing was restored",
            display_ident(cx.source_db),
            cx.recovery_target,
            pats.join(" --table ")
        )));
    }
    let chosen: Vec<&Relation> = chosen.iter().map(|&i| &rels[i]).collect();
    let placements = plan::place(&chosen, into, cx.prefix).map_err(JobError::Invalid)?;
    let oids: Vec<u32> = placements.iter().map(|p| p.oid).collect();
    let comp = cancellable(cancel, companions(sc, &oids)).await?;
    let outward = cancellable(cancel, outward_keys(sc, &placements)).await?;

    // 2. The target: nothing there may be overwritten without --clean.
    cx.progress.set_phase("checking the target database");
    let replaced = cancellable(cancel, check_target(tc, &placements, &comp, cx.s.clean)).await?;
    let replaced_oids: Vec<u32> = replaced.iter().map(|r| r.0).collect();
    let inbound = cancellable(cancel, inbound_keys(tc, &replaced_oids)).await?;

    // 3. Staged on the scratch server, and their schema dumped.
    cx.progress
        .set_phase("staging the tables on the scratch server");
    let moves = plan::scratch_moves(&placements);
    let staged = sc.batch_execute(&moves).map_err(JobError::sql(
        "move the tables into staging schemas on the scratch server",
    ));
    cancellable(cancel, staged).await?;
    let archive_path = cx.scratch_dir.join("tables.dump");
    cancellable(
        cancel,
        dump_schema(cx, &placements, &src.encoding, &archive_path),
    )
    .await?;
    let bytes = tokio::fs::read(&archive_path)
        .await
        .map_err(|e| JobError::Io {
            context: format!("read {}", archive_path.display()),
            source: e,
        })?;
    let raw = archive::read_toc(&bytes).map_err(|e| {
        JobError::BadStream(format!(
            "pg_dump's archive of the tables cannot be read: {e}"
        ))
    })?;
    let toc = if raw.needs_conversion().is_empty() {
        raw.decode(&HashMap::new())
    } else {
        cancellable(cancel, logical_restore::decode_toc(sc, &raw)).await?
    };
    let all = vec![true; toc.entries.len()];
    let out_entries: Vec<usize> = toc::outward_foreign_keys(&toc, &all)
        .into_iter()
        .map(|k| k.entry)
        .collect();
    let keep = plan::keep_entries(&toc, &out_entries);
    let list = toc::write_list(&toc, &keep).await?;
    let missing = cancellable(
        cancel,
        logical_restore::missing(tc, toc::tablespaces(&toc, &keep)),
    )
    .await?;
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|t| quote_ident(t)).collect();
        // Handled here: the tables go into the default tablespace.
        tracing::warn!(
            "the target lacks tablespace(s) {}: the tables go into its default tablespace",
            names.join(", ")
        );
    }

    // 4. The target's staging schemas: created, filled, indexed.
    cx.progress
        .set_phase("creating the tables in staging schemas of the target");
    let create: Vec<String> = plan::stage_schemas(&placements)
        .iter()
        .map(|s| format!("CREATE SCHEMA {}", quote_ident(s)))
        .collect();
    let create = create.join("; ");
    let created = tc
        .batch_execute(&create)
        .map_err(JobError::sql("create the staging schemas in the target"));
    cancellable(cancel, created).await?;
    let restore = PgRestore {
        tools: cx.tools,
        archive: &archive_path,
        conn: &cx.s.conn,
        no_owner: cx.s.no_owner,
        no_privileges: cx.s.no_privileges,
        no_tablespaces: !missing.is_empty(),
        target: tc,
        version: dst.version,
        encoding: &src.encoding,
    };
    cancellable(cancel, restore.section("pre-data", Some(list.path()), 1)).await?;

    cx.progress.set_phase(format!(
        "copying {} tables from the scratch server",
        placements.len()
    ));
    let rows = copy_rows(cx, &placements, &src, &dst).await?;

    let seqs = plan::staged_sequences(&placements, &comp.sequences);
    if !seqs.is_empty() {
        let values = cancellable(
            cancel,
            catalog::sequence_values(sc, &seqs)
                .map_err(JobError::sql("read sequence values on the scratch server")),
        )
        .await?;
        let entries: Vec<SequenceEntry> = seqs
            .iter()
            .zip(values)
            .map(|((schema, name), (last_value, is_called))| SequenceEntry {
                schema: schema.clone(),
                name: name.clone(),
                last_value,
                is_called,
                owned_by: None,
            })
            .collect();
        let refs: Vec<&SequenceEntry> = entries.iter().collect();
        cancellable(cancel, logical_restore::set_sequences(tc, &refs)).await?;
    }

    cx.progress
        .set_phase("building indexes and constraints (pg_restore post-data)");
    let built = restore.section("post-data", Some(list.path()), cx.s.jobs);
    cancellable(cancel, built).await?;

    // 5. Into place, in one transaction.
    cx.progress
        .set_phase("moving the restored tables into place");
    let replaced_names: Vec<(String, String)> = replaced.iter().map(|r| r.1.clone()).collect();
    // Stopped half-way, the swap is rolled back with the target's session,
    // which ends with the restore.
    let foreign_keys = cancellable(
        cancel,
        swap(tc, &placements, &replaced_names, &outward, &inbound),
    )
    .await?;

    let replaced_set: HashSet<&(String, String)> = replaced_names.iter().collect();
    let tables = placements
        .iter()
        .zip(rows)
        .map(|(p, rows)| RestoredTable {
            source: p.shown_source(),
            restored_as: p.shown(),
            rows,
            replaced: replaced_set.contains(&p.target),
        })
        .collect();
    Ok(Outcome {
        tables,
        sequences: seqs.len() as u64,
        foreign_keys,
    })
}

/// Every table's parent, from `pg_inherits`.
async fn inherits(sc: &Client) -> Result<Vec<Parent>, JobError> {
    Ok(sc
        .query(
            "SELECT i.inhrelid, i.inhparent, c.relispartition \
             FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid",
            &[],
        )
        .await
        .map_err(JobError::sql("read the scratch server's inheritance"))?
        .iter()
        .map(|r| Parent {
            child: r.get(0),
            parent: r.get(1),
            partition: r.get(2),
        })
        .collect())
}

/// The relations that come with the chosen tables, by table oid: their
/// indexes and their owned (serial and identity) sequences, by name.
struct Companions {
    indexes: BTreeMap<u32, Vec<String>>,
    sequences: BTreeMap<u32, Vec<String>>,
}

async fn companions(sc: &Client, oids: &[u32]) -> Result<Companions, JobError> {
    let ctx = "read the chosen tables' indexes and sequences";
    let mut c = Companions {
        indexes: BTreeMap::new(),
        sequences: BTreeMap::new(),
    };
    for r in sc
        .query(
            "SELECT i.indrelid, ic.relname::text FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
             WHERE i.indrelid = ANY($1) ORDER BY 1, 2",
            &[&oids],
        )
        .await
        .map_err(JobError::sql(ctx))?
    {
        c.indexes.entry(r.get(0)).or_default().push(r.get(1));
    }
    for r in sc
        .query(
            "SELECT d.refobjid, s.relname::text FROM pg_catalog.pg_depend d \
             JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             WHERE d.classid = 'pg_catalog.pg_class'::regclass \
               AND d.refclassid = 'pg_catalog.pg_class'::regclass \
               AND d.refobjid = ANY($1) AND d.deptype IN ('a', 'i') \
             ORDER BY 1, 2",
            &[&oids],
        )
        .await
        .map_err(JobError::sql(ctx))?
    {
        c.sequences.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(c)
}

/// The foreign keys of the chosen tables that reference a table not
/// chosen, named as they will be in the target.
async fn outward_keys(sc: &Client, placements: &[Placement]) -> Result<Vec<ForeignKey>, JobError> {
    let oids: Vec<u32> = placements.iter().map(|p| p.oid).collect();
    let by_oid: HashMap<u32, &Placement> = placements.iter().map(|p| (p.oid, p)).collect();
    let rows = sc
        .query(
            "SELECT con.conrelid, con.conname::text, rn.nspname::text, r.relname::text, \
                    pg_catalog.pg_get_constraintdef(con.oid) \
             FROM pg_catalog.pg_constraint con \
             JOIN pg_catalog.pg_class r ON r.oid = con.confrelid \
             JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
             WHERE con.contype = 'f' AND con.conparentid = 0 \
               AND con.conrelid = ANY($1) AND NOT con.confrelid = ANY($1) \
             ORDER BY 1, 2",
            &[&oids],
        )
        .await
        .map_err(JobError::sql("read the chosen tables' foreign keys"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let p = by_oid.get(&r.get::<_, u32>(0))?;
            Some(ForeignKey {
                name: r.get(1),
                table: p.target.clone(),
                references: (r.get(2), r.get(3)),
                definition: r.get(4),
            })
        })
        .collect())
}

/// The foreign keys of live tables that reference a table `--clean`
/// replaces (not those among the replaced tables themselves).
async fn inbound_keys(tc: &Client, replaced: &[u32]) -> Result<Vec<ForeignKey>, JobError> {
    if replaced.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tc
        .query(
            "SELECT con.conname::text, tn.nspname::text, t.relname::text, \
                    rn.nspname::text, r.relname::text, pg_catalog.pg_get_constraintdef(con.oid) \
             FROM pg_catalog.pg_constraint con \
             JOIN pg_catalog.pg_class t ON t.oid = con.conrelid \
             JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace \
             JOIN pg_catalog.pg_class r ON r.oid = con.confrelid \
             JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace \
             WHERE con.contype = 'f' AND con.conparentid = 0 \
               AND con.confrelid = ANY($1) AND NOT con.conrelid = ANY($1) \
             ORDER BY 2, 3, 1",
            &[&replaced],
        )
        .await
        .map_err(JobError::sql(
            "read the foreign keys that reference the tables to replace",
        ))?;
    Ok(rows
        .iter()
        .map(|r| ForeignKey {
            name: r.get(0),
            table: (r.get(1), r.get(2)),
            references: (r.get(3), r.get(4)),
            definition: r.get(5),
        })
        .collect())
}

/// The live tables `--clean` replaces, (oid, (schema, name)); an error
/// (exit 6, nothing changed) for anything in the way otherwise.
async fn check_target(
    tc: &Client,
    placements: &[Placement],
    comp: &Companions,
    clean: bool,
) -> Result<Vec<(u32, (String, String))>, JobError> {
    let ctx = "inspect the target database";
    let mut replaced = Vec::new();
    for p in placements {
        let row = tc
            .query_opt(
                "SELECT c.oid, c.relkind::text FROM pg_catalog.pg_class c \
                 WHERE c.oid = pg_catalog.to_regclass($1)",
                &[&p.final_name()],
            )
            .await
            .map_err(JobError::sql(ctx))?;
        let Some(row) = row else { continue };
        let (oid, kind): (u32, String) = (row.get(0), row.get(1));
        if !clean {
            return Err(JobError::RelationExists {
                what: format!("table {}", p.shown()),
            });
        }
        if kind != "r" && kind != "p" {
            return Err(JobError::TargetInUse(format!(
                "{} in the target is not a table (relkind {kind}): --clean replaces tables only; drop it, or restore with --into-schema (nothing was changed)",
                p.shown()
            )));
        }
        replaced.push((oid, p.target.clone()));
    }
    let replaced_oids: HashSet<u32> = replaced.iter().map(|r| r.0).collect();
    // Indexes and sequences take names in the same schema as tables.
    for p in placements {
        let named = comp
            .indexes
            .get(&p.oid)
            .into_iter()
            .flatten()
            .map(|n| ("index", n))
            .chain(
                comp.sequences
                    .get(&p.oid)
                    .into_iter()
                    .flatten()
                    .map(|n| ("sequence", n)),
            );
        for (kind, name) in named {
            let q = quote_qualified(&p.target.0, name);
            let owner: Option<Option<u32>> = tc
                .query_opt(
                    "SELECT coalesce(i.indrelid, (SELECT d.refobjid FROM pg_catalog.pg_depend d \
                        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid \
                          AND d.refclassid = 'pg_catalog.pg_class'::regclass \
                          AND d.deptype IN ('a', 'i') LIMIT 1)) \
                     FROM pg_catalog.pg_class c \
                     LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid \
                     WHERE c.oid = pg_catalog.to_regclass($1)",
                    &[&q],
                )
                .await
                .map_err(JobError::sql(ctx))?
                .map(|r| r.get(0));
            match owner {
                None => {}
                Some(Some(o)) if replaced_oids.contains(&o) => {}
                Some(_) => {
                    return Err(JobError::RelationExists {
                        what: format!(
                            "relation {} (the {kind} of restored table {} takes that name)",
                            display_qualified(&p.target.0, name),
                            p.shown()
                        ),
                    })
                }
            }
        }
    }
    Ok(replaced)
}

/// `pg_dump --schema-only` of the staged tables on the scratch server.
async fn dump_schema(
    cx: &Cx<'_>,
    placements: &[Placement],
    encoding: &str,
    path: &Path,
) -> Result<(), JobError> {
    let mut cmd = tokio::process::Command::new(&cx.tools.pg_dump);
    cmd.arg("--schema-only")
        .arg("--format=custom")
        .arg(format!("--encoding={encoding}"))
        .arg("--no-password")
        .arg("--file")
        .arg(path);
    for p in placements {
        cmd.arg("--table").arg(p.staged());
    }
    cmd.arg("--dbname")
        .arg(cx.source.conninfo.to_libpq_string());
    tools::run("pg_dump", cmd).await?;
    Ok(())
}

/// The rows of every table with rows (not the partitioned parents), in
/// placement order.
async fn copy_rows(
    cx: &Cx<'_>,
    placements: &[Placement],
    src: &catalog::ServerInfo,
    dst: &catalog::ServerInfo,
) -> Result<Vec<u64>, JobError> {
    let (sc, tc) = (&cx.source.client, cx.target);
    let leaves: Vec<&Placement> = placements.iter().filter(|p| p.kind == 'r').collect();
    let oids: Vec<u32> = leaves.iter().map(|p| p.oid).collect();
    let read = async {
        let mut columns = catalog::columns(sc, &oids)
            .await
            .map_err(JobError::sql("read the tables' columns"))?;
        let binary_ok = src.encoding.eq_ignore_ascii_case(session::CLIENT_ENCODING);
        let types = if binary_ok {
            catalog::column_base_types(sc, &oids)
                .await
                .map_err(JobError::sql("read the tables' column types"))?
        } else {
            HashMap::new()
        };
        let mut tables = Vec::new();
        for p in &leaves {
            let freeze: bool = tc
                .query_one(
                    "SELECT pg_catalog.has_table_privilege($1, 'TRUNCATE')",
                    &[&p.staged()],
                )
                .await
                .map_err(JobError::sql(format!("inspect table {}", p.staged())))?
                .get(0);
            tables.push(CopyTable {
                schema: p.stage.clone(),
                name: p.source.1.clone(),
                columns: columns.remove(&p.oid).unwrap_or_default(),
                binary: types
                    .get(&p.oid)
                    .is_some_and(|t| copy_binary::safe_for_binary(t, src.version)),
                bytes: p.bytes,
                freeze,
            });
        }
        Ok::<_, JobError>(tables)
    };
    let tables = cancellable(cx.cancel, read).await?;
    let servers = Servers {
        scratch: cx.source.conninfo.clone(),
        scratch_version: src.version,
        source_encoding: src.encoding.clone(),
        target: cx.s.conn.clone(),
        target_version: dst.version,
        load_encoding: logical_restore::load_encoding(&src.encoding, &dst.encoding),
    };
    let rows = copy::copy_tables(
        servers,
        tables,
        cx.s.jobs,
        SPLIT_SIZE,
        src.block_size,
        cx.progress.clone(),
        cx.cancel,
    )
    .await?;
    let by_oid: HashMap<u32, u64> = oids.into_iter().zip(rows).collect();
    Ok(placements
        .iter()
        .map(|p| by_oid.get(&p.oid).copied().unwrap_or(0))
        .collect())
}

/// The swap transaction (see the module documentation); what became of
/// each foreign key.
async fn swap(
    tc: &Client,
    placements: &[Placement],
    replaced: &[(String, String)],
    outward: &[ForeignKey],
    inbound: &[ForeignKey],
) -> Result<Vec<ForeignKeyOutcome>, JobError> {
    tc.batch_execute("BEGIN")
        .await
        .map_err(JobError::sql("begin the swap"))?;
    let r = async {
        for k in inbound {
            tc.batch_execute(&k.drop_sql())
                .await
                .map_err(JobError::sql(format!(
                    "drop {} (it references a table being replaced)",
                    k.describe()
                )))?;
        }
        for stmt in plan::swap_statements(placements, replaced) {
            tc.batch_execute(&stmt).await.map_err(|e| {
                if e.code() == Some(&SqlState::DEPENDENT_OBJECTS_STILL_EXIST) {
                    let names: Vec<String> = replaced
                        .iter()
                        .map(|(s, n)| display_qualified(s, n))
                        .collect();
                    let detail = e
                        .as_db_error()
                        .map(|d| {
                            format!(
                                "{}{}",
                                d.message(),
                                d.detail().map(|x| format!(" ({x})")).unwrap_or_default()
                            )
                        })
                        .unwrap_or_default();
                    JobError::TargetInUse(format!(
                        "cannot replace {}: {detail}: drop or change those objects first, or restore with --into-schema beside the live table (nothing was changed)",
                        names.join(", ")
                    ))
                } else {
                    JobError::sql(format!("move the restored tables into place: {stmt}"))(e)
                }
            })?;
        }
        let mut out = Vec::new();
        for k in outward {
            out.push(add_key(tc, k, false).await?);
        }
        for k in inbound {
            out.push(add_key(tc, k, true).await?);
        }
        tc.batch_execute("COMMIT")
            .await
            .map_err(JobError::sql("commit the swap"))?;
        Ok::<_, JobError>(out)
    }
    .await;
    if r.is_err() {
        let _ = tc.batch_execute("ROLLBACK").await;
    }
    r
}

/// Create foreign key `k` inside the swap: validated, else (rows violate
/// it) NOT VALID; skipped when the table it references is missing or the
/// key cannot be made any more.
async fn add_key(tc: &Client, k: &ForeignKey, again: bool) -> Result<ForeignKeyOutcome, JobError> {
    let outcome = |outcome| ForeignKeyOutcome {
        name: k.name.clone(),
        table: display_qualified(&k.table.0, &k.table.1),
        references: display_qualified(&k.references.0, &k.references.1),
        outcome,
    };
    let what = k.describe();
    let there: bool = tc
        .query_one(
            "SELECT pg_catalog.to_regclass($1) IS NOT NULL",
            &[&quote_qualified(&k.references.0, &k.references.1)],
        )
        .await
        .map_err(JobError::sql(format!(
            "look for the table {what} references"
        )))?
        .get(0);
    if !there {
        // Handled here: the tables are restored without it.
        tracing::warn!(
            "{what} is not created: the target has no such table (create the key once it has)"
        );
        return Ok(outcome("skipped"));
    }
    let sql = |s: &str| {
        let s = s.to_string();
        async move { tc.batch_execute(&s).await }
    };
    sql("SAVEPOINT pgtide_fk")
        .await
        .map_err(JobError::sql(format!("create {what}")))?;
    match sql(&k.add_sql(false)).await {
        Ok(()) => {
            sql("RELEASE SAVEPOINT pgtide_fk")
                .await
                .map_err(JobError::sql(format!("create {what}")))?;
            Ok(outcome(if again { "recreated" } else { "created" }))
        }
        Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
            sql("ROLLBACK TO SAVEPOINT pgtide_fk")
                .await
                .map_err(JobError::sql(format!("create {what}")))?;
            sql(&k.add_sql(true))
                .await
                .map_err(JobError::sql(format!("create {what} NOT VALID")))?;
            // Handled here: the key exists, unchecked for the rows it has.
            tracing::warn!(
                "{what}: rows violate it, so it was created NOT VALID (fix them, then ALTER TABLE {} VALIDATE CONSTRAINT {})",
                display_qualified(&k.table.0, &k.table.1),
                display_ident(&k.name)
            );
            Ok(outcome(if again {
                "recreated-not-valid"
            } else {
                "not-valid"
            }))
        }
        Err(e)
            if [
                SqlState::INVALID_FOREIGN_KEY,
                SqlState::UNDEFINED_COLUMN,
                SqlState::DATATYPE_MISMATCH,
                SqlState::UNDEFINED_TABLE,
            ]
            .iter()
            .any(|c| e.code() == Some(c)) =>
        {
            sql("ROLLBACK TO SAVEPOINT pgtide_fk")
                .await
                .map_err(JobError::sql(format!("create {what}")))?;
            let why = e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| e.to_string());
            // Handled here: the tables are restored without it.
            tracing::warn!("{what} is not created: {why}");
            Ok(outcome("skipped"))
        }
        Err(e) => Err(JobError::sql(format!("create {what}"))(e)),
    }
}
