//! Connection parameters with libpq's conventions.
//!
//! Owns: parsing the two conninfo forms libpq accepts (`postgres://` URLs and
//! `key=value` strings), filling what is unset from the `PG*` environment
//! variables and libpq's defaults, looking the password up in the password
//! file (`~/.pgpass`), and rendering the result for tokio-postgres and for
//! child processes (pg_dump, pg_restore).
//!
//! Must never: touch the network, or read the environment or the file system
//! except through the closures given to [`ConnInfo::resolve`]
//! ([`ConnInfo::from_cli`] is the one place that wires in the real ones).
//! Must never print a password: not in [`ConnInfo::display`], not in
//! [`ConnInfo::to_libpq_string`], not in `Debug`, not in an error message.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// libpq's default port.
pub const DEFAULT_PORT: u16 = 5432;
/// libpq's default unix-socket directory on Debian and derivatives.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";
/// The TCP host used when no host is given and the socket directory is absent.
const DEFAULT_TCP_HOST: &str = "localhost";

/// Every keyword libpq 18 accepts (`PQconndefaults`) and the environment
/// variable it falls back to, in libpq's order.
const KEYWORDS: &[(&str, Option<&str>)] = &[
    ("service", Some("PGSERVICE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("dbname", Some("PGDATABASE")),
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("client_encoding", Some("PGCLIENTENCODING")),
    ("options", Some("PGOPTIONS")),
    ("application_name", Some("PGAPPNAME")),
    ("fallback_application_name", None),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("tcp_user_timeout", None),
    ("sslmode", Some("PGSSLMODE")),
    ("sslnegotiation", Some("PGSSLNEGOTIATION")),
    ("sslcompression", Some("PGSSLCOMPRESSION")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslcertmode", Some("PGSSLCERTMODE")),
    ("sslpassword", None),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcrl", Some("PGSSLCRL")),
    ("sslcrldir", Some("PGSSLCRLDIR")),
    ("sslsni", Some("PGSSLSNI")),
    ("sslkeylogfile", None),
    ("requirepeer", Some("PGREQUIREPEER")),
    ("require_auth", Some("PGREQUIREAUTH")),
    ("ssl_min_protocol_version", Some("PGSSLMINPROTOCOLVERSION")),
    ("ssl_max_protocol_version", Some("PGSSLMAXPROTOCOLVERSION")),
    ("min_protocol_version", Some("PGMINPROTOCOLVERSION")),
    ("max_protocol_version", Some("PGMAXPROTOCOLVERSION")),
    ("gssencmode", Some("PGGSSENCMODE")),
    ("krbsrvname", Some("PGKRBSRVNAME")),
    ("gsslib", Some("PGGSSLIB")),
    ("gssdelegation", Some("PGGSSDELEGATION")),
    ("replication", None),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
    ("scram_client_key", None),
    ("scram_server_key", None),
    ("oauth_issuer", None),
    ("oauth_client_id", None),
    ("oauth_client_secret", None),
    ("oauth_scope", None),
];

/// Errors in connection parameters. Messages follow libpq's wording where
/// libpq has one, and never contain a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    #[error("invalid connection option \"{keyword}\"")]
    UnknownOption { keyword: String },
    #[error("invalid URI query parameter: \"{keyword}\"")]
    UnknownUriParameter { keyword: String },
    #[error("missing \"=\" after \"{keyword}\" in connection info string")]
    MissingEquals { keyword: String },
    #[error("unterminated quoted string in connection info string")]
    UnterminatedQuote,
    #[error("missing key/value separator \"=\" in URI query parameter: \"{parameter}\"")]
    MissingUriSeparator { parameter: String },
    #[error("extra key/value separator \"=\" in URI query parameter: \"{parameter}\"")]
    ExtraUriSeparator { parameter: String },
    #[error("missing \"]\" after IPv6 host address in URI: \"{host}\"")]
    UnterminatedIpv6 { host: String },
    #[error("IPv6 host address may not be empty in URI")]
    EmptyIpv6,
    #[error("unexpected character \"{ch}\" after IPv6 host address in URI (expected \":\", \",\", \"/\" or \"?\")")]
    UnexpectedUriChar { ch: char },
    /// `value` is `(hidden)` when the bad token is in the password.
    #[error("invalid percent-encoded token in URI {part}: \"{value}\"")]
    InvalidPercent { part: &'static str, value: String },
    #[error("forbidden value %00 in percent-encoded URI {part}: \"{value}\"")]
    NulInPercent { part: &'static str, value: String },
    #[error("invalid {keyword} value: \"{value}\"")]
    InvalidValue { keyword: String, value: String },
    #[error("invalid integer value \"{value}\" for connection option \"{keyword}\"")]
    InvalidInteger { keyword: String, value: String },
    #[error("invalid port number: \"{value}\"")]
    InvalidPort { value: String },
    #[error("could not parse network address \"{value}\" (hint: hostaddr takes numeric IP addresses; put names in host)")]
    InvalidHostaddr { value: String },
    #[error("could not match {ports} port numbers to {hosts} hosts")]
    PortCountMismatch { ports: usize, hosts: usize },
    #[error("could not match {hosts} host names to {hostaddrs} hostaddr values")]
    HostaddrCountMismatch { hosts: usize, hostaddrs: usize },
    #[error(
        "weak sslmode \"{sslmode}\" may not be used with sslrootcert=system (use \"verify-full\")"
    )]
    WeakSslModeWithSystemRoots { sslmode: SslMode },
    #[error("connection service files are not supported (service \"{service}\"; hint: give host, port, user and dbname directly)")]
    ServiceUnsupported { service: String },
    /// A value taken from an environment variable was invalid.
    #[error("{var}: {error}")]
    Env {
        var: &'static str,
        error: Box<ConnInfoError>,
    },
}

/// libpq's `sslmode`, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = ConnInfoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(invalid_value("sslmode", s)),
        })
    }
}

