//! Why a wire client's connection or command failed (a replication session
//! or a dump worker's SQL session): `WireError`, one line
//! per failure that says what to do, built from what the server answered.

use super::*;

/// Why a connection or command of the wire client failed. Each message is one line
/// that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The server could not be reached, TLS failed, or the connection
    /// settings are unusable (shared with normal sessions).
    /// (Boxed to keep `WireError` small.)
    #[error(transparent)]
    Connect(Box<ConnectError>),
    /// The server refused the credentials, or asked for a password that was
    /// not given, or for a method pgtide does not speak.
    #[error("{message} (hint: {hint})")]
    Auth {
        user: String,
        message: String,
        hint: String,
    },
    /// The role lacks the REPLICATION attribute, or pg_hba.conf has no
    /// `replication` line for this client.
    #[error("{}", no_replication_message(user, server, *reason))]
    NoReplicationPrivilege {
        user: String,
        server: Target,
        reason: NoReplication,
    },
    /// Every walsender slot is taken (`max_wal_senders`; 0 = replication off).
    #[error("{}", no_wal_senders_message(server, *max_wal_senders))]
    NoWalSenders {
        server: Target,
        max_wal_senders: Option<u32>,
    },
    /// `wal_level = minimal`: no slots, no online backups.
    #[error("server at {server} runs with wal_level = minimal: {message} (hint: set wal_level = replica in postgresql.conf and restart the server)")]
    WalLevelMinimal { server: Target, message: String },
    /// SQLSTATE 55006: another process streams from the slot.
    #[error("replication slot \"{slot}\" is in use{} (hint: stop the other WAL receiver using it, or give pgtide a slot of its own)", pid.map(|p| format!(" by the server process with PID {p}")).unwrap_or_default())]
    SlotInUse { slot: String, pid: Option<u32> },
    /// SQLSTATE 42704.
    #[error("replication slot \"{slot}\" does not exist (hint: create it first, e.g. with pgtide's slot option or SELECT pg_create_physical_replication_slot('{slot}', true))")]
    SlotMissing { slot: String },
    /// SQLSTATE 42710.
    #[error("replication slot \"{slot}\" already exists (hint: use it as it is, or drop it with SELECT pg_drop_replication_slot('{slot}'))")]
    SlotExists { slot: String },
    /// Refused before sending: PostgreSQL would refuse it too.
    #[error("invalid replication slot name \"{slot}\" (hint: use only lower-case letters, digits and underscores, at most 63 characters)")]
    InvalidSlotName { slot: String },
    /// A setting name that is not a plain (possibly dotted) identifier.
    #[error("invalid setting name \"{name}\" (hint: use a server parameter name such as wal_segment_size)")]
    InvalidSetting { name: String },
    /// The server is too old for what was asked.
    #[error("{feature} needs PostgreSQL {needs_major} or newer, but the server runs {version} (hint: upgrade the server, or do without {feature})")]
    Unsupported {
        feature: &'static str,
        needs_major: u32,
        version: ServerVersion,
    },
    /// Any other error the server reported.
    #[error("server error: {message}{} (sqlstate {})", hint.as_ref().map(|h| format!(" (server hint: {h})")).unwrap_or_default(), code.code())]
    Server {
        code: SqlState,
        message: String,
        hint: Option<String>,
    },
    /// The server sent bytes that do not fit the protocol.
    #[error("unexpected answer from the server: {0} (hint: check that host and port point at PostgreSQL 13 or newer)")]
    Protocol(#[from] ProtoError),
    /// The connection broke; open a new one.
    #[error("connection to {server} was lost: {reason} (hint: check the server log; the server may have restarted or ended the session, or wal_sender_timeout expired)")]
    ConnectionLost { server: Target, reason: String },
    /// A method was called in the wrong state, e.g. `identify_system` while
    /// streaming: a bug in the caller.
    #[error("the connection is {doing}, so it cannot {wanted}")]
    Busy {
        doing: &'static str,
        wanted: &'static str,
    },
}

/// Why a role may not open a replication connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReplication {
    /// pg_hba.conf has no line that allows a `replication` connection for
    /// this user from this client.
    NoHbaEntry,
    /// The role lacks the REPLICATION attribute (and is not a superuser).
    NotReplicationRole,
}

