//! The daemon's configuration file (`pgtide.toml`): its schema, the
//! environment overrides (`PGTIDE_<SECTION>_<KEY>`) and validation into a
//! `DaemonConfig` the rest of the daemon takes. Pure except for reading the
//! file and the secret files it names; it never connects to anything.
//!
//! Precedence, one rule for every key: flag > environment > file > default.
//! Unknown keys are errors that name the key and its line. Secrets (the
//! database password, the HTTP token) come from files or the environment;
//! a password written inline in `[source] db` is refused, so a config file
//! can be shared and checked in without leaking one.
//!
//! The annotated example is `docs/pgtide.example.toml`; the reference table
//! in the README lists every key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::schedule::Schedule;
use crate::pg::conninfo::ConnInfo;
use crate::pipeline::Compression;
use crate::repo::retention::Policy;

mod env;
use crate::units::parse_duration;
use env::apply_env;
pub use env::{env_keys, env_name, ENV_HTTP_TOKEN};
#[cfg(test)]
use env::{Kind, ENV_KEYS};

/// A configuration problem: one line, naming the key, the variable or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A syntax error, an unknown key or a value of the wrong type, as the
    /// TOML parser words it (with the line and column).
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("cannot read {what} {path}: {source}")]
    SecretFile {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

// ---- the file's schema ------------------------------------------------------
// Every section denies unknown keys: a misspelt `keep_lats` must not
// silently keep everything.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Time zone of the schedules and of retention's calendar periods.
    timezone: Option<String>,
    #[serde(default)]
    source: SourceSection,
    /// `[repository]` (one table), or `[[repository]]` entries: one primary
    /// and copies (`copy = true`). Checked in `validate`.
    repository: Option<toml::Value>,
    #[serde(default)]
    wal: WalSection,
    #[serde(default)]
    backup: BackupSection,
    #[serde(default)]
    dump: Vec<DumpSection>,
    #[serde(default)]
    retention: RetentionSection,
    #[serde(default)]
    http: HttpSection,
    #[serde(default)]
    notify: NotifySection,
    #[serde(default)]
    lock: LockSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    drill: DrillSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrillSection {
    schedule: Option<String>,
    /// `backup` (the newest backup), `dump` (the newest dump) or `latest`
    /// (the newest of either).
    what: Option<String>,
    /// SQL checks: each statement must return true.
    sql_file: Option<PathBuf>,
    /// Where scratch directories go [default: the temp dir].
    scratch: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSection {
    db: Option<String>,
    password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositorySection {
    url: Option<String>,
}

/// One `[[repository]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepositoryEntry {
    url: Option<String>,
    /// A second repository kept in step with the primary one.
    #[serde(default)]
    copy: bool,
    /// The copy's own retention (`[repository.retention.backups]` after its
    /// `[[repository]]` line).
    retention: Option<RetentionSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WalSection {
    stream: Option<bool>,
    slot: Option<String>,
    create_slot: Option<bool>,
    compress: Option<String>,
    partial_interval: Option<String>,
    status_interval: Option<String>,
    synchronous: Option<bool>,
    application_name: Option<String>,
    slot_warn: Option<String>,
    slot_max: Option<String>,
    slot_check_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupSection {
    schedule: Option<String>,
    compress: Option<String>,
    jobs: Option<usize>,
    checkpoint: Option<String>,
    /// Where the backup's WAL comes from: stream (own temporary slot) or
    /// archive (the daemon's `wal stream`).
    wal: Option<String>,
    /// Server-side rate limit per second, e.g. "100MiB".
    max_rate: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DumpSection {
    database: Option<String>,
    schedule: Option<String>,
    jobs: Option<usize>,
    compress: Option<String>,
    /// pg_dump to use (binary or its directory); else PGTIDE_PG_DUMP, else
    /// the newest found.
    pg_dump: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    backups: Option<Policy>,
    dumps: Option<Policy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    listen: Option<String>,
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifySection {
    webhook: Option<String>,
    on_success: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockSection {
    heartbeat: Option<String>,
    stale_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    format: Option<String>,
}

// ---- the validated configuration -----------------------------------------------

/// Flags of `pgtide daemon` / `status` / `expire` that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub db: Option<String>,
    pub repo: Option<String>,
    pub listen: Option<String>,
    pub log_format: Option<String>,
    /// Leave the secret files unread (`status` and `expire` need neither
    /// the database password nor the HTTP token).
    pub skip_secrets: bool,
}

#[derive(Debug, Clone)]
pub struct WalConfig {
    pub stream: bool,
    pub slot: String,
    pub create_slot: bool,
    pub compression: Compression,
    pub partial_interval: Duration,
    pub status_interval: Duration,
    /// A synchronous standby: upload new WAL at once and report it flushed.
    pub synchronous: bool,
    /// `application_name` of the replication connection.
    pub application_name: String,
    /// Retained WAL of the slot past which the daemon warns.
    pub slot_warn: u64,
    /// Retained WAL past which the slot is dropped and recreated.
    pub slot_max: Option<u64>,
    pub slot_check_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub schedule: Option<Schedule>,
    pub compression: Compression,
    pub jobs: usize,
    pub fast_checkpoint: bool,
    /// true: the backup streams its own WAL; false: it waits for the archive.
    pub stream_wal: bool,
    /// Server-side rate limit in kB/s (PostgreSQL takes 32 to 1048576).
    pub max_rate_kbps: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct DumpConfig {
    /// The database to dump (`dbname` of the source's connection otherwise).
    pub database: String,
    pub schedule: Schedule,
    pub jobs: usize,
    pub compression: Compression,
    pub pg_dump: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    /// Bearer token of the mutating endpoints; `None` turns them off (403).
    pub token: Option<String>,
}

/// Scheduled restore drills (`[drill]`).
#[derive(Debug, Clone)]
pub struct DrillConfig {
    pub schedule: Option<Schedule>,
    pub what: DrillWhat,
    pub sql_file: Option<PathBuf>,
    pub scratch: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillWhat {
    Backup,
    Dump,
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A `[[repository]]` with `copy = true`: every backup and dump the primary
/// repository completes is copied there (with the WAL), then its own
/// retention runs.
#[derive(Debug, Clone)]
pub struct CopyConfig {
    pub url: String,
    pub retention_backups: Policy,
    pub retention_dumps: Policy,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where the configuration came from (for messages).
    pub path: Option<PathBuf>,
    pub timezone: chrono_tz::Tz,
    /// The source server, resolved as libpq would (PG* variables, .pgpass)
    /// by `load`; as written (plus `password_file`) by `from_parts`.
    pub db: ConnInfo,
    /// `source.db` as given (flag, environment or file).
    db_text: Option<String>,
    pub repo: String,
    /// Copy repositories (`[[repository]]` with `copy = true`).
    pub copies: Vec<CopyConfig>,
    pub wal: WalConfig,
    pub backup: BackupConfig,
    pub dumps: Vec<DumpConfig>,
    pub retention_backups: Policy,
    pub retention_dumps: Policy,
    pub http: HttpConfig,
    pub webhook: Option<String>,
    pub notify_success: bool,
    pub lock_heartbeat: Duration,
    pub lock_stale_after: Duration,
    pub log_format: LogFormat,
    pub drill: DrillConfig,
}

impl DaemonConfig {
    /// Read `path` (if any), overlay the real environment and `flags`, and
    /// validate everything.
    pub fn load(path: Option<&Path>, flags: &Overrides) -> Result<DaemonConfig, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                path: p.display().to_string(),
                source: e,
            })?,
            None => String::new(),
        };
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("PGTIDE_"))
            .collect();
        let mut cfg = Self::from_parts(path, &text, &env, flags)?;
        let password = cfg.db.password.take();
        cfg.db = ConnInfo::from_cli(cfg.db_text.as_deref())
            .map_err(|e| invalid("source.db", e.to_string()))?;
        if password.is_some() {
            cfg.db.password = password;
        }
        Ok(cfg)
    }

    /// Everything but the environment lookups of libpq: pure, for tests.
    pub fn from_parts(
        path: Option<&Path>,
        text: &str,
        env: &BTreeMap<String, String>,
        flags: &Overrides,
    ) -> Result<DaemonConfig, ConfigError> {
        let shown = path.map_or_else(|| "(none)".to_string(), |p| p.display().to_string());
        let parse_err = |e: toml::de::Error| ConfigError::Parse {
            path: shown.clone(),
            message: e.to_string().trim().replace('\n', " "),
        };
        // First the file alone, for errors with its line numbers…
        toml::from_str::<File>(text).map_err(parse_err)?;
        // …then with the environment laid over it.
        let mut table: toml::Table = toml::from_str(text).map_err(parse_err)?;
        apply_env(&mut table, env)?;
        let f: File =
            File::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
                path: format!("{shown} with the PGTIDE_ environment"),
                message: e.to_string().trim().replace('\n', " "),
            })?;
        Self::validate(path, f, env, flags)
    }

    fn validate(
        path: Option<&Path>,
        f: File,
        env: &BTreeMap<String, String>,
        flags: &Overrides,
    ) -> Result<DaemonConfig, ConfigError> {
        let timezone = match &f.timezone {
            None => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                invalid(
                    "timezone",
                    format!("unknown time zone {name:?} (use an IANA name such as Europe/Berlin, or UTC)"),
                )
            })?,
        };
        let dur =
            |key: &str, v: &Option<String>, default: Duration| -> Result<Duration, ConfigError> {
                match v {
                    None => Ok(default),
                    Some(s) => parse_duration(s).map_err(|e| invalid(key, e)),
                }
            };
        let size = |key: &str, v: &Option<String>| -> Result<Option<u64>, ConfigError> {
            v.as_deref()
                .map(|s| crate::units::parse_size(s).map_err(|e| invalid(key, e)))
                .transpose()
        };
        let compression = |key: &str, v: &Option<String>| -> Result<Compression, ConfigError> {
            v.as_deref()
                .unwrap_or("zstd:1")
                .parse::<Compression>()
                .map_err(|e| invalid(key, e))
        };
        let jobs = |key: &str, v: Option<usize>| -> Result<usize, ConfigError> {
            match v {
                None => Ok(crate::jobs::default_jobs()),
                Some(n) if (1..=256).contains(&n) => Ok(n),
                Some(_) => Err(invalid(key, "must be between 1 and 256")),
            }
        };
        let schedule = |key: &str, v: &str| -> Result<Schedule, ConfigError> {
            Schedule::parse(v).map_err(|e| invalid(key, e))
        };

        // [source]
        let db_text = flags.db.clone().or(f.source.db.clone());
        if flags.db.is_none() && f.source.db.is_some() && !env.contains_key("PGTIDE_SOURCE_DB") {
            // Only the file is checked: a flag or the environment is not a
            // file anyone shares.
            if let Ok(ci) = ConnInfo::parse(f.source.db.as_deref().unwrap_or_default()) {
                if ci.password.is_some() {
                    return Err(invalid(
                        "source.db",
                        "holds a password: put it in password_file, PGPASSWORD or ~/.pgpass instead of the config file",
                    ));
                }
            }
        }
        let mut db = match &db_text {
            Some(s) => ConnInfo::parse(s).map_err(|e| invalid("source.db", e.to_string()))?,
            None => ConnInfo::default(),
        };
        if let Some(pf) = f
            .source
            .password_file
            .as_ref()
            .filter(|_| !flags.skip_secrets)
        {
            if db.password.is_none() {
                db.password = Some(read_secret("password file", pf)?);
            }
        }

        // [repository] or [[repository]]
        let (file_repo, copies) = repositories(f.repository)?;
        // flag > PGTIDE_REPOSITORY_URL > PGTIDE_REPO (what --repo reads
        // elsewhere) > file > the default local directory.
        let repo = flags
            .repo
            .clone()
            .or_else(|| env.get("PGTIDE_REPOSITORY_URL").cloned())
            .or_else(|| env.get("PGTIDE_REPO").cloned())
            .or(file_repo)
            .unwrap_or_else(crate::repo::default_location);
        if let Some(i) = copies.iter().position(|c| c.url == repo) {
            return Err(invalid(
                &format!("repository[{i}].url"),
                "is the primary repository: a copy must be another one",
            ));
        }

        // [wal]
        let slot = f.wal.slot.clone().unwrap_or_else(|| "pgtide".into());
        if slot.is_empty()
            || slot.len() > 63
            || !slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(
                "wal.slot",
                format!("{slot:?} is not a valid slot name (lower-case letters, digits and underscores, at most 63)"),
            ));
        }
        let slot_warn = size("wal.slot_warn", &f.wal.slot_warn)?.unwrap_or(10 << 30);
        let slot_max = size("wal.slot_max", &f.wal.slot_max)?;
        if let Some(max) = slot_max {
            if max < slot_warn {
                return Err(invalid(
                    "wal.slot_max",
                    "must not be smaller than wal.slot_warn",
                ));
            }
        }
        let wal = WalConfig {
            stream: f.wal.stream.unwrap_or(true),
            slot,
            create_slot: f.wal.create_slot.unwrap_or(true),
            compression: compression("wal.compress", &f.wal.compress)?,
            partial_interval: dur(
                "wal.partial_interval",
                &f.wal.partial_interval,
                Duration::from_secs(10),
            )?,
            status_interval: dur(
                "wal.status_interval",
                &f.wal.status_interval,
                Duration::from_secs(10),
            )?
            .max(Duration::from_millis(100)),
            synchronous: f.wal.synchronous.unwrap_or(false),
            application_name: match &f.wal.application_name {
                Some(n) if n.is_empty() || n.len() > 63 || !n.is_ascii() => {
                    return Err(invalid(
                        "wal.application_name",
                        format!("{n:?} must be 1 to 63 ASCII characters"),
                    ))
                }
                Some(n) => n.clone(),
                None => "pgtide".into(),
            },
            slot_warn,
            slot_max,
            slot_check_interval: dur(
                "wal.slot_check_interval",
                &f.wal.slot_check_interval,
                Duration::from_secs(30),
            )?
            .max(Duration::from_secs(1)),
        };

        // [backup]
        let backup = BackupConfig {
            schedule: f
                .backup
                .schedule
                .as_deref()
                .map(|s| schedule("backup.schedule", s))
                .transpose()?,
            compression: compression("backup.compress", &f.backup.compress)?,
            jobs: jobs("backup.jobs", f.backup.jobs)?,
            fast_checkpoint: match f.backup.checkpoint.as_deref() {
                None | Some("fast") => true,
                Some("spread") => false,
                Some(o) => {
                    return Err(invalid(
                        "backup.checkpoint",
                        format!("{o:?}: use fast or spread"),
                    ))
                }
            },
            max_rate_kbps: size("backup.max_rate", &f.backup.max_rate)?
                .map(|r| (r / 1024).clamp(32, 1_048_576) as u32),
            stream_wal: match f.backup.wal.as_deref() {
                None => !wal.stream,
                Some("stream") => true,
                Some("archive") => false,
                Some(o) => {
                    return Err(invalid(
                        "backup.wal",
                        format!("{o:?}: use stream or archive"),
                    ))
                }
            },
        };

        // [[dump]]
        let mut dumps = Vec::new();
        for (i, d) in f.dump.iter().enumerate() {
            let key = |k: &str| format!("dump[{i}].{k}");
            let database = d
                .database
                .clone()
                .or_else(|| db.dbname.clone())
                .ok_or_else(|| invalid(&key("database"), "missing: name the database to dump"))?;
            let sched = d
                .schedule
                .as_deref()
                .ok_or_else(|| invalid(&key("schedule"), "missing: a dump needs a schedule"))?;
            dumps.push(DumpConfig {
                database,
                schedule: schedule(&key("schedule"), sched)?,
                jobs: jobs(&key("jobs"), d.jobs)?,
                compression: compression(&key("compress"), &d.compress)?,
                pg_dump: d
                    .pg_dump
                    .clone()
                    .or_else(|| env.get("PGTIDE_PG_DUMP").map(PathBuf::from)),
            });
        }

        // [retention]
        let retention_backups = f.retention.backups.unwrap_or_default();
        let retention_dumps = f.retention.dumps.unwrap_or_default();

        // [http]
        let listen_text = flags
            .listen
            .clone()
            .or(f.http.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:9187".into());
        let listen = listen_text.parse().map_err(|_| {
            invalid(
                "http.listen",
                format!("{listen_text:?} is not an address:port (e.g. 127.0.0.1:9187)"),
            )
        })?;
        let token = match (&f.http.token_file, env.get(ENV_HTTP_TOKEN)) {
            (Some(_), _) if flags.skip_secrets => None,
            (Some(p), _) => Some(read_secret("HTTP token file", p)?),
            (None, Some(t)) => Some(t.trim().to_string()),
            (None, None) => None,
        };
        if token.as_deref() == Some("") {
            return Err(invalid("http.token_file", "the token is empty"));
        }

        // [notify]
        if let Some(w) = &f.notify.webhook {
            if !(w.starts_with("http://") || w.starts_with("https://")) {
                return Err(invalid(
                    "notify.webhook",
                    "must be an http:// or https:// URL",
                ));
            }
        }

        // [lock]
        let lock_heartbeat = dur("lock.heartbeat", &f.lock.heartbeat, Duration::from_secs(10))?
            .max(Duration::from_secs(1));
        let lock_stale_after = dur(
            "lock.stale_after",
            &f.lock.stale_after,
            Duration::from_secs(120),
        )?;
        if lock_stale_after < lock_heartbeat * 3 {
            return Err(invalid(
                "lock.stale_after",
                "must be at least three heartbeats",
            ));
        }

        let log_format = match flags.log_format.as_deref().or(f.log.format.as_deref()) {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(o) => return Err(invalid("log.format", format!("{o:?}: use text or json"))),
        };

        let drill = DrillConfig {
            schedule: f
                .drill
                .schedule
                .as_deref()
                .map(|s| schedule("drill.schedule", s))
                .transpose()?,
            what: match f.drill.what.as_deref() {
                None | Some("backup") => DrillWhat::Backup,
                Some("dump") => DrillWhat::Dump,
                Some("latest") => DrillWhat::Latest,
                Some(o) => {
                    return Err(invalid(
                        "drill.what",
                        format!("{o:?}: use backup, dump or latest"),
                    ))
                }
            },
            sql_file: f.drill.sql_file,
            scratch: f.drill.scratch,
        };

        Ok(DaemonConfig {
            path: path.map(Path::to_path_buf),
            timezone,
            db,
            db_text,
            repo,
            copies,
            wal,
            backup,
            dumps,
            retention_backups,
            retention_dumps,
            http: HttpConfig { listen, token },
            webhook: f.notify.webhook,
            notify_success: f.notify.on_success.unwrap_or(false),
            lock_heartbeat,
            lock_stale_after,
            log_format,
            drill,
        })
    }

    /// Every secret this configuration holds, for redaction checks.
    pub fn secrets(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(p) = &self.db.password {
            v.push(p.clone());
        }
        if let Some(t) = &self.http.token {
            v.push(t.clone());
        }
        v
    }
}