/// libpq's `sslrootcert`: a PEM file, or `system` for the platform's trusted roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslRootCert {
    System,
    File(PathBuf),
}

/// One host to try: the `i`-th entry of the host, hostaddr and port lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name, IP address, or (starting with `/`) a unix-socket directory.
    /// Empty when only `hostaddr` was given.
    pub host: String,
    /// Numeric address to connect to instead of resolving `host`.
    pub hostaddr: Option<IpAddr>,
    pub port: u16,
}

impl Target {
    pub fn is_unix_socket(&self) -> bool {
        self.hostaddr.is_none() && self.host.starts_with('/')
    }

    /// The host name to verify a certificate against and to look up in the
    /// password file: `host`, or the address when only `hostaddr` was given.
    pub fn host_name(&self) -> String {
        match (&self.hostaddr, self.host.is_empty()) {
            (Some(addr), true) => addr.to_string(),
            _ => self.host.clone(),
        }
    }
}

impl fmt::Display for Target {
    /// `host:port`, `[v6]:port`, or the socket file `/dir/.s.PGSQL.port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_unix_socket() {
            let dir = self.host.trim_end_matches('/');
            return write!(f, "{dir}/.s.PGSQL.{}", self.port);
        }
        write!(f, "{}:{}", bracket_v6(&self.host_name()), self.port)
    }
}

/// libpq connection parameters. `None` / empty means "not given"; after
/// [`ConnInfo::resolve`] host, port, user, dbname and sslmode are always set.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// Host names, IP addresses or unix-socket directories, tried in order.
    /// An empty entry stands for the default host until resolved.
    pub hosts: Vec<String>,
    /// Numeric addresses: none, or one per host.
    pub hostaddrs: Vec<IpAddr>,
    /// Ports: none, one for every host, or one per host.
    pub ports: Vec<u16>,
    pub user: Option<String>,
    /// The password. After `resolve` it may come from the password file; if you
    /// replace it afterwards, `with_dbname` and `password_for` may look the
    /// password file up again (they do so only for a password that came from it).
    pub password: Option<String>,
    pub dbname: Option<String>,
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<SslRootCert>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub application_name: Option<String>,
    /// `Some(Duration::ZERO)` means "wait forever" was asked for explicitly.
    pub connect_timeout: Option<Duration>,
    pub options: Option<String>,
    /// Every other libpq keyword that was given, with its (validated) value.
    pub other: BTreeMap<String, String>,
    /// The password file read by `resolve`, kept to look up per host and db.
    pgpass: Option<Arc<PgPass>>,
    /// True when no password was given, so `password` (and `password_for`)
    /// come from `pgpass`.
    password_from_pgpass: bool,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("hosts", &self.hosts)
            .field("hostaddrs", &self.hostaddrs)
            .field("ports", &self.ports)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "(hidden)"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("sslcert", &self.sslcert)
            .field("sslkey", &self.sslkey)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("options", &self.options)
            .field("other", &self.other)
            .field("password_from_pgpass", &self.password_from_pgpass)
            .finish()
    }
}

impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

impl FromStr for ConnInfo {
    type Err = ConnInfoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConnInfo::parse(s)
    }
}

impl ConnInfo {
    /// Parses what psql's and pg_dump's `-d` accept: a `postgres://` or
    /// `postgresql://` URL, a `key=value` string, or else a plain database name.
    pub fn parse(s: &str) -> Result<ConnInfo, ConnInfoError> {
        if let Some(rest) = s
            .strip_prefix("postgresql://")
            .or_else(|| s.strip_prefix("postgres://"))
        {
            parse_uri(rest)
        } else if s.contains('=') {
            parse_key_values(s)
        } else {
            let mut ci = ConnInfo::default();
            ci.set("dbname", s)?;
            Ok(ci)
        }
    }

    /// Parses `arg` (if any) and resolves it against the real environment,
    /// `$HOME/.pgpass` (ignored, with a warning, when group or world can read
    /// it) and the OS user (`$USER`, `$LOGNAME`, else `postgres`).
    pub fn from_cli(arg: Option<&str>) -> Result<ConnInfo, ConnInfoError> {
        let ci = match arg {
            Some(arg) => ConnInfo::parse(arg)?,
            None => ConnInfo::default(),
        };
        let env = |name: &str| std::env::var(name).ok();
        let os_user = env("USER")
            .filter(|u| !u.is_empty())
            .or_else(|| env("LOGNAME").filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "postgres".to_owned());
        let socket_dir = Path::new(DEFAULT_SOCKET_DIR);
        let socket_dir = socket_dir.is_dir().then_some(socket_dir);
        ci.resolve(&env, &read_password_file, &os_user, socket_dir)
    }

    /// Fills what is unset, in libpq's order: the `PG*` environment variables,
    /// then libpq's defaults (host: `default_socket_dir` when given, which the
    /// caller passes only if that directory exists, else `localhost`; port
    /// 5432; user `os_user`; dbname = user; sslmode prefer), then the password
    /// from the password file (`passfile` / `PGPASSFILE`, else `$HOME/.pgpass`;
    /// first matching line wins). `read_pgpass` returns the file's text, or
    /// `None` when it is missing, unreadable or readable by group or world.
    pub fn resolve(
        mut self,
        env: &dyn Fn(&str) -> Option<String>,
        read_pgpass: &dyn Fn(&Path) -> Option<String>,
        os_user: &str,
        default_socket_dir: Option<&Path>,
    ) -> Result<ConnInfo, ConnInfoError> {
        for (keyword, var) in KEYWORDS {
            let Some(var) = var else { continue };
            if self.is_set(keyword) {
                continue;
            }
            if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                self.set(keyword, &value).map_err(|e| ConnInfoError::Env {
                    var,
                    error: Box::new(e),
                })?;
            }
        }
        if let Some(service) = self.other.get("service") {
            return Err(ConnInfoError::ServiceUnsupported {
                service: service.clone(),
            });
        }