pub(super) fn no_replication_message(user: &str, server: &Target, reason: NoReplication) -> String {
    match reason {
        NoReplication::NoHbaEntry if server.is_unix_socket() => format!(
            "the server's pg_hba.conf has no line allowing replication connections for user \"{user}\" on socket \"{server}\" (hint: add \"local replication {user} scram-sha-256\" to pg_hba.conf and reload the server)"
        ),
        NoReplication::NoHbaEntry => format!(
            "the server's pg_hba.conf has no line allowing replication connections for user \"{user}\" from this client to {server} (hint: add \"host replication {user} <client address> scram-sha-256\" to pg_hba.conf and reload the server)"
        ),
        NoReplication::NotReplicationRole => format!(
            "user \"{user}\" may not start replication on {server}: the role lacks the REPLICATION attribute (hint: run ALTER ROLE {user} REPLICATION as a superuser, or connect as a role that has it)"
        ),
    }
}

pub(super) fn no_wal_senders_message(server: &Target, max: Option<u32>) -> String {
    match max {
        Some(0) => format!(
            "server at {server} does not allow replication connections: max_wal_senders = 0 (hint: set max_wal_senders = 10 and wal_level = replica in postgresql.conf and restart the server)"
        ),
        Some(n) => format!(
            "server at {server} has no free replication connection: all {n} (max_wal_senders) are in use (hint: stop an idle WAL receiver, or raise max_wal_senders and restart the server)"
        ),
        None => format!(
            "server at {server} has no free replication connection (hint: raise max_wal_senders in postgresql.conf and restart the server)"
        ),
    }
}

impl From<ConnectError> for WireError {
    fn from(e: ConnectError) -> WireError {
        WireError::Connect(Box::new(e))
    }
}

impl WireError {
    /// A connection lost, or bytes that are not PostgreSQL's protocol,
    /// before the startup finished: the connection could not be made
    /// (a wrong port, a server shutting down), not one lost mid-stream.
    pub(super) fn during_startup(self, target: &Target) -> WireError {
        match self {
            WireError::ConnectionLost { server, reason } => ConnectError::ConnectionLost {
                target: server,
                message: reason,
            }
            .into(),
            WireError::Protocol(p) => WireError::Connect(Box::new(ConnectError::Protocol {
                target: target.clone(),
                message: p.to_string(),
            })),
            e => e,
        }
    }

    /// True when trying again later, on a new connection, may succeed
    /// without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            WireError::Connect(e) => e.is_retryable(),
            WireError::ConnectionLost { .. } => true,
            WireError::NoWalSenders {
                max_wal_senders, ..
            } => *max_wal_senders != Some(0),
            // The other receiver may be a previous pgtide whose connection
            // the server has not noticed is gone yet.
            WireError::SlotInUse { .. } => true,
            WireError::Server { code, .. } => {
                *code == SqlState::CANNOT_CONNECT_NOW
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || code.code().starts_with("08")
                    || code.code().starts_with("53")
            }
            _ => false,
        }
    }

    /// libpq moves on to the next host only when this one cannot be
    /// reached or is starting up.
    pub(super) fn tries_next_host(&self) -> bool {
        match self {
            WireError::Connect(e) => match &**e {
                ConnectError::Unreachable { .. } => true,
                ConnectError::Server { code, .. } => *code == SqlState::CANNOT_CONNECT_NOW,
                _ => false,
            },
            _ => false,
        }
    }
}

