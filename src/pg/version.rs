//! Server versions and the capabilities pgtide cares about. The rest of the
//! code asks these methods; it never compares version numbers itself.

use std::fmt;

/// `server_version_num`, e.g. 150018.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion(pub u32);

/// The oldest major version pgtide supports.
pub const OLDEST_SUPPORTED_MAJOR: u32 = 13;

impl ServerVersion {
    pub fn major(self) -> u32 {
        self.0 / 10000
    }

    pub fn is_supported(self) -> bool {
        self.major() >= OLDEST_SUPPORTED_MAJOR
    }

    /// `WHERE ctid >= '(a,0)' AND ctid < '(b,0)'` runs as a TID range scan
    /// (PostgreSQL 14+) instead of a full sequential scan per range.
    pub fn has_tid_range_scan(self) -> bool {
        self.major() >= 14
    }

    /// The `transaction_timeout` setting exists (PostgreSQL 17+).
    pub fn has_transaction_timeout(self) -> bool {
        self.major() >= 17
    }

    /// `interval` has the values `infinity` and `-infinity` (17+).
    pub fn has_infinite_interval(self) -> bool {
        self.major() >= 17
    }

    /// `BASE_BACKUP ( LABEL '…', … )` with one tagged CopyOut stream
    /// (`n`/`d`/`p`/`m` messages) instead of the keyword syntax and one
    /// CopyOut tar stream per tablespace (PostgreSQL 15+).
    pub fn uses_new_base_backup_syntax(self) -> bool {
        self.major() >= 15
    }

    /// `BASE_BACKUP` can compress on the server (`COMPRESSION`, 15+).
    pub fn has_server_side_compression(self) -> bool {
        self.major() >= 15
    }

    /// `CREATE_REPLICATION_SLOT … PHYSICAL (RESERVE_WAL)`: the parenthesised
    /// option list of replication commands (15+; older servers take
    /// `PHYSICAL RESERVE_WAL`).
    pub fn uses_new_replication_option_syntax(self) -> bool {
        self.major() >= 15
    }

    /// The `READ_REPLICATION_SLOT` replication command exists (15+).
    pub fn has_read_replication_slot(self) -> bool {
        self.major() >= 15
    }

    /// Parses the `server_version` parameter the server reports at startup:
    /// `15.18 (Debian 15.18-0+deb12u1)` → 150018, `16beta1` → 160000,
    /// `9.6.24` → 90624.
    pub fn parse(server_version: &str) -> Option<ServerVersion> {
        let word = server_version.split_whitespace().next()?;
        let mut parts = word.splitn(3, '.');
        let number = |s: &str| -> Option<u32> {
            let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        };
        let major = number(parts.next()?)?;
        let minor = parts.next().and_then(number).unwrap_or(0);
        if major >= 10 {
            Some(ServerVersion(major.checked_mul(10000)?.checked_add(minor)?))
        } else {
            let patch = parts.next().and_then(number).unwrap_or(0);
            Some(ServerVersion(major * 10000 + minor * 100 + patch))
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major(), self.0 % 10000)
    }
}

/// Parse the major version from a tool's `--version` line, e.g.
/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → 15, `16beta1` → 16.
pub fn tool_major(version_line: &str) -> Option<u32> {
    let v = version_line.split(')').nth(1)?.split_whitespace().next()?;
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities() {
        assert!(!ServerVersion(130012).has_tid_range_scan());
        assert!(ServerVersion(140000).has_tid_range_scan());
        assert!(!ServerVersion(120000).is_supported());
        assert_eq!(ServerVersion(150018).to_string(), "15.18");
        assert!(!ServerVersion(140011).uses_new_base_backup_syntax());
        assert!(ServerVersion(150000).uses_new_base_backup_syntax());
        assert!(!ServerVersion(140011).has_read_replication_slot());
        assert!(ServerVersion(160000).has_read_replication_slot());
        assert!(ServerVersion(150002).has_server_side_compression());
        assert!(ServerVersion(150002).uses_new_replication_option_syntax());
    }

    #[test]
    fn parse_server_version_parameter() {
        let v = |s: &str| ServerVersion::parse(s).map(|v| v.0);
        assert_eq!(v("15.18 (Debian 15.18-0+deb12u1)"), Some(150018));
        assert_eq!(v("16.14"), Some(160014));
        assert_eq!(v("16beta1"), Some(160000));
        assert_eq!(v("18devel"), Some(180000));
        assert_eq!(v("9.6.24"), Some(90624));
        assert_eq!(v(""), None);
        assert_eq!(v("x"), None);
        assert_eq!(v("99999999999.1"), None);
    }

    #[test]
    fn tool_versions() {
        assert_eq!(
            tool_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"),
            Some(15)
        );
        assert_eq!(tool_major("pg_dump (PostgreSQL) 18.1"), Some(18));
        assert_eq!(tool_major("pg_dump (PostgreSQL) 16beta1"), Some(16));
        assert_eq!(tool_major("garbage"), None);
    }
}
