//! `restore --create`: the database made as `pg_dump --create` would make
//! it (encoding, locale provider and locales, from template0), and the
//! properties applied to it (settings, comment, owner, grants, limits).

use super::*;

/// A session in the target server's maintenance database (`postgres`, or
/// `template1`), for `--create`.
pub(super) async fn admin_connection(s: &RestoreSettings) -> Result<Client, JobError> {
    for maint in ["postgres", "template1"] {
        match connect(&s.conn.with_dbname(maint), "pgtide restore").await {
            Ok(c) => return Ok(c),
            Err(ConnectError::DatabaseMissing { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(JobError::Invalid(
        "--create needs a postgres or template1 database to connect to".into(),
    ))
}

/// `--create`: the statement that creates `database`, checked against the
/// target server (through the maintenance database's session `admin`):
/// the database must not exist, and the server must be able to make it as
/// the source's was. Nothing is created here.
pub(super) async fn create_database_sql_checked(
    admin: &Client,
    m: &DumpManifest,
    database: &str,
) -> Result<String, JobError> {
    let exists: bool = admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            &[&database],
        )
        .await
        .map_err(JobError::sql("look for the target database"))?
        .get(0);
    if exists {
        return Err(JobError::DatabaseExists {
            name: database.to_string(),
        });
    }
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(JobError::sql("read target server information"))?
        .get(0);
    create_database_sql(database, &m.source, ServerVersion(version.max(0) as u32))
        .map_err(JobError::Invalid)
}

/// `CREATE DATABASE` for `restore --create`, as `pg_dump --create` writes
/// it: from template0, with the source's encoding, LC_COLLATE and LC_CTYPE,
/// and on targets that have locale providers (15+) the source's provider
/// (libc for sources older than 15), its ICU or builtin locale and ICU rules.
///
/// A target that cannot create the source's provider (ICU before 15, ICU
/// rules before 16, builtin before 17) is refused here, before anything is
/// created, instead of falling back to libc with a warning: the provider
/// decides how every text index, ORDER BY and comparison sorts, and a silent
/// change would be found by the applications, not by the operator. Whoever
/// wants a libc copy creates the database and restores without --create.
pub fn create_database_sql(
    database: &str,
    src: &SourceInfo,
    target: ServerVersion,
) -> Result<String, String> {
    let can = LocaleSupport::of(target);
    let provider = src.locale_provider.as_deref().unwrap_or("libc");
    let refuse = |what: &str, needs: u32| {
        format!(
            "the dump's database uses {what}, which PostgreSQL {target} cannot create (it needs PostgreSQL {needs} or later): create database {database} yourself and restore into it without --create",
        )
    };
    if !can.can_create(provider) {
        return Err(match provider {
            "icu" => refuse("the icu locale provider", 15),
            "builtin" => refuse("the builtin locale provider", 17),
            other => format!(
                "the dump's database uses the locale provider {other:?}, which pgtide does not know: create database {database} yourself and restore into it without --create"
            ),
        });
    }
    let rules = src.icu_rules.as_deref().filter(|r| !r.is_empty());
    if rules.is_some() && !can.icu_rules {
        return Err(refuse("ICU collation rules", 16));
    }
    let mut sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {}",
        quote_ident(database),
        quote_literal(&src.encoding)
    );
    // Say libc out loud: a target whose template0 uses ICU would otherwise
    // make the copy an ICU database.
    if can.provider {
        sql.push_str(&format!(" LOCALE_PROVIDER {provider}"));
    }
    sql.push_str(&format!(
        " LC_COLLATE {} LC_CTYPE {}",
        quote_literal(&src.collate),
        quote_literal(&src.ctype)
    ));
    match (provider, &src.locale) {
        ("icu", Some(l)) => sql.push_str(&format!(" ICU_LOCALE {}", quote_literal(l))),
        ("builtin", Some(l)) => sql.push_str(&format!(" BUILTIN_LOCALE {}", quote_literal(l))),
        _ => {}
    }
    if let Some(r) = rules {
        sql.push_str(&format!(" ICU_RULES {}", quote_literal(r)));
    }
    Ok(sql)
}

/// Settings whose value is a list of names, each quoted on its own by
/// `ALTER … SET` (PostgreSQL's GUC_LIST_QUOTE; pg_dump's
/// `variable_is_guc_list_quote`).
pub(super) const LIST_QUOTE_SETTINGS: &[&str] = &[
    "local_preload_libraries",
    "oauth_validator_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// Split a stored list setting (`"$user", public`) into its names, as
/// PostgreSQL's `SplitGUCList` does; `None` when it does not parse.
pub(super) fn split_guc_list(value: &str) -> Option<Vec<String>> {
    let is_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c');
    let mut out = Vec::new();
    let mut rest = value.trim_start_matches(is_space);
    if rest.is_empty() {
        return Some(out);
    }
    loop {
        let name;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut n = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) if quoted[i + 1..].starts_with('"') => {
                        n.push('"');
                        chars.next();
                    }
                    Some((i, '"')) => break i + 1,
                    Some((_, c)) => n.push(c),
                    None => return None,
                }
            };
            name = n;
            rest = &quoted[end..];
        } else {
            let end = rest
                .find(|c: char| c == ',' || is_space(c))
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            name = rest[..end].to_string();
            rest = &rest[end..];
        }
        out.push(name);
        rest = rest.trim_start_matches(is_space);
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start_matches(is_space),
            None if rest.is_empty() => return Some(out),
            None => return None,
        }
    }
}