        let default_host = match default_socket_dir {
            Some(dir) => dir.to_string_lossy().into_owned(),
            None => DEFAULT_TCP_HOST.to_owned(),
        };
        if self.hosts.is_empty() && self.hostaddrs.is_empty() {
            self.hosts.push(default_host);
        } else {
            for (i, host) in self.hosts.iter_mut().enumerate() {
                if host.is_empty() && self.hostaddrs.get(i).is_none() {
                    host.clone_from(&default_host);
                }
            }
        }
        if !self.hosts.is_empty()
            && !self.hostaddrs.is_empty()
            && self.hosts.len() != self.hostaddrs.len()
        {
            return Err(ConnInfoError::HostaddrCountMismatch {
                hosts: self.hosts.len(),
                hostaddrs: self.hostaddrs.len(),
            });
        }
        let n_hosts = self.hosts.len().max(self.hostaddrs.len());
        if self.ports.is_empty() {
            self.ports.push(DEFAULT_PORT);
        } else if self.ports.len() != 1 && self.ports.len() != n_hosts {
            return Err(ConnInfoError::PortCountMismatch {
                ports: self.ports.len(),
                hosts: n_hosts,
            });
        }
        let user = self.user.get_or_insert_with(|| os_user.to_owned()).clone();
        self.dbname.get_or_insert(user);
        let sslmode = *self.sslmode.get_or_insert(SslMode::Prefer);
        if self.sslrootcert == Some(SslRootCert::System) && sslmode != SslMode::VerifyFull {
            return Err(ConnInfoError::WeakSslModeWithSystemRoots { sslmode });
        }

        if self.password.is_none() {
            let passfile = match self.other.get("passfile") {
                Some(path) => Some(PathBuf::from(path)),
                None => env("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|home| Path::new(&home).join(".pgpass")),
            };
            if let Some(path) = passfile {
                if let Some(text) = read_pgpass(&path) {
                    self.pgpass = Some(Arc::new(PgPass::parse(path, &text)));
                    let first = self.targets().into_iter().next();
                    self.password = first.and_then(|t| self.pgpass_lookup(&t));
                    self.password_from_pgpass = true;
                }
            }
        }
        Ok(self)
    }

    /// A copy that connects to database `dbname`; a password that came from
    /// the password file is looked up again for the new database.
    pub fn with_dbname(&self, dbname: &str) -> ConnInfo {
        let mut ci = self.clone();
        ci.dbname = Some(dbname.to_owned());
        if ci.password_from_pgpass {
            let first = ci.targets().into_iter().next();
            ci.password = first.and_then(|t| ci.pgpass_lookup(&t));
        }
        ci
    }

    /// The hosts to try, in order: one per host (or hostaddr) entry, each
    /// with its port.
    pub fn targets(&self) -> Vec<Target> {
        let n = self.hosts.len().max(self.hostaddrs.len());
        (0..n)
            .map(|i| Target {
                host: self.hosts.get(i).cloned().unwrap_or_default(),
                hostaddr: self.hostaddrs.get(i).copied(),
                port: self
                    .ports
                    .get(i)
                    .or(self.ports.first())
                    .copied()
                    .unwrap_or(DEFAULT_PORT),
            })
            .collect()
    }

    /// The password to send to `target`: the one given, or the password
    /// file's line for that host, port, database and user.
    pub fn password_for(&self, target: &Target) -> Option<String> {
        if self.password_from_pgpass {
            self.pgpass_lookup(target)
        } else {
            self.password.clone()
        }
    }

    /// The password file the password came from, if it came from one
    /// (libpq mentions it when authentication fails).
    pub fn password_file_used(&self) -> Option<&Path> {
        match &self.pgpass {
            Some(p) if self.password_from_pgpass && self.password.is_some() => Some(&p.path),
            _ => None,
        }
    }

    fn pgpass_lookup(&self, target: &Target) -> Option<String> {
        let pgpass = self.pgpass.as_ref()?;
        let mut host = target.host_name();
        if host.is_empty() || host.trim_end_matches('/') == DEFAULT_SOCKET_DIR {
            host = DEFAULT_TCP_HOST.to_owned();
        }
        pgpass
            .lookup(
                &host,
                &target.port.to_string(),
                self.dbname.as_deref().unwrap_or(""),
                self.user.as_deref().unwrap_or(""),
            )
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
    }

    fn is_set(&self, keyword: &str) -> bool {
        match keyword {
            "host" => !self.hosts.is_empty(),
            "hostaddr" => !self.hostaddrs.is_empty(),
            "port" => !self.ports.is_empty(),
            "user" => self.user.is_some(),
            "password" => self.password.is_some(),
            "dbname" => self.dbname.is_some(),
            "sslmode" => self.sslmode.is_some(),
            "sslrootcert" => self.sslrootcert.is_some(),
            "sslcert" => self.sslcert.is_some(),
            "sslkey" => self.sslkey.is_some(),
            "application_name" => self.application_name.is_some(),
            "connect_timeout" => self.connect_timeout.is_some(),
            "options" => self.options.is_some(),
            other => self.other.contains_key(other),
        }
    }

