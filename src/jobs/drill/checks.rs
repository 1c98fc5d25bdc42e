//! The checks a drill runs on its scratch server, over its Unix socket:
//! where recovery stopped, amcheck (heap and B-tree), a count of every
//! table, the user's `--sql` statements. Each returns a one-line detail, or
//! a `JobError` saying what failed (`DrillCheck` for a failed check).

use std::collections::BTreeMap;
use std::path::Path;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::jobs::JobError;
use crate::pg::connect::{connect, ConnectError};
use crate::pg::conninfo::ConnInfo;
use crate::pg::lsn::Lsn;
use crate::pg::{quote_ident, quote_qualified};

const APP: &str = "pgtide drill";

/// The connection settings for the scratch server's socket in `scratch`,
/// untouched by the `PG*` environment.
pub fn scratch_conninfo(scratch: &Path, user: &str, db: &str) -> Result<ConnInfo, JobError> {
    let q = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let text = format!(
        "host={} port={} user={} dbname={} sslmode=disable",
        q(&scratch.display().to_string()),
        super::plan::SCRATCH_PORT,
        q(user),
        q(db)
    );
    let bad = |e: crate::pg::conninfo::ConnInfoError| {
        JobError::Invalid(format!("scratch connection settings: {e}"))
    };
    ConnInfo::parse(&text)
        .map_err(bad)?
        .resolve(&|_| None, &|_| None, user, None)
        .map_err(bad)
}

/// The superusers to try on a restored cluster: `superuser` (`--superuser`),
/// else the bootstrap superuser named in its `pg_authid` file, `postgres`,
/// the OS user (as root: `os_user`).
pub fn superusers(superuser: Option<&str>, os_user: Option<&str>, data_dir: &Path) -> Vec<String> {
    use crate::pg::proto::shared_catalog as catalog;
    if let Some(u) = superuser {
        return vec![u.to_string()];
    }
    let global = data_dir.join("global");
    let file = std::fs::read(global.join("pg_filenode.map"))
        .ok()
        .and_then(|m| catalog::mapped_file(&m, catalog::PG_AUTHID))
        .unwrap_or(catalog::PG_AUTHID);
    let mut v = std::fs::read(global.join(file.to_string()))
        .map(|f| catalog::bootstrap_superuser(&f))
        .unwrap_or_default();
    if !v.iter().any(|u| u == "postgres") {
        v.push("postgres".into());
    }
    let me = if crate::jobs::physical_restore::running_as_root() {
        os_user.map(str::to_string)
    } else {
        std::env::var("USER").ok()
    };
    if let Some(u) = me.filter(|u| !u.is_empty() && !v.contains(u)) {
        v.push(u);
    }
    v
}

/// A superuser session on the scratch server: the first of `users` that
/// exists, in the first of `postgres`/`template1` that exists. Returns the
/// role that worked.
pub async fn superuser_session(
    scratch: &Path,
    users: &[String],
) -> Result<(Client, String), JobError> {
    let mut last = None;
    for user in users {
        for db in ["postgres", "template1"] {
            match connect(&scratch_conninfo(scratch, user, db)?, APP).await {
                Ok(c) => return Ok((c, user.clone())),
                Err(ConnectError::DatabaseMissing { .. }) => continue,
                Err(e @ ConnectError::Auth { .. }) => {
                    last = Some(e);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Err(JobError::Invalid(format!(
        "no superuser to connect to the scratch server as (tried {}{}): name the backed-up cluster's superuser with --superuser",
        users.join(", "),
        last.map(|e| format!("; {e}")).unwrap_or_default()
    )))
}

async fn session(scratch: &Path, user: &str, db: &str) -> Result<Client, JobError> {
    Ok(connect(&scratch_conninfo(scratch, user, db)?, APP).await?)
}

async fn rows(c: &Client, sql: &str, what: &str) -> Result<Vec<Vec<Option<String>>>, JobError> {
    let msgs = c.simple_query(sql).await.map_err(JobError::sql(what))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(String::from)).collect())
            }
            _ => None,
        })
        .collect())
}

/// The databases that accept connections.
pub async fn databases(c: &Client) -> Result<Vec<String>, JobError> {
    Ok(rows(
        c,
        "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname",
        "list the databases of the scratch server",
    )
    .await?
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect())
}

/// Where the promoted server's recovery stopped.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub in_recovery: bool,
    pub replay_lsn: Option<Lsn>,
    /// The timeline of the latest checkpoint (the new one after promotion).
    pub timeline: u32,
}

pub async fn recovered(c: &Client) -> Result<Recovered, JobError> {
    let r = rows(
        c,
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), (SELECT timeline_id FROM pg_control_checkpoint())",
        "read where recovery stopped",
    )
    .await?;
    let row = r.into_iter().next().unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten();
    Ok(Recovered {
        in_recovery: get(0).as_deref() == Some("t"),
        replay_lsn: get(1).and_then(|l| l.parse().ok()),
        timeline: get(2).and_then(|t| t.parse().ok()).unwrap_or(0),
    })
}

/// `SELECT count(*)` of every table and populated materialized view of
/// `db` (system catalogs too; not TOAST, which amcheck reads). Returns
/// qualified name → rows; an unreadable table is a failed check.
pub async fn count_tables(
    scratch: &Path,
    user: &str,
    db: &str,
) -> Result<BTreeMap<String, u64>, JobError> {
    let c = session(scratch, user, db).await?;
    let list = rows(
        &c,
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' \
           AND (c.relkind <> 'm' OR c.relispopulated) \
           AND n.nspname <> 'pg_toast' AND n.nspname NOT LIKE 'pg_temp%' \
           AND n.nspname NOT LIKE 'pg_toast_temp%' ORDER BY 1, 2",
        "list the tables",
    )
    .await?;
    let mut out = BTreeMap::new();
    for r in list {
        let (Some(Some(schema)), Some(Some(name))) = (r.first(), r.get(1)) else {
            continue;
        };
        let q = format!(
            "SELECT count(*) FROM ONLY {}",
            quote_qualified(schema, name)
        );
        let n = match rows(&c, &q, "count").await {
            Ok(r) => r
                .first()
                .and_then(|r| r.first().cloned().flatten())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            Err(e) => {
                return Err(JobError::DrillCheck(format!(
                    "table {schema}.{name} of database {db} is not readable: {e}"
                )))
            }
        };
        out.insert(format!("{schema}.{name}"), n);
    }
    Ok(out)
}

