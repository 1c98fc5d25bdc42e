//! The password file (`~/.pgpass`, `PGPASSFILE`): read only when it is a
//! regular file the group and others cannot read, as libpq does, and
//! looked up by host, port, database and user.

use super::*;

/// Reads a password file the way libpq does: only a regular file that the
/// group and others cannot read (libpq warns and ignores it otherwise).
pub(super) fn read_password_file(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            // libpq prints the same warning and carries on without the file.
            tracing::warn!(
                path = %path.display(),
                "password file has group or world access; permissions should be u=rw (0600) or less, ignoring it"
            );
            return None;
        }
    }
    std::fs::read_to_string(path).ok()
}

/// One field of a password-file line: `*` alone matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PgPassField {
    Any,
    Exact(String),
}

impl PgPassField {
    fn matches(&self, value: &str) -> bool {
        match self {
            PgPassField::Any => true,
            PgPassField::Exact(s) => s == value,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub(super) struct PgPassEntry {
    pub(super) host: PgPassField,
    pub(super) port: PgPassField,
    pub(super) dbname: PgPassField,
    pub(super) user: PgPassField,
    pub(super) password: String,
}

/// A parsed password file: `host:port:dbname:user:password` lines, `*` as a
/// wildcard field, `\:` and `\\` escapes, `#` comment lines.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct PgPass {
    pub(super) path: PathBuf,
    pub(super) entries: Vec<PgPassEntry>,
}

impl PgPass {
    pub(super) fn parse(path: PathBuf, text: &str) -> PgPass {
        let entries = text.lines().filter_map(parse_pgpass_line).collect();
        PgPass { path, entries }
    }

    /// The first matching line's password.
    pub(super) fn lookup(&self, host: &str, port: &str, dbname: &str, user: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| {
                e.host.matches(host)
                    && e.port.matches(port)
                    && e.dbname.matches(dbname)
                    && e.user.matches(user)
            })
            .map(|e| e.password.as_str())
    }
}

pub(super) fn parse_pgpass_line(line: &str) -> Option<PgPassEntry> {
    if line.starts_with('#') {
        return None;
    }
    let mut fields: Vec<(String, String)> = Vec::with_capacity(5); // (raw, unescaped)
    let mut raw = String::new();
    let mut value = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                raw.push(c);
                if let Some(escaped) = chars.next() {
                    raw.push(escaped);
                    value.push(escaped);
                }
            }
            ':' => {
                fields.push((std::mem::take(&mut raw), std::mem::take(&mut value)));
                if fields.len() == 5 {
                    break; // libpq: the password ends at an unescaped ':'
                }
            }
            c => {
                raw.push(c);
                value.push(c);
            }
        }
    }
    if fields.len() < 5 {
        fields.push((raw, value));
    }
    if fields.len() < 5 {
        return None;
    }
    let mut fields = fields.into_iter();
    let mut field = || {
        let (raw, value) = fields.next().unwrap_or_default();
        if raw == "*" {
            PgPassField::Any
        } else {
            PgPassField::Exact(value)
        }
    };
    let (host, port, dbname, user) = (field(), field(), field(), field());
    let password = match field() {
        PgPassField::Any => "*".to_owned(),
        PgPassField::Exact(p) => p,
    };
    Some(PgPassEntry {
        host,
        port,
        dbname,
        user,
        password,
    })
}
