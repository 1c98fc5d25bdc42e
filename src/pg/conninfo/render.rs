//! Rendering a `ConnInfo`: a libpq `key=value` string for child processes
//! (never with the password), a display form for messages, and
//! tokio-postgres configurations.

use super::*;

impl ConnInfo {
    /// `key='value'` pairs for libpq programs such as pg_dump, WITHOUT the
    /// password (hand that over in the child's `PGPASSWORD`).
    pub fn to_libpq_string(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if !self.hosts.is_empty() {
            pairs.push(("host", self.hosts.join(",")));
        }
        if !self.hostaddrs.is_empty() {
            let addrs: Vec<String> = self.hostaddrs.iter().map(|a| a.to_string()).collect();
            pairs.push(("hostaddr", addrs.join(",")));
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(|p| p.to_string()).collect();
            pairs.push(("port", ports.join(",")));
        }
        let optional = [
            ("user", self.user.clone()),
            ("dbname", self.dbname.clone()),
            ("sslmode", self.sslmode.map(|m| m.as_str().to_owned())),
            (
                "sslrootcert",
                self.sslrootcert.as_ref().map(|r| match r {
                    SslRootCert::System => "system".to_owned(),
                    SslRootCert::File(p) => p.to_string_lossy().into_owned(),
                }),
            ),
            (
                "sslcert",
                self.sslcert
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
            ),
            (
                "sslkey",
                self.sslkey
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
            ),
            ("application_name", self.application_name.clone()),
            (
                "connect_timeout",
                self.connect_timeout.map(|d| d.as_secs().to_string()),
            ),
            ("options", self.options.clone()),
        ];
        pairs.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        pairs.extend(self.other.iter().map(|(k, v)| (k.as_str(), v.clone())));
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", quote_value(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `user@host:port/dbname` for messages and logs; never the password.
    pub fn display(&self) -> String {
        let mut s = String::new();
        if let Some(user) = &self.user {
            s.push_str(user);
            s.push('@');
        }
        let hosts: Vec<String> = self
            .targets()
            .iter()
            .map(|t| format!("{}:{}", bracket_v6(&t.host_name()), t.port))
            .collect();
        s.push_str(&hosts.join(","));
        s.push('/');
        if let Some(db) = &self.dbname {
            s.push_str(db);
        }
        s
    }

    /// A tokio-postgres configuration with every host. `sslmode` maps to what
    /// tokio-postgres knows (allow and prefer → prefer; require, verify-ca
    /// and verify-full → require): certificate checks are up to the TLS
    /// connector (see `pg::connect`).
    pub fn tokio_config(&self) -> tokio_postgres::Config {
        let mut config = self.tokio_config_base();
        if let Some(password) = &self.password {
            config.password(password.as_bytes());
        }
        let only_addrs = self.hosts.is_empty();
        for target in self.targets() {
            if target.is_unix_socket() {
                config.host_path(&target.host);
            } else if only_addrs || target.host.is_empty() {
                // tokio-postgres needs a name for TLS; libpq uses the address.
                config.host(target.host_name());
            } else {
                config.host(&target.host);
                if let Some(addr) = target.hostaddr {
                    config.hostaddr(addr);
                }
            }
        }
        for port in &self.ports {
            config.port(*port);
        }
        config
    }

    /// A tokio-postgres configuration for one target, with that target's
    /// password (see [`ConnInfo::password_for`]).
    pub fn tokio_config_for(&self, target: &Target) -> tokio_postgres::Config {
        let mut config = self.tokio_config_base();
        if let Some(password) = self.password_for(target) {
            config.password(password.as_bytes());
        }
        if target.is_unix_socket() {
            config.host_path(&target.host);
        } else if target.host.is_empty() {
            config.host(target.host_name());
        } else {
            config.host(&target.host);
            if let Some(addr) = target.hostaddr {
                config.hostaddr(addr);
            }
        }
        config.port(target.port);
        config
    }

    fn tokio_config_base(&self) -> tokio_postgres::Config {
        use tokio_postgres::config::{
            ChannelBinding, LoadBalanceHosts, SslMode as TpSslMode, SslNegotiation,
            TargetSessionAttrs,
        };
        let mut config = tokio_postgres::Config::new();
        if let Some(user) = &self.user {
            config.user(user);
        }
        if let Some(dbname) = &self.dbname {
            config.dbname(dbname);
        }
        if let Some(options) = &self.options {
            config.options(options);
        }
        let app = self
            .application_name
            .as_ref()
            .or(self.other.get("fallback_application_name"));
        if let Some(app) = app {
            config.application_name(app);
        }
        config.ssl_mode(match self.sslmode.unwrap_or(SslMode::Prefer) {
            SslMode::Disable => TpSslMode::Disable,
            SslMode::Allow | SslMode::Prefer => TpSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => TpSslMode::Require,
        });
        if let Some(timeout) = self.connect_timeout.filter(|t| !t.is_zero()) {
            config.connect_timeout(timeout);
        }
        for (keyword, value) in &self.other {
            let int = value.trim().parse::<i64>().ok();
            let positive = int.filter(|n| *n > 0).map(|n| n.unsigned_abs());
            match keyword.as_str() {
                "keepalives" => {
                    if let Some(n) = int {
                        config.keepalives(n != 0);
                    }
                }
                "keepalives_idle" => {
                    if let Some(n) = positive {
                        config.keepalives_idle(Duration::from_secs(n));
                    }
                }
                "keepalives_interval" => {
                    if let Some(n) = positive {
                        config.keepalives_interval(Duration::from_secs(n));
                    }
                }
                "keepalives_count" => {
                    if let Some(n) = positive.and_then(|n| u32::try_from(n).ok()) {
                        config.keepalives_retries(n);
                    }
                }
                // libpq's tcp_user_timeout is in milliseconds.
                "tcp_user_timeout" => {
                    if let Some(n) = positive {
                        config.tcp_user_timeout(Duration::from_millis(n));
                    }
                }
                // tokio-postgres knows only any / read-write / read-only:
                // primary ≈ read-write, standby ≈ read-only.
                "target_session_attrs" => {
                    config.target_session_attrs(match value.as_str() {
                        "read-write" | "primary" => TargetSessionAttrs::ReadWrite,
                        "read-only" | "standby" => TargetSessionAttrs::ReadOnly,
                        _ => TargetSessionAttrs::Any,
                    });
                }
                "channel_binding" => {
                    config.channel_binding(match value.as_str() {
                        "disable" => ChannelBinding::Disable,
                        "require" => ChannelBinding::Require,
                        _ => ChannelBinding::Prefer,
                    });
                }
                "load_balance_hosts" => {
                    config.load_balance_hosts(match value.as_str() {
                        "random" => LoadBalanceHosts::Random,
                        _ => LoadBalanceHosts::Disable,
                    });
                }
                "sslnegotiation" => {
                    config.ssl_negotiation(match value.as_str() {
                        "direct" => SslNegotiation::Direct,
                        _ => SslNegotiation::Postgres,
                    });
                }
                _ => {}
            }
        }
        config
    }
}

/// `'value'` with `\` and `'` backslash-escaped, as libpq reads it.
pub(super) fn quote_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

pub(super) fn bracket_v6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('/') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}
