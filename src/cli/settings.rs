//! Turning flags and environment into validated values: sizes, durations,
//! the default repository location. Everything below the CLI receives typed
//! settings, never raw strings.

pub use crate::units::parse_duration;

pub use crate::units::parse_size;

/// `dump --split-by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitByArg {
    Output,
    Ctid,
}

impl From<SplitByArg> for crate::jobs::dump::plan::SplitBy {
    fn from(a: SplitByArg) -> Self {
        match a {
            SplitByArg::Output => Self::Output,
            SplitByArg::Ctid => Self::Ctid,
        }
    }
}

/// `dump --copy-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CopyFormatArg {
    Auto,
    Text,
}

impl From<CopyFormatArg> for crate::jobs::dump::CopyFormat {
    fn from(a: CopyFormatArg) -> Self {
        match a {
            CopyFormatArg::Auto => Self::Auto,
            CopyFormatArg::Text => Self::Text,
        }
    }
}

/// `backup --checkpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckpointArg {
    Fast,
    Spread,
}

/// `backup --manifest-checksums`: as BASE_BACKUP spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum ManifestChecksumsArg {
    None,
    Crc32c,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl ManifestChecksumsArg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Crc32c => "CRC32C",
            Self::Sha224 => "SHA224",
            Self::Sha256 => "SHA256",
            Self::Sha384 => "SHA384",
            Self::Sha512 => "SHA512",
        }
    }
}

/// `backup --wal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WalSourceArg {
    Stream,
    Archive,
}

impl From<WalSourceArg> for crate::jobs::backup::WalSource {
    fn from(a: WalSourceArg) -> Self {
        match a {
            WalSourceArg::Stream => Self::Stream,
            WalSourceArg::Archive => Self::Archive,
        }
    }
}

/// `restore --target-action`: `recovery_target_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetActionArg {
    Pause,
    Promote,
    Shutdown,
}

impl TargetActionArg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Promote => "promote",
            Self::Shutdown => "shutdown",
        }
    }
}

pub use crate::jobs::default_jobs;
pub use crate::repo::default_location as default_repo;
pub use crate::units::human_bytes;

/// `--application-name`: what PostgreSQL keeps of it (63 bytes of ASCII)
/// must be the name `synchronous_standby_names` lists, so nothing is cut.
pub(crate) fn parse_application_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 63 || !s.bytes().all(|b| (32..127).contains(&b)) {
        return Err(format!(
            "{s:?} is not a usable application_name: 1 to 63 printable ASCII characters"
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_choices_keep_their_spelling() {
        use clap::ValueEnum;
        let names = |v: &[&dyn Fn() -> Option<clap::builder::PossibleValue>]| {
            v.iter()
                .map(|f| f().unwrap().get_name().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&[
                &|| ManifestChecksumsArg::None.to_possible_value(),
                &|| ManifestChecksumsArg::Crc32c.to_possible_value(),
                &|| ManifestChecksumsArg::Sha512.to_possible_value(),
            ]),
            ["NONE", "CRC32C", "SHA512"]
        );
        for v in ManifestChecksumsArg::value_variants() {
            assert_eq!(v.to_possible_value().unwrap().get_name(), v.as_str());
        }
        for v in TargetActionArg::value_variants() {
            assert_eq!(v.to_possible_value().unwrap().get_name(), v.as_str());
        }
        assert_eq!(
            SplitByArg::from_str("ctid", false).unwrap(),
            SplitByArg::Ctid
        );
        assert!(CheckpointArg::from_str("Fast", false).is_err());
    }

    #[test]
    fn human() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
