//! `pgtide daemon` and `pgtide status`: flags to a configuration, results
//! to output. The service itself lives in `daemon/`.

use std::path::PathBuf;

use clap::Args;

use super::exit::{self, CliError};
use super::output::print_json;
use crate::daemon::config::{ConfigError, DaemonConfig, Overrides};
use crate::daemon::{self, status, DaemonError};
use crate::repo::Repository;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Configuration file (TOML; see docs/pgtide.example.toml)
    #[arg(long, short = 'c', env = "PGTIDE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Server to archive and back up (overrides [source] db)
    #[arg(long, short = 'd')]
    pub db: Option<String>,
    /// Repository (overrides [repository] url)
    #[arg(long)]
    pub repo: Option<String>,
    /// HTTP address for /status and /metrics (overrides [http] listen)
    #[arg(long)]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Configuration file of the daemon to ask
    #[arg(long, short = 'c', env = "PGTIDE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Repository to read when no daemon answers (overrides [repository] url)
    #[arg(long)]
    pub repo: Option<String>,
    /// Where the daemon listens (overrides [http] listen)
    #[arg(long)]
    pub listen: Option<String>,
}

fn config_error(e: ConfigError) -> CliError {
    let code = match e {
        ConfigError::Read { .. } | ConfigError::SecretFile { .. } => exit::USAGE,
        ConfigError::Parse { .. } | ConfigError::Invalid { .. } => exit::USAGE,
    };
    CliError::new(code, e.to_string())
}

fn daemon_error(e: DaemonError) -> CliError {
    match e {
        DaemonError::Config(c) => config_error(c),
        DaemonError::Repo(r) => r.into(),
        DaemonError::LockLost => CliError::new(exit::LOCKED, e.to_string()),
        DaemonError::Internal(_) => CliError::new(exit::INTERNAL, e.to_string()),
        DaemonError::Listen { .. } | DaemonError::Io { .. } => {
            CliError::new(exit::FAILURE, e.to_string())
        }
    }
}

pub async fn run_daemon(a: DaemonArgs, log_format: Option<String>) -> Result<(), CliError> {
    let flags = Overrides {
        db: a.db,
        repo: a.repo,
        listen: a.listen,
        log_format,
        skip_secrets: false,
    };
    daemon::run(a.config, flags).await.map_err(daemon_error)
}

pub async fn run_status(a: StatusArgs, json: bool) -> Result<(), CliError> {
    let flags = Overrides {
        repo: a.repo,
        listen: a.listen,
        skip_secrets: true,
        ..Overrides::default()
    };
    let cfg = DaemonConfig::load(a.config.as_deref(), &flags).map_err(config_error)?;
    // A running daemon knows more (live position, running jobs): ask it
    // first, then fall back to what the repository records.
    // A daemon listening on every address answers on loopback.
    let mut addr = cfg.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let url = format!("http://{addr}/status");
    let live =
        match daemon::notify::request("GET", &url, None, None, std::time::Duration::from_secs(3))
            .await
        {
            Ok((200, body)) => serde_json::from_slice::<status::StatusReport>(&body).ok(),
            Ok((code, _)) => {
                tracing::info!("the daemon at {url} answered HTTP {code}: reading the repository");
                None
            }
            Err(e) => {
                tracing::info!("no daemon at {url} ({e}): reading the repository");
                None
            }
        };
    let report = match live {
        Some(r) => r,
        None => {
            let repo = Repository::open(&cfg.repo, false).await?;
            status::from_repository(&repo).await?
        }
    };
    if json {
        print_json(&report);
    } else {
        status::print_human(&report);
    }
    Ok(())
}