impl WireClient {
    /// Classifies an error received during startup.
    pub(super) fn startup_error(&self, e: ErrorFields, ci: &ConnInfo) -> WireError {
        let code = SqlState::from_code(&e.code);
        if let Some(err) = self.privilege_or_senders(&e) {
            return err;
        }
        if code == SqlState::INVALID_PASSWORD {
            let hint = match ci.password_file_used() {
                Some(file) => format!(
                    "the password came from \"{}\"; check the line for user \"{}\" there",
                    file.display(),
                    self.user
                ),
                None => format!(
                    "check the password for user \"{}\" in the connection string, PGPASSWORD or ~/.pgpass",
                    self.user
                ),
            };
            return WireError::Auth {
                user: self.user.clone(),
                message: e.message,
                hint,
            };
        }
        if code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            return WireError::Auth {
                user: self.user.clone(),
                message: e.message,
                hint:
                    "check the user name, and that the server's pg_hba.conf allows this connection"
                        .to_owned(),
            };
        }
        if code == SqlState::INVALID_CATALOG_NAME {
            return ConnectError::DatabaseMissing {
                dbname: ci.dbname.clone().unwrap_or_default(),
            }
            .into();
        }
        ConnectError::Server {
            target: self.server.clone(),
            code,
            message: e.message,
        }
        .into()
    }

    /// Errors that mean "no replication for this role/client" or "no free
    /// walsender", whenever they arrive.
    pub(super) fn privilege_or_senders(&self, e: &ErrorFields) -> Option<WireError> {
        let m = &e.message;
        let no_replication = |reason| {
            Some(WireError::NoReplicationPrivilege {
                user: self.user.clone(),
                server: self.server.clone(),
                reason,
            })
        };
        // "no pg_hba.conf entry for replication connection from host …"
        if m.contains("pg_hba.conf") && m.contains("replication connection") {
            tracing::debug!(server = %self.server, message = %m, "refused by pg_hba.conf");
            return no_replication(NoReplication::NoHbaEntry);
        }
        // 13–15: "must be superuser or replication role to start walsender";
        // 16+: "permission denied to start WAL sender".
        if m.contains("must be superuser or replication role")
            || m.contains("permission denied to start WAL sender")
        {
            return no_replication(NoReplication::NotReplicationRole);
        }
        if m.contains("max_wal_senders") {
            // "number of requested standby connections exceeds
            // max_wal_senders (currently 10)"
            let max = m
                .split("(currently ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .and_then(|n| n.trim().parse().ok());
            return Some(WireError::NoWalSenders {
                server: self.server.clone(),
                max_wal_senders: max,
            });
        }
        None
    }

    /// Classifies an error answer to a command.
    pub(super) fn command_error(&self, e: ErrorFields, slot: Option<&str>) -> WireError {
        if let Some(err) = self.privilege_or_senders(&e) {
            return err;
        }
        let code = SqlState::from_code(&e.code);
        let slot_name = || {
            slot.map(str::to_owned)
                .or_else(|| quoted(&e.message))
                .unwrap_or_default()
        };
        if e.code == "55006" && e.message.contains("replication slot") {
            let pid = e
                .message
                .rsplit(' ')
                .next()
                .and_then(|p| p.trim_end_matches('.').parse().ok());
            return WireError::SlotInUse {
                slot: slot_name(),
                pid,
            };
        }
        if code == SqlState::UNDEFINED_OBJECT && e.message.contains("replication slot") {
            return WireError::SlotMissing { slot: slot_name() };
        }
        if code == SqlState::DUPLICATE_OBJECT && e.message.contains("replication slot") {
            return WireError::SlotExists { slot: slot_name() };
        }
        let lower = e.message.to_lowercase();
        if code == SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
            && (lower.contains("wal_level") || lower.contains("wal level"))
        {
            return WireError::WalLevelMinimal {
                server: self.server.clone(),
                message: e.message,
            };
        }
        WireError::Server {
            code,
            message: e.message,
            hint: e.hint,
        }
    }
}

/// The first `"…"` in a server message (slot names in slot errors).
pub(super) fn quoted(message: &str) -> Option<String> {
    let rest = message.split_once('"')?.1;
    Some(rest.split_once('"')?.0.to_owned())
}

pub(super) fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            host: "db".into(),
            hostaddr: None,
            port: 5432,
        }
    }

    #[test]
    fn error_messages_and_retry_classes() {
        let e = WireError::NoWalSenders {
            server: target(),
            max_wal_senders: Some(0),
        };
        assert_eq!(e.to_string(), "server at db:5432 does not allow replication connections: max_wal_senders = 0 (hint: set max_wal_senders = 10 and wal_level = replica in postgresql.conf and restart the server)");
        assert!(!e.is_retryable());
        let e = WireError::NoWalSenders {
            server: target(),
            max_wal_senders: Some(10),
        };
        assert!(e.is_retryable());
        let e = WireError::SlotInUse {
            slot: "s".into(),
            pid: Some(42),
        };
        assert_eq!(e.to_string(), "replication slot \"s\" is in use by the server process with PID 42 (hint: stop the other WAL receiver using it, or give pgtide a slot of its own)");
        assert!(!WireError::SlotMissing { slot: "s".into() }.is_retryable());
        assert!(WireError::ConnectionLost {
            server: target(),
            reason: "x".into()
        }
        .is_retryable());
        assert!(!WireError::Protocol(ProtoError::Truncated { what: "x" }).is_retryable());
        for e in [
            WireError::SlotMissing { slot: "s".into() }.to_string(),
            WireError::Server {
                code: SqlState::UNDEFINED_FILE,
                message: "requested WAL segment 000000010000000000000001 has already been removed"
                    .into(),
                hint: None,
            }
            .to_string(),
        ] {
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn quoted_names() {
        assert_eq!(
            quoted("replication slot \"abc\" does not exist"),
            Some("abc".to_owned())
        );
        assert_eq!(quoted("none"), None);
    }
}