/// What amcheck found in one database.
#[derive(Debug, Default)]
pub struct AmcheckResult {
    /// False when the server's installation has no amcheck extension.
    pub available: bool,
    pub heap_checked: u64,
    pub indexes_checked: u64,
    /// Up to a few corruption reports (relation: message).
    pub problems: Vec<String>,
}

const MAX_PROBLEMS: usize = 10;

/// amcheck on every relation of `db`: `verify_heapam` (amcheck 1.3,
/// PostgreSQL 14+) on every table, materialized view and TOAST table, with
/// its TOAST checked; `bt_index_check(heapallindexed => true)` on every
/// valid B-tree index. The extension is created in the scratch server's
/// database when its files are installed.
pub async fn amcheck(scratch: &Path, user: &str, db: &str) -> Result<AmcheckResult, JobError> {
    let c = session(scratch, user, db).await?;
    let mut out = AmcheckResult::default();
    let avail = rows(
        &c,
        "SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'",
        "look for amcheck",
    )
    .await?;
    if avail.is_empty() {
        return Ok(out);
    }
    out.available = true;
    rows(
        &c,
        "CREATE EXTENSION IF NOT EXISTS amcheck",
        "create the amcheck extension in the scratch server",
    )
    .await?;
    let schema = rows(
        &c,
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'",
        "find the amcheck extension",
    )
    .await?
    .into_iter()
    .next()
    .and_then(|r| r.into_iter().next().flatten())
    .unwrap_or_else(|| "public".into());
    let ns = quote_ident(&schema);
    let has_heap = !rows(
        &c,
        &format!(
            "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE p.proname = 'verify_heapam' AND n.nspname = '{}'",
            schema.replace('\'', "''")
        ),
        "look for verify_heapam",
    )
    .await?
    .is_empty();
    let problem = |out: &mut AmcheckResult, rel: &str, msg: String| {
        if out.problems.len() < MAX_PROBLEMS {
            out.problems.push(format!("{rel}: {msg}"));
        }
    };
    if has_heap {
        let rels = rows(
            &c,
            "SELECT c.oid, c.oid::regclass::text FROM pg_class c \
             WHERE c.relkind IN ('r', 'm', 't') AND c.relpersistence <> 't' ORDER BY c.oid",
            "list the relations",
        )
        .await?;
        for r in rels {
            let (Some(Some(oid)), Some(Some(name))) = (r.first(), r.get(1)) else {
                continue;
            };
            let q = format!(
                "SELECT blkno, offnum, msg FROM {ns}.verify_heapam({oid}::oid::regclass, on_error_stop => false, check_toast => true) LIMIT {MAX_PROBLEMS}"
            );
            match rows(&c, &q, "verify_heapam").await {
                Ok(found) => {
                    for f in found {
                        let g = |i: usize| f.get(i).cloned().flatten().unwrap_or_default();
                        problem(
                            &mut out,
                            name,
                            format!("block {} offset {}: {}", g(0), g(1), g(2)),
                        );
                    }
                }
                Err(e) => problem(&mut out, name, e.to_string()),
            }
            out.heap_checked += 1;
        }
    }
    let idx = rows(
        &c,
        "SELECT c.oid, c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_am a ON a.oid = c.relam \
         WHERE a.amname = 'btree' AND i.indisvalid AND i.indisready AND i.indislive \
           AND c.relpersistence <> 't' ORDER BY c.oid",
        "list the B-tree indexes",
    )
    .await?;
    for r in idx {
        let (Some(Some(oid)), Some(Some(name))) = (r.first(), r.get(1)) else {
            continue;
        };
        let q = format!("SELECT {ns}.bt_index_check({oid}::oid::regclass, true)");
        if let Err(e) = rows(&c, &q, "bt_index_check").await {
            problem(&mut out, name, e.to_string());
        }
        out.indexes_checked += 1;
    }
    Ok(out)
}

/// Run the `--sql` file in `db` as one simple query; the first column of
/// the first row of each statement that returns rows, in order.
pub async fn run_sql(
    scratch: &Path,
    user: &str,
    db: &str,
    sql: &str,
) -> Result<Vec<Option<String>>, JobError> {
    let c = session(scratch, user, db).await?;
    let msgs = c.simple_query(sql).await.map_err(|e| {
        JobError::DrillCheck(format!(
            "the --sql file failed in database {db}: {}",
            crate::jobs::pg_message(&e)
        ))
    })?;
    let mut out: Vec<Option<String>> = Vec::new();
    // Per statement: RowDescription, Row*, CommandComplete.
    let mut open = false;
    for m in msgs {
        match m {
            SimpleQueryMessage::RowDescription(_) => {
                out.push(None);
                open = true;
            }
            SimpleQueryMessage::Row(r) if open => {
                if let Some(last) = out.last_mut() {
                    if last.is_none() {
                        *last = Some(r.get(0).unwrap_or("null").to_string());
                    }
                }
            }
            SimpleQueryMessage::CommandComplete(_) => open = false,
            _ => {}
        }
    }
    Ok(out)
}
