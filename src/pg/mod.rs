//! Everything that talks to PostgreSQL: connection parameters (libpq
//! conventions), sessions, catalog queries, and the external pg_dump/pg_restore
//! tools used for the schema; and PostgreSQL's own formats, read by pure
//! code: the wire protocol and what travels in it (`proto`), binary COPY
//! (`copy_binary`), WAL page headers (`walpage`), pg_dump's custom archive
//! (`dump_archive`).

pub mod catalog;
pub mod connect;
pub mod conninfo;
pub mod copy_binary;
pub mod dump_archive;
pub mod lsn;
pub mod pattern;
pub mod proto;
pub mod session;
pub mod tools;
pub mod version;
pub mod walpage;
pub mod wire;

/// Quote an identifier the way PostgreSQL's `quote_ident` would, always.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn quote_qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// A string literal, standard-conforming: `'it''s'`.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
