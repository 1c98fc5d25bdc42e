//! Logs on stderr: the level (`-v`, `RUST_LOG`) and the format (`text`, or
//! `json` lines for log shippers, also from the daemon's config file).

use super::{Cli, Command};

impl Cli {
    /// The log format: `--log-format`/`PGTIDE_LOG_FORMAT`, else (for the
    /// daemon) the config file's `[log] format`, else text.
    pub fn log_format(&self) -> String {
        if let Some(f) = &self.log_format {
            return f.clone();
        }
        if let Command::Daemon(a) = &self.command {
            if let Some(f) = a.config.as_deref().and_then(config_log_format) {
                return f;
            }
        }
        "text".into()
    }

    /// The daemon logs its runs at info level unless told otherwise.
    pub fn log_level(&self) -> u8 {
        match self.command {
            Command::Daemon(_) => self.verbose.max(1),
            _ => self.verbose,
        }
    }
}

/// `[log] format` of a config file, read before anything else so that the
/// daemon's first lines already have the right format. Errors are left to
/// the full load that follows.
fn config_log_format(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    table
        .get("log")?
        .get("format")?
        .as_str()
        .map(str::to_string)
}

/// Logs go to stderr; `-v` raises the level, `RUST_LOG` overrides it;
/// `json` writes one JSON object per line.
pub fn init_tracing(verbose: u8, format: &str) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("pgtide={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if format == "json" {
        builder.json().with_current_span(true).try_init()
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
}
