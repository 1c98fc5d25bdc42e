//! `pgtide init` and `pgtide key generate | list | add | remove`, and the
//! secret flags of the commands that read an encrypted repository.

use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::exit::{self, CliError};
use super::output::print_json;
use super::RepoArg;
use crate::crypt::keys::{KeySet, KeySpec};
use crate::crypt::secrets::read_passphrase_file;
use crate::crypt::Secrets;
use crate::repo::Repository;

/// The keys that open an encrypted repository (readers: restore, verify,
/// drill, wal fetch; key add/remove).
#[derive(Debug, Args, Clone, Default)]
pub struct SecretArgs {
    /// age identity file that opens the repository [env: PGTIDE_IDENTITY_FILE]
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// File whose first line is the repository's passphrase [env: PGTIDE_PASSPHRASE_FILE, or the passphrase itself in PGTIDE_PASSPHRASE]
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

impl SecretArgs {
    pub fn gather(&self) -> Result<Secrets, CliError> {
        Secrets::gather(self.identity.as_deref(), self.passphrase_file.as_deref())
            .map_err(|e| CliError::new(exit::USAGE, e))
    }

    /// The flags to pass on to another pgtide process (the server's
    /// `restore_command`, the WAL prefetcher), as absolute paths: from the
    /// flags, else from `PGTIDE_IDENTITY_FILE` / `PGTIDE_PASSPHRASE_FILE`.
    pub fn pass_on(&self) -> Vec<String> {
        crate::crypt::secrets::pass_on(self.identity.as_deref(), self.passphrase_file.as_deref())
    }
}

/// Open a repository for reading its contents: with the keys, when it is
/// encrypted (an error names what is missing).
pub async fn open_for_reading(url: &str, secrets: &SecretArgs) -> Result<Repository, CliError> {
    let repo = Repository::open(url, false).await?;
    repo.require_unlocked(&secrets.gather()?)?;
    Ok(repo)
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    pub repo: RepoArg,
    /// Encrypt for this age recipient (age1…; repeatable). Writers need no secret; readers need the matching identity
    #[arg(long = "recipient", value_name = "AGE1…")]
    pub recipients: Vec<String>,
    /// Encrypt with the passphrase in this file's first line (or PGTIDE_PASSPHRASE)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    #[command(flatten)]
    pub object_lock: super::init::ObjectLockArgs,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new age identity (mode 0600) and print its recipient
    Generate {
        /// Where to write the identity; it must not exist
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Show the repository's keys and key epochs (no secret needed)
    List {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Add a recipient or a passphrase; opening the repository needs an existing key
    Add {
        #[command(flatten)]
        repo: RepoArg,
        #[command(flatten)]
        secrets: SecretArgs,
        /// The age recipient to add
        #[arg(
            long,
            value_name = "AGE1…",
            conflicts_with = "new_passphrase_file",
            required_unless_present = "new_passphrase_file"
        )]
        recipient: Option<String>,
        /// Add the passphrase in this file's first line
        #[arg(long, value_name = "FILE")]
        new_passphrase_file: Option<PathBuf>,
    },
    /// Remove a recipient or the passphrase: what is written from now on is out of its reach
    Remove {
        #[command(flatten)]
        repo: RepoArg,
        /// The age recipient to remove
        #[arg(
            long,
            value_name = "AGE1…",
            conflicts_with = "passphrase",
            required_unless_present = "passphrase"
        )]
        recipient: Option<String>,
        /// Remove the passphrase
        #[arg(long)]
        passphrase: bool,
        /// The repository's passphrase, when it has one that stays (to wrap the new key epoch for it)
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(Debug, Serialize)]
struct InitReport {
    repository: String,
    format_version: u32,
    encrypted: bool,
    keys: Vec<String>,
    object_lock: Option<crate::repo::ObjectLock>,
}

