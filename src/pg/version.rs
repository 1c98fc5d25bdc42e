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
