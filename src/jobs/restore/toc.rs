//! Selective restore: filter pg_restore's table of contents (`pg_restore -l`)
//! down to the chosen tables and what hangs off them (defaults, constraints,
//! indexes, triggers, policies, owned sequences, comments and grants).
//! Objects that tables merely use (schemas, types, functions) are not
//! restored: they must exist in the target, as with `pg_restore -t`.

use std::collections::HashSet;
use std::path::Path;

use crate::jobs::JobError;
use crate::pg::tools::{self, PgTools};
use crate::repo::manifest::DumpManifest;

use super::TempFile;

/// Object descriptions pg_restore prints, longest first so that
/// `SEQUENCE OWNED BY` is not taken for `SEQUENCE`.
const DESCS: &[&str] = &[
    "MATERIALIZED VIEW DATA",
    "SEQUENCE OWNED BY",
    "STATISTICS DATA",
    "MATERIALIZED VIEW",
    "CHECK CONSTRAINT",
    "SECURITY LABEL",
    "FK CONSTRAINT",
    "ROW SECURITY",
    "SEQUENCE SET",
    "TABLE ATTACH",
    "INDEX ATTACH",
    "DEFAULT ACL",
    "TABLE DATA",
    "CONSTRAINT",
    "SEQUENCE",
    "TRIGGER",
    "DEFAULT",
    "COMMENT",
    "POLICY",
    "INDEX",
    "TABLE",
    "RULE",
    "ACL",
];

#[derive(Debug, PartialEq, Eq)]
pub struct TocEntry<'a> {
    pub desc: &'a str,
    pub schema: &'a str,
    pub tag: &'a str,
}

/// Parse `ID; CATOID OID DESC SCHEMA TAG OWNER`. None for comments and
/// descriptions this filter does not know (those are never kept).
pub fn parse_line(line: &str) -> Option<TocEntry<'_>> {
    if line.starts_with(';') || line.trim().is_empty() {
        return None;
    }
    let (_, rest) = line.split_once("; ")?;
    let mut it = rest.splitn(3, ' ');
    let (_cat, _oid, rest) = (it.next()?, it.next()?, it.next()?);
    let desc = DESCS
        .iter()
        .find(|d| rest.starts_with(**d) && rest[d.len()..].starts_with(' '))?;
    let rest = &rest[desc.len() + 1..];
    let (schema, rest) = rest.split_once(' ')?;
    // The owner is the last word (empty when the object has none).
    let tag = match rest.rsplit_once(' ') {
        Some((tag, _owner)) => tag,
        None => rest,
    };
    Some(TocEntry { desc, schema, tag })
}

/// The selected tables, their indexes and their owned sequences.
pub struct Wanted {
    tables: HashSet<(String, String)>,
    indexes: HashSet<(String, String)>,
    sequences: HashSet<(String, String)>,
}

impl Wanted {
    pub fn new(m: &DumpManifest, table_idx: &[usize]) -> Wanted {
        let mut w = Wanted {
            tables: HashSet::new(),
            indexes: HashSet::new(),
            sequences: HashSet::new(),
        };
        let mut qualified = HashSet::new();
        for &i in table_idx {
            let t = &m.tables[i];
            w.tables.insert((t.schema.clone(), t.name.clone()));
            qualified.insert(t.qualified());
            for ix in &t.indexes {
                w.indexes.insert((t.schema.clone(), ix.clone()));
            }
        }
        for s in &m.sequences {
            if s.owned_by.as_ref().is_some_and(|o| qualified.contains(o)) {
                w.sequences.insert((s.schema.clone(), s.name.clone()));
            }
        }
        w
    }

    fn has(set: &HashSet<(String, String)>, schema: &str, name: &str) -> bool {
        set.contains(&(schema.to_string(), name.to_string()))
    }