pub async fn run_init(a: InitArgs, json: bool) -> Result<(), CliError> {
    let object_lock = a.object_lock.object_lock()?;
    let mut specs: Vec<KeySpec> = a
        .recipients
        .iter()
        .cloned()
        .map(KeySpec::Recipient)
        .collect();
    let passphrase = match &a.passphrase_file {
        Some(p) => Some(read_passphrase_file(p).map_err(|e| CliError::new(exit::USAGE, e))?),
        None => std::env::var("PGTIDE_PASSPHRASE")
            .ok()
            .filter(|v| !v.is_empty())
            .map(SecretString::from),
    };
    if let Some(p) = passphrase {
        specs.push(KeySpec::Passphrase(p));
    }
    let keys = if specs.is_empty() {
        None
    } else {
        Some(KeySet::create(&specs).map_err(|e| CliError::new(exit::USAGE, e.to_string()))?)
    };
    let names: Vec<String> = keys
        .as_ref()
        .map(|k| k.keys.iter().map(|u| u.name()).collect())
        .unwrap_or_default();
    let storage = crate::storage::open(&a.repo.url())
        .await
        .map_err(|e| CliError::from(crate::repo::RepoError::from(e)))?;
    let repo = Repository::init(storage, keys, object_lock).await?;
    let r = InitReport {
        repository: repo.location(),
        format_version: repo.format_version(),
        encrypted: repo.encrypted(),
        keys: names,
        object_lock: repo.object_lock(),
    };
    if json {
        print_json(&r);
    } else if r.encrypted {
        println!(
            "initialised encrypted repository {} for {}",
            r.repository,
            r.keys.join(", ")
        );
    } else {
        println!("initialised repository {}", r.repository);
    }
    if let (Some(l), false) = (&r.object_lock, json) {
        println!(
            "with Object Lock: every object kept is retained in {} mode for {} after it is written",
            l.mode.as_str(),
            crate::units::format_duration(std::time::Duration::from_secs(l.seconds))
        );
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct KeyListing {
    repository: String,
    generation: u32,
    current_epoch: u32,
    epochs: Vec<crate::crypt::keys::Epoch>,
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Serialize)]
struct KeyEntry {
    kind: String,
    recipient: Option<String>,
    added_at: chrono::DateTime<chrono::Utc>,
    epochs: Vec<u32>,
}

#[derive(Debug, Serialize)]
struct KeyChange {
    repository: String,
    action: &'static str,
    key: String,
    generation: u32,
    current_epoch: u32,
}

pub async fn run_key(cmd: KeyCommand, json: bool) -> Result<(), CliError> {
    match cmd {
        KeyCommand::Generate { output } => {
            let id = age::x25519::Identity::generate();
            let public = id.to_public().to_string();
            write_identity(&output, &id, &public)?;
            if json {
                print_json(&serde_json::json!({
                    "identity_file": output.display().to_string(),
                    "recipient": public,
                }));
            } else {
                println!("{public}");
            }
        }
        KeyCommand::List { repo } => {
            let repo = Repository::open(&repo.url(), false).await?;
            let c = encrypted(&repo)?;
            let k = c.keys();
            let l = KeyListing {
                repository: repo.location(),
                generation: k.generation,
                current_epoch: k.current_epoch,
                epochs: k.epochs.clone(),
                keys: k
                    .keys
                    .iter()
                    .map(|u| KeyEntry {
                        kind: u.kind.clone(),
                        recipient: u.recipient.clone(),
                        added_at: u.added_at,
                        epochs: u.epochs.clone(),
                    })
                    .collect(),
            };
            if json {
                print_json(&l);
            } else {
                println!(
                    "repository {}: key set {}, current epoch {}",
                    l.repository, l.generation, l.current_epoch
                );
                for k in &l.keys {
                    let epochs: Vec<String> = k.epochs.iter().map(|e| e.to_string()).collect();
                    println!(
                        "  {:<10} {}  added {}  epochs {}",
                        k.kind,
                        k.recipient.as_deref().unwrap_or("-"),
                        k.added_at.format("%Y-%m-%d %H:%M:%SZ"),
                        epochs.join(",")
                    );
                }
            }
        }
        KeyCommand::Add {
            repo,
            secrets,
            recipient,
            new_passphrase_file,
        } => {
            let repo = Repository::open(&repo.url(), false).await?;
            let c = encrypted(&repo)?.clone();
            repo.require_unlocked(&secrets.gather()?)?;
            let unlocked = c.unlocked().expect("unlocked above");
            let spec = match (recipient, new_passphrase_file) {
                (Some(r), _) => KeySpec::Recipient(r),
                (None, Some(p)) => KeySpec::Passphrase(
                    read_passphrase_file(&p).map_err(|e| CliError::new(exit::USAGE, e))?,
                ),
                (None, None) => unreachable!("clap requires one"),
            };
            let next = c
                .keys()
                .add(&unlocked, &spec)
                .map_err(|e| CliError::new(exit::USAGE, e.to_string()))?;
            repo.write_key_set(&next).await?;
            report_change(&repo, "added", &next, &spec, json);
        }
        KeyCommand::Remove {
            repo,
            recipient,
            passphrase,
            passphrase_file,
        } => {
            let repo = Repository::open(&repo.url(), false).await?;
            let c = encrypted(&repo)?.clone();
            let spec = match (recipient, passphrase) {
                (Some(r), _) => KeySpec::Recipient(r),
                (None, true) => KeySpec::Passphrase(SecretString::from(String::new())),
                (None, false) => unreachable!("clap requires one"),
            };
            let pass = Secrets::gather(None, passphrase_file.as_deref())
                .map_err(|e| CliError::new(exit::USAGE, e))?;
            let next = c
                .keys()
                .remove(&spec, pass.passphrase())
                .map_err(|e| CliError::new(exit::USAGE, e.to_string()))?;
            repo.write_key_set(&next).await?;
            report_change(&repo, "removed", &next, &spec, json);
        }
    }
    Ok(())
}

fn encrypted(
    repo: &Repository,
) -> Result<&std::sync::Arc<crate::repo::encryption::RepoCrypt>, CliError> {
    repo.crypt().ok_or_else(|| {
        CliError::new(
            exit::USAGE,
            format!(
                "repository {} is not encrypted: it has no keys (pgtide init --recipient makes an encrypted one)",
                repo.location()
            ),
        )
    })
}

fn report_change(
    repo: &Repository,
    action: &'static str,
    next: &KeySet,
    spec: &KeySpec,
    json: bool,
) {
    let key = match spec {
        KeySpec::Recipient(r) => r.trim().to_string(),
        KeySpec::Passphrase(_) => "passphrase".into(),
    };
    let r = KeyChange {
        repository: repo.location(),
        action,
        key,
        generation: next.generation,
        current_epoch: next.current_epoch,
    };
    if json {
        print_json(&r);
    } else if action == "removed" {
        println!(
            "removed {} from {}: key set {}, new epoch {}; what is written from now on is out of its reach, what was written before is not",
            r.key, r.repository, r.generation, r.current_epoch
        );
    } else {
        println!(
            "added {} to {}: key set {}; no data was rewritten",
            r.key, r.repository, r.generation
        );
    }
}

/// Write an identity file the way age-keygen does, mode 0600, refusing to
/// replace a file.
fn write_identity(path: &Path, id: &age::x25519::Identity, public: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(|e| {
        CliError::new(
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                exit::TARGET_NOT_EMPTY
            } else {
                exit::FAILURE
            },
            format!("cannot create {}: {e}", path.display()),
        )
    })?;
    let text = format!(
        "# created: {}\n# public key: {public}\n{}\n",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        id.to_string().expose_secret()
    );
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| {
            CliError::new(
                exit::FAILURE,
                format!("cannot write {}: {e}", path.display()),
            )
        })
}
