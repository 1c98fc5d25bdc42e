//! What a reader brings to open an encrypted repository: age identity files
//! (`--identity FILE` or `PGTIDE_IDENTITY_FILE`) and a passphrase
//! (`--passphrase-file FILE`, or `PGTIDE_PASSPHRASE`). Read once at start;
//! never logged.

use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};

/// The secrets given to one command.
#[derive(Default, Clone)]
pub struct Secrets {
    /// (path, contents) of each identity file.
    identity_files: Vec<(PathBuf, String)>,
    passphrase: Option<SecretString>,
    /// Given with a flag (not only through the environment): on a plaintext
    /// repository that is a mistake worth an error.
    pub explicit: bool,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field(
                "identity_files",
                &self
                    .identity_files
                    .iter()
                    .map(|(p, _)| p)
                    .collect::<Vec<_>>(),
            )
            .field("passphrase", &self.passphrase.is_some())
            .finish()
    }
}

impl Secrets {
    /// From the flags, then the environment (`PGTIDE_IDENTITY_FILE`,
    /// `PGTIDE_PASSPHRASE_FILE`, `PGTIDE_PASSPHRASE`) for what no flag gave.
    pub fn gather(
        identity: Option<&Path>,
        passphrase_file: Option<&Path>,
    ) -> Result<Secrets, String> {
        let explicit = identity.is_some() || passphrase_file.is_some();
        let env_path = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let identity = identity
            .map(Path::to_path_buf)
            .or_else(|| env_path("PGTIDE_IDENTITY_FILE"));
        let passphrase_file = passphrase_file
            .map(Path::to_path_buf)
            .or_else(|| env_path("PGTIDE_PASSPHRASE_FILE"));
        let mut s = Secrets {
            explicit,
            ..Secrets::default()
        };
        if let Some(p) = identity {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read identity file {}: {e}", p.display()))?;
            s.identity_files.push((p, text));
        }
        s.passphrase = match passphrase_file {
            Some(p) => Some(read_passphrase_file(&p)?),
            None => std::env::var("PGTIDE_PASSPHRASE")
                .ok()
                .filter(|v| !v.is_empty())
                .map(SecretString::from),
        };
        Ok(s)
    }

    /// Only a passphrase (for `init`, `key add`).
    pub fn with_passphrase(p: SecretString) -> Secrets {
        Secrets {
            passphrase: Some(p),
            explicit: true,
            ..Secrets::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.identity_files.is_empty() && self.passphrase.is_none()
    }

    pub fn passphrase(&self) -> Option<&SecretString> {
        self.passphrase.as_ref()
    }

    /// Every identity of the identity files.
    pub fn identities(&self) -> Result<Vec<Box<dyn age::Identity>>, String> {
        let mut out: Vec<Box<dyn age::Identity>> = Vec::new();
        for (path, text) in &self.identity_files {
            let ids = age::IdentityFile::from_buffer(text.as_bytes())
                .and_then(|f| {
                    f.into_identities()
                        .map_err(|e| std::io::Error::other(e.to_string()))
                })
                .map_err(|e| format!("{} is not an age identity file: {e}", path.display()))?;
            if ids.is_empty() {
                return Err(format!(
                    "{} holds no age identity (AGE-SECRET-KEY-1…)",
                    path.display()
                ));
            }
            out.extend(ids);
        }
        Ok(out)
    }

    /// What was given, for messages: "identity file F", "a passphrase".
    pub fn describe(&self) -> String {
        let mut v: Vec<String> = self
            .identity_files
            .iter()
            .map(|(p, _)| format!("identity file {}", p.display()))
            .collect();
        if self.passphrase.is_some() {
            v.push("the passphrase".into());
        }
        if v.is_empty() {
            "no key".into()
        } else {
            v.join(" and ")
        }
    }
}

/// A passphrase file: its first line, without the line end.
pub fn read_passphrase_file(p: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| format!("cannot read passphrase file {}: {e}", p.display()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format!("passphrase file {} is empty", p.display()));
    }
    Ok(SecretString::from(line.to_string()))
}

/// True when `a` and `b` are the same passphrase.
pub fn same_passphrase(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

/// The key flags to pass on to another pgtide process (the server's
/// `restore_command`, the WAL prefetcher), as absolute paths: from the
/// flags, else from `PGTIDE_IDENTITY_FILE` / `PGTIDE_PASSPHRASE_FILE`. A
/// passphrase given only in `PGTIDE_PASSPHRASE` is not passed on (it would
/// be written into the server's configuration).
pub fn pass_on(identity: Option<&Path>, passphrase_file: Option<&Path>) -> Vec<String> {
    let abs = |p: &Path| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    let pick = |flag: Option<&Path>, env: &str| {
        flag.map(Path::to_path_buf).or_else(|| {
            std::env::var_os(env)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    };
    let mut out = Vec::new();
    if let Some(p) = pick(identity, "PGTIDE_IDENTITY_FILE") {
        out.extend(["--identity".to_string(), abs(&p)]);
    }
    if let Some(p) = pick(passphrase_file, "PGTIDE_PASSPHRASE_FILE") {
        out.extend(["--passphrase-file".to_string(), abs(&p)]);
    }
    out
}