    pub fn keep(&self, e: &TocEntry<'_>) -> bool {
        let (s, tag) = (e.schema, e.tag);
        let first_word = tag.split(' ').next().unwrap_or(tag);
        match e.desc {
            "TABLE" | "TABLE DATA" | "TABLE ATTACH" | "ROW SECURITY" => {
                Self::has(&self.tables, s, tag)
            }
            "DEFAULT" | "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" | "TRIGGER"
            | "POLICY" | "RULE" => Self::has(&self.tables, s, first_word),
            "INDEX" | "INDEX ATTACH" => Self::has(&self.indexes, s, tag),
            "SEQUENCE" | "SEQUENCE OWNED BY" | "SEQUENCE SET" => Self::has(&self.sequences, s, tag),
            "STATISTICS DATA" => {
                Self::has(&self.tables, s, tag) || Self::has(&self.indexes, s, tag)
            }
            "COMMENT" | "ACL" | "SECURITY LABEL" => {
                let Some((kind, name)) = tag.split_once(' ') else {
                    return false;
                };
                match kind {
                    "TABLE" => Self::has(&self.tables, s, name),
                    "COLUMN" => name
                        .rsplit_once('.')
                        .is_some_and(|(t, _)| Self::has(&self.tables, s, t)),
                    "INDEX" => Self::has(&self.indexes, s, name),
                    "SEQUENCE" => Self::has(&self.sequences, s, name),
                    "CONSTRAINT" | "TRIGGER" | "POLICY" | "RULE" => name
                        .split_once(" ON ")
                        .is_some_and(|(_, t)| Self::has(&self.tables, s, t)),
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// Write the filtered list for `pg_restore --use-list`.
pub async fn write_filtered_list(
    t: &PgTools,
    archive: &Path,
    m: &DumpManifest,
    table_idx: &[usize],
) -> Result<TempFile, JobError> {
    let mut cmd = tokio::process::Command::new(&t.pg_restore);
    cmd.arg("--list").arg(archive);
    let out = tools::output("pg_restore", cmd).await?;
    let wanted = Wanted::new(m, table_idx);
    let text = String::from_utf8_lossy(&out);
    let list: String = text
        .lines()
        .filter(|l| parse_line(l).is_some_and(|e| wanted.keep(&e)))
        .map(|l| format!("{l}\n"))
        .collect();
    let tmp = TempFile::new(".list");
    tokio::fs::write(tmp.path(), list)
        .await
        .map_err(|e| JobError::Io {
            context: format!("write {}", tmp.path().display()),
            source: e,
        })?;
    Ok(tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pg_restore_list_lines() {
        assert_eq!(
            parse_line("214; 1259 16384 TABLE public a postgres"),
            Some(TocEntry {
                desc: "TABLE",
                schema: "public",
                tag: "a"
            })
        );
        assert_eq!(
            parse_line("3214; 2606 16394 FK CONSTRAINT public b b_id_fkey postgres"),
            Some(TocEntry {
                desc: "FK CONSTRAINT",
                schema: "public",
                tag: "b b_id_fkey"
            })
        );
        assert_eq!(
            parse_line("3366; 0 0 SEQUENCE OWNED BY public c_id_seq postgres"),
            Some(TocEntry {
                desc: "SEQUENCE OWNED BY",
                schema: "public",
                tag: "c_id_seq"
            })
        );
        assert_eq!(
            parse_line("3365; 0 0 COMMENT public TABLE a postgres"),
            Some(TocEntry {
                desc: "COMMENT",
                schema: "public",
                tag: "TABLE a"
            })
        );
        assert_eq!(parse_line(";  Archive created at"), None);
        assert_eq!(
            parse_line("5; 2615 2200 SCHEMA - public pg_database_owner"),
            None
        );
    }

    fn wanted() -> Wanted {
        let mut w = Wanted {
            tables: HashSet::new(),
            indexes: HashSet::new(),
            sequences: HashSet::new(),
        };
        w.tables.insert(("public".into(), "b".into()));
        w.indexes.insert(("public".into(), "b_x_idx".into()));
        w.sequences.insert(("public".into(), "b_id_seq".into()));
        w
    }

    #[test]
    fn keeps_a_table_and_what_hangs_off_it() {
        let w = wanted();
        let keep = |l: &str| parse_line(l).is_some_and(|e| w.keep(&e));
        assert!(keep("215; 1259 16391 TABLE public b postgres"));
        assert!(!keep("214; 1259 16384 TABLE public a postgres"));
        assert!(keep(
            "3214; 2606 16394 FK CONSTRAINT public b b_id_fkey postgres"
        ));
        assert!(!keep(
            "3212; 2606 16390 CONSTRAINT public a a_pkey postgres"
        ));
        assert!(keep("3213; 1259 16399 INDEX public b_x_idx postgres"));
        assert!(keep("3210; 2604 16405 DEFAULT public b id postgres"));
        assert!(keep("217; 1259 16401 SEQUENCE public b_id_seq postgres"));
        assert!(keep("3366; 0 0 COMMENT public COLUMN b.x postgres"));
        assert!(!keep("3365; 0 0 COMMENT public TABLE a postgres"));
    }
}