/// `ALTER DATABASE … SET` for one stored `name=value` setting, as pg_dump's
/// `makeAlterConfigCommand` writes it; `None` for an entry without `=`.
pub fn alter_setting_sql(database: &str, setting: &str) -> Option<String> {
    let (name, value) = setting.split_once('=')?;
    let list = LIST_QUOTE_SETTINGS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(name))
        .then(|| split_guc_list(value))
        .flatten();
    let value = match list {
        Some(names) if !names.is_empty() => names
            .iter()
            .map(|n| quote_literal(n))
            .collect::<Vec<_>>()
            .join(", "),
        _ => quote_literal(value),
    };
    Some(format!(
        "ALTER DATABASE {} SET {} TO {value}",
        quote_ident(database),
        quote_ident(name)
    ))
}

/// What `pg_restore --create` does to the database after creating it:
/// owner (unless --no-owner), grants (unless --no-privileges, the same
/// rule as for large objects), comment, `ALTER DATABASE … SET` settings,
/// connection limit and template flag. ALLOW_CONNECTIONS is never false in
/// a source pgtide could connect to, and the tablespace is the target's
/// default, as for every other object pgtide restores.
pub fn database_property_statements(
    database: &str,
    p: &DatabaseProperties,
    no_owner: bool,
    no_privileges: bool,
) -> Vec<String> {
    let db = quote_ident(database);
    let mut out = Vec::new();
    let owner = p.owner.as_deref().filter(|_| !no_owner);
    if let Some(o) = owner {
        out.push(format!("ALTER DATABASE {db} OWNER TO {}", quote_ident(o)));
    }
    if let (Some(grants), false) = (&p.grants, no_privileges) {
        out.extend(objects::grant_statements(
            &format!("DATABASE {db}"),
            owner,
            grants,
        ));
    }
    if let Some(c) = &p.comment {
        out.push(format!("COMMENT ON DATABASE {db} IS {}", quote_literal(c)));
    }
    out.extend(
        p.settings
            .iter()
            .filter_map(|s| alter_setting_sql(database, s)),
    );
    if let Some(n) = p.connection_limit {
        out.push(format!("ALTER DATABASE {db} CONNECTION LIMIT {n}"));
    }
    if p.is_template {
        out.push(format!("ALTER DATABASE {db} IS_TEMPLATE true"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(provider: Option<&str>, locale: Option<&str>, rules: Option<&str>) -> SourceInfo {
        SourceInfo {
            server_version: "15.18".into(),
            server_version_num: 150018,
            database: "src".into(),
            connection: "postgres@localhost:5432/src".into(),
            system_identifier: String::new(),
            encoding: "UTF8".into(),
            collate: "C".into(),
            ctype: "C".into(),
            snapshot: String::new(),
            locale_provider: provider.map(String::from),
            locale: locale.map(String::from),
            icu_rules: rules.map(String::from),
        }
    }

    #[test]
    fn create_database_carries_the_locale_provider_the_target_can_create() {
        let v = ServerVersion;
        // A source without providers (before 15) into 14 and into 15+.
        assert_eq!(
            create_database_sql("d b", &source(None, None, None), v(140011)).unwrap(),
            r#"CREATE DATABASE "d b" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"#
        );
        assert_eq!(
            create_database_sql("d", &source(None, None, None), v(150000)).unwrap(),
            r#"CREATE DATABASE "d" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER libc LC_COLLATE 'C' LC_CTYPE 'C'"#
        );
        let icu = source(Some("icu"), Some("und"), None);
        assert_eq!(
            create_database_sql("d", &icu, v(170000)).unwrap(),
            r#"CREATE DATABASE "d" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu LC_COLLATE 'C' LC_CTYPE 'C' ICU_LOCALE 'und'"#
        );
        let e = create_database_sql("d", &icu, v(140011)).unwrap_err();
        assert!(
            e.contains("icu locale provider") && e.contains("PostgreSQL 14.11"),
            "{e}"
        );
        let rules = source(Some("icu"), Some("und"), Some("&a < b"));
        assert!(create_database_sql("d", &rules, v(150000)).is_err());
        assert!(create_database_sql("d", &rules, v(160000))
            .unwrap()
            .ends_with("ICU_LOCALE 'und' ICU_RULES '&a < b'"));
        let builtin = source(Some("builtin"), Some("C.UTF-8"), None);
        assert!(create_database_sql("d", &builtin, v(160004)).is_err());
        assert!(create_database_sql("d", &builtin, v(170000))
            .unwrap()
            .contains(
                "LOCALE_PROVIDER builtin LC_COLLATE 'C' LC_CTYPE 'C' BUILTIN_LOCALE 'C.UTF-8'"
            ));
    }

    #[test]
    fn settings_are_written_as_pg_dump_writes_them() {
        assert_eq!(
            alter_setting_sql("db", "work_mem=7MB").unwrap(),
            r#"ALTER DATABASE "db" SET "work_mem" TO '7MB'"#
        );
        assert_eq!(
            alter_setting_sql("db", r#"search_path="$user", public, "we""ird, s""#).unwrap(),
            r#"ALTER DATABASE "db" SET "search_path" TO '$user', 'public', 'we"ird, s'"#
        );
        assert_eq!(
            alter_setting_sql("db", "app.note=it's").unwrap(),
            r#"ALTER DATABASE "db" SET "app.note" TO 'it''s'"#
        );
        assert_eq!(alter_setting_sql("db", "nonsense"), None);
        assert_eq!(split_guc_list(""), Some(vec![]));
        assert_eq!(split_guc_list(r#""unterminated"#), None);
        assert_eq!(split_guc_list("a b"), None);
    }

    #[test]
    fn database_properties_follow_no_owner_and_no_privileges() {
        let p = DatabaseProperties {
            owner: Some("app".into()),
            comment: Some("l'appli".into()),
            settings: vec!["work_mem=7MB".into()],
            connection_limit: Some(20),
            is_template: true,
            grants: Some(vec![crate::repo::manifest::LoGrant {
                grantee: None,
                privilege: "CONNECT".into(),
                grantable: false,
            }]),
        };
        assert_eq!(
            database_property_statements("d", &p, false, false),
            vec![
                r#"ALTER DATABASE "d" OWNER TO "app""#,
                r#"REVOKE ALL ON DATABASE "d" FROM PUBLIC"#,
                r#"REVOKE ALL ON DATABASE "d" FROM "app""#,
                r#"GRANT CONNECT ON DATABASE "d" TO PUBLIC"#,
                r#"COMMENT ON DATABASE "d" IS 'l''appli'"#,
                r#"ALTER DATABASE "d" SET "work_mem" TO '7MB'"#,
                r#"ALTER DATABASE "d" CONNECTION LIMIT 20"#,
                r#"ALTER DATABASE "d" IS_TEMPLATE true"#,
            ]
        );
        let s = database_property_statements("d", &p, true, true);
        assert!(
            s.iter()
                .all(|l| !l.contains("OWNER") && !l.contains("GRANT")),
            "{s:?}"
        );
        assert_eq!(s.len(), 4);
        assert!(
            database_property_statements("d", &DatabaseProperties::default(), false, false)
                .is_empty()
        );
    }
}
