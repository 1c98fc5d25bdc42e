//! What a schema-only pg_dump archive does not carry and pgtide restores
//! itself: sequence values and large objects. Also the drop phase of
//! `--clean`, which takes pg_restore's own DROP statements.

use std::path::Path;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use tokio_postgres::Client;

use super::RestoreSettings;
use crate::jobs::JobError;
use crate::pg::tools;
use crate::pg::{quote_ident, quote_literal, quote_qualified};
use crate::pipeline::ChunkReader;
use crate::repo::manifest::{DumpManifest, SequenceEntry};

pub async fn set_sequences(c: &Client, seqs: &[&SequenceEntry]) -> Result<(), JobError> {
    for batch in seqs.chunks(200) {
        let sql = batch
            .iter()
            .map(|s| {
                format!(
                    "SELECT pg_catalog.setval({}, {}, {})",
                    quote_literal(&quote_qualified(&s.schema, &s.name)),
                    s.last_value,
                    s.is_called
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        c.batch_execute(&sql)
            .await
            .map_err(JobError::sql("set sequence values"))?;
    }
    Ok(())
}

/// Recreate every large object with its oid, owner, grants and comment,
/// then write its contents piece by piece with `lo_put`.
pub async fn restore_large_objects(
    c: &Client,
    m: &DumpManifest,
    reader: &ChunkReader,
    s: &RestoreSettings,
) -> Result<(), JobError> {
    const PIECE: usize = 1 << 20;
    let lo = &m.large_objects;
    c.batch_execute("BEGIN")
        .await
        .map_err(JobError::sql("restore large objects"))?;
    for item in &lo.items {
        let oid = item.oid;
        let ctx = format!("restore large object {oid}");
        let exists: bool = c
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = $1)",
                &[&oid],
            )
            .await
            .map_err(JobError::sql(ctx.clone()))?
            .get(0);
        if exists {
            if !s.clean {
                return Err(JobError::TargetHasSchema {
                    object: format!("large object {oid}"),
                });
            }
            c.query("SELECT pg_catalog.lo_unlink($1)", &[&oid])
                .await
                .map_err(JobError::sql(ctx.clone()))?;
        }
        let mut sql = format!("SELECT pg_catalog.lo_create({oid});");
        if !s.no_owner {
            sql.push_str(&format!(
                " ALTER LARGE OBJECT {oid} OWNER TO {};",
                quote_ident(&item.owner)
            ));
        }
        if let (Some(grants), false) = (&item.grants, s.no_privileges) {
            let owner = (!s.no_owner).then_some(item.owner.as_str());
            for stmt in grant_statements(&format!("LARGE OBJECT {oid}"), owner, grants) {
                sql.push_str(&format!(" {stmt};"));
            }
        }
        if let Some(comment) = &item.comment {
            sql.push_str(&format!(
                " COMMENT ON LARGE OBJECT {oid} IS {};",
                quote_literal(comment)
            ));
        }
        c.batch_execute(&sql).await.map_err(JobError::sql(ctx))?;
    }
    // Contents: one stream, objects back to back in manifest order.
    let put = c
        .prepare("SELECT pg_catalog.lo_put($1, $2, $3)")
        .await
        .map_err(JobError::sql("restore large objects"))?;
    let mut chunks = reader.stream(lo.stream.chunks.clone());
    let mut buf = BytesMut::new();
    for item in &lo.items {
        let mut offset: i64 = 0;
        let mut left = item.size;
        while left > 0 {
            while buf.is_empty() {
                match chunks.next().await {
                    Some(c) => {
                        buf.extend_from_slice(&c.map_err(JobError::pipeline("read large objects"))?)
                    }
                    None => {
                        return Err(JobError::Damaged {
                            id: m.id.clone(),
                            what: "large object data ends early".into(),
                        })
                    }
                }
            }
            let n = (buf.len() as u64).min(left).min(PIECE as u64) as usize;
            let piece: Bytes = buf.split_to(n).freeze();
            c.query(&put, &[&item.oid, &offset, &piece.chunk()])
                .await
                .map_err(JobError::sql(format!("write large object {}", item.oid)))?;
            offset += n as i64;
            left -= n as u64;
        }
    }
    c.batch_execute("COMMIT")
        .await
        .map_err(JobError::sql("restore large objects"))
}

/// `--clean`: run the DROP statements pg_restore would issue for the
/// archive (all sections, so foreign keys and indexes go before tables),
/// without its CREATE part.
pub(super) async fn drop_existing(
    r: &super::PgRestore<'_>,
    list: Option<&Path>,
) -> Result<(), JobError> {
    let mut cmd = r.command();
    cmd.arg("--clean").arg("--if-exists").arg("--file=-");
    if let Some(l) = list {
        cmd.arg("--use-list").arg(l);
    }
    cmd.arg(r.archive);
    let out = tools::output("pg_restore", cmd).await?;
    // In the archive's encoding: names that are not ASCII must reach the
    // server as UTF-8, not mangled.
    let c = r.target;
    let script = super::script_text(c, out, r.encoding, &r.tools.pg_dump).await?;
    let drops = drop_statements(&script);
    if drops.is_empty() {
        return Ok(());
    }
    c.batch_execute(&format!(
        "BEGIN; SET LOCAL search_path = ''; {}; COMMIT",
        drops.join(";\n")
    ))
    .await
    .map_err(JobError::sql("drop existing objects (--clean)"))
}

/// The DROP phase of a `pg_restore --clean` script: the statements between
/// the preamble of SETs and the first object header.
pub fn drop_statements(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in script.lines() {
        if line.starts_with("-- Name:") || line.starts_with("SET default_tablespace") {
            break;
        }
        let l = line.trim_end_matches(';');
        if line.starts_with("DROP ") || line.starts_with("ALTER ") {
            out.push(l.to_string());
        }
    }
    out
}

/// The statements that give `object` (e.g. `DATABASE "d"`) exactly the
/// recorded privileges: everything revoked from PUBLIC and the owner (when
/// ownership is restored), then each grant.
pub(super) fn grant_statements(
    object: &str,
    owner: Option<&str>,
    grants: &[crate::repo::manifest::LoGrant],
) -> Vec<String> {
    let mut out = vec![format!("REVOKE ALL ON {object} FROM PUBLIC")];
    if let Some(o) = owner {
        out.push(format!("REVOKE ALL ON {object} FROM {}", quote_ident(o)));
    }
    for g in grants {
        let who = g
            .grantee
            .as_deref()
            .map(quote_ident)
            .unwrap_or_else(|| "PUBLIC".into());
        let opt = if g.grantable {
            " WITH GRANT OPTION"
        } else {
            ""
        };
        out.push(format!("GRANT {} ON {object} TO {who}{opt}", g.privilege));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_phase_only() {
        let script = "SET lock_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n\
            ALTER TABLE IF EXISTS ONLY public.b DROP CONSTRAINT IF EXISTS b_id_fkey;\n\
            DROP INDEX IF EXISTS public.b_x_idx;\nDROP TABLE IF EXISTS public.a;\n\
            SET default_tablespace = '';\n\n--\n-- Name: a; Type: TABLE\n--\n\nCREATE TABLE public.a ();\n\
            ALTER TABLE public.a OWNER TO postgres;\n";
        assert_eq!(
            drop_statements(script),
            vec![
                "ALTER TABLE IF EXISTS ONLY public.b DROP CONSTRAINT IF EXISTS b_id_fkey",
                "DROP INDEX IF EXISTS public.b_x_idx",
                "DROP TABLE IF EXISTS public.a"
            ]
        );
    }
}