/// The primary repository's URL from the file, and the copies.
fn repositories(v: Option<toml::Value>) -> Result<(Option<String>, Vec<CopyConfig>), ConfigError> {
    let entries: Vec<RepositoryEntry> = match v {
        None => return Ok((None, Vec::new())),
        Some(t @ toml::Value::Table(_)) => {
            let r = RepositorySection::deserialize(t)
                .map_err(|e| invalid("repository", e.to_string().trim().replace('\n', " ")))?;
            return Ok((r.url, Vec::new()));
        }
        Some(a @ toml::Value::Array(_)) => Vec::<RepositoryEntry>::deserialize(a)
            .map_err(|e| invalid("repository", e.to_string().trim().replace('\n', " ")))?,
        Some(_) => {
            return Err(invalid(
                "repository",
                "must be a [repository] table or [[repository]] entries",
            ))
        }
    };
    let primaries: Vec<usize> = (0..entries.len()).filter(|&i| !entries[i].copy).collect();
    if primaries.len() != 1 {
        return Err(invalid(
            "repository",
            format!(
                "{} [[repository]] entries without copy = true: name exactly one (the primary repository)",
                primaries.len()
            ),
        ));
    }
    let mut primary = None;
    let mut copies: Vec<CopyConfig> = Vec::new();
    for (i, e) in entries.into_iter().enumerate() {
        if !e.copy {
            if e.retention.is_some() {
                return Err(invalid(
                    &format!("repository[{i}].retention"),
                    "the primary repository's retention is [retention]; only a copy = true entry takes its own",
                ));
            }
            primary = e.url;
            continue;
        }
        let url = e.url.ok_or_else(|| {
            invalid(
                &format!("repository[{i}].url"),
                "missing: a copy repository needs its location",
            )
        })?;
        if copies.iter().any(|c| c.url == url) {
            return Err(invalid(
                &format!("repository[{i}].url"),
                format!("{url} is named twice"),
            ));
        }
        let r = e.retention.unwrap_or_default();
        copies.push(CopyConfig {
            url,
            retention_backups: r.backups.unwrap_or_default(),
            retention_dumps: r.dumps.unwrap_or_default(),
        });
    }
    Ok((primary, copies))
}

