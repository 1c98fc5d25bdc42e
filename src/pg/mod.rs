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

/// An identifier as messages show it: as it is when it reads back the
/// same unquoted (lower case letters, digits, `_`, `$`, not starting with a
/// digit), else quoted. Not for SQL: keywords are not quoted.
pub fn display_ident(s: &str) -> String {
    let plain = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'$');
    if plain {
        s.to_string()
    } else {
        quote_ident(s)
    }
}

/// `schema.name` as messages show it ([`display_ident`]).
pub fn display_qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", display_ident(schema), display_ident(name))
}

/// A string literal, standard-conforming: `'it''s'`.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_in_messages_only_when_needed() {
        assert_eq!(display_qualified("public", "orders_2"), "public.orders_2");
        assert_eq!(
            display_qualified("Sales Dept", "Order"),
            "\"Sales Dept\".\"Order\""
        );
        assert_eq!(display_ident("1x"), "\"1x\"");
        assert_eq!(display_ident(""), "\"\"");
        assert_eq!(display_ident("a\"b"), "\"a\"\"b\"");
    }
}