    /// Sets one libpq keyword from its text. An empty value unsets it, so the
    /// environment or the default applies.
    fn set(&mut self, keyword: &str, value: &str) -> Result<(), ConnInfoError> {
        if !KEYWORDS.iter().any(|(k, _)| *k == keyword) {
            return Err(ConnInfoError::UnknownOption {
                keyword: keyword.to_owned(),
            });
        }
        if value.is_empty() {
            self.unset(keyword);
            return Ok(());
        }
        let text = || Some(value.to_owned());
        match keyword {
            "host" => self.hosts = value.split(',').map(str::to_owned).collect(),
            "hostaddr" => {
                self.hostaddrs = value
                    .split(',')
                    .map(|a| {
                        a.trim()
                            .parse::<IpAddr>()
                            .map_err(|_| ConnInfoError::InvalidHostaddr {
                                value: a.to_owned(),
                            })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "port" => self.ports = parse_ports(value)?,
            "user" => self.user = text(),
            "password" => {
                self.password = text();
                self.password_from_pgpass = false;
            }
            "dbname" => self.dbname = text(),
            "sslmode" => self.sslmode = Some(value.parse()?),
            "sslrootcert" => {
                self.sslrootcert = Some(match value {
                    "system" => SslRootCert::System,
                    path => SslRootCert::File(PathBuf::from(path)),
                });
            }
            "sslcert" => self.sslcert = Some(PathBuf::from(value)),
            "sslkey" => self.sslkey = Some(PathBuf::from(value)),
            "application_name" => self.application_name = text(),
            "options" => self.options = text(),
            "connect_timeout" => {
                // libpq: zero or negative waits forever; the minimum is 2 s.
                let secs = parse_int(keyword, value)?;
                self.connect_timeout = Some(match secs {
                    n if n <= 0 => Duration::ZERO,
                    n => Duration::from_secs(n.unsigned_abs().max(2)),
                });
            }
            _ => {
                validate_other(keyword, value)?;
                self.other.insert(keyword.to_owned(), value.to_owned());
            }
        }
        Ok(())
    }

    fn unset(&mut self, keyword: &str) {
        match keyword {
            "host" => self.hosts.clear(),
            "hostaddr" => self.hostaddrs.clear(),
            "port" => self.ports.clear(),
            "user" => self.user = None,
            "password" => {
                self.password = None;
                self.password_from_pgpass = false;
            }
            "dbname" => self.dbname = None,
            "sslmode" => self.sslmode = None,
            "sslrootcert" => self.sslrootcert = None,
            "sslcert" => self.sslcert = None,
            "sslkey" => self.sslkey = None,
            "application_name" => self.application_name = None,
            "connect_timeout" => self.connect_timeout = None,
            "options" => self.options = None,
            other => {
                self.other.remove(other);
            }
        }
    }
}

mod parse;
mod pgpass;
mod render;

use parse::{invalid_value, parse_int, parse_key_values, parse_ports, parse_uri, validate_other};
use pgpass::{read_password_file, PgPass};
use render::bracket_v6;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(s: &str) -> ConnInfo {
        ConnInfo::parse(s).unwrap_or_else(|e| panic!("parse {s:?}: {e}"))
    }

    fn err(s: &str) -> String {
        ConnInfo::parse(s).unwrap_err().to_string()
    }

    /// Resolves with the given environment and files; the OS user is "os".
    fn resolve_with(
        ci: ConnInfo,
        env: &[(&str, &str)],
        files: &[(&str, &str)],
        socket_dir: Option<&str>,
    ) -> Result<ConnInfo, ConnInfoError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.to_string()))
            .collect();
        ci.resolve(
            &|k| env.get(k).cloned(),
            &|p| files.get(p).cloned(),
            "os",
            socket_dir.map(Path::new),
        )
    }

    fn resolve(ci: ConnInfo, env: &[(&str, &str)]) -> ConnInfo {
        resolve_with(ci, env, &[], None).unwrap()
    }

    // ---- key=value ----

    #[test]
    fn key_value_basic() {
        let ci = parse("host=db.example port=5433 user=app dbname=shop sslmode=verify-full");
        assert_eq!(ci.hosts, vec!["db.example"]);
        assert_eq!(ci.ports, vec![5433]);
        assert_eq!(ci.user.as_deref(), Some("app"));
        assert_eq!(ci.dbname.as_deref(), Some("shop"));
        assert_eq!(ci.sslmode, Some(SslMode::VerifyFull));
    }

    #[test]
    fn key_value_quoting_escapes_and_spaces() {
        let ci = parse(
            r"  host = h   password='it\'s a \\secret'  options='-c search_path=x' user=a\ b  ",
        );
        assert_eq!(ci.hosts, vec!["h"]);
        assert_eq!(ci.password.as_deref(), Some(r"it's a \secret"));
        assert_eq!(ci.options.as_deref(), Some("-c search_path=x"));
        assert_eq!(ci.user.as_deref(), Some("a b"));
    }

    #[test]
    fn key_value_empty_quoted_value_and_last_wins() {
        let ci = parse("dbname=a dbname=b user=''");
        assert_eq!(ci.dbname.as_deref(), Some("b"));
        assert_eq!(ci.user, None);
    }

    #[test]
    fn key_value_lists() {
        let ci = parse("host=a,b,/tmp port=1,,3 hostaddr=10.0.0.1,::1,10.0.0.3");
        assert_eq!(ci.hosts, vec!["a", "b", "/tmp"]);
        assert_eq!(ci.ports, vec![1, DEFAULT_PORT, 3]);
        assert_eq!(ci.hostaddrs[1], "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn key_value_errors() {
        assert_eq!(err("host=a foo=bar"), r#"invalid connection option "foo""#);
        assert_eq!(
            err("host=a dbname"),
            r#"missing "=" after "dbname" in connection info string"#
        );
        assert_eq!(
            err("password='abc"),
            "unterminated quoted string in connection info string"
        );
        assert_eq!(err("sslmode=always"), r#"invalid sslmode value: "always""#);
        assert_eq!(err("port=abc"), r#"invalid port number: "abc""#);
        assert_eq!(err("port=70000"), r#"invalid port number: "70000""#);
        assert_eq!(
            err("connect_timeout=soon"),
            r#"invalid integer value "soon" for connection option "connect_timeout""#
        );
        assert_eq!(
            err("target_session_attrs=whatever"),
            r#"invalid target_session_attrs value: "whatever""#
        );
        assert!(err("hostaddr=db.example")
            .starts_with(r#"could not parse network address "db.example""#));
    }

    #[test]
    fn other_keywords_kept() {
        let ci = parse("replication=database keepalives_idle=30 sslcrl=/c.pem");
        assert_eq!(
            ci.other.get("replication").map(String::as_str),
            Some("database")
        );
        assert_eq!(
            ci.other.get("keepalives_idle").map(String::as_str),
            Some("30")
        );
        assert_eq!(ci.other.get("sslcrl").map(String::as_str), Some("/c.pem"));
    }

    #[test]
    fn connect_timeout_like_libpq() {
        assert_eq!(
            parse("connect_timeout=1").connect_timeout,
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            parse("connect_timeout=10").connect_timeout,
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse("connect_timeout=0").connect_timeout,
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse("connect_timeout=-5").connect_timeout,
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn sslrootcert_system_and_file() {
        assert_eq!(
            parse("sslrootcert=system").sslrootcert,
            Some(SslRootCert::System)
        );
        assert_eq!(
            parse("sslrootcert=/etc/ca.pem").sslrootcert,
            Some(SslRootCert::File("/etc/ca.pem".into()))
        );
    }

    // ---- plain database name ----

    #[test]
    fn plain_word_is_dbname() {
        assert_eq!(parse("shop").dbname.as_deref(), Some("shop"));
        assert_eq!(parse("my shop").dbname.as_deref(), Some("my shop"));
        assert_eq!(parse(""), ConnInfo::default());
    }

    // ---- URLs ----

    #[test]
    fn url_full() {
        let ci = parse(
            "postgresql://app:s3cr%40t@db1:5433,db2:5434/shop?sslmode=require&application_name=x",
        );
        assert_eq!(ci.user.as_deref(), Some("app"));
        assert_eq!(ci.password.as_deref(), Some("s3cr@t"));
        assert_eq!(ci.hosts, vec!["db1", "db2"]);
        assert_eq!(ci.ports, vec![5433, 5434]);
        assert_eq!(ci.dbname.as_deref(), Some("shop"));
        assert_eq!(ci.sslmode, Some(SslMode::Require));
        assert_eq!(ci.application_name.as_deref(), Some("x"));
    }

    #[test]
    fn url_postgres_scheme_and_minimal_forms() {
        assert_eq!(parse("postgres://h").hosts, vec!["h"]);
        assert_eq!(parse("postgresql://"), ConnInfo::default());
        let ci = parse("postgresql:///shop");
        assert!(ci.hosts.is_empty());
        assert_eq!(ci.dbname.as_deref(), Some("shop"));
        let ci = parse("postgresql://u@");
        assert_eq!(ci.user.as_deref(), Some("u"));
        assert!(ci.hosts.is_empty());
        let ci = parse("postgresql://:5433/");
        assert!(ci.hosts.is_empty());
        assert_eq!(ci.ports, vec![5433]);
        assert_eq!(ci.dbname, None);
    }

    #[test]
    fn url_unencoded_at_in_password() {
        let ci = parse("postgres://u:p@ss@h/d");
        assert_eq!(ci.password.as_deref(), Some("p@ss"));
        assert_eq!(ci.hosts, vec!["h"]);
    }

    #[test]
    fn url_ipv6() {
        let ci = parse("postgresql://[::1]:5433,[fe80::1%25eth0],h2/db");
        assert_eq!(ci.hosts, vec!["::1", "fe80::1%eth0", "h2"]);
        assert_eq!(ci.ports, vec![5433, DEFAULT_PORT, DEFAULT_PORT]);
        assert_eq!(
            err("postgresql://[::1/db"),
            r#"missing "]" after IPv6 host address in URI: "[::1""#
        );
        assert_eq!(
            err("postgresql://[]/db"),
            "IPv6 host address may not be empty in URI"
        );
        assert!(err("postgresql://[::1]x/db").starts_with(r#"unexpected character "x""#));
    }

    #[test]
    fn url_unix_socket_hosts() {
        let ci = parse("postgresql:///shop?host=/var/run/postgresql&port=5433");
        assert_eq!(ci.hosts, vec!["/var/run/postgresql"]);
        assert_eq!(ci.ports, vec![5433]);
        let ci = parse("postgresql://%2Ftmp%2Fpg/shop");
        assert_eq!(ci.hosts, vec!["/tmp/pg"]);
        assert!(ci.targets()[0].is_unix_socket());
        // A query parameter overrides the authority.
        assert_eq!(parse("postgresql://h/db?host=/tmp").hosts, vec!["/tmp"]);
    }

    #[test]
    fn url_percent_decoding_everywhere() {
        let ci = parse("postgresql://us%65r@h/my%20db?options=-c%20x%3Dy&application_name=a+b");
        assert_eq!(ci.user.as_deref(), Some("user"));
        assert_eq!(ci.dbname.as_deref(), Some("my db"));
        assert_eq!(ci.options.as_deref(), Some("-c x=y"));
        assert_eq!(ci.application_name.as_deref(), Some("a+b"));
    }

    #[test]
    fn url_ssl_true_is_require() {
        assert_eq!(
            parse("postgresql://h/d?ssl=true").sslmode,
            Some(SslMode::Require)
        );
    }

    #[test]
    fn url_errors() {
        assert_eq!(
            err("postgresql://h/d?foo=1"),
            r#"invalid URI query parameter: "foo""#
        );
        assert_eq!(
            err("postgresql://h/d?sslmode"),
            r#"missing key/value separator "=" in URI query parameter: "sslmode""#
        );
        assert_eq!(
            err("postgresql://h/d?options=a=b"),
            r#"extra key/value separator "=" in URI query parameter: "options""#
        );
        assert_eq!(
            err("postgresql://h/d%zz"),
            r#"invalid percent-encoded token in URI database name: "d%zz""#
        );
        assert_eq!(
            err("postgresql://h/d%00"),
            r#"forbidden value %00 in percent-encoded URI database name: "d%00""#
        );
        assert_eq!(err("postgresql://h:x/d"), r#"invalid port number: "x""#);
        assert_eq!(
            err("postgresql://h/d?sslmode=nope"),
            r#"invalid sslmode value: "nope""#
        );
    }

    #[test]
    fn url_errors_never_show_the_password() {
        let e = err("postgresql://u:hunter2%zz@h/d");
        assert!(!e.contains("hunter2"), "{e}");
        let e = err("postgresql://h/d?password=hunter2%zz");
        assert!(!e.contains("hunter2"), "{e}");
    }

    // ---- resolve: environment and defaults ----

    #[test]
    fn resolve_defaults_without_socket_dir() {
        let ci = resolve(ConnInfo::default(), &[]);
        assert_eq!(ci.hosts, vec!["localhost"]);
        assert_eq!(ci.ports, vec![5432]);
        assert_eq!(ci.user.as_deref(), Some("os"));
        assert_eq!(ci.dbname.as_deref(), Some("os"));
        assert_eq!(ci.sslmode, Some(SslMode::Prefer));
        assert_eq!(ci.password, None);
    }

    #[test]
    fn resolve_defaults_with_socket_dir() {
        let ci = resolve_with(ConnInfo::default(), &[], &[], Some(DEFAULT_SOCKET_DIR)).unwrap();
        assert_eq!(ci.hosts, vec![DEFAULT_SOCKET_DIR]);
        assert!(ci.targets()[0].is_unix_socket());
    }

    #[test]
    fn resolve_dbname_defaults_to_resolved_user() {
        let ci = resolve(parse("user=app"), &[]);
        assert_eq!(ci.dbname.as_deref(), Some("app"));
        let ci = resolve(ConnInfo::default(), &[("PGUSER", "envuser")]);
        assert_eq!(ci.dbname.as_deref(), Some("envuser"));
    }

    #[test]
    fn resolve_environment_fills_unset_only() {
        let env = [
            ("PGHOST", "envhost"),
            ("PGPORT", "6000"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGDATABASE", "envdb"),
            ("PGSSLMODE", "require"),
            ("PGSSLROOTCERT", "/ca.pem"),
            ("PGAPPNAME", "envapp"),
            ("PGCONNECT_TIMEOUT", "7"),
            ("PGOPTIONS", "-c work_mem=1MB"),
            ("PGTARGETSESSIONATTRS", "primary"),
        ];
        let ci = resolve(ConnInfo::default(), &env);
        assert_eq!(ci.hosts, vec!["envhost"]);
        assert_eq!(ci.ports, vec![6000]);
        assert_eq!(ci.user.as_deref(), Some("envuser"));
        assert_eq!(ci.password.as_deref(), Some("envpw"));
        assert_eq!(ci.dbname.as_deref(), Some("envdb"));
        assert_eq!(ci.sslmode, Some(SslMode::Require));
        assert_eq!(ci.sslrootcert, Some(SslRootCert::File("/ca.pem".into())));
        assert_eq!(ci.application_name.as_deref(), Some("envapp"));
        assert_eq!(ci.connect_timeout, Some(Duration::from_secs(7)));
        assert_eq!(ci.options.as_deref(), Some("-c work_mem=1MB"));
        assert_eq!(
            ci.other.get("target_session_attrs").map(String::as_str),
            Some("primary")
        );

        let ci = resolve(parse("host=h port=1 user=u dbname=d sslmode=disable"), &env);
        assert_eq!(ci.hosts, vec!["h"]);
        assert_eq!(ci.ports, vec![1]);
        assert_eq!(ci.user.as_deref(), Some("u"));
        assert_eq!(ci.dbname.as_deref(), Some("d"));
        assert_eq!(ci.sslmode, Some(SslMode::Disable));
        assert_eq!(ci.password.as_deref(), Some("envpw"));
    }

    #[test]
    fn resolve_hostaddr_from_environment() {
        let ci = resolve(ConnInfo::default(), &[("PGHOSTADDR", "127.0.0.1")]);
        assert!(ci.hosts.is_empty());
        let t = &ci.targets()[0];
        assert_eq!(t.host_name(), "127.0.0.1");
        assert_eq!(t.to_string(), "127.0.0.1:5432");
    }

    #[test]
    fn resolve_empty_environment_values_are_unset() {
        let ci = resolve(ConnInfo::default(), &[("PGHOST", ""), ("PGPASSWORD", "")]);
        assert_eq!(ci.hosts, vec!["localhost"]);
        assert_eq!(ci.password, None);
    }

    #[test]
    fn resolve_bad_environment_value_names_the_variable() {
        let e = resolve_with(ConnInfo::default(), &[("PGSSLMODE", "yes")], &[], None).unwrap_err();
        assert_eq!(e.to_string(), r#"PGSSLMODE: invalid sslmode value: "yes""#);
        let e = resolve_with(ConnInfo::default(), &[("PGPORT", "x")], &[], None).unwrap_err();
        assert_eq!(e.to_string(), r#"PGPORT: invalid port number: "x""#);
    }

    #[test]
    fn resolve_empty_host_entries_take_the_default() {
        let ci = resolve_with(parse("host=,h2"), &[], &[], Some("/run/pg")).unwrap();
        assert_eq!(ci.hosts, vec!["/run/pg", "h2"]);
    }

    #[test]
    fn resolve_count_mismatches() {
        let e = resolve_with(parse("host=a,b,c port=1,2"), &[], &[], None).unwrap_err();
        assert_eq!(e.to_string(), "could not match 2 port numbers to 3 hosts");
        let e = resolve_with(parse("host=a,b hostaddr=10.0.0.1"), &[], &[], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "could not match 2 host names to 1 hostaddr values"
        );
        // One port serves every host.
        let ci = resolve(parse("host=a,b,c port=7"), &[]);
        let ports: Vec<u16> = ci.targets().iter().map(|t| t.port).collect();
        assert_eq!(ports, vec![7, 7, 7]);
    }

    #[test]
    fn resolve_system_roots_need_verify_full() {
        let e =
            resolve_with(parse("sslrootcert=system sslmode=require"), &[], &[], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"weak sslmode "require" may not be used with sslrootcert=system (use "verify-full")"#
        );
        resolve(parse("sslrootcert=system sslmode=verify-full"), &[]);
    }

    #[test]
    fn resolve_service_is_refused() {
        let e = resolve_with(ConnInfo::default(), &[("PGSERVICE", "prod")], &[], None).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("connection service files are not supported"));
    }

    // ---- resolve: password file ----

    const PGPASS: &str = "\
# comment line
other:5432:*:*:wrong
db\\:x:*:*:app:colon\\:ed
localhost:5432:shop:app:local-shop
localhost:*:*:app:local-any
*:*:*:app:fallback\\\\pw
*:*:*:*:last
";

    #[test]
    fn pgpass_from_home() {
        let ci = resolve_with(
            parse("host=localhost user=app dbname=shop"),
            &[("HOME", "/home/me")],
            &[("/home/me/.pgpass", PGPASS)],
            None,
        )
        .unwrap();
        assert_eq!(ci.password.as_deref(), Some("local-shop"));
        assert_eq!(ci.password_file_used(), Some(Path::new("/home/me/.pgpass")));
    }

    #[test]
    fn pgpass_wildcards_escapes_and_first_match() {
        let look = |conninfo: &str| {
            resolve_with(
                parse(conninfo),
                &[("PGPASSFILE", "/pw")],
                &[("/pw", PGPASS)],
                None,
            )
            .unwrap()
            .password
        };
        assert_eq!(
            look("host=localhost port=6000 user=app dbname=x").as_deref(),
            Some("local-any")
        );
        assert_eq!(look("host=db:x user=app").as_deref(), Some("colon:ed"));
        assert_eq!(
            look("host=elsewhere user=app").as_deref(),
            Some(r"fallback\pw")
        );
        assert_eq!(look("host=elsewhere user=bob").as_deref(), Some("last"));
        assert_eq!(look("host=other user=bob").as_deref(), Some("wrong"));
    }

    #[test]
    fn pgpass_default_socket_dir_is_localhost() {
        let ci = resolve_with(
            parse("user=app dbname=shop"),
            &[("PGPASSFILE", "/pw")],
            &[("/pw", PGPASS)],
            Some(DEFAULT_SOCKET_DIR),
        )
        .unwrap();
        assert_eq!(ci.hosts, vec![DEFAULT_SOCKET_DIR]);
        assert_eq!(ci.password.as_deref(), Some("local-shop"));
    }

    #[test]
    fn pgpass_passfile_keyword_beats_environment() {
        let ci = resolve_with(
            parse("passfile=/mine user=u"),
            &[("PGPASSFILE", "/pw"), ("HOME", "/home/me")],
            &[("/mine", "*:*:*:*:mine"), ("/pw", PGPASS)],
            None,
        )
        .unwrap();
        assert_eq!(ci.password.as_deref(), Some("mine"));
    }

    #[test]
    fn pgpass_explicit_password_wins() {
        let ci = resolve_with(
            parse("user=app password=given"),
            &[("PGPASSFILE", "/pw")],
            &[("/pw", PGPASS)],
            None,
        )
        .unwrap();
        assert_eq!(ci.password.as_deref(), Some("given"));
        assert_eq!(ci.password_file_used(), None);
        let ci = resolve_with(
            parse("user=app"),
            &[("PGPASSFILE", "/pw"), ("PGPASSWORD", "env")],
            &[("/pw", PGPASS)],
            None,
        )
        .unwrap();
        assert_eq!(ci.password.as_deref(), Some("env"));
    }

    #[test]
    fn pgpass_unreadable_or_insecure_file_is_ignored() {
        // The injected reader returns None for a group/world-readable file.
        let ci = resolve_with(parse("user=app"), &[("HOME", "/home/me")], &[], None).unwrap();
        assert_eq!(ci.password, None);
    }

    #[test]
    fn pgpass_short_and_odd_lines() {
        let pass = PgPass::parse(
            "/x".into(),
            "h:1:d\nh:1:d:u\nh:1:d:u:\n*:*:*:u:pw:trailing\n\\*:*:*:star:lit\n",
        );
        assert_eq!(pass.entries.len(), 3);
        assert_eq!(pass.lookup("h", "1", "d", "u"), Some(""));
        assert_eq!(pass.lookup("z", "1", "d", "u"), Some("pw"));
        assert_eq!(pass.lookup("z", "1", "d", "star"), None);
        assert_eq!(pass.lookup("*", "1", "d", "star"), Some("lit"));
    }

    #[test]
    fn pgpass_per_host_and_with_dbname() {
        let file = "h1:*:*:u:one\nh2:*:*:u:two\n*:*:other:u:other-db\n";
        let ci = resolve_with(
            parse("host=h1,h2 user=u dbname=d"),
            &[("PGPASSFILE", "/pw")],
            &[("/pw", file)],
            None,
        )
        .unwrap();
        let targets = ci.targets();
        assert_eq!(ci.password.as_deref(), Some("one"));
        assert_eq!(ci.password_for(&targets[0]).as_deref(), Some("one"));
        assert_eq!(ci.password_for(&targets[1]).as_deref(), Some("two"));
        let ci = resolve_with(
            parse("host=h3 user=u dbname=d"),
            &[("PGPASSFILE", "/pw")],
            &[("/pw", file)],
            None,
        )
        .unwrap();
        assert_eq!(ci.password, None);
        assert_eq!(
            ci.with_dbname("other").password.as_deref(),
            Some("other-db")
        );
    }

    // ---- rendering ----

    #[test]
    fn with_dbname_keeps_explicit_password() {
        let ci = resolve(parse("user=u password=p dbname=a"), &[]);
        let other = ci.with_dbname("b");
        assert_eq!(other.dbname.as_deref(), Some("b"));
        assert_eq!(other.password.as_deref(), Some("p"));
        assert_eq!(ci.dbname.as_deref(), Some("a"));
    }

    #[test]
    fn libpq_string_has_no_password_and_round_trips() {
        let ci = resolve(
            parse(
                r"host=a,/tmp port=1,2 user=o\'neil password=secret dbname='my db' options='-c x=\\y' keepalives=0",
            ),
            &[],
        );
        let s = ci.to_libpq_string();
        assert!(!s.contains("secret"), "{s}");
        assert!(!s.contains("password"), "{s}");
        assert!(
            s.starts_with("host='a,/tmp' port='1,2' user='o\\'neil' dbname='my db'"),
            "{s}"
        );
        let back = parse(&s);
        assert_eq!(back.hosts, ci.hosts);
        assert_eq!(back.ports, ci.ports);
        assert_eq!(back.user, ci.user);
        assert_eq!(back.dbname, ci.dbname);
        assert_eq!(back.options, ci.options);
        assert_eq!(back.sslmode, ci.sslmode);
        assert_eq!(back.other, ci.other);
        assert_eq!(back.password, None);
    }

    #[test]
    fn display_never_shows_the_password() {
        let ci = resolve(parse("postgresql://app:secret@db1:5433,[::1]/shop"), &[]);
        assert_eq!(ci.display(), "app@db1:5433,[::1]:5432/shop");
        assert_eq!(ci.to_string(), ci.display());
        let debug = format!("{ci:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(parse("dbname=x").display(), "/x");
    }

    #[test]
    fn target_display() {
        let ci = resolve(parse("host=/tmp/,h,::1 port=5,6,7"), &[]);
        let shown: Vec<String> = ci.targets().iter().map(|t| t.to_string()).collect();
        assert_eq!(shown, vec!["/tmp/.s.PGSQL.5", "h:6", "[::1]:7"]);
    }

    #[test]
    fn tokio_config_maps_everything() {
        use tokio_postgres::config::{Host, SslMode as Tp, TargetSessionAttrs};
        let ci = resolve(
            parse(
                "host=h1,/sock port=1,2 user=u password=p dbname=d sslmode=verify-ca \
                   application_name=app connect_timeout=5 options=-cx=1 \
                   target_session_attrs=primary tcp_user_timeout=1500",
            ),
            &[],
        );
        let c = ci.tokio_config();
        assert_eq!(
            c.get_hosts(),
            &[Host::Tcp("h1".into()), Host::Unix("/sock".into())]
        );
        assert_eq!(c.get_ports(), &[1, 2]);
        assert_eq!(c.get_user(), Some("u"));
        assert_eq!(c.get_password(), Some(&b"p"[..]));
        assert_eq!(c.get_dbname(), Some("d"));
        assert_eq!(c.get_ssl_mode(), Tp::Require);
        assert_eq!(c.get_application_name(), Some("app"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(c.get_options(), Some("-cx=1"));
        assert_eq!(c.get_target_session_attrs(), TargetSessionAttrs::ReadWrite);
        assert_eq!(c.get_tcp_user_timeout(), Some(&Duration::from_millis(1500)));

        for (mode, want) in [
            ("disable", Tp::Disable),
            ("allow", Tp::Prefer),
            ("prefer", Tp::Prefer),
            ("require", Tp::Require),
            ("verify-full", Tp::Require),
        ] {
            let ci = parse(&format!("sslmode={mode}"));
            assert_eq!(ci.tokio_config().get_ssl_mode(), want, "{mode}");
        }
    }

    #[test]
    fn tokio_config_for_one_target() {
        let ci = resolve(
            parse("host=h1,h2 hostaddr=10.0.0.1,10.0.0.2 port=1,2 user=u"),
            &[],
        );
        let targets = ci.targets();
        let c = ci.tokio_config_for(&targets[1]);
        assert_eq!(
            c.get_hosts(),
            &[tokio_postgres::config::Host::Tcp("h2".into())]
        );
        assert_eq!(c.get_hostaddrs(), &["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.get_ports(), &[2]);
        let ci = resolve(parse("hostaddr=10.0.0.9"), &[]);
        let c = ci.tokio_config_for(&ci.targets()[0]);
        assert_eq!(
            c.get_hosts(),
            &[tokio_postgres::config::Host::Tcp("10.0.0.9".into())]
        );
    }
}