fn read_secret(what: &'static str, path: &Path) -> Result<String, ConfigError> {
    let s = std::fs::read_to_string(path).map_err(|e| ConfigError::SecretFile {
        what,
        path: path.display().to_string(),
        source: e,
    })?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<DaemonConfig, ConfigError> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DaemonConfig::from_parts(
            Some(Path::new("/etc/pgtide/pgtide.toml")),
            text,
            &env,
            &Overrides::default(),
        )
    }

    const EXAMPLE: &str = r#"
[source]
db = "host=db1 user=pgtide dbname=postgres"
[repository]
url = "s3://backups/db1"
[wal]
stream = true
slot = "pgtide"
create_slot = true
partial_interval = "10s"
slot_warn = "10GiB"
slot_max = "50GiB"
[backup]
schedule = "0 3 * * *"
compress = "zstd:3"
[[dump]]
database = "app"
schedule = "30 2 * * *"
jobs = 4
[retention.backups]
keep_last = 2
[retention.dumps]
keep_last = 7
[http]
listen = "127.0.0.1:9187"
[notify]
webhook = "https://hooks.example.com/pgtide"
"#;

    #[test]
    fn the_issue_example_loads() {
        let c = load(EXAMPLE, &[]).unwrap();
        assert_eq!(c.repo, "s3://backups/db1");
        assert_eq!(c.wal.slot_max, Some(50 << 30));
        assert_eq!(c.wal.partial_interval, Duration::from_secs(10));
        assert_eq!(c.backup.compression, Compression::Zstd(3));
        assert!(!c.backup.stream_wal, "the daemon's stream serves backups");
        assert_eq!(c.dumps.len(), 1);
        assert_eq!(c.dumps[0].database, "app");
        assert_eq!(c.dumps[0].jobs, 4);
        assert_eq!(c.retention_backups.keep_last, Some(2));
        assert_eq!(c.retention_dumps.keep_last, Some(7));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:9187");
        assert!(c.http.token.is_none());
        assert_eq!(c.timezone, chrono_tz::UTC);
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_line() {
        let e = load("[retention.backups]\nkeep_lats = 2\n", &[]).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("keep_lats"), "{m}");
        assert!(m.contains("line 2"), "{m}");
        let e = load("[wal]\nstream = true\n[bakup]\n", &[]).unwrap_err();
        assert!(e.to_string().contains("bakup"), "{e}");
        assert!(e.to_string().contains("line 3"), "{e}");
    }

    #[test]
    fn environment_beats_file_and_flags_beat_both() {
        let env = [
            ("PGTIDE_BACKUP_SCHEDULE", "@every 15s"),
            ("PGTIDE_REPOSITORY_URL", "/from/env"),
            ("PGTIDE_RETENTION_BACKUPS_KEEP_LAST", "5"),
            ("PGTIDE_WAL_STREAM", "false"),
        ];
        let c = load(EXAMPLE, &env).unwrap();
        assert_eq!(c.repo, "/from/env");
        assert_eq!(c.retention_backups.keep_last, Some(5));
        assert!(!c.wal.stream);
        assert_eq!(
            c.backup.schedule.as_ref().unwrap().to_string(),
            "@every 15s"
        );
        let envmap = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let flags = Overrides {
            repo: Some("/from/flag".into()),
            ..Overrides::default()
        };
        let c = DaemonConfig::from_parts(None, EXAMPLE, &envmap, &flags).unwrap();
        assert_eq!(c.repo, "/from/flag");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load("[backup]\nschedule = \"61 * * * *\"\n", &[]).unwrap_err();
        assert!(e.to_string().starts_with("backup.schedule:"), "{e}");
        let e = load("", &[("PGTIDE_BACKUP_JOBS", "many")]).unwrap_err();
        assert!(e.to_string().starts_with("PGTIDE_BACKUP_JOBS:"), "{e}");
        let e = load("[wal]\nslot = \"Bad-Slot\"\n", &[]).unwrap_err();
        assert!(e.to_string().starts_with("wal.slot:"), "{e}");
        let e = load("timezone = \"Mars/Olympus\"\n", &[]).unwrap_err();
        assert!(e.to_string().starts_with("timezone:"), "{e}");
        let e = load("[[dump]]\ndatabase = \"app\"\n", &[]).unwrap_err();
        assert!(e.to_string().starts_with("dump[0].schedule:"), "{e}");
        let e = load("[wal]\nslot_warn = \"10GiB\"\nslot_max = \"1GiB\"\n", &[]).unwrap_err();
        assert!(e.to_string().starts_with("wal.slot_max:"), "{e}");
        let e = load("[wal]\napplication_name = \"\"\n", &[]).unwrap_err();
        assert!(e.to_string().starts_with("wal.application_name:"), "{e}");
    }

    #[test]
    fn a_synchronous_archive_is_asked_for_in_the_wal_section() {
        let c = load("", &[]).unwrap();
        assert!(!c.wal.synchronous);
        assert_eq!(c.wal.application_name, "pgtide");
        let c = load(
            "[wal]\nsynchronous = true\napplication_name = \"archive\"\npartial_interval = \"500ms\"\n",
            &[],
        )
        .unwrap();
        assert!(c.wal.synchronous);
        assert_eq!(c.wal.application_name, "archive");
        assert_eq!(c.wal.partial_interval, Duration::from_millis(500));
        let c = load("", &[("PGTIDE_WAL_SYNCHRONOUS", "true")]).unwrap();
        assert!(c.wal.synchronous);
    }

    #[test]
    fn inline_passwords_are_refused() {
        let e = load("[source]\ndb = \"host=db1 password=hunter2\"\n", &[]).unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("source.db:"), "{m}");
        assert!(!m.contains("hunter2"), "{m}");
        let e = load("[source]\ndb = \"postgres://u:hunter2@db1/app\"\n", &[]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn secrets_come_from_files_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("token");
        std::fs::write(&tok, "s3cret-token\n").unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "dbpass\n").unwrap();
        let text = format!(
            "[source]\ndb = \"host=db1\"\npassword_file = {:?}\n[http]\ntoken_file = {:?}\n",
            pw.display().to_string(),
            tok.display().to_string()
        );
        let c = load(&text, &[]).unwrap();
        assert_eq!(c.http.token.as_deref(), Some("s3cret-token"));
        assert_eq!(c.db.password.as_deref(), Some("dbpass"));
        let c = load("", &[(ENV_HTTP_TOKEN, "from-env")]).unwrap();
        assert_eq!(c.http.token.as_deref(), Some("from-env"));
        let e = load("[http]\ntoken_file = \"/nonexistent/token\"\n", &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read HTTP token file /nonexistent/token:"),
            "{e}"
        );
    }

    #[test]
    fn every_env_key_is_a_file_key() {
        // Each variable must land in a field the file's schema has.
        for (path, var) in env_keys() {
            let kind = ENV_KEYS.iter().find(|(k, _)| *k == path).unwrap().1;
            let value = match kind {
                Kind::Str => match path {
                    "timezone" => "UTC",
                    "wal.slot" => "s",
                    "http.listen" => "127.0.0.1:1",
                    "notify.webhook" => "http://127.0.0.1:1/",
                    "log.format" => "json",
                    "backup.checkpoint" => "fast",
                    "backup.wal" => "stream",
                    "backup.max_rate" => "10MiB",
                    "drill.schedule" => "@weekly",
                    "drill.what" => "dump",
                    "backup.schedule" => "@every 1m",
                    "wal.compress" | "backup.compress" => "zstd:1",
                    "lock.stale_after" => "1h",
                    "source.password_file" | "http.token_file" => continue,
                    _ if path.ends_with("max_age") => "7d",
                    _ if path.contains("interval") || path.contains("heartbeat") => "10s",
                    _ if path.contains("slot_") => "20GiB",
                    _ => "x",
                },
                Kind::Int => "3",
                Kind::Bool => "true",
            };
            load("", &[(var.as_str(), value)]).unwrap_or_else(|e| panic!("{var}: {e}"));
        }
    }

    #[test]
    fn copy_repositories_with_their_own_retention() {
        let text = r#"
[[repository]]
url = "s3://backups/db1"

[[repository]]
url = "gs://dr-bucket/db1"
copy = true
[repository.retention.backups]
keep_last = 7
[repository.retention.dumps]
daily = 3

[[repository]]
url = "az://dr/db1?account=acct"
copy = true
"#;
        let c = load(text, &[]).unwrap();
        assert_eq!(c.repo, "s3://backups/db1");
        let urls: Vec<&str> = c.copies.iter().map(|c| c.url.as_str()).collect();
        assert_eq!(urls, ["gs://dr-bucket/db1", "az://dr/db1?account=acct"]);
        assert_eq!(c.copies[0].retention_backups.keep_last, Some(7));
        assert_eq!(c.copies[0].retention_dumps.daily, Some(3));
        assert!(!c.copies[1].retention_backups.has_rules());
        // The variable names the primary; the copies stay.
        let c = load(text, &[("PGTIDE_REPOSITORY_URL", "/srv/repo")]).unwrap();
        assert_eq!(c.repo, "/srv/repo");
        assert_eq!(c.copies.len(), 2);
        // The single-table form has no copies.
        let c = load("[repository]\nurl = \"/srv/r\"\n", &[]).unwrap();
        assert_eq!(c.repo, "/srv/r");
        assert!(c.copies.is_empty());

        let err = |t: &str| load(t, &[]).unwrap_err().to_string();
        assert!(
            err("[[repository]]\nurl = \"/a\"\n[[repository]]\nurl = \"/b\"\n")
                .contains("2 [[repository]] entries without copy = true"),
        );
        assert!(err("[[repository]]\nurl = \"/a\"\ncopy = true\n")
            .contains("0 [[repository]] entries without copy = true"));
        assert!(
            err("[[repository]]\nurl = \"/a\"\n[[repository]]\ncopy = true\n")
                .starts_with("repository[1].url: missing")
        );
        assert!(err(
            "[[repository]]\nurl = \"/a\"\n[repository.retention.backups]\nkeep_last = 1\n[[repository]]\nurl = \"/b\"\ncopy = true\n"
        )
        .starts_with("repository[0].retention:"));
        assert!(
            err("[[repository]]\nurl = \"/a\"\n[[repository]]\nurl = \"/a\"\ncopy = true\n")
                .contains("is the primary repository")
        );
        assert!(err(
            "[[repository]]\nurl = \"/a\"\n[[repository]]\nurl = \"/b\"\ncopy = true\nkeep = 1\n"
        )
        .contains("keep"));
    }
}
