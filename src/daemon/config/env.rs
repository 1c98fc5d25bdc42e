//! Environment overrides of the daemon's configuration: every key may come
//! from `PGTIDE_<SECTION>_<KEY>`, overlaid on the file's table before it is
//! validated, with each value's type checked so that a bad one names its
//! variable.

use super::*;

/// The keys the environment may set: `PGTIDE_` + section + key, upper case
/// (`PGTIDE_BACKUP_SCHEDULE`, `PGTIDE_RETENTION_BACKUPS_KEEP_LAST`).
/// `[[dump]]` entries come from the file only.
pub(super) const ENV_KEYS: &[(&str, Kind)] = &[
    ("timezone", Kind::Str),
    ("source.db", Kind::Str),
    ("source.password_file", Kind::Str),
    ("repository.url", Kind::Str),
    ("wal.stream", Kind::Bool),
    ("wal.slot", Kind::Str),
    ("wal.create_slot", Kind::Bool),
    ("wal.compress", Kind::Str),
    ("wal.partial_interval", Kind::Str),
    ("wal.status_interval", Kind::Str),
    ("wal.synchronous", Kind::Bool),
    ("wal.application_name", Kind::Str),
    ("wal.slot_warn", Kind::Str),
    ("wal.slot_max", Kind::Str),
    ("wal.slot_check_interval", Kind::Str),
    ("backup.schedule", Kind::Str),
    ("backup.compress", Kind::Str),
    ("backup.jobs", Kind::Int),
    ("backup.checkpoint", Kind::Str),
    ("backup.wal", Kind::Str),
    ("backup.max_rate", Kind::Str),
    ("retention.backups.keep_last", Kind::Int),
    ("retention.backups.daily", Kind::Int),
    ("retention.backups.weekly", Kind::Int),
    ("retention.backups.monthly", Kind::Int),
    ("retention.backups.yearly", Kind::Int),
    ("retention.backups.max_age", Kind::Str),
    ("retention.backups.min_keep", Kind::Int),
    ("retention.dumps.keep_last", Kind::Int),
    ("retention.dumps.daily", Kind::Int),
    ("retention.dumps.weekly", Kind::Int),
    ("retention.dumps.monthly", Kind::Int),
    ("retention.dumps.yearly", Kind::Int),
    ("retention.dumps.max_age", Kind::Str),
    ("retention.dumps.min_keep", Kind::Int),
    ("http.listen", Kind::Str),
    ("http.token_file", Kind::Str),
    ("notify.webhook", Kind::Str),
    ("notify.on_success", Kind::Bool),
    ("lock.heartbeat", Kind::Str),
    ("lock.stale_after", Kind::Str),
    ("log.format", Kind::Str),
    ("drill.schedule", Kind::Str),
    ("drill.what", Kind::Str),
    ("drill.sql_file", Kind::Str),
    ("drill.scratch", Kind::Str),
];

/// The HTTP token itself may come from this variable instead of a file.
pub const ENV_HTTP_TOKEN: &str = "PGTIDE_HTTP_TOKEN";

#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Str,
    Int,
    Bool,
}

/// `wal.partial_interval` → `PGTIDE_WAL_PARTIAL_INTERVAL`.
pub fn env_name(path: &str) -> String {
    format!("PGTIDE_{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Every configuration key with its environment variable, for the docs and
/// the packaging tests.
pub fn env_keys() -> impl Iterator<Item = (&'static str, String)> {
    ENV_KEYS.iter().map(|(k, _)| (*k, env_name(k)))
}

/// Overlay the environment on the file's table, checking each value's type
/// here so that a bad one names its variable.
pub(super) fn apply_env(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (path, kind) in ENV_KEYS {
        let var = env_name(path);
        let Some(raw) = env.get(&var) else { continue };
        let value = match kind {
            Kind::Str => toml::Value::String(raw.clone()),
            Kind::Int => toml::Value::Integer(
                raw.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| invalid(&var, format!("{raw:?} is not a whole number")))?,
            ),
            Kind::Bool => toml::Value::Boolean(match raw.trim() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err(invalid(&var, format!("{raw:?} is not true or false"))),
            }),
        };
        let mut parts: Vec<&str> = path.split('.').collect();
        let last = parts.pop().expect("non-empty key");
        // `[[repository]]` entries: the variable sets the primary's key.
        if parts == ["repository"] {
            if let Some(toml::Value::Array(entries)) = table.get_mut("repository") {
                if let Some(primary) = entries
                    .iter_mut()
                    .filter_map(toml::Value::as_table_mut)
                    .find(|e| e.get("copy").and_then(toml::Value::as_bool) != Some(true))
                {
                    primary.insert(last.to_string(), value);
                }
                continue;
            }
        }
        let mut t = &mut *table;
        for p in parts {
            t = t
                .entry(p)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| invalid(p, "must be a table"))?;
        }
        t.insert(last.to_string(), value);
    }
    Ok(())
}
