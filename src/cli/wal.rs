//! `pgtide wal push | fetch | stream | prefetch`: flags to settings, results
//! to output.

use super::exit::{self, CliError};
use super::output::print_json;
use super::{cancel_on_signal, conninfo, WalCommand};
use crate::repo::Repository;

pub(super) async fn run(cmd: WalCommand, json: bool) -> Result<(), CliError> {
    use crate::jobs::wal::{fetch, push};
    match cmd {
        WalCommand::Push {
            path,
            repo,
            compress,
        } => {
            let repo = Repository::open(&repo.url(), true).await?;
            let r = push::push(&repo, &path, compress).await?;
            if json {
                print_json(&r);
            }
            tracing::info!(name = %r.name, outcome = r.outcome, "wal push");
        }
        WalCommand::Fetch {
            name,
            dest,
            repo,
            secrets,
            spool,
            prefetch,
        } => {
            // Anything but "not in the archive" must stop recovery rather
            // than end it early: exit codes above 125 do that.
            let abort = |e: CliError| CliError::new(exit::RECOVERY_ABORT, e.message);
            let url = repo.url();
            let spool = spool.or_else(fetch::default_spool);
            // A prefetched segment costs no request: not even opening the
            // repository.
            let served = if fetch::from_spool(&name, &dest, spool.as_deref()).await {
                fetch::Fetched::Served { partial: false }
            } else {
                let repo = super::keys::open_for_reading(&url, &secrets)
                    .await
                    .map_err(abort)?;
                fetch::fetch(&repo, &name, &dest, spool.as_deref())
                    .await
                    .map_err(|e| abort(e.into()))?
            };
            match served {
                fetch::Fetched::NotFound => return Err(CliError::new(exit::FAILURE, "")),
                fetch::Fetched::Served { .. } => {
                    if let (Some(spool), true) = (spool, prefetch > 0) {
                        if name.len() == 24 {
                            fetch::spawn_prefetcher(
                                &url,
                                &name,
                                &spool,
                                prefetch,
                                &secrets.pass_on(),
                            );
                        }
                    }
                }
            }
        }
        WalCommand::Stream(a) => {
            let s = crate::jobs::wal::stream::StreamSettings {
                conn: conninfo(&a.db)?,
                slot: a.slot,
                create_slot: a.create_slot,
                compression: a.compress,
                partial_interval: a.partial_interval,
                status_interval: a.status_interval.max(std::time::Duration::from_millis(100)),
                synchronous: a.synchronous,
                application_name: a.application_name,
                stop_at: a.stop_at,
                live: None,
                accept_gap: false,
            };
            let repo = Repository::open(&a.repo.url(), true).await?;
            let r = crate::jobs::wal::stream::run(&repo, &s, cancel_on_signal()).await?;
            if json {
                print_json(&r);
            } else {
                println!(
                    "wal stream stopped: {} segments and {} pieces ({}) archived, {} reconnects, flushed to {} on timeline {}",
                    r.segments,
                    r.partials,
                    crate::units::human_bytes(r.piece_bytes),
                    r.reconnects,
                    r.flushed,
                    r.timeline
                );
            }
        }
        WalCommand::Prefetch {
            name,
            repo,
            secrets,
            spool,
            count,
        } => {
            let repo = super::keys::open_for_reading(&repo.url(), &secrets).await?;
            fetch::prefetch(&repo, &name, &spool, count).await?;
        }
    }
    Ok(())
}
